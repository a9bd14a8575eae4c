"""Page: "why circuits" -- "Jitter" (avoiding the thundering herd).

The page's circuit (base 5.0 s, jitter=0.1) inside ``recorded_sleeps(seed=...)``: the
delays are recorded instead of slept, and the seed makes them reproducible. Every delay
lies between 4.5 s and 5.5 s. Then five clients that fail at the same moment: without
jitter they would all retry after exactly 5.0 s; with it they spread out.
"""

from suitkaise import Circuit
from suitkaise.circuits.testing import recorded_sleeps

circuit = Circuit(
    num_shorts_to_trip=5,
    sleep_time_after_trip=5.0,
    jitter=0.1,  # +/- 10% randomness
)
# delays will be between 4.5s and 5.5s

with recorded_sleeps(seed=2024) as sleeps:
    for _ in range(10 * 5):  # 10 trips
        circuit.short()

delays = sleeps.durations
print("delays: " + ", ".join(f"{d:.3f}s" for d in delays))
print(f"{len(delays)} trips, min {min(delays):.3f}s, max {max(delays):.3f}s")
print(f"all within [4.5, 5.5]: {all(4.5 <= d <= 5.5 for d in delays)}")
print(f"distinct delays: {len(set(delays))} of {len(delays)}")

again = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=5.0, jitter=0.1)
with recorded_sleeps(seed=2024) as sleeps:
    for _ in range(10 * 5):
        again.short()
print(f"same seed, same delays: {sleeps.durations == delays}")

# clients naturally spread out their retries
clients = [Circuit(num_shorts_to_trip=5, sleep_time_after_trip=5.0, jitter=0.1) for _ in range(5)]
with recorded_sleeps(seed=7) as sleeps:
    for client in clients:
        client.trip()  # they all fail at the same moment
retry_at = sorted(sleeps.durations)
print("5 clients retry at: " + ", ".join(f"+{d:.3f}s" for d in retry_at))
print(f"spread between first and last retry: {retry_at[-1] - retry_at[0]:.3f}s")

no_jitter = [Circuit(num_shorts_to_trip=5, sleep_time_after_trip=5.0) for _ in range(5)]
with recorded_sleeps() as sleeps:
    for client in no_jitter:
        client.trip()
print("without jitter they retry at: " + ", ".join(f"+{d:.3f}s" for d in sleeps.durations))
