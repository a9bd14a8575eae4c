"""Constructor and ``custom_sleep`` validation of Circuit and BreakingCircuit (SPEC section 1).

Every bad value must raise at construction with a message that names the parameter and the
value received; every allowed value must construct and be readable back, normalised to seconds.
"""

from __future__ import annotations

import math
import random
import re
from datetime import timedelta
from fractions import Fraction

import pytest

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps

CLASSES = [Circuit, BreakingCircuit]


@pytest.fixture(params=CLASSES, ids=lambda cls: cls.__name__)
def cls(request: pytest.FixtureRequest) -> type[Circuit] | type[BreakingCircuit]:
    return request.param


def _names(parameter: str, value: object) -> str:
    """A regex matching a message that names ``parameter`` and then shows ``value``."""
    return re.escape(parameter) + r".*" + re.escape(repr(value))


# -- num_shorts_to_trip --------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 7, 10**9])
def test_num_shorts_to_trip_accepts_positive_ints(cls, value):
    circuit = cls(value)
    assert circuit.num_shorts_to_trip == value
    assert type(circuit.num_shorts_to_trip) is int


def test_num_shorts_to_trip_accepts_keyword(cls):
    # The docs page always writes it as a keyword: Circuit(num_shorts_to_trip=5, ...).
    circuit = cls(num_shorts_to_trip=5, sleep_time_after_trip=1.0)
    assert circuit.num_shorts_to_trip == 5
    assert circuit.sleep_time_after_trip == 1.0


@pytest.mark.parametrize("value", [2.5, 3.0, "3", None, True, False, Fraction(3, 1), [3]])
def test_num_shorts_to_trip_non_int_is_type_error(cls, value):
    with pytest.raises(TypeError, match=_names("num_shorts_to_trip", value)):
        cls(value)


@pytest.mark.parametrize("value", [0, -1, -100])
def test_num_shorts_to_trip_below_one_is_value_error(cls, value):
    with pytest.raises(ValueError, match=_names("num_shorts_to_trip", value)):
        cls(value)


def test_num_shorts_to_trip_is_required(cls):
    with pytest.raises(TypeError):
        cls()


# -- keyword-only arguments ----------------------------------------------------------------


@pytest.mark.parametrize("args", [(3, 1.0), (3, 1.0, 2.0), (3, 1.0, 2.0, 30.0, 0.1)])
def test_arguments_after_the_first_are_keyword_only(cls, args):
    with pytest.raises(TypeError):
        cls(*args)


def test_unknown_keyword_is_type_error(cls):
    with pytest.raises(TypeError):
        cls(3, sleep_time=1.0)


# -- sleep_time_after_trip and max_sleep_time ----------------------------------------------

SECONDS_PARAMETERS = ["sleep_time_after_trip", "max_sleep_time"]


@pytest.mark.parametrize("parameter", SECONDS_PARAMETERS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (0.0, 0.0),
        (2, 2.0),
        (2.5, 2.5),
        (Fraction(1, 4), 0.25),
        (timedelta(0), 0.0),
        (timedelta(seconds=3), 3.0),
        (timedelta(milliseconds=1500), 1.5),
        (timedelta(minutes=1), 60.0),
    ],
)
def test_seconds_parameters_accept_reals_and_timedeltas(cls, parameter, value, expected):
    circuit = cls(1, **{parameter: value})
    read_back = getattr(circuit, parameter)
    assert read_back == expected
    assert type(read_back) is float


@pytest.mark.parametrize("parameter", SECONDS_PARAMETERS)
@pytest.mark.parametrize("value", ["1", "abc", None, True, False, [1.0], 1j, object()])
def test_seconds_parameters_wrong_type_is_type_error(cls, parameter, value):
    with pytest.raises(TypeError, match=_names(parameter, value)):
        cls(1, **{parameter: value})


@pytest.mark.parametrize("parameter", SECONDS_PARAMETERS)
@pytest.mark.parametrize(
    "value",
    [-1, -0.001, -1e300, math.nan, math.inf, -math.inf, timedelta(seconds=-1)],
)
def test_seconds_parameters_negative_or_not_finite_is_value_error(cls, parameter, value):
    with pytest.raises(ValueError, match=_names(parameter, value)):
        cls(1, **{parameter: value})


