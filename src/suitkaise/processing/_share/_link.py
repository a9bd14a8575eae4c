"""A process's way to one Share: its connections to the coordinator, its cache of values,
and the calls that every Share object, proxy and value of that Share make.

One ``Link`` per Share and process, shared by every copy of the Share in the process (a
weak registry keyed by the Share's directory). Inside the coordinator's own process the
registry holds an ``InProcessLink`` instead, which applies requests directly, re-entrantly:
a shared object that holds a proxy, a circuit or the Share itself, and a method that uses
the Share while the coordinator runs it, work as they do anywhere else.

Every call is one request and one reply on the calling thread's own connection:

- the request carries an id, and the reply must carry the same id; a reply with an older id
  is the late answer of an interrupted call and is discarded;
- a connection that was interrupted in the middle of a call (a signal handler that raised,
  Ctrl-C, a section timeout) is out of step: it is closed, and the next call makes a new
  one; no call ever gets another call's reply;
- every wait is bounded: the call's time limit (``Share(timeout=...)``), and, every
  ``IDLE_SECONDS``, a look at the coordinator's heartbeat: a coordinator that is frozen
  (stopped by a signal, or a debugger) or dead fails the call within about
  ``STALE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing import AuthenticationError
from typing import TYPE_CHECKING, Any

from ..._compat import PatientConnection, answer_challenge, deliver_challenge
from .._errors import ShareError
from .._pickling import dumps
from . import _protocol as P
from ._directory import process_state
from ._memory import (
    COORDINATOR_WORD,
    CROWDED_WORD,
    GENERATION_WORD,
    HEARTBEAT_WORD,
    START_WORD,
    Segment,
    SharedCircuitStore,
    segment_at,
)
from ._proxies import SharedObject, wrap_value
from ._wire import IDLE_SECONDS, Wire

if TYPE_CHECKING:
    from ._coordinator import _Coordinator
    from ._share import Share

__all__ = [
    "DEFAULT_TIMEOUT",
    "STALE_SECONDS",
    "InProcessLink",
    "Link",
    "link_for",
    "register",
    "serve_here",
]

DEFAULT_TIMEOUT = 30.0
"""How long one call waits for the coordinator before it fails (seconds)."""

STALE_SECONDS = 1.5
"""A coordinator whose heartbeat is older than this is looked at: frozen or dead (seconds)."""

_NO_ARGUMENTS = pickle.dumps(((), {}), protocol=5)

_forks = 0  # bumped in a child after each fork: connections made before it are the parent's


def _describe(op: int, args: tuple[Any, ...]) -> str:
    """A request as the user wrote it, for error messages."""
    name = args[0] if args and isinstance(args[0], str) else ""
    if op == P.CALL:
        return f"share.{name}.{args[1]}()"
    if op == P.GETATTR:
        return f"reading share.{name}.{args[1]}"
    if op == P.SETATTR:
        return f"share.{name}.{args[1]} = ..."
    if op == P.INPLACE:
        return f"share.{name} {args[1][2:-2]}= ..."
    if op in (P.SET, P.SET_CIRCUIT):
        return f"share.{name} = ..."
    if op == P.DELETE:
        return f"del share.{name}"
    if op == P.GET:
        return f"reading share.{name}"
    if op == P.ITERATE:
        return f"iterating over share.{name}"
    return f"share.{P.OP_NAMES.get(op, op)}()"


def _view(kind: str, items: list[Any]) -> Any:
    # A mapping view cannot be pickled: it comes as a list, and is rebuilt here as a view of
    # a snapshot (len, iteration, `in`, and set operations for keys and items).
    if kind == "keys":
        return dict.fromkeys(items).keys()
    if kind == "items":
        try:
            return dict(items).items()
        except TypeError:
            return items
    return dict(enumerate(items)).values()


class _OutOfStep(Exception):
    pass


class _ServedHere(Exception):
    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link


class Running:
    """The owner's handle on the coordinator, apart from the link so that the link's
    finalizer can stop the coordinator without keeping the link alive."""

    def __init__(self, directory: str, owner: int) -> None:
        self.directory = directory
        self.owner = owner
        self.process: Any = None


class Link:
    """Everything a process needs to reach one Share; shared by its copies in the process."""

    def __init__(self, directory: str, authkey: bytes, owner: int, timeout: float) -> None:
        self.directory = directory
        self.address = os.path.join(directory, "coordinator.sock")
        self.memory_path = os.path.join(directory, "memory")
        self.authkey = authkey
        self.owner = owner
        self.timeout = timeout
        self.local = threading.local()
        # Every connection of this process to the Share: stop() wakes them, and they are
        # closed with the link.
        self.wires: weakref.WeakSet[Wire] = weakref.WeakSet()
        # (version, {name: value}): this process's cache, valid while the version word is.
        self.cached: tuple[int, dict[str, Any]] = (-1, {})
        self.running = Running(directory, owner)  # its process: in the owner only
        self.lifecycle = threading.RLock()  # start() and stop(), one at a time
        self.stopped = False
        self.snapshot: Any = None
        self.lost: dict[str, str] = {}  # what the last stop() could not keep
        self.segment: Segment = segment_at(self.memory_path)
        # Kept at hand: every `share.name` reads the version word and the heartbeat.
        self.words = self.segment.words
        self.doubles = self.segment.doubles
        weakref.finalize(self, _close_all, self.wires)

    # -- connections ------------------------------------------------------------------

    def connection(self) -> Wire:
        wire: Wire | None = getattr(self.local, "wire", None)
        if (
            wire is None
            or wire.busy
            or wire.generation != self.words[GENERATION_WORD]
            or wire.forks != _forks
        ):
            wire = self.reconnect(wire)
        return wire

    def reconnect(self, old: Wire | None) -> Wire:
        # `old` was inherited through fork, made before a restart, or interrupted mid-call.
        self.local.wire = None
        if old is not None:
            self.discard(old)
        own = _served_here.get(self.directory)
        if own is not None:
            raise _ServedHere(own())
        if self.stopped:
            raise ShareError("this Share was stopped; call share.start() to use it again")
        generation = self.words[GENERATION_WORD]  # before connecting: see adopt()
        return self.adopt(self.connect(), generation)

    def adopt(self, wire: Wire, generation: int) -> Wire:
        """Make ``wire`` this thread's connection, made for coordinator ``generation``."""
        wire.generation = generation
        wire.forks = _forks
        wire.watch = self.watch
        self.wires.add(wire)
        self.local.wire = wire
        return wire

    def discard(self, wire: Wire) -> None:
        self.wires.discard(wire)
        if getattr(self.local, "wire", None) is wire:
            self.local.wire = None
        with contextlib.suppress(OSError):
            wire.close()

    def connect(self) -> Wire:
        started = time.perf_counter()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection = None
        try:
            sock.settimeout(IDLE_SECONDS)
            while True:
                try:
                    sock.connect(self.address)
                    break
                except TimeoutError:  # its backlog is full: it is not accepting
                    self.waited(started, self.timeout, "a connection")
            sock.settimeout(None)
            wire = Wire(sock, idle=IDLE_SECONDS)
            # multiprocessing.connection's HMAC handshake, both ways, on a copy of the
            # descriptor; the frames after it are the Wire's, on the same socket. Its reads
            # time out like the Wire's, so a frozen coordinator is noticed here too.
            connection = PatientConnection(os.dup(sock.fileno()))
            connection.on_idle = lambda: self.waited(started, self.timeout, "a connection")
            answer_challenge(connection, self.authkey)
            deliver_challenge(connection, self.authkey)
            return wire
        except ShareError:
            sock.close()
            raise
        except AuthenticationError as error:
            sock.close()
            raise ShareError(
                f"this Share's coordinator at {self.address} refused this process's key "
                f"({error}): the directory now belongs to another Share"
            ) from None
        except (OSError, EOFError) as error:
            sock.close()
            if isinstance(error, OSError) and error.errno is None and not isinstance(
                error, TimeoutError
            ):
                raise  # raised by a signal handler, not by the socket
            raise ShareError(
                f"cannot reach this Share's coordinator at {self.address}: {error}. "
                "It was stopped or has died (the process that created the Share may have "
                "exited)."
            ) from None
        except BaseException:
            sock.close()
            raise
        finally:
            if connection is not None:
                connection.close()

    # -- requests ---------------------------------------------------------------------

    def request(self, op: int, *args: Any, timeout: float | None = None) -> tuple[Any, ...]:
        """Send ``(op, *args)`` and return the reply (failures raised by ``check``)."""
        try:
            wire = self.connection()
        except _ServedHere as here:
            # A link made before this process became the coordinator (the owner's, copied
            # by fork, reached through a global of the user's, say): a connection to
            # ourselves would wait on our own lock. Apply the request here instead.
            return here.link.request(op, *args, timeout=timeout)
        request_id = wire.next_id + 1
        wire.next_id = request_id
        payload = pickle.dumps((op, *args), protocol=5)
        wire.busy = True  # until the reply is read: if anything stops us, it stays set
        wire.request = (op, args, timeout or self.timeout)
        try:
            idle = wire.idle
            wire.started = time.perf_counter()
            wire.send(request_id, payload, idle)
            # No spinning while the coordinator serves several clients (see _wire).
            spin = not self.words[CROWDED_WORD]
            answered, frame = wire.receive(time.perf_counter(), spin, idle)
            while answered != request_id:
                if answered > request_id:
                    raise _OutOfStep(answered)
                # The late reply of a call that was interrupted: not ours.
                answered, frame = wire.receive(time.perf_counter(), False, idle)
        except ShareError:
            self.discard(wire)
            raise
        except (EOFError, OSError) as error:
            self.discard(wire)
            if isinstance(error, OSError) and error.errno is None:
                # Not the socket's: an OSError subclass (TimeoutError, say) raised by a
                # signal handler while this call waited. The caller's own exception.
                raise
            problem = self.coordinator_problem() or "it was stopped or has died"
            raise ShareError(
                f"lost this Share's coordinator during {_describe(op, args)} "
                f"({type(error).__name__}: {error}): {problem}. The call may or may not "
                "have been applied."
            ) from None
        except _OutOfStep as stray:
            self.discard(wire)
            raise ShareError(
                f"this Share's coordinator answered request {stray.args[0]} while "
                f"{request_id} was the last one sent, during {_describe(op, args)}; the "
                "connection was dropped. The call may or may not have been applied."
            ) from None
        except BaseException:
            # Interrupted (a signal handler raised, Ctrl-C, a section timeout): the reply
            # may still come, so this connection is out of step. Never reuse it.
            self.discard(wire)
            raise
        wire.busy = False
        return self.check(pickle.loads(frame))

    def watch(self, wire: Wire) -> None:
        """A call on ``wire`` has waited ``IDLE_SECONDS`` more: raise to stop waiting."""
        op, args, limit = wire.request
        self.waited(wire.started, limit, lambda: _describe(op, args))  # type: ignore[arg-type]

    def waited(self, started: float, limit: float, what: Any) -> None:
        """Called after each ``IDLE_SECONDS`` without an answer: raise to stop waiting."""
        problem = self.coordinator_problem()
        if problem is not None:
            raise ShareError(
                f"{problem}; gave up waiting for {what() if callable(what) else what}. "
                "The call may or may not have been applied."
            )
        elapsed = time.perf_counter() - started
        if elapsed > limit:
            raise ShareError(
                f"this Share's coordinator did not answer "
                f"{what() if callable(what) else what} within {limit:g} s (the "
                "Share's timeout): it is deadlocked, or busy with a slow method of a shared "
                "object. The call may or may not have been applied."
            )

    def coordinator_problem(self) -> str | None:
        """Why the coordinator cannot answer (frozen, dead, not running), or ``None``.

        Cheap while its heartbeat is fresh; otherwise its process is looked at, so that a
        coordinator that is only slow (a long method holding the GIL) is not taken for dead.
        """
        heartbeat = self.doubles[HEARTBEAT_WORD]
        age = time.monotonic() - heartbeat
        if age <= STALE_SECONDS:
            return None
        pid = self.words[COORDINATOR_WORD]
        if pid == 0:
            if heartbeat == 0.0:
                return "this Share's coordinator is not running: it was stopped, or it died"
            return None  # being started (a spawned interpreter can take a while)
        state = process_state(pid)
        start = self.words[START_WORD]
        reused = bool(start and state and state[1] and state[1] != start)
        if state is None or state[0] in ("Z", "X", "x") or reused:
            return f"this Share's coordinator (pid {pid}) has died"
        if state[0] in ("T", "t"):
            return (
                f"this Share's coordinator (pid {pid}) is frozen: stopped by a signal "
                f"(SIGSTOP, SIGTSTP) or a debugger, with no heartbeat for {age:.1f} s"
            )
        if state[0] == "?":  # no /proc: the heartbeat is all there is
            return (
                f"this Share's coordinator gave no heartbeat for {age:.1f} s: it is frozen "
                "or dead"
            )
        return None  # running, only slow: the call's time limit decides

    def check_alive(self) -> None:
        problem = self.coordinator_problem()
        if problem is not None:
            raise ShareError(problem)

    def check(self, reply: tuple[Any, ...]) -> tuple[Any, ...]:
        """The one reply decoder: returns a success, raises a failure."""
        status = reply[0]
        if status < P.GONE:
            return reply
        if status == P.RAISE:
            raise pickle.loads(reply[1])
        if status == P.GONE:
            raise ShareError(f"share.{reply[1]} is no longer a shared object (deleted or replaced)")
        if status == P.ERROR:
            raise ShareError(reply[1])
        raise ShareError(f"this Share's coordinator sent an unknown reply {status!r}")

    def share_handle(self) -> Share:
        """A Share object over this link (what a pickled proxy carries)."""
        return attach(self.directory, self.authkey, self.owner, self.timeout)

    # -- reads, writes and proxy operations ---------------------------------------------

    def fetch(self, name: str, version: int) -> Any:
        reply = self.request(P.GET, name)
        kind = reply[0]
        if kind == P.MISSING:
            raise AttributeError(f"this Share has no {name!r}")
        if kind == P.VALUE:
            value = wrap_value(pickle.loads(reply[1]), self, name)
        elif kind == P.CIRCUIT:
            _, circuit_kind, settings, slot = reply
            store = SharedCircuitStore(self.memory_path, slot)
            value = _circuit_class(circuit_kind)._from_store(settings, store)
        else:
            _, type_name, methods = reply
            value = SharedObject(self, name, type_name, frozenset(methods))
        cached = self.cached
        if cached[0] == version:  # else another thread started a newer cache meanwhile
            cached[1][name] = value
        return value

    def call(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            blob = dumps((args, kwargs)) if args or kwargs else _NO_ARGUMENTS
        except Exception as error:
            raise TypeError(
                f"the arguments of share.{name}.{method}() cannot be sent to the Share "
                f"({type(error).__name__}: {error})"
            ) from None
        return self.result(self.request(P.CALL, name, method, blob))

    def get_attribute(self, name: str, attribute: str) -> Any:
        return self.result(self.request(P.GETATTR, name, attribute))

    def set_attribute(self, name: str, attribute: str, value: Any) -> None:
        try:
            blob = dumps(value)
        except Exception as error:
            raise TypeError(
                f"share.{name}.{attribute} = {type(value).__name__} object: it cannot be sent "
                f"between processes ({type(error).__name__}: {error})"
            ) from None
        self.request(P.SETATTR, name, attribute, blob)

    def iterate(self, name: str) -> list[Any]:
        items: list[Any] = self.result(self.request(P.ITERATE, name))
        return items

    def inplace(self, name: str, method: str, other: Any) -> None:
        """``share.name op= other``, applied atomically at the coordinator."""
        try:
            blob = dumps(other)
        except Exception as error:
            raise TypeError(
                f"share.{name} {method[2:-2]}= ...: the operand cannot be sent to the Share "
                f"({type(error).__name__}: {error})"
            ) from None
        cached = self.cached
        reply = self.request(P.INPLACE, name, method, blob)
        if reply[0] == P.VALUE and reply[2] == cached[0] + 1:
            # Nothing else changed since this process's cache was current: it stays
            # current, with the new value (`share.n += 1` in a loop reads from it). A new
            # dict: another thread may still be storing what it read before this change
            # into the old one.
            entries = dict(cached[1])
            entries[name] = wrap_value(pickle.loads(reply[1]), self, name)
            self.cached = (reply[2], entries)

    def result(self, reply: tuple[Any, ...]) -> Any:
        if reply[0] == P.VALUE:
            return pickle.loads(reply[1])
        if reply[0] == P.VIEW:
            return _view(reply[1], pickle.loads(reply[2]))
        return None


def _circuit_class(kind: str) -> Any:
    from ...circuits import BreakingCircuit, Circuit

    return BreakingCircuit if kind == "BreakingCircuit" else Circuit


def _close_all(wires: weakref.WeakSet[Wire]) -> None:
    for wire in list(wires):
        with contextlib.suppress(Exception):
            wire.close()


class InProcessLink(Link):
    """The coordinator's own link to its Share: requests are applied here, directly.

    The coordinator's lock is re-entrant, so a shared object's method that uses the Share
    while the coordinator runs it is applied inside that method's request, atomically with
    it (the same order as if it had been one request).
    """

    def __init__(
        self, coordinator: _Coordinator, directory: str, authkey: bytes, owner: int,
        timeout: float,
    ) -> None:
        super().__init__(directory, authkey, owner, timeout)
        self.coordinator = coordinator

    def request(self, op: int, *args: Any, timeout: float | None = None) -> tuple[Any, ...]:
        return self.check(self.coordinator.execute(op, args, timeout or self.timeout))

    def coordinator_problem(self) -> str | None:
        return None  # we are it


# Weak: a link lives while a Share object, proxy or value of it does in this process.
_links: weakref.WeakValueDictionary[str, Link] = weakref.WeakValueDictionary()
_links_guard = threading.Lock()


def _after_fork() -> None:
    global _forks, _links_guard
    _forks += 1
    _links_guard = threading.Lock()
    # The parent's connections are not ours: close our copies of them (this does not
    # disturb the parent's), so that no descriptor of it stays open here.
    for link in list(_links.values()):
        for wire in list(link.wires):
            with contextlib.suppress(Exception):
                wire.close()
        link.wires = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# In a coordinator's process: its directory -> how to get its in-process link.
_served_here: dict[str, Callable[[], Link]] = {}


def serve_here(directory: str, own_link: Callable[[], Link]) -> None:
    """In a coordinator: the Share in ``directory`` is this process's to serve; its link
    here is ``own_link()`` (made when first needed)."""
    with _links_guard:
        _links.pop(directory, None)  # the owner's, inherited through fork: not for here
        _served_here[directory] = own_link


def link_for(directory: str, authkey: bytes, owner: int, timeout: float) -> Link:
    link = _links.get(directory)
    if link is None:
        with _links_guard:
            link = _links.get(directory)
            if link is None:
                own = _served_here.get(directory)
                link = own() if own is not None else Link(directory, authkey, owner, timeout)
                _links[directory] = link
    return link


def register(link: Link) -> None:
    """Make ``link`` this process's link to its Share (the owner's, the coordinator's)."""
    with _links_guard:
        _links[link.directory] = link


def attach(directory: str, authkey: bytes, owner: int, timeout: float = DEFAULT_TIMEOUT) -> Share:
    from ._share import Share

    share = object.__new__(Share)
    object.__setattr__(share, "_sk", link_for(directory, authkey, owner, timeout))
    return share

