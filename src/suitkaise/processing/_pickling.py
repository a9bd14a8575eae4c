"""How objects travel between processes: cloudpickle out, the standard pickle in.

cloudpickle sends classes and functions defined in ``__main__``, in a function or in a
notebook by value, so the other side needs no import to rebuild them; whatever it pickles
the standard ``pickle.loads`` reads. Builtin scalars take the standard pickler, which
makes the same bytes several times faster.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads", "portable_error", "round_trip"]

# Pickled by reference to builtins whichever pickler is used.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def dumps(obj: object) -> bytes:
    """``obj`` as bytes any of our processes can load (``TypeError`` and friends if not)."""
    if type(obj) in _PLAIN:
        return pickle.dumps(obj, protocol=5)
    import cloudpickle  # imported on first use: the core import stays light

    data: bytes = cloudpickle.dumps(obj)
    return data


loads: Callable[[bytes | bytearray | memoryview], Any] = pickle.loads


def round_trip(obj: object) -> bytes:
    """``dumps(obj)``, checked by loading it back: objects with a custom ``__init__`` often
    pickle but do not unpickle, and the receiver must not be the one to find out."""
    data = dumps(obj)
    loads(data)
    return data


def portable_error(error: BaseException, stand_in: Callable[[str], BaseException]) -> bytes:
    """``error`` as bytes another process can raise; if it cannot travel, ``stand_in``
    (an exception class) with a message that names it and says why."""
    try:
        return round_trip(error)
    except Exception as problem:
        return dumps(
            stand_in(
                f"{type(error).__name__}: {error} (the exception itself could not be sent "
                f"to the other process: {type(problem).__name__}: {problem})"
            )
        )
