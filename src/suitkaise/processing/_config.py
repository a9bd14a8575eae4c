"""``process_config``: how an Skprocess loops, retries and times out.

Every assignment is validated on the spot, so a bad value fails in ``__init__`` (where users
set it) rather than later in the child process.
"""

from __future__ import annotations

from typing import Any

from .._validation import count, optional_seconds

__all__ = ["ProcessConfig", "Timeouts"]

_SECTIONS = ("prerun", "run", "postrun", "onfinish", "result", "error")


class Timeouts:
    """Per-section time limits in seconds (floats; ``None`` = no limit, the default).

    Sections: ``prerun``, ``run``, ``postrun``, ``onfinish``, ``result``, ``error``. A section
    that runs longer raises ``ProcessTimeoutError`` (``ResultTimeoutError`` for ``result``)
    inside the child, which counts as that section's error. Limits are enforced with a real
    timer in the child's main thread, with sub-second precision.
    """

    __slots__ = _SECTIONS

    prerun: float | None
    run: float | None
    postrun: float | None
    onfinish: float | None
    result: float | None
    error: float | None

    def __init__(self) -> None:
        for section in _SECTIONS:
            object.__setattr__(self, section, None)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _SECTIONS:
            raise AttributeError(
                f"process_config.timeouts has no section {name!r}; sections: {', '.join(_SECTIONS)}"
            )
        object.__setattr__(self, name, optional_seconds(f"timeouts.{name}", value))

    def __getstate__(self) -> dict[str, float | None]:
        return {section: getattr(self, section) for section in _SECTIONS}

    def __setstate__(self, state: dict[str, float | None]) -> None:
        for section, value in state.items():
            object.__setattr__(self, section, value)

    def __repr__(self) -> str:
        inner = ", ".join(f"{s}={getattr(self, s)!r}" for s in _SECTIONS)
        return f"Timeouts({inner})"


class ProcessConfig:
    """How an Skprocess runs. Set it in ``__init__``: ``self.process_config.runs = 10``.

    Attributes:
        runs: iterations of prerun/run/postrun before finishing; ``None`` (default) loops
            until ``stop()`` or ``join_in``.
        join_in: seconds after the start of the loop at which it finishes (checked between
            iterations); ``None`` (default) = no limit.
        lives: attempts for the whole process (default 1). An error in prerun, run or
            postrun spends one and retries the same iteration, with the object's state kept;
            when none is left, ``__error__`` decides.
        timeouts: per-section limits (see :class:`Timeouts`).
    """

    __slots__ = ("join_in", "lives", "runs", "timeouts")

    runs: int | None
    join_in: float | None
    lives: int
    timeouts: Timeouts

    def __init__(self) -> None:
        object.__setattr__(self, "runs", None)
        object.__setattr__(self, "join_in", None)
        object.__setattr__(self, "lives", 1)
        object.__setattr__(self, "timeouts", Timeouts())

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "runs":
            value = None if value is None else count("process_config.runs", value)
        elif name == "lives":
            value = count("process_config.lives", value)
        elif name == "join_in":
            value = optional_seconds("process_config.join_in", value)
        elif name == "timeouts":
            if not isinstance(value, Timeouts):
                raise TypeError(
                    "process_config.timeouts is set per section, e.g. "
                    "process_config.timeouts.run = 2.5"
                )
        else:
            raise AttributeError(
                f"process_config has no setting {name!r}; settings: runs, join_in, lives, timeouts"
            )
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"ProcessConfig(runs={self.runs!r}, join_in={self.join_in!r}, "
            f"lives={self.lives!r}, timeouts={self.timeouts!r})"
        )