def test_sleep_time_after_trip_becomes_the_first_current_sleep_time(cls):
    circuit = cls(1, sleep_time_after_trip=timedelta(seconds=2))
    assert circuit.current_sleep_time == 2.0


def test_defaults(cls):
    circuit = cls(3)
    assert circuit.sleep_time_after_trip == 0.0
    assert circuit.backoff_factor == 1.0
    assert circuit.max_sleep_time == 10.0
    assert circuit.jitter == 0.0
    assert circuit.current_sleep_time == 0.0


# -- backoff_factor ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 1.0, 1.5, 2, 10.0, Fraction(3, 2)])
def test_backoff_factor_accepts_reals_at_least_one(cls, value):
    circuit = cls(1, backoff_factor=value, sleep_time_after_trip=1.0)
    assert circuit.backoff_factor == float(value)
    assert type(circuit.backoff_factor) is float


@pytest.mark.parametrize("value", [0.999, 0, 0.5, -2.0, math.nan, math.inf, -math.inf])
def test_backoff_factor_out_of_range_is_value_error(cls, value):
    with pytest.raises(ValueError, match=_names("backoff_factor", value)):
        cls(1, backoff_factor=value)


@pytest.mark.parametrize("value", ["2", None, True, timedelta(seconds=2)])
def test_backoff_factor_wrong_type_is_type_error(cls, value):
    # SPEC's table lists ValueError for range problems; a value that is not a number at all
    # is a TypeError, as for every other parameter.
    with pytest.raises(TypeError, match=_names("backoff_factor", value)):
        cls(1, backoff_factor=value)


# -- jitter --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 0.5, 1, 1.0, Fraction(1, 10)])
def test_jitter_accepts_fractions_in_unit_interval(cls, value):
    circuit = cls(1, jitter=value)
    assert circuit.jitter == float(value)
    assert type(circuit.jitter) is float


@pytest.mark.parametrize("value", [-0.1, -1, 1.0001, 100.5, 1000, math.nan, math.inf])
def test_jitter_out_of_range_is_value_error(cls, value):
    with pytest.raises(ValueError, match=_names("jitter", value)):
        cls(1, jitter=value)


@pytest.mark.parametrize(
    ("value", "suggestion"),
    [(20, "0.2"), (20.0, "0.2"), (10, "0.1"), (50, "0.5"), (5, "0.05"), (1.5, "0.015")],
)
def test_jitter_percentage_gets_a_did_you_mean_hint(cls, value, suggestion):
    with pytest.raises(ValueError) as excinfo:
        cls(1, jitter=value)
    message = str(excinfo.value)
    assert "jitter" in message
    assert repr(value) in message
    assert f"did you mean {suggestion}?" in message


def test_jitter_of_100_suggests_one(cls):
    with pytest.raises(ValueError, match=r"did you mean 1(\.0)?\?"):
        cls(1, jitter=100)


@pytest.mark.parametrize("value", [-5, -20, 100.5, 150, 1000, math.inf])
def test_jitter_outside_percent_range_gets_no_hint(cls, value):
    with pytest.raises(ValueError) as excinfo:
        cls(1, jitter=value)
    assert "did you mean" not in str(excinfo.value)


@pytest.mark.parametrize("value", ["0.1", None, True, False, timedelta(seconds=1)])
def test_jitter_wrong_type_is_type_error(cls, value):
    with pytest.raises(TypeError, match=_names("jitter", value)):
        cls(1, jitter=value)


# -- the combination rule ------------------------------------------------------------------


def test_rate_limiter_from_the_page_is_valid(cls):
    # backoff_factor == 1: the (default, 10 s) cap is irrelevant.
    circuit = cls(100, sleep_time_after_trip=60.0)
    assert circuit.sleep_time_after_trip == 60.0
    assert circuit.max_sleep_time == 10.0
    assert circuit.current_sleep_time == 60.0


