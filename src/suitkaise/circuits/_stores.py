"""Where circuit state lives.

A store offers two things: apply a pure transition atomically (and report the sleep it
decided), and a cheap read of the current state. The in-process store below is the
default; the Share store (shared memory across processes) and the Redis store plug in
through the same two protocols.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ._settings import Settings
from ._transitions import State, Transition, initial_state

__all__ = ["CircuitStore", "LocalStore", "StoreFactory"]


@runtime_checkable
class CircuitStore(Protocol):
    """The state of one circuit, wherever it lives.

    ``apply`` runs ``transition(settings, state, custom_sleep)`` atomically with respect to
    every other ``apply`` on the same state (in any thread, process or machine that shares
    it), stores the new state and returns the transition's sleep decision: ``None`` for no
    trip, otherwise the base sleep in seconds. It must never sleep itself.

    ``apply_async`` is ``None`` for stores whose ``apply`` does no I/O (it is then called
    directly from async code); a store that talks to a server provides a coroutine
    function with the same meaning, so the event loop is never blocked.
    """

    @property
    def apply_async(
        self,
    ) -> Callable[[Transition, Settings, float | None], Awaitable[float | None]] | None: ...

    def apply(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None: ...

    def read(self) -> State:
        """The current state. Must be cheap: properties call it on every access."""
        ...

    def portable(self) -> CircuitStore:
        """The store a pickled or copied circuit carries.

        An in-process store returns an independent snapshot; a shared store returns a
        handle to the same shared state.
        """
        ...


class StoreFactory(Protocol):
    """What the ``store=`` argument of a circuit accepts (for example a ``RedisStore``)."""

    def open(self, kind: str, settings: Settings) -> CircuitStore:
        """Attach to (or create) the state of a circuit of class ``kind`` ("Circuit" or
        "BreakingCircuit") with these settings, and return its store."""
        ...


_live_stores: weakref.WeakSet[LocalStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a lock at fork time; that thread does not exist
    # in the child, so the lock would never be released. The state itself is consistent:
    # it is replaced by one attribute assignment, never mutated in place.
    for store in list(_live_stores):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LocalStore:
    """In-process state guarded by a ``threading.Lock``; the default store.

    The lock is held only to publish a new state (compare and swap): never during a
    transition, a sleep or user code. A plain ``Lock`` suffices: nothing re-enters it.
    """

    __slots__ = ("__weakref__", "_lock", "_state")

    apply_async = None

    def __init__(self, state: State) -> None:
        self._lock = threading.Lock()
        self._state = state
        _live_stores.add(self)

    @classmethod
    def fresh(cls, settings: Settings) -> LocalStore:
        """A store holding the initial state for ``settings``."""
        return cls(initial_state(settings))

    def apply(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        # Optimistic: run the pure transition outside the lock, then publish it only if
        # nobody else published first. The lock then covers no Python call, so the
        # interpreter never switches threads while it is held and threads do not convoy
        # behind a preempted holder. No ABA: every transition returns a new tuple or its
        # own input, and `current` keeps its tuple alive.
        current = self._state
        new, sleep = transition(settings, current, custom_sleep)
        with self._lock:
            if self._state is current:
                self._state = new
                return sleep
            # Lost the race: recompute under the lock, which guarantees progress.
            self._state, sleep = transition(settings, self._state, custom_sleep)
            return sleep

    def read(self) -> State:
        return self._state

    def portable(self) -> LocalStore:
        return LocalStore(self._state)

    def __reduce__(self) -> tuple[type[LocalStore], tuple[State]]:
        return (LocalStore, (self._state,))

    def __repr__(self) -> str:
        return f"LocalStore({self._state!r})"
