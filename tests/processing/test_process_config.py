"""``process_config``: defaults, validation on assignment, per-instance state, pickling.

No processes are started here: every check happens in the parent, where users set the config.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import cloudpickle
import pytest

from suitkaise.processing import ProcessConfig, Skprocess, Timeouts

SECTIONS = ("prerun", "run", "postrun", "onfinish", "result", "error")


class Plain(Skprocess):
    def __run__(self) -> None:
        pass


class Configured(Skprocess):
    def __init__(self, runs: Any = 3) -> None:  # no super().__init__()
        self.process_config.runs = runs
        self.process_config.join_in = 0.25
        self.process_config.lives = 2
        self.process_config.timeouts.run = 0.125

    def __run__(self) -> None:
        pass


def test_defaults() -> None:
    config = Plain().process_config
    assert isinstance(config, ProcessConfig)
    assert config.runs is None
    assert config.join_in is None
    assert config.lives == 1
    assert isinstance(config.timeouts, Timeouts)
    for section in SECTIONS:
        assert getattr(config.timeouts, section) is None


def test_set_in_init_without_super() -> None:
    config = Configured().process_config
    assert config.runs == 3
    assert config.join_in == 0.25
    assert config.lives == 2
    assert config.timeouts.run == 0.125
    assert config.timeouts.prerun is None


def test_each_instance_has_its_own_config() -> None:
    first, second = Plain(), Plain()
    first.process_config.runs = 5
    first.process_config.timeouts.run = 1.5
    assert second.process_config.runs is None
    assert second.process_config.timeouts.run is None
    assert first.process_config is first.process_config  # stable, not rebuilt per access


def test_a_bad_value_fails_in_init() -> None:
    with pytest.raises(ValueError, match="runs"):
        Configured(runs=0)
    with pytest.raises(TypeError, match="runs"):
        Configured(runs="3")


@pytest.mark.parametrize("value", [None, 1, 2, 10**6])
def test_runs_accepts(value: int | None) -> None:
    config = ProcessConfig()
    config.runs = value
    assert config.runs == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1.5, TypeError),
        (2.0, TypeError),
        (True, TypeError),
        ("3", TypeError),
    ],
)
def test_runs_rejects(value: Any, error: type[Exception]) -> None:
    config = ProcessConfig()
    with pytest.raises(error, match=r"process_config\.runs"):
        config.runs = value
    assert config.runs is None  # unchanged


@pytest.mark.parametrize("value", [1, 3, 100])
def test_lives_accepts(value: int) -> None:
    config = ProcessConfig()
    config.lives = value
    assert config.lives == value


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-2, ValueError), (None, TypeError), (2.0, TypeError), (True, TypeError)],
)
def test_lives_rejects(value: Any, error: type[Exception]) -> None:
    config = ProcessConfig()
    with pytest.raises(error, match=r"process_config\.lives"):
        config.lives = value
    assert config.lives == 1


@pytest.mark.parametrize(("value", "stored"), [(None, None), (0.05, 0.05), (2, 2.0), (0.5, 0.5)])
def test_join_in_accepts_seconds(value: Any, stored: float | None) -> None:
    config = ProcessConfig()
    config.join_in = value
    assert config.join_in == stored
    if stored is not None:
        assert type(config.join_in) is float


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-0.5, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("1", TypeError),
    ],
)
def test_join_in_rejects(value: Any, error: type[Exception]) -> None:
    config = ProcessConfig()
    with pytest.raises(error, match="join_in"):
        config.join_in = value
    assert config.join_in is None


@pytest.mark.parametrize("section", SECTIONS)
def test_timeouts_keep_sub_second_values(section: str) -> None:
    timeouts = ProcessConfig().timeouts
    setattr(timeouts, section, 0.2)
    assert getattr(timeouts, section) == 0.2
    setattr(timeouts, section, 3)
    assert getattr(timeouts, section) == 3.0
    assert type(getattr(timeouts, section)) is float
    setattr(timeouts, section, None)
    assert getattr(timeouts, section) is None


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        (False, TypeError),
        ("0.5", TypeError),
    ],
)
def test_timeouts_reject(section: str, value: Any, error: type[Exception]) -> None:
    timeouts = ProcessConfig().timeouts
    with pytest.raises(error, match=f"timeouts.{section}"):
        setattr(timeouts, section, value)
    assert getattr(timeouts, section) is None


def test_unknown_names_are_rejected() -> None:
    config = ProcessConfig()
    with pytest.raises(AttributeError, match="runz"):
        config.runz = 3  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="execute"):
        config.timeouts.execute = 1.0  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="timeouts"):
        config.timeouts = 5  # type: ignore[assignment]
    replacement = Timeouts()
    replacement.run = 0.5
    config.timeouts = replacement
    assert config.timeouts.run == 0.5


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_config_travels_intact(dumps: Any) -> None:
    original = Configured().process_config
    copy = pickle.loads(dumps(original))
    assert (copy.runs, copy.join_in, copy.lives) == (3, 0.25, 2)
    assert copy.timeouts.run == 0.125
    assert copy.timeouts.result is None
    with pytest.raises(ValueError):
        copy.lives = 0  # still validated after the trip
    assert "runs=3" in repr(copy)
    assert "run=0.125" in repr(copy.timeouts)


def test_config_travels_with_the_object() -> None:
    copy = pickle.loads(cloudpickle.dumps(Configured()))
    assert copy.process_config.runs == 3
    assert copy.process_config.timeouts.run == 0.125


@pytest.mark.parametrize("section", SECTIONS)
def test_timeouts_accept_a_timedelta(section: str) -> None:
    from datetime import timedelta

    timeouts = ProcessConfig().timeouts
    setattr(timeouts, section, timedelta(milliseconds=250))
    assert getattr(timeouts, section) == 0.25


def test_join_in_accepts_a_timedelta() -> None:
    from datetime import timedelta

    config = ProcessConfig()
    config.join_in = timedelta(seconds=90)
    assert config.join_in == 90.0


@pytest.mark.parametrize("value", [1e300, 1e10])
def test_durations_that_cannot_be_timed_are_refused(value: float) -> None:
    # setitimer (the section timer) overflows a little above 9.2e9 s.
    config = ProcessConfig()
    with pytest.raises(ValueError, match="at most"):
        config.join_in = value
    with pytest.raises(ValueError, match="at most"):
        config.timeouts.run = value
    assert config.join_in is None and config.timeouts.run is None
