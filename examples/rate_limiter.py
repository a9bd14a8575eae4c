"""Page: "why circuits" -- "Rate limiting" (100 requests per window).

First the page's limiter as written (60 s window) inside ``recorded_sleeps()``: 250
requests make 2 pauses of exactly 60.0 s (no cap: ``backoff_factor`` is 1). Then the same
limiter for real with the window scaled down to 0.05 s, timing where the pauses happen.
"""

import time
from itertools import pairwise

from suitkaise import Circuit
from suitkaise.circuits.testing import recorded_sleeps

requests = range(1, 251)
processed: list[tuple[int, float]] = []  # (request, time.monotonic())


def process(request):
    processed.append((request, time.monotonic()))


# --- the page's limiter, sleeps recorded instead of slept --------------------------------
rate_limiter = Circuit(
    num_shorts_to_trip=100,  # 100 requests per window
    sleep_time_after_trip=60.0,  # wait 60s when limit hit
)

with recorded_sleeps() as sleeps:
    for request in requests:
        rate_limiter.short()  # counts each request
        process(request)

print(
    f"page limiter: {len(processed)} requests, total_trips={rate_limiter.total_trips}, "
    f"pauses {sleeps.durations}"
)

# --- the same limiter for real, window scaled 60 s -> 0.05 s -------------------------------
processed.clear()
rate_limiter = Circuit(
    num_shorts_to_trip=100,  # 100 requests per window
    sleep_time_after_trip=0.05,  # wait 0.05s when limit hit (page: 60s)
)

start = time.monotonic()
for request in requests:
    rate_limiter.short()  # counts each request
    process(request)
elapsed = time.monotonic() - start

gaps = [(b[0], b[1] - a[1]) for a, b in pairwise(processed) if b[1] - a[1] > 0.045]
print(
    f"scaled limiter: {len(processed)} requests in {elapsed:.2f} s, "
    f"total_trips={rate_limiter.total_trips}"
)
for request, gap in gaps:
    print(f"paused {gap * 1000:.0f} ms before request {request}")
# short() comes before process(), so the 100th request is the one that waits.
if len(gaps) >= 2:
    first, second = gaps[0][0], gaps[1][0]
    print(
        f"requests per window: {first - 1} before the first pause, "
        f"then {second - first} between pauses"
    )
