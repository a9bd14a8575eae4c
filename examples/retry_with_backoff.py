"""Page: "why circuits" -- the solution: one ``Circuit`` with backoff and jitter.

The page's retry loop, run against a simulated service that fails its first 30 calls.
The page's times are scaled down 100x (1.0 s -> 0.01 s, cap 30 s -> 0.3 s), ratios kept.
The service itself measures the pause before each call, so we see the backoff from the
service's side: after every 5th failure the circuit trips and sleeps 10, 20, 40, 80, 160,
then 300 ms (capped), each +/-10 %.
"""

import time

from suitkaise import Circuit


# --- a simulated service: the first 30 calls fail ----------------------------------------
class ServiceError(Exception):
    pass


FAILURES = 30
calls: list[float] = []  # time.monotonic() of every call


def call_external_service():
    calls.append(time.monotonic())
    if len(calls) <= FAILURES:
        raise ServiceError(f"call {len(calls)}: 503 Service Unavailable")
    return {"status": "ok", "call": len(calls)}


# --- the page's code (times scaled 100x) --------------------------------------------------
circuit = Circuit(
    num_shorts_to_trip=5,
    sleep_time_after_trip=0.01,  # page: 1.0
    backoff_factor=2.0,
    max_sleep_time=0.3,  # page: 30.0
    jitter=0.1,
)

while True:
    try:
        result = call_external_service()
        break
    except ServiceError:
        circuit.short()  # handles everything

# --- what happened -------------------------------------------------------------------------
print(f"result: {result} after {FAILURES} failures")
for trip in range(1, circuit.total_trips + 1):
    call = 5 * trip + 1  # the call right after the trip's sleep
    pause = calls[call - 1] - calls[call - 2]
    base = min(0.01 * 2 ** (trip - 1), 0.3)
    verdict = "ok" if pause >= base * 0.9 else "TOO SHORT"
    print(
        f"trip {trip}: base {base * 1000:.0f} ms, service saw a pause of "
        f"{pause * 1000:.1f} ms before call {call} ({pause / base - 1:+.0%} vs base, {verdict})"
    )
print(
    f"total_trips={circuit.total_trips} times_shorted={circuit.times_shorted} "
    f"current_sleep_time={circuit.current_sleep_time}"
)
print(f"whole retry took {calls[-1] - calls[0]:.2f} s")
