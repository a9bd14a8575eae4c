"""How a tripped circuit waits: the sleep functions and the default random source.

They live in one replaceable place (``hooks``) so that ``suitkaise.circuits.testing`` can
swap real sleeps for recorded ones and seed the jitter. Only a call that trips reaches
this module, so the indirection costs nothing on the hot path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

__all__ = ["RandomSource", "hooks", "jittered", "real_async_sleep"]


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in [0, 1): a ``random.Random`` or the module."""

    def random(self) -> float: ...


async def real_async_sleep(seconds: float) -> None:
    """Sleep with the running event loop: trio's sleep under trio, otherwise asyncio's."""
    import sniffio  # imported here: the core import stays light

    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        await trio.sleep(seconds)
    elif library == "asyncio":
        import asyncio

        await asyncio.sleep(seconds)
    else:
        raise RuntimeError(
            f"suitkaise circuits can sleep under asyncio or trio, not under {library!r}"
        )


class _Hooks:
    __slots__ = ("async_sleep", "rng", "sleep")

    def __init__(self) -> None:
        self.sleep: Callable[[float], None] = time.sleep
        self.async_sleep: Callable[[float], Coroutine[Any, Any, None]] = real_async_sleep
        # The random module's own generator is reseeded by the stdlib in a forked child,
        # so forked workers do not jitter in lockstep.
        self.rng: RandomSource = random


hooks = _Hooks()


def jittered(base: float, jitter: float, rng: RandomSource) -> float:
    """A duration drawn uniformly from ``[base*(1-jitter), base*(1+jitter)]``."""
    low = base * (1.0 - jitter)
    high = base * (1.0 + jitter)
    # min(): float rounding in low + span*u may land one ulp above high.
    return min(low + (high - low) * rng.random(), high)
