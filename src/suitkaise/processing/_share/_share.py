"""Share: named objects that every process given the Share sees, with no infrastructure.

A coordinator process holds the objects; circuits live in shared memory. Every process that
has the Share (passed as an argument, a Pool item, or pickled) talks to the same coordinator
over a Unix socket in a private directory and maps the same memory file.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Client
from typing import TYPE_CHECKING, Any

from ...circuits import BreakingCircuit, Circuit
from ...circuits._circuit import _CircuitBase
from .._errors import ShareError
from .._pickling import dumps
from ._coordinator import serve
from ._launch import CoordinatorProcess, launch
from ._memory import (
    CROWDED_WORD,
    GENERATION_WORD,
    HEARTBEAT_WORD,
    VERSION_WORD,
    Segment,
    SharedCircuitStore,
    forget_segment,
    segment_at,
)
from ._proxies import SharedObject, pending_update, wrap_value
from ._wire import Wire

if TYPE_CHECKING:
    from .._skprocess import Context

__all__ = ["Share"]

SLOTS = 4096
"""Circuits one Share can hold over its lifetime (slots are never reused)."""

STALE_SECONDS = 1.5
"""A coordinator whose heartbeat is older than this is taken for dead (seconds)."""

_NO_ARGUMENTS = pickle.dumps(((), {}), protocol=5)

_CIRCUIT_KINDS: dict[str, type[_CircuitBase]] = {
    "Circuit": Circuit,
    "BreakingCircuit": BreakingCircuit,
}


def _private_directory() -> str:
    # tmpfs when there is one: the memory file then never touches a disk. mkdtemp makes
    # the directory 0700, so only this user can reach the socket and the memory inside.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="suitkaise-share-", dir=base)


class _Running:
    """The owner's handle on the coordinator, apart from the link so that the link's
    finalizer can stop the coordinator without keeping the link alive."""

    def __init__(self, directory: str, owner: int) -> None:
        self.directory = directory
        self.owner = owner
        self.process: CoordinatorProcess | None = None


def _tear_down(running: _Running) -> None:
    """The last Share object (and proxy, and value) of this Share in its owner is gone."""
    if os.getpid() != running.owner:
        return  # a forked copy of the owner's objects: not ours to tear down
    process, running.process = running.process, None
    if process is not None and process.is_alive():
        process.terminate()
        process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join()
    forget_segment(os.path.join(running.directory, "memory"))
    shutil.rmtree(running.directory, ignore_errors=True)


class _Link:
    """Everything a process needs to reach one Share; shared by its copies in the process."""

    def __init__(self, directory: str, authkey: bytes, owner: int) -> None:
        self.directory = directory
        self.address = os.path.join(directory, "coordinator.sock")
        self.memory_path = os.path.join(directory, "memory")
        self.authkey = authkey
        self.owner = owner
        self.local = threading.local()
        self.cache: dict[str, Any] = {}
        self.cache_version = -1
        self.running = _Running(directory, owner)  # its process: in the owner only
        self.stopped = False
        self.snapshot: dict[str, Any] = {}
        # Kept at hand: every `share.name` reads the version word and the heartbeat.
        self.words = self.segment.words
        self.doubles = self.segment.doubles

    @property
    def segment(self) -> Segment:
        return segment_at(self.memory_path)

    def connection(self) -> Wire:
        local = self.local
        generation = self.words[GENERATION_WORD]
        if (
            getattr(local, "pid", None) != os.getpid()
            or getattr(local, "generation", None) != generation
        ):
            # Inherited through fork (the parent's socket), or made before a restart.
            local.connection = None
            local.pid = os.getpid()
            local.generation = generation
        if local.connection is None:
            if self.stopped:
                raise ShareError("this Share was stopped; call share.start() to use it again")
            local.connection = self.connect()
        wire: Wire = local.connection
        return wire

    def connect(self) -> Wire:
        try:
            # multiprocessing's client does the HMAC handshake; the frames after it are
            # the Wire's, on the same socket.
            connection = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        except (OSError, EOFError) as error:
            raise ShareError(
                f"cannot reach this Share's coordinator at {self.address}: {error}. "
                "It has stopped or died (the process that created the Share may have "
                "exited)."
            ) from None
        with connection:
            return Wire(socket.socket(fileno=os.dup(connection.fileno())))

    def request(self, *request: Any, timeout: float | None = None) -> tuple[Any, ...]:
        wire = self.connection()
        try:
            wire.send(pickle.dumps(request, protocol=5))
            # No spinning while the coordinator serves several clients (see _wire).
            spin = not self.words[CROWDED_WORD]
            reply: tuple[Any, ...] = pickle.loads(
                wire.receive(time.perf_counter(), spin, timeout)
            )
        except TimeoutError:
            # The connection is out of step now (the reply may still come): drop it.
            self.local.connection = None
            raise ShareError(
                f"this Share's coordinator did not answer {request[0]!r} within {timeout:g} s"
            ) from None
        except (EOFError, OSError) as error:
            self.local.connection = None
            raise ShareError(
                f"lost this Share's coordinator during {request[0]!r} ({error!r}); "
                "it has stopped or died"
            ) from None
        if reply[0] == "raise":
            raise pickle.loads(reply[1])
        if reply[0] == "error":
            raise ShareError(reply[1])
        return reply

    def check_alive(self) -> None:
        heartbeat = self.doubles[HEARTBEAT_WORD]
        if time.monotonic() - heartbeat > STALE_SECONDS:
            raise ShareError(
                "this Share's coordinator is not running (no heartbeat for "
                f"{time.monotonic() - heartbeat:.1f} s); it was stopped or has died"
            )


    def share_handle(self) -> Share:
        """A Share object over this link (what a pickled proxy carries)."""
        return _attach(self.directory, self.authkey, self.owner)

    # -- reads, writes and proxy operations ---------------------------------------

    def fetch(self, name: str, version: int) -> Any:
        reply = self.request("get", name)
        kind = reply[0]
        if kind == "missing":
            raise AttributeError(f"this Share has no {name!r}")
        if kind == "value":
            value = wrap_value(pickle.loads(reply[1]), self, name)
        elif kind == "circuit":
            _, circuit_kind, settings, slot = reply
            store = SharedCircuitStore(self.memory_path, slot)
            value = _CIRCUIT_KINDS[circuit_kind]._from_store(settings, store)
        else:
            _, type_name, methods = reply
            value = SharedObject(self, name, type_name, frozenset(methods))
        if self.cache_version == version:
            self.cache[name] = value
        return value

    def call(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            blob = dumps((args, kwargs)) if args or kwargs else _NO_ARGUMENTS
        except Exception as error:
            raise TypeError(
                f"the arguments of share.{name}.{method}() cannot be sent to the Share "
                f"({type(error).__name__}: {error})"
            ) from None
        return self.result(name, self.request("call", name, method, blob))

    def get_attribute(self, name: str, attribute: str) -> Any:
        return self.result(name, self.request("getattr", name, attribute))

    def set_attribute(self, name: str, attribute: str, value: Any) -> None:
        self.result(name, self.request("setattr", name, attribute, dumps(value)))

    def inplace(self, name: str, method: str, other: Any) -> None:
        """``share.name op= other``, applied atomically at the coordinator."""
        try:
            blob = dumps(other)
        except Exception as error:
            raise TypeError(
                f"share.{name} {method}: the operand cannot be sent to the Share "
                f"({type(error).__name__}: {error})"
            ) from None
        reply = self.request("inplace", name, method, blob)
        if reply[0] == "gone":
            raise ShareError(f"share.{name} was deleted or replaced by a circuit")
        if reply[0] == "value" and reply[2] == self.cache_version + 1:
            # Nothing else changed since this process's cache was current: it stays
            # current, with the new value (`share.n += 1` in a loop reads from it).
            self.cache[name] = wrap_value(pickle.loads(reply[1]), self, name)
            self.cache_version = reply[2]

    def result(self, name: str, reply: tuple[Any, ...]) -> Any:
        if reply[0] == "gone":
            raise ShareError(f"share.{name} is no longer a shared object (deleted or replaced)")
        if reply[0] == "value":
            return pickle.loads(reply[1])
        return None


# Weak: a link lives while a Share object, proxy or value of it does in this process.
_links: weakref.WeakValueDictionary[str, _Link] = weakref.WeakValueDictionary()


def _link_for(directory: str, authkey: bytes, owner: int) -> _Link:
    link = _links.get(directory)
    if link is None:
        link = _links[directory] = _Link(directory, authkey, owner)
    return link


def _attach(directory: str, authkey: bytes, owner: int) -> Share:
    share = object.__new__(Share)
    object.__setattr__(share, "_sk", _link_for(directory, authkey, owner))
    return share


def _stop(link: _Link, timeout: float) -> bool:
    process = link.running.process
    if process is None:
        return True
    link.running.process = None
    clean = True
    deadline = time.monotonic() + timeout
    try:
        # One request: the snapshot is taken and the coordinator stops serving under one
        # lock, so no write can be acknowledged after the snapshot and then be lost. A call
        # still running at the coordinator (a slow method) holds that lock: the timeout
        # bounds the wait, and the coordinator is killed after it.
        link.snapshot = link.request("stop", timeout=timeout)[1]
    except ShareError:
        clean = False
    link.stopped = True
    link.local.connection = None
    process.join(max(0.0, deadline - time.monotonic()))
    if process.is_alive():
        process.kill()
        process.join()
        clean = False
    words = link.words
    words[VERSION_WORD] += 1  # every process's cached reads are now invalid
    link.doubles[HEARTBEAT_WORD] = 0.0
    return clean


class Share:
    """Named objects shared by every process that is given this Share.

    ``share.name = obj`` stores ``obj`` (anything cloudpickle can send; otherwise
    ``TypeError``). ``share.name`` reads it from any process: an immutable value reads as that
    value; another object as a proxy whose method calls and attribute reads run atomically on
    the one shared copy. ``share.n += 1`` is atomic across processes. Circuits
    (``Circuit``, ``BreakingCircuit``) live in shared memory: ``share.circuit.short()`` is a
    few microseconds and the call that trips sleeps in its own process.

    Every call is complete when it returns: a read that starts after a write has returned,
    in any process, sees it. Pass the Share to children as an argument (Skprocess, Pool item,
    ``multiprocessing.Process``) or pickle it; in the child it is the same Share.

    ``Share()`` starts the coordinator process at once; ``with Share() as share:`` stops it on
    exit, and so does garbage collection or the end of the creating process.
    """

    _sk: _Link

    def __init__(self, *, context: Context | None = None) -> None:
        directory = _private_directory()
        Segment.create(os.path.join(directory, "memory"), SLOTS)
        link = _Link(directory, os.urandom(32), os.getpid())
        _links[directory] = link
        object.__setattr__(self, "_sk", link)
        object.__setattr__(self, "_sk_context", context)
        # Tied to the link, not to this object: a pickled copy, a proxy or a value read from
        # the Share keeps it running, as long as any of them exists in this process.
        weakref.finalize(link, _tear_down, link.running)
        self.start()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the coordinator (done by ``Share()``; needed only after ``stop()``).

        A restarted Share holds what it held when it was stopped.
        """
        link = self._sk
        self._sk_owner_only("start")
        previous = link.running.process
        if previous is not None:
            if previous.is_alive():
                return
            previous.join()  # it died: start a fresh one (with whatever was last snapshotted)
            link.running.process = None
        context = self.__dict__.get("_sk_context") or multiprocessing.get_context()
        # The socket is bound here and handed over, so nobody waits for the coordinator to
        # come up: connections queue in the backlog until it accepts them (and fail with
        # ShareError if it dies first, since this process closes its copy at once).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link.address)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # This thread's own connection is a socket pair made here: private by construction,
        # so it needs no handshake and is usable the moment the coordinator runs.
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(link.address)
            listening.listen(128)
            process = launch(
                context,
                serve,
                (link.directory, listening, link.authkey, link.memory_path, link.snapshot),
                {"owner": os.getpid(), "owner_connection": theirs},
                close_in_child=(mine,),
            )
        except BaseException:
            mine.close()
            raise
        finally:
            listening.close()
            theirs.close()

        # A fresh heartbeat, so that readers do not take the new coordinator for dead
        # before its first beat.
        link.doubles[HEARTBEAT_WORD] = time.monotonic()
        link.running.process = process
        generation = link.words[GENERATION_WORD] + 1
        link.words[GENERATION_WORD] = generation  # connections made before are stale
        link.local.connection = Wire(mine)
        link.local.pid = os.getpid()
        link.local.generation = generation
        link.stopped = False
        link.snapshot = {}

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the coordinator, keeping what it holds for a later ``start()``.

        Every call that returned before is complete; nothing is dropped. Returns ``True`` if
        the coordinator stopped cleanly within ``timeout`` seconds (it is killed otherwise).
        Other processes' calls then raise ``ShareError``.
        """
        self._sk_owner_only("stop")
        return _stop(self._sk, timeout)

    def exit(self, timeout: float = 5.0) -> bool:
        """Alias of :meth:`stop`."""
        return self.stop(timeout)

    @property
    def is_running(self) -> bool:
        """``True`` while the coordinator is up."""
        link = self._sk
        if os.getpid() == link.owner:
            process = link.running.process
            return process is not None and bool(process.is_alive())
        try:
            link.check_alive()
        except ShareError:
            return False
        return not link.stopped

    def clear(self) -> None:
        """Remove every name."""
        self._sk.request("clear")

    def __enter__(self) -> Share:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sk_owner_only(self, action: str) -> None:
        if os.getpid() != self._sk.owner:
            raise ShareError(
                f"only the process that created this Share can {action} it "
                f"(created by pid {self._sk.owner}, this is pid {os.getpid()})"
            )

    # -- names ------------------------------------------------------------------------

    def __getattribute__(self, name: str) -> Any:
        # Every attribute read comes here, so that a shared name costs no failed normal
        # lookup first. The Share's own attributes (and anything starting with "_") take the
        # ordinary path; any other name is shared. The hot path: one shared-memory read says
        # whether this process's cache is still current.
        if name[0] == "_" or name in _OWN_ATTRIBUTES:
            return object.__getattribute__(self, name)
        link: _Link = object.__getattribute__(self, "_sk")
        version = link.words[VERSION_WORD]
        if version != link.cache_version:
            link.cache.clear()
            link.cache_version = version
        value = link.cache.get(name, _MISSING)
        if value is _MISSING:
            return link.fetch(name, version)
        if time.monotonic() - link.doubles[HEARTBEAT_WORD] > STALE_SECONDS:
            link.check_alive()
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_sk") or hasattr(type(self), name):
            raise AttributeError(f"{name!r} is part of the Share itself and cannot be assigned")
        link = self._sk
        update = pending_update(value, link, name)
        if update == ():
            return  # a proxy's `op=` already changed the shared object
        if update is not None:
            # `share.name op= x`: the read gave a value that remembers where it came from,
            # and `op=` on it recorded the operation; apply that atomically instead of
            # writing the locally computed result over whatever is there now.
            link.inplace(name, *update)
            return
        if isinstance(value, _CircuitBase):
            link.request(
                "set_circuit", name, value._kind, value._settings, value._store.read()
            )
            return
        try:
            blob = dumps(value)
        except Exception as error:
            raise TypeError(
                f"share.{name} = {type(value).__name__} object: it cannot be sent between "
                f"processes ({type(error).__name__}: {error})"
            ) from None
        link.request("set", name, blob)

    def __delattr__(self, name: str) -> None:
        if self._sk.request("delete", name)[0] == "missing":
            raise AttributeError(f"this Share has no {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._sk_names()))

    def _sk_names(self) -> list[str]:
        names: list[str] = self._sk.request("names")[1]
        return names

    # -- travelling -------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        link = self._sk
        return (_attach, (link.directory, link.authkey, link.owner))

    def __repr__(self) -> str:
        link = self._sk
        if not self.is_running:
            return f"<Share (stopped) at {link.directory}>"
        return f"<Share {self._sk_names()!r}>"


_OWN_ATTRIBUTES = frozenset(name for name in dir(Share) if not name.startswith("_"))


class _Missing:
    pass


_MISSING = _Missing()