@pytest.mark.parametrize(
    ("sleep", "cap"),
    [(60.0, 10.0), (10.5, 10.0), (timedelta(minutes=2), timedelta(minutes=1)), (1.0, 0.0)],
)
def test_backoff_requires_sleep_not_above_cap(cls, sleep, cap):
    with pytest.raises(ValueError, match=r"sleep_time_after_trip.*max_sleep_time"):
        cls(1, sleep_time_after_trip=sleep, backoff_factor=2.0, max_sleep_time=cap)


def test_combination_message_names_both_values_and_the_factor(cls):
    with pytest.raises(ValueError) as excinfo:
        cls(1, sleep_time_after_trip=60.0, backoff_factor=1.5)
    message = str(excinfo.value)
    assert "sleep_time_after_trip" in message
    assert "max_sleep_time" in message
    assert "backoff_factor" in message
    assert "60" in message
    assert "10" in message
    assert "1.5" in message


def test_combination_message_shows_exact_values(cls):
    # The values must be shown as received: "10s must not exceed 10s" would contradict itself.
    with pytest.raises(ValueError) as excinfo:
        cls(1, sleep_time_after_trip=10.0000001, backoff_factor=2.0, max_sleep_time=10.0)
    assert "10.0000001" in str(excinfo.value)


@pytest.mark.parametrize(
    ("sleep", "cap", "factor"),
    [
        (10.0, 10.0, 2.0),  # equal is fine
        (0.0, 0.0, 2.0),
        (1.0, 30.0, 2.0),
        (timedelta(seconds=5), 5.0, 3.0),
        (60.0, 10.0, 1.0),  # factor 1: cap irrelevant
        (60.0, 0.0, 1),
    ],
)
def test_valid_combinations(cls, sleep, cap, factor):
    circuit = cls(1, sleep_time_after_trip=sleep, max_sleep_time=cap, backoff_factor=factor)
    assert circuit.backoff_factor == float(factor)


# -- rng -----------------------------------------------------------------------------------


class _NotCallableRandom:
    random = 0.5


@pytest.mark.parametrize("rng", [object(), 42, "random", _NotCallableRandom()])
def test_rng_without_random_method_is_type_error(cls, rng):
    with pytest.raises(TypeError, match="rng"):
        cls(1, rng=rng)


@pytest.mark.parametrize("rng", [None, random.Random(1), random, random.SystemRandom()])
def test_rng_with_random_method_is_accepted(cls, rng):
    circuit = cls(1, sleep_time_after_trip=1.0, jitter=0.5, rng=rng)
    with recorded_sleeps() as sleeps:
        circuit.short()
    assert len(sleeps) == 1
    assert 0.5 <= sleeps.durations[0] <= 1.5


# -- custom_sleep on short() and trip() ----------------------------------------------------

OPERATIONS = ["short", "trip"]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, timedelta(seconds=-3)])
def test_custom_sleep_negative_or_not_finite_is_value_error(cls, operation, value):
    circuit = cls(1)
    with pytest.raises(ValueError, match=_names("custom_sleep", value)):
        getattr(circuit, operation)(custom_sleep=value)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("value", ["abc", "1.0", True, [1.0], object()])
def test_custom_sleep_wrong_type_is_type_error(cls, operation, value):
    circuit = cls(1)
    with pytest.raises(TypeError, match=_names("custom_sleep", value)):
        getattr(circuit, operation)(custom_sleep=value)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_custom_sleep_positional_is_accepted(cls, operation):
    circuit = cls(1)
    with recorded_sleeps() as sleeps:
        getattr(circuit, operation)(2.5)
    assert sleeps.durations == [2.5]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(seconds=2), 2.0),
        (timedelta(milliseconds=250), 0.25),
        (3, 3.0),
        (Fraction(1, 2), 0.5),
    ],
)
def test_custom_sleep_accepts_timedelta_and_reals(cls, operation, value, expected):
    circuit = cls(1)
    with recorded_sleeps() as sleeps:
        getattr(circuit, operation)(custom_sleep=value)
    assert sleeps.durations == [expected]
    assert type(sleeps.durations[0]) is float


