"""Page: "why circuits" -- "Custom sleep" (``circuit.short(custom_sleep=e.retry_after)``).

The page's snippet, with the page's times, runs once per call of a simulated API inside
``recorded_sleeps()`` (sleeps recorded, not slept). Note what the library does: like every
short, a short with ``custom_sleep`` only sleeps if it is the one that trips the circuit
(here, the 5th failure); the Retry-After is then slept exactly, with no jitter or cap.
"""

from suitkaise import Circuit
from suitkaise.circuits.testing import recorded_sleeps


# --- a simulated API -----------------------------------------------------------------------
class RateLimitError(Exception):
    def __init__(self, retry_after):
        super().__init__(f"429 Too Many Requests, Retry-After: {retry_after}")
        self.retry_after = retry_after


class OtherError(Exception):
    pass


# call 1: 429, calls 2-4: 500, call 5: 429 (5th failure: trips), calls 6-10: 500 (trips),
# call 11: success
ANSWERS = [RateLimitError(30.0)] + [OtherError("500")] * 3 + [RateLimitError(30.0)]
ANSWERS += [OtherError("500")] * 5 + [None]
calls = 0


def call_service():
    global calls
    calls += 1
    answer = ANSWERS[calls - 1]
    if answer is not None:
        raise answer
    return f"call {calls}: 200 OK"


def run_page_snippet(circuit, sleeps):
    for _ in ANSWERS:
        before = len(sleeps)
        kind = "200 OK"
        try:
            result = call_service()
        except RateLimitError as e:
            # API told us to wait 30 seconds
            circuit.short(custom_sleep=e.retry_after)
            kind = "RateLimitError -> short(custom_sleep=30.0)"
        except OtherError:
            circuit.short()  # use default
            kind = "OtherError -> short()"
        slept = ", ".join(f"{d:.3f}s" for d in sleeps.durations[before:]) or "-"
        print(f"  call {calls:2}: {kind:43} times_shorted={circuit.times_shorted} slept {slept}")
    return result


print("page circuit: Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)")
with recorded_sleeps() as sleeps:
    circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)
    print(f"  result: {run_page_snippet(circuit, sleeps)}")
print(f"page circuit: total_trips={circuit.total_trips}, sleeps {sleeps.durations}")

calls = 0
print("with jitter=0.1 the default sleep varies, the Retry-After does not:")
with recorded_sleeps(seed=1) as sleeps:
    circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0, jitter=0.1)
    run_page_snippet(circuit, sleeps)
print(f"jitter circuit: sleeps [{', '.join(f'{d:.3f}' for d in sleeps.durations)}]")

# To honour every Retry-After, not only the one that trips, trip with it:
with recorded_sleeps() as sleeps:
    circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)
    circuit.trip(custom_sleep=RateLimitError(30.0).retry_after)
print(f"trip(custom_sleep=30.0) on the first 429: sleeps {sleeps.durations}")
