"""Page: "why circuits" -- "Async support" (``await circuit.short.asynced()()``).

One circuit, used from plain code and from coroutines under ``asyncio.run``: same state,
same counting. While a coroutine's trip sleeps, the event loop keeps running other tasks.
Sleeps are scaled down (page: 1.0 s -> 0.05 s).
"""

import asyncio
import time

from suitkaise import Circuit

circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=0.05)  # page: 1.0

# sync
for _ in range(5):
    tripped = circuit.short()
print(f"sync: 5 x circuit.short() -> tripped={tripped}, total_trips={circuit.total_trips}")


async def ticker(ticks):
    while True:
        await asyncio.sleep(0.005)
        ticks.append(time.monotonic())


async def main():
    # async
    for _ in range(4):
        await circuit.short.asynced()()
    print(f"async: 4 x await circuit.short.asynced()() -> times_shorted={circuit.times_shorted}")

    ticks = []
    task = asyncio.create_task(ticker(ticks))
    await asyncio.sleep(0)  # let the ticker start
    start = time.monotonic()
    tripped = await circuit.short.asynced()()  # the 5th short trips and sleeps 0.05 s
    slept = time.monotonic() - start
    task.cancel()
    during = [t for t in ticks if t <= start + slept]
    print(
        f"async: 5th short -> tripped={tripped}, slept {slept:.3f} s, "
        f"total_trips={circuit.total_trips}"
    )
    print(f"event loop not blocked: ticker ran {len(during)} times during the sleep")

    # mixed: 3 sync shorts + 2 async shorts on the same circuit
    for _ in range(3):
        circuit.short()
    await circuit.short.asynced()()
    tripped = await circuit.short.asynced()()
    print(f"mixed: 3 sync + 2 async shorts -> tripped={tripped}, total_trips={circuit.total_trips}")

    tripped = await circuit.trip.asynced()()
    print(f"async trip(): returned {tripped}, total_trips={circuit.total_trips}")


asyncio.run(main())
print(
    f"same circuit, same state: total_trips={circuit.total_trips} "
    f"times_shorted={circuit.times_shorted}"
)
