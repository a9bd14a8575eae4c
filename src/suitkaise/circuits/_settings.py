"""Validated, immutable circuit configuration.

Every constructor argument passes through here once, at construction. A bad value raises
with a message naming the parameter, the value received and what is allowed; nothing is
clamped or silently corrected.
"""

from __future__ import annotations

import math
import sys
from numbers import Real
from typing import NamedTuple

__all__ = ["Settings", "seconds"]


def seconds(name: str, value: object) -> float:
    """Return ``value`` as a finite, non-negative number of seconds.

    Accepts a real number (``int``, ``float``, ``fractions.Fraction``, ...) or a
    ``datetime.timedelta``. ``bool`` is refused: ``True`` is almost always a mistake here.

    Raises:
        TypeError: ``value`` is not a real number or a timedelta.
        ValueError: ``value`` is negative, NaN or infinite.
    """
    # A timedelta can only exist if datetime was imported; not importing it ourselves keeps
    # `import suitkaise` light.
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(value, datetime.timedelta):
        result = float(value.total_seconds())
    elif isinstance(value, Real) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds (int or float) or a datetime.timedelta, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return result


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type {type(value).__name__}"
        )
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


class Settings(NamedTuple):
    """The configuration of one circuit, immutable. Durations are seconds (floats).

    Build it with :meth:`create`, which validates; the plain constructor trusts its input.
    """

    num_shorts_to_trip: int
    sleep_time_after_trip: float
    backoff_factor: float
    max_sleep_time: float
    jitter: float

    @classmethod
    def create(
        cls,
        num_shorts_to_trip: object,
        sleep_time_after_trip: object = 0.0,
        backoff_factor: object = 1.0,
        max_sleep_time: object = 10.0,
        jitter: object = 0.0,
    ) -> Settings:
        """Validate the constructor arguments of a circuit and return them normalised.

        Raises:
            TypeError: a value has the wrong type (for example ``num_shorts_to_trip=2.5``).
            ValueError: a value is out of range, or ``sleep_time_after_trip`` exceeds
                ``max_sleep_time`` while ``backoff_factor > 1``.
        """
        if isinstance(num_shorts_to_trip, bool) or not isinstance(num_shorts_to_trip, int):
            raise TypeError(
                "num_shorts_to_trip must be an int >= 1, "
                f"got {num_shorts_to_trip!r} of type {type(num_shorts_to_trip).__name__}"
            )
        if num_shorts_to_trip < 1:
            raise ValueError(f"num_shorts_to_trip must be an int >= 1, got {num_shorts_to_trip!r}")

        sleep = seconds("sleep_time_after_trip", sleep_time_after_trip)
        cap = seconds("max_sleep_time", max_sleep_time)

        factor = _real("backoff_factor", backoff_factor)
        if factor < 1.0:
            raise ValueError(
                f"backoff_factor must be >= 1.0 (1.0 means no backoff), got {backoff_factor!r}"
            )

        fraction = _real("jitter", jitter)
        if not 0.0 <= fraction <= 1.0:
            hint = ""
            if 1.0 < fraction <= 100.0:
                hint = f"; did you mean {fraction / 100:g}?"
            raise ValueError(
                "jitter must be a fraction in [0.0, 1.0] (0.1 means +/-10%), "
                f"got {jitter!r}{hint}"
            )

        if factor > 1.0 and sleep > cap:
            raise ValueError(
                f"sleep_time_after_trip ({sleep_time_after_trip!r}) must not exceed "
                f"max_sleep_time ({max_sleep_time!r}) "
                f"when backoff_factor > 1 (got backoff_factor={backoff_factor!r}); "
                "raise max_sleep_time or lower sleep_time_after_trip"
            )
        return cls(int(num_shorts_to_trip), sleep, factor, cap, fraction)
