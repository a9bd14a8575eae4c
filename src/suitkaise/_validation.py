"""One set of rules for the numbers users pass in: durations (seconds) and counts.

Every public argument that is a duration or a count goes through here, so the rules are the
same everywhere: a ``datetime.timedelta`` is accepted wherever seconds are, ``bool`` is
refused (``True`` is almost always a mistake), nothing is clamped, and a bad value raises at
once with a message naming the argument, the value received and what is allowed.

Durations are bounded by ``MAX_SECONDS``: ``time.sleep``, ``threading`` waits, ``select`` and
``signal.setitimer`` overflow a little above 9.2e9 s, and a duration must stay sleepable
after the circuit's jitter has stretched it (up to 2x).
"""

from __future__ import annotations

import math
import sys
from numbers import Real

__all__ = ["MAX_SECONDS", "count", "optional_seconds", "real", "seconds"]

MAX_SECONDS = 1e9
"""The longest duration accepted anywhere, in seconds (about 31.7 years)."""


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite number of seconds in ``[0, MAX_SECONDS]`` (``(0, ...]`` when
    ``positive``).

    Accepts a real number (``int``, ``float``, ``fractions.Fraction``, ...) or a
    ``datetime.timedelta``.

    Raises:
        TypeError: ``value`` is not a real number or a timedelta (``bool`` included).
        ValueError: ``value`` is negative (or 0 when ``positive``), NaN, infinite, or
            larger than ``MAX_SECONDS``.
    """
    # A timedelta can only exist if datetime was imported; not importing it ourselves keeps
    # `import suitkaise` light.
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(value, datetime.timedelta):
        result = float(value.total_seconds())
    elif isinstance(value, Real) and not isinstance(value, bool):
        result = _float(name, value, f"a finite number of seconds, at most {MAX_SECONDS:g}")
    else:
        raise TypeError(
            f"{name} must be a number of seconds (int or float) or a datetime.timedelta, "
            f"got {value!r} of type {type(value).__name__}"
        )
    low = "> 0" if positive else ">= 0"
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(f"{name} must be a finite number of seconds {low}, got {value!r}")
    if result > MAX_SECONDS:
        raise ValueError(
            f"{name} must be at most {MAX_SECONDS:g} seconds (about 31 years; longer waits "
            f"cannot be slept or timed), got {value!r}"
        )
    return result


def optional_seconds(name: str, value: object, *, positive: bool = True) -> float | None:
    """``None`` stays ``None`` (no limit); anything else is checked by :func:`seconds`."""
    if value is None:
        return None
    return seconds(name, value, positive=positive)


def count(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (``bool`` refused).

    Raises:
        TypeError: ``value`` is not an ``int``.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def real(name: str, value: object) -> float:
    """``value`` as a finite float (``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type {type(value).__name__}"
        )
    result = _float(name, value, "a finite real number")
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _float(name: str, value: Real, allowed: str) -> float:
    # float() of an int (or Fraction) beyond the float range overflows instead of giving
    # infinity; that is a value out of range, said as such.
    try:
        return float(value)
    except OverflowError:
        shown = repr(value)
        if len(shown) > 60:
            shown = f"{shown[:25]}...{shown[-10:]} ({len(shown)} characters)"
        raise ValueError(f"{name} must be {allowed}, got {shown}, beyond any float") from None
