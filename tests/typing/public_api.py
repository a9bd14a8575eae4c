"""Checked by `mypy --strict` in CI (not collected by pytest): the documented calls type-check
for users, since the package ships py.typed."""

import asyncio
import random
from datetime import timedelta

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps

circuit = Circuit(
    num_shorts_to_trip=5,
    sleep_time_after_trip=1.0,
    backoff_factor=2.0,
    max_sleep_time=30.0,
    jitter=0.1,
    rng=random.Random(1),
)
tripped: bool = circuit.short()
tripped = circuit.short(custom_sleep=30.0)
tripped = circuit.trip(timedelta(seconds=1))
circuit.reset_backoff()
shorts: int = circuit.times_shorted
trips: int = circuit.total_trips
sleep: float = circuit.current_sleep_time

breaker = BreakingCircuit(num_shorts_to_trip=3, sleep_time_after_trip=timedelta(seconds=1))
nothing: None = breaker.short()
broken: bool = breaker.broken
breaker.reset()


async def main() -> None:
    again: bool = await circuit.short.asynced()()
    await breaker.trip.asynced()(custom_sleep=1.0)
    print(again)


with recorded_sleeps(seed=1) as sleeps:
    asyncio.run(main())
durations: list[float] = sleeps.durations