@pytest.mark.parametrize("operation", OPERATIONS)
def test_bad_custom_sleep_changes_no_state(cls, operation):
    circuit = cls(1, sleep_time_after_trip=1.0, backoff_factor=2.0)
    with recorded_sleeps() as sleeps, pytest.raises(ValueError):
        getattr(circuit, operation)(custom_sleep=-1)
    assert sleeps.durations == []
    assert circuit.times_shorted == 0
    assert circuit.total_trips == 0
    assert circuit.current_sleep_time == 1.0


def test_bad_custom_sleep_on_a_non_tripping_short_is_still_refused(cls):
    circuit = cls(5)
    with pytest.raises(TypeError):
        circuit.short(custom_sleep="abc")
    with pytest.raises(ValueError):
        circuit.short(custom_sleep=-2)
    assert circuit.times_shorted == 0


# -- durations that validate must also be sleepable ------------------------------------------


@pytest.mark.parametrize("parameter", SECONDS_PARAMETERS)
@pytest.mark.parametrize("value", [1e300, 1.0000001e9, 9.3e9, timedelta(days=10**6)])
def test_seconds_parameters_longer_than_anything_can_sleep_are_value_errors(
    cls, parameter, value
):
    # time.sleep, threading waits and setitimer overflow a little above 9.2e9 s; the limit
    # leaves room for the jitter to double a sleep.
    with pytest.raises(ValueError, match=_names(parameter, value) + r".*|at most 1e\+09"):
        cls(1, **{parameter: value})


BEYOND_ANY_FLOAT = [10**400, -(10**400), Fraction(10**400, 3)]


@pytest.mark.parametrize("value", BEYOND_ANY_FLOAT, ids=["10**400", "-10**400", "Fraction"])
def test_numbers_beyond_any_float_are_value_errors_naming_the_argument(cls, value):
    """float() of such an int overflows (OverflowError); every argument that is a duration or
    a real says "out of range" like any other bad value: a ValueError naming it."""
    for parameter in [*SECONDS_PARAMETERS, "backoff_factor", "jitter"]:
        with pytest.raises(ValueError, match=re.escape(parameter) + ".*beyond any float"):
            cls(1, **{parameter: value})
    circuit = cls(1)
    with pytest.raises(ValueError, match=r"custom_sleep.*beyond any float"):
        circuit.short(custom_sleep=value)
    from suitkaise.circuits.redis import RedisStore

    for parameter in ("timeout", "retry_interval"):
        with pytest.raises(ValueError, match=re.escape(parameter) + ".*beyond any float"):
            RedisStore("redis://127.0.0.1:6379/0", "x", **{parameter: value})


def test_the_longest_accepted_sleep_can_be_slept_after_the_widest_jitter(cls):
    from suitkaise._validation import MAX_SECONDS

    circuit = cls(1, sleep_time_after_trip=MAX_SECONDS, max_sleep_time=MAX_SECONDS, jitter=1.0)
    assert circuit.current_sleep_time == MAX_SECONDS
    with recorded_sleeps(seed=3) as sleeps:
        circuit.short()
    (slept,) = sleeps.durations
    assert 0 <= slept <= 2 * MAX_SECONDS
    # What the recorder stood in for must accept it: a zero-length wait with the same bound.
    import threading

    assert threading.Event().wait(0) is False
    assert 2 * MAX_SECONDS < threading.TIMEOUT_MAX


@pytest.mark.parametrize("operation", ["short", "trip"])
@pytest.mark.parametrize("value", [1e300, 2e9, timedelta(days=10**6)])
def test_unsleepable_custom_sleep_is_refused_before_the_state_changes(cls, operation, value):
    circuit = cls(1)
    before = (circuit.times_shorted, circuit.total_trips, circuit.current_sleep_time)
    with recorded_sleeps() as sleeps, pytest.raises(ValueError, match="custom_sleep"):
        getattr(circuit, operation)(custom_sleep=value)
    assert (circuit.times_shorted, circuit.total_trips, circuit.current_sleep_time) == before
    assert getattr(circuit, "broken", False) is False
    assert sleeps.durations == []
