"""Page: "why circuits" -- "Exponential backoff" (each trip increases the sleep time).

The page's circuit, with the page's times, driven through 7 trips inside
``recorded_sleeps()``: the circuit records what it would have slept instead of sleeping,
so the whole 91 s schedule prints instantly. Then ``reset_backoff()`` puts the sleep back
to 1.0 s.
"""

from suitkaise import Circuit
from suitkaise.circuits.testing import recorded_sleeps

circuit = Circuit(
    num_shorts_to_trip=5,
    sleep_time_after_trip=1.0,
    backoff_factor=2.0,
    max_sleep_time=30.0,
)
# backoff is automatic

ORDINALS = ["1st", "2nd", "3rd", "4th", "5th", "6th", "7th"]

with recorded_sleeps() as sleeps:
    for ordinal in ORDINALS:
        for _ in range(5):  # 5 failures per trip
            circuit.short()
        slept = sleeps.durations[-1]
        note = " (capped)" if slept == circuit.max_sleep_time else ""
        print(f"{ordinal} trip: {slept}s{note}")

print(f"schedule: {sleeps.durations}")
print(f"total_trips={circuit.total_trips} current_sleep_time={circuit.current_sleep_time}")

# Need to reset the backoff after a successful operation?
circuit.reset_backoff()  # back to original sleep time
print(f"after reset_backoff(): current_sleep_time={circuit.current_sleep_time}")

with recorded_sleeps() as sleeps:
    for _ in range(5):
        circuit.short()
print(f"next trip after reset_backoff(): {sleeps.durations}")
print(f"total_trips={circuit.total_trips} (reset_backoff() leaves the counters alone)")
