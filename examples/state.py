"""Page: "why circuits" -- "State tracking" (the properties both circuits expose).

A ``Circuit`` shorted 12 times (2 trips, 2 shorts since) and a ``BreakingCircuit`` shorted
4 times (broken after 3, still counting), then reset. The page's 1.0 s sleeps are recorded
by ``recorded_sleeps()`` instead of slept.
"""

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps

with recorded_sleeps():
    circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)
    for _ in range(12):
        circuit.short()

    print("Circuit after 12 shorts:")
    print(f"  circuit.times_shorted      = {circuit.times_shorted}  # failures since last trip")
    print(f"  circuit.total_trips        = {circuit.total_trips}  # lifetime trip count")
    print(f"  circuit.current_sleep_time = {circuit.current_sleep_time}  # current backoff delay")
    print(f"  repr: {circuit!r}")

    breaker = BreakingCircuit(num_shorts_to_trip=3)
    print("BreakingCircuit, fresh:")
    print(f"  breaker.broken = {breaker.broken}")
    for _ in range(4):
        breaker.short()

    print("BreakingCircuit after 4 shorts:")
    print(f"  breaker.broken             = {breaker.broken}  # is it broken?")
    print(f"  breaker.times_shorted      = {breaker.times_shorted}  # failures since last reset")
    print(f"  breaker.total_trips        = {breaker.total_trips}  # lifetime trip count")
    print(f"  breaker.current_sleep_time = {breaker.current_sleep_time}  # current backoff delay")

    breaker.reset()
    print("BreakingCircuit after reset():")
    print(f"  breaker.broken             = {breaker.broken}")
    print(f"  breaker.times_shorted      = {breaker.times_shorted}")
    print(f"  breaker.total_trips        = {breaker.total_trips}")
    print(f"  repr: {breaker!r}")
