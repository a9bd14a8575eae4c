"""Page: "why circuits" -- "Circuit vs BreakingCircuit: the difference".

``Circuit`` auto-resets: after every 5th rate-limit error it sleeps and the loop goes on.
``BreakingCircuit`` stays broken after 3 critical errors until ``reset()``.
Sleeps are scaled down 100x (page: 1.0 s -> 0.01 s).
"""

import time

from suitkaise import BreakingCircuit, Circuit


# --- simulated services ------------------------------------------------------------------
class RateLimitError(Exception):
    pass


class CriticalError(Exception):
    pass


requests = range(1, 25)  # 24 requests; every odd one is rate limited -> 12 errors
processed: list[int] = []


def process(request):
    if request % 2:
        raise RateLimitError(f"request {request}: 429 Too Many Requests")
    processed.append(request)


operations = 0


def risky_operation():
    global operations
    operations += 1
    if operations in (2, 4, 5):  # the 2nd, 4th and 5th attempts fail
        raise CriticalError(f"attempt {operations}: data store unreachable")
    return f"attempt {operations} ok"


def handle_failure():
    print(f"handle_failure(): breaker is broken after {operations} attempts -> alert on-call")


# --- Circuit: auto-resets ------------------------------------------------------------------
circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=0.01)  # page: 1.0

start = time.monotonic()
for request in requests:
    try:
        process(request)
    except RateLimitError:
        circuit.short()  # after 5 shorts, sleeps 1s and continues
elapsed = time.monotonic() - start

print(
    f"Circuit: {len(requests)} requests, {len(processed)} processed, "
    f"{len(requests) - len(processed)} rate limited"
)
print(
    f"Circuit: total_trips={circuit.total_trips} times_shorted={circuit.times_shorted} "
    f"(kept going: last request processed = {processed[-1]}) in {elapsed:.3f} s"
)

# --- BreakingCircuit: manual reset ---------------------------------------------------------
breaker = BreakingCircuit(num_shorts_to_trip=3, sleep_time_after_trip=0.01)  # page: 1.0

while not breaker.broken:
    try:
        result = risky_operation()
    except CriticalError:
        breaker.short()  # after 3 failures, circuit breaks

print(
    f"BreakingCircuit: broken={breaker.broken} times_shorted={breaker.times_shorted} "
    f"total_trips={breaker.total_trips} after {operations} attempts (last success: {result!r})"
)

if breaker.broken:
    # decide what to do - fail gracefully, alert, etc.
    handle_failure()
    breaker.reset()  # manually reset when ready

print(
    f"after reset(): broken={breaker.broken} times_shorted={breaker.times_shorted} "
    f"total_trips={breaker.total_trips}"
)
