"""Property tests: the pure transitions and the public classes against a reference model.

The reference model below is written from SPEC section 1, not from the implementation: it is
deliberately plain, mutable Python with one method per documented operation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits import Settings
from suitkaise.circuits import _transitions as transitions
from suitkaise.circuits._waiting import jittered
from suitkaise.circuits.testing import recorded_sleeps

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- the reference model -------------------------------------------------------------------


@dataclass
class Model:
    """SPEC section 1, transcribed. ``breaking`` selects BreakingCircuit semantics."""

    breaking: bool
    threshold: int
    first_sleep: float
    factor: float
    cap: float
    times_shorted: int = 0
    total_trips: int = 0
    current_sleep_time: float = field(init=False)
    broken: bool = False

    def __post_init__(self) -> None:
        self.current_sleep_time = self.first_sleep

    def _advance_backoff(self) -> None:
        # "With backoff_factor == 1 the cap is irrelevant" (the page's rate limiter).
        if self.factor != 1.0:
            self.current_sleep_time = min(self.current_sleep_time * self.factor, self.cap)

    def _base(self, custom_sleep: float | None) -> float:
        return self.current_sleep_time if custom_sleep is None else custom_sleep

    def short(self, custom_sleep: float | None) -> tuple[object, float | None]:
        """Returns (the public method's return value, the base sleep or None)."""
        self.times_shorted += 1
        if not self.breaking:
            if self.times_shorted >= self.threshold:
                return self.trip(custom_sleep)
            return False, None
        if not self.broken and self.times_shorted >= self.threshold:
            self.broken = True
            self.total_trips += 1
            return None, self._base(custom_sleep)
        return None, None

    def trip(self, custom_sleep: float | None) -> tuple[object, float | None]:
        if not self.breaking:
            base = self._base(custom_sleep)
            self.times_shorted = 0
            self.total_trips += 1
            self._advance_backoff()
            return True, base
        if self.broken:
            return None, None
        self.broken = True
        self.total_trips += 1
        return None, self._base(custom_sleep)

    def reset(self) -> None:
        assert self.breaking
        if self.broken:
            self._advance_backoff()
        self.broken = False
        self.times_shorted = 0

    def reset_backoff(self) -> None:
        self.current_sleep_time = self.first_sleep

    def state(self) -> tuple[int, int, float, bool]:
        return (self.times_shorted, self.total_trips, self.current_sleep_time, self.broken)


# -- strategies ----------------------------------------------------------------------------

seconds_values = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False, allow_subnormal=False)
jitters = st.one_of(
    st.just(0.0),
    st.just(1.0),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_subnormal=False),
)
custom_sleeps = st.one_of(st.none(), seconds_values)


@st.composite
def circuit_settings(draw: st.DrawFn) -> Settings:
    threshold = draw(st.integers(min_value=1, max_value=6))
    first = draw(st.one_of(st.just(0.0), st.just(1.0), seconds_values))
    factor = draw(
        st.one_of(
            st.just(1.0),
            st.just(2.0),
            st.floats(min_value=1.0, max_value=10.0, allow_nan=False, allow_subnormal=False),
        )
    )
    if factor > 1.0:
        cap = draw(st.floats(min_value=first, max_value=5000.0, allow_nan=False))
    else:
        cap = draw(seconds_values)  # may be below the first sleep: irrelevant with factor 1
    jitter = draw(jitters)
    return Settings.create(
        threshold,
        sleep_time_after_trip=first,
        backoff_factor=factor,
        max_sleep_time=cap,
        jitter=jitter,
    )


def model_for(breaking: bool, config: Settings) -> Model:
    return Model(
        breaking=breaking,
        threshold=config.num_shorts_to_trip,
        first_sleep=config.sleep_time_after_trip,
        factor=config.backoff_factor,
        cap=config.max_sleep_time,
    )


CIRCUIT_OPS = ["short", "trip", "reset_backoff"]
BREAKER_OPS = ["short", "trip", "reset", "reset_backoff"]


def operations(names: list[str]) -> st.SearchStrategy[list[tuple[str, float | None]]]:
    return st.lists(st.tuples(st.sampled_from(names), custom_sleeps), max_size=60)


# -- the pure transitions against the model ------------------------------------------------

PURE = {
    (False, "short"): transitions.circuit_short,
    (False, "trip"): transitions.circuit_trip,
    (False, "reset_backoff"): transitions.reset_backoff,
    (True, "short"): transitions.breaker_short,
    (True, "trip"): transitions.breaker_trip,
    (True, "reset"): transitions.breaker_reset,
    (True, "reset_backoff"): transitions.reset_backoff,
}


def apply_to_model(model: Model, op: str, custom: float | None) -> float | None:
    if op == "short":
        return model.short(custom)[1]
    if op == "trip":
        return model.trip(custom)[1]
    if op == "reset":
        model.reset()
    else:
        model.reset_backoff()
    return None


