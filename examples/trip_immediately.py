"""Page: "why circuits" -- "Trip immediately" (``trip()`` vs ``short()``).

A minor error counts one short; a critical error trips at once, skipping the counter.
The page's snippet runs once per call of a simulated service that answers
MinorError, MinorError, MinorError, CriticalError, MinorError, then succeeds.
Sleeps are scaled down 100x (page: 5.0 s -> 0.05 s).
"""

import time

from suitkaise import Circuit


# --- a simulated service ------------------------------------------------------------------
class CriticalError(Exception):
    pass


class MinorError(Exception):
    pass


ANSWERS = [MinorError, MinorError, MinorError, CriticalError, MinorError, None]
calls = 0


def call_service():
    global calls
    calls += 1
    error = ANSWERS[calls - 1]
    if error is not None:
        raise error(f"call {calls}")
    return f"call {calls} ok"


# --- the page's code ----------------------------------------------------------------------
circuit = Circuit(num_shorts_to_trip=10, sleep_time_after_trip=0.05)  # page: 5.0

for _ in ANSWERS:
    start = time.monotonic()
    outcome = "ok"
    try:
        result = call_service()
    except CriticalError:
        outcome = "CriticalError -> trip()"
        circuit.trip()  # skip the counter, trip immediately
    except MinorError:
        outcome = "MinorError -> short()"
        circuit.short()  # increment counter normally
    took = time.monotonic() - start
    print(
        f"call {calls}: {outcome:24} times_shorted={circuit.times_shorted} "
        f"total_trips={circuit.total_trips} slept={took >= 0.045}"
    )

print(f"result: {result!r}")
