"""Validated, immutable circuit configuration.

Every constructor argument passes through here once, at construction. A bad value raises
with a message naming the parameter, the value received and what is allowed; nothing is
clamped or silently corrected.
"""

from __future__ import annotations

from typing import NamedTuple

from .._validation import count, real, seconds

__all__ = ["Settings"]


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
        threshold = count("num_shorts_to_trip", num_shorts_to_trip)
        sleep = seconds("sleep_time_after_trip", sleep_time_after_trip)
        cap = seconds("max_sleep_time", max_sleep_time)

        factor = real("backoff_factor", backoff_factor)
        if factor < 1.0:
            raise ValueError(
                f"backoff_factor must be >= 1.0 (1.0 means no backoff), got {backoff_factor!r}"
            )

        fraction = real("jitter", jitter)
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
        return cls(threshold, sleep, factor, cap, fraction)