@pytest.mark.parametrize("breaking", [False, True], ids=["Circuit", "BreakingCircuit"])
@PROPERTY_SETTINGS
@given(config=circuit_settings(), data=st.data())
def test_pure_transitions_follow_the_model(breaking, config, data):
    ops = data.draw(operations(BREAKER_OPS if breaking else CIRCUIT_OPS))
    model = model_for(breaking, config)
    state = transitions.initial_state(config)
    assert state == model.state()
    for op, custom in ops:
        function = PURE[(breaking, op)]
        before = state
        snapshot = tuple(before)
        new_state, sleep = function(config, state, custom)
        # Pure: same input, same output; the input is left as it was.
        assert function(config, before, custom) == (new_state, sleep)
        assert before == snapshot
        expected_sleep = apply_to_model(model, op, custom)
        assert sleep == expected_sleep
        assert new_state == model.state()
        assert isinstance(new_state, tuple)
        assert len(new_state) == 4
        state = new_state


@st.composite
def reachable_states(draw: st.DrawFn, config: Settings, breaking: bool):
    broken = breaking and draw(st.booleans())
    if broken:
        shorts = draw(st.integers(min_value=0, max_value=100))
    else:
        shorts = draw(st.integers(min_value=0, max_value=config.num_shorts_to_trip - 1))
    trips = draw(st.integers(min_value=0, max_value=10**6))
    if config.backoff_factor > 1.0:
        sleep = draw(
            st.floats(
                min_value=config.sleep_time_after_trip,
                max_value=config.max_sleep_time,
                allow_nan=False,
            )
        )
    else:
        sleep = config.sleep_time_after_trip
    return (shorts, trips, sleep, broken)


@pytest.mark.parametrize("breaking", [False, True], ids=["Circuit", "BreakingCircuit"])
@PROPERTY_SETTINGS
@given(config=circuit_settings(), data=st.data())
def test_each_pure_transition_from_any_reachable_state(breaking, config, data):
    state = data.draw(reachable_states(config, breaking))
    op = data.draw(st.sampled_from(BREAKER_OPS if breaking else CIRCUIT_OPS))
    custom = data.draw(custom_sleeps)
    model = model_for(breaking, config)
    model.times_shorted, model.total_trips, model.current_sleep_time, model.broken = state
    expected_sleep = apply_to_model(model, op, custom)
    function = PURE[(breaking, op)]
    result = function(config, state, custom)
    assert result == (model.state(), expected_sleep)
    assert function(config, state, custom) == result


@PROPERTY_SETTINGS
@given(config=circuit_settings())
def test_initial_state(config):
    assert transitions.initial_state(config) == (0, 0, config.sleep_time_after_trip, False)


# -- the public classes against the model --------------------------------------------------


def check_recorded(new: list[float], base: float | None, custom: float | None, jitter: float):
    """The sleeps one call recorded, given the model's base sleep for that call."""
    if base is None or base == 0.0:
        assert new == []
        return
    if custom is not None or jitter == 0.0:
        assert new == [base]
        return
    low, high = base * (1.0 - jitter), base * (1.0 + jitter)
    if low == 0.0:
        assert len(new) <= 1  # a draw of exactly 0 would not sleep
    else:
        assert len(new) == 1
    for slept in new:
        assert low <= slept <= high


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
@PROPERTY_SETTINGS
@given(config=circuit_settings(), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_public_classes_follow_the_model(cls, config, data, seed):
    breaking = cls is BreakingCircuit
    ops = data.draw(operations(BREAKER_OPS if breaking else CIRCUIT_OPS))
    circuit = cls(
        config.num_shorts_to_trip,
        sleep_time_after_trip=config.sleep_time_after_trip,
        backoff_factor=config.backoff_factor,
        max_sleep_time=config.max_sleep_time,
        jitter=config.jitter,
        rng=random.Random(seed),
    )
    model = model_for(breaking, config)
    with recorded_sleeps() as log:
        for op, custom in ops:
            seen = len(log)
            if op in ("short", "trip"):
                returned = getattr(circuit, op)(custom_sleep=custom)
                expected_return, base = getattr(model, op)(custom)
                assert returned is expected_return
            else:
                assert getattr(circuit, op)() is None
                getattr(model, op)()
                base = None
            check_recorded(log.durations[seen:], base, custom, config.jitter)
            assert circuit.times_shorted == model.times_shorted
            assert circuit.total_trips == model.total_trips
            assert circuit.current_sleep_time == model.current_sleep_time
            if breaking:
                assert circuit.broken is model.broken


# -- backoff -------------------------------------------------------------------------------

backoff_cases = st.tuples(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_subnormal=False),
    st.floats(min_value=1.0, max_value=4.0, allow_nan=False, allow_subnormal=False),
    st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False, allow_subnormal=False),
    st.integers(min_value=0, max_value=40),
).filter(lambda case: case[1] == 1.0 or case[0] <= case[2])


def expected_backoff(first: float, factor: float, cap: float, k: int) -> float:
    if factor == 1.0:
        return first  # the cap is irrelevant with factor 1
    return min(first * factor**k, cap)


def assert_backoff(actual: float, expected: float) -> None:
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=0.0), (actual, expected)


@PROPERTY_SETTINGS
@given(case=backoff_cases)
def test_circuit_backoff_after_k_trips(case):
    first, factor, cap, k = case
    circuit = Circuit(1, sleep_time_after_trip=first, backoff_factor=factor, max_sleep_time=cap)
    with recorded_sleeps() as log:
        for _ in range(k):
            circuit.trip()
    assert_backoff(circuit.current_sleep_time, expected_backoff(first, factor, cap, k))
    expected_sleeps = [expected_backoff(first, factor, cap, i) for i in range(k)]
    expected_sleeps = [s for s in expected_sleeps if s > 0.0]
    assert len(log.durations) == len(expected_sleeps)
    for actual, expected in zip(log.durations, expected_sleeps, strict=True):
        assert_backoff(actual, expected)
    assert circuit.current_sleep_time <= max(cap, first)
    if factor > 1.0 and first > 0.0 and first * factor**k >= cap * (1 + 1e-9):
        assert circuit.current_sleep_time == cap  # once capped, exactly the cap


@PROPERTY_SETTINGS
@given(case=backoff_cases)
def test_breaker_backoff_after_k_ended_breaks(case):
    first, factor, cap, k = case
    breaker = BreakingCircuit(
        2, sleep_time_after_trip=first, backoff_factor=factor, max_sleep_time=cap
    )
    with recorded_sleeps():
        for _ in range(k):
            breaker.short()
            breaker.short()
            breaker.short()
            breaker.reset()
            breaker.reset()  # a defensive extra reset must not advance it again
    assert breaker.total_trips == k
    assert_backoff(breaker.current_sleep_time, expected_backoff(first, factor, cap, k))


@PROPERTY_SETTINGS
@given(case=backoff_cases)
def test_reset_backoff_returns_to_first_sleep(case):
    first, factor, cap, k = case
    circuit = Circuit(2, sleep_time_after_trip=first, backoff_factor=factor, max_sleep_time=cap)
    with recorded_sleeps():
        for _ in range(k):
            circuit.trip()
        circuit.short()
    circuit.reset_backoff()
    assert circuit.current_sleep_time == first
    assert circuit.times_shorted == 1
    assert circuit.total_trips == k


# -- jitter bounds ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    base=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    jitter=jitters,
    seed=st.integers(0, 2**32 - 1),
)
def test_jittered_stays_in_bounds(base, jitter, seed):
    rng = random.Random(seed)
    for _ in range(20):
        value = jittered(base, jitter, rng)
        assert base * (1.0 - jitter) <= value <= base * (1.0 + jitter)


class _Extreme:
    """A random source that returns the extremes of [0, 1)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@PROPERTY_SETTINGS
@given(
    base=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    jitter=jitters,
    value=st.sampled_from([0.0, 0.5, math.nextafter(1.0, 0.0)]),
)
def test_jittered_stays_in_bounds_at_the_extremes(base, jitter, value):
    result = jittered(base, jitter, _Extreme(value))
    assert base * (1.0 - jitter) <= result <= base * (1.0 + jitter)


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
@PROPERTY_SETTINGS
@given(
    base=st.floats(min_value=0.001, max_value=1e4, allow_nan=False),
    jitter=st.floats(min_value=0.0, max_value=0.999, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_public_jittered_sleeps_stay_in_bounds_and_are_reproducible(cls, base, jitter, seed):
    def run() -> list[float]:
        circuit = cls(1, sleep_time_after_trip=base, jitter=jitter, rng=random.Random(seed))
        with recorded_sleeps() as log:
            for _ in range(5):
                circuit.short()
                if isinstance(circuit, BreakingCircuit):
                    circuit.reset()
        return log.durations

    first = run()
    assert len(first) == 5
    for slept in first:
        assert base * (1.0 - jitter) <= slept <= base * (1.0 + jitter)
    assert run() == first


@PROPERTY_SETTINGS
@given(
    base=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    custom=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
    jitter=jitters,
    cap=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
)
def test_custom_sleep_is_slept_exactly(base, custom, jitter, cap):
    circuit = Circuit(1, sleep_time_after_trip=base, jitter=jitter, max_sleep_time=cap)
    with recorded_sleeps() as log:
        circuit.short(custom_sleep=custom)
        circuit.trip(custom_sleep=custom)
    assert log.durations == [custom, custom]
