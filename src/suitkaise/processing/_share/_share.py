"""Share: named objects that every process given the Share sees, with no infrastructure.

A coordinator process holds the objects; circuits live in shared memory. Every process that
has the Share (passed as an argument, a Pool item, or pickled) talks to the same coordinator
over a Unix socket in a private directory and maps the same memory file (``_link``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from ..._compat import getframe
from ..._validation import seconds
from ...circuits._circuit import _CircuitBase
from .._errors import ShareError
from .._pickling import dumps
from . import _protocol as P
from ._coordinator import serve
from ._directory import create as create_directory
from ._launch import launch
from ._link import DEFAULT_TIMEOUT, STALE_SECONDS, Link, Running, attach, register
from ._memory import (
    COORDINATOR_WORD,
    GENERATION_WORD,
    HEARTBEAT_WORD,
    START_WORD,
    VERSION_WORD,
    Segment,
    SharedCircuitStore,
)
from ._proxies import pending_update
from ._wire import IDLE_SECONDS, Wire

if TYPE_CHECKING:
    from .._skprocess import Context

__all__ = ["DEFAULT_TIMEOUT", "Share"]

SLOTS = 4096
"""Circuits one Share can hold over its lifetime (slots are never reused)."""


def _tear_down(running: Running) -> None:
    """The last Share object (and proxy, and value) of this Share in its owner is gone."""
    if os.getpid() != running.owner:
        return  # a forked copy of the owner's objects: not ours to tear down
    process, running.process = running.process, None
    if process is not None:
        with contextlib.suppress(Exception):
            if process.is_alive():
                process.terminate()
                process.join(1.0)
                if process.is_alive():
                    process.kill()
                    process.join()
            _release(process)
    shutil.rmtree(running.directory, ignore_errors=True)


def _release(process: Any) -> None:
    # A multiprocessing.Process keeps a descriptor (its sentinel) until closed.
    close = getattr(process, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):
            close()


def _stop_request(link: Link, timeout: float, deadline: float) -> tuple[bool, float]:
    """Ask the coordinator to stop; ``(clean, deadline for it to exit)``."""
    link.lost = {}
    try:
        # One request: the snapshot is taken and the coordinator stops serving under one
        # lock, so no write can be acknowledged after the snapshot and then be lost. A call
        # still running at the coordinator (a slow method) holds that lock: the timeout
        # bounds the wait, and the coordinator is killed after it.
        _, snapshot, link.lost = link.request(P.STOP, timeout=max(timeout, 1e-3))
    except ShareError:
        return False, time.monotonic()  # frozen, dead, or still busy: nothing to wait for
    # Confirm: only now does the coordinator end. Had this stop() been interrupted before it
    # had the snapshot, the coordinator would have gone on serving, with everything, when
    # this connection closed (and this snapshot would not be the Share's last state).
    try:
        link.request(P.PING, timeout=max(0.5, deadline - time.monotonic()))
    except ShareError:
        link.snapshot = snapshot  # the best there is: it is about to be killed
        return False, deadline
    link.snapshot = snapshot
    return True, deadline


def _stop(link: Link, timeout: float) -> bool:
    with link.lifecycle:
        process = link.running.process
        if process is None:
            return True  # not running: stopped already
        deadline = time.monotonic() + timeout
        try:
            clean, deadline = _stop_request(link, timeout, deadline)
        except BaseException:
            # Interrupted: the coordinator goes back to serving, with everything, when it
            # sees this connection close without a confirmation.
            wire = getattr(link.local, "wire", None)
            if wire is not None:
                link.discard(wire)
            raise
        lost = link.lost
        link.stopped = True
        wire = getattr(link.local, "wire", None)
        if wire is not None:
            link.discard(wire)
        for other in list(link.wires):  # other threads' connections: wake them up
            other.abort()
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
            clean = False
        _release(process)
        link.running.process = None
        link.words[COORDINATOR_WORD] = 0
        link.doubles[HEARTBEAT_WORD] = 0.0
        link.words[VERSION_WORD] += 1  # every process's cached reads are now invalid
    if lost:
        warnings.warn(
            "Share.stop(): these could not be kept for start() and are gone: "
            + "; ".join(f"share.{name} ({reason})" for name, reason in sorted(lost.items())),
            RuntimeWarning,
            stacklevel=3,
        )
        clean = False
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

    Args:
        context: a ``multiprocessing`` context whose start method starts the coordinator
            (default: the default start method).
        timeout: the longest one call waits for the coordinator, in seconds (or a
            ``timedelta``), default 30. After it the call raises ``ShareError`` (it may or
            may not have been applied). A coordinator that is frozen or dead is noticed
            sooner, within about 2 s, through its heartbeat. Travels with the Share to
            other processes.
    """

    _sk: Link

    def __init__(
        self, *, context: Context | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        timeout = seconds("timeout", timeout, positive=True)
        if context is not None and not callable(getattr(context, "get_start_method", None)):
            raise TypeError(
                "context must be a multiprocessing context (multiprocessing.get_context("
                f"'spawn'), say) or None, got {context!r} of type {type(context).__name__}"
            )
        directory = create_directory()
        try:
            Segment.create(os.path.join(directory, "memory"), SLOTS)
            link = Link(directory, os.urandom(32), os.getpid(), timeout)
            # Tied to the link, not to this object: a pickled copy, a proxy or a value read
            # from the Share keeps it running, as long as any of them exists here.
            weakref.finalize(link, _tear_down, link.running)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        register(link)
        object.__setattr__(self, "_sk", link)
        object.__setattr__(self, "_sk_context", context)
        self.start()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the coordinator (done by ``Share()``; needed only after ``stop()``).

        A restarted Share holds what it held when it was stopped. Safe to call from several
        threads: one starts it, the others find it running.
        """
        link = self._sk
        self._sk_owner_only("start")
        with link.lifecycle:
            previous = link.running.process
            if previous is not None:
                if previous.is_alive():
                    return
                # It died: start a fresh one (with whatever was last snapshotted).
                previous.join()
                _release(previous)
                link.running.process = None
            self._sk_launch(link)
        snapshot_had = link.snapshot
        link.snapshot = None
        if snapshot_had:
            not_restored = link.request(P.RESTORED)[1]
            if not_restored:
                warnings.warn(
                    "Share.start(): these could not be restored and are gone: "
                    + "; ".join(f"share.{n} ({why})" for n, why in sorted(not_restored.items())),
                    RuntimeWarning,
                    stacklevel=2,
                )

    def _sk_launch(self, link: Link) -> None:
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
        wire = None
        try:
            listening.bind(link.address)
            listening.listen(128)
            # Until the new coordinator writes its pid, a waiting client takes it for
            # "starting", whatever the heartbeat says.
            link.words[COORDINATOR_WORD] = 0
            link.words[START_WORD] = 0  # the last coordinator's: not this one's
            link.doubles[HEARTBEAT_WORD] = time.monotonic()
            wire = Wire(mine, idle=IDLE_SECONDS)
            link.running.process = process = launch(
                context,
                serve,
                (link.directory, listening, link.authkey, link.memory_path, link.snapshot),
                {"owner": os.getpid(), "owner_connection": theirs, "timeout": link.timeout},
                close_in_child=(mine,),
            )
        except BaseException:
            mine.close()
            raise
        finally:
            listening.close()
            theirs.close()
        # Known at once, so that a client waiting on a coordinator frozen or killed while
        # it starts can tell (the coordinator writes it too, with its start time).
        link.words[COORDINATOR_WORD] = process.pid or 0
        generation = link.words[GENERATION_WORD] + 1
        link.words[GENERATION_WORD] = generation  # connections made before are stale
        old = getattr(link.local, "wire", None)
        if old is not None:
            link.discard(old)
        link.adopt(wire, generation)
        link.stopped = False

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the coordinator, keeping what it holds for a later ``start()``.

        Every call that returned before is complete; nothing is dropped. Returns ``True`` if
        the coordinator stopped cleanly within ``timeout`` seconds and everything was kept.
        ``False`` if it had to be killed (a call still running at the coordinator after
        ``timeout``: what it held is then lost), if it had died,
        or if some shared objects could not be kept (each is named in a ``RuntimeWarning``;
        the others are kept). Other processes' calls then raise ``ShareError``. Safe to
        call from several threads and more than once.
        """
        timeout = seconds("timeout", timeout)
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
        return not link.stopped and link.coordinator_problem() is None

    def clear(self) -> None:
        """Remove every name."""
        self._sk.request(P.CLEAR)

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
        # lookup first. The Share's own attributes (its methods, names starting with "_sk",
        # and dunders) take the ordinary path; any other name is shared. The hot path: one
        # shared-memory read says whether this process's cache is still current.
        if name in _OWN_ATTRIBUTES or (name[0] == "_" and _is_internal(name)):
            return object.__getattribute__(self, name)
        link: Link = object.__getattribute__(self, "_sk")
        version = link.words[VERSION_WORD]
        cached = link.cached
        if cached[0] != version:
            cached = link.cached = (version, {})
        value = cached[1].get(name, _MISSING)
        if value is _MISSING:
            return link.fetch(name, version)
        if time.monotonic() - link.doubles[HEARTBEAT_WORD] > STALE_SECONDS:
            link.check_alive()
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN_ATTRIBUTES or (name[0] == "_" and _is_internal(name)):
            _refuse_internal(name, "assigned")
        link: Link = object.__getattribute__(self, "_sk")
        update = pending_update(value, link, name, getframe(1) if getframe else None)
        if update == ():
            return  # a proxy's `op=` already changed the shared object
        if update is not None:
            # The store of `share.name op= x`: apply the operation atomically instead of
            # writing the locally computed result over whatever is there now.
            link.inplace(name, *update)
            return
        if isinstance(value, _CircuitBase):
            store = value._store
            alias = (
                store._slot
                if type(store) is SharedCircuitStore and store._path == link.memory_path
                else -1
            )
            link.request(
                P.SET_CIRCUIT, name, value._kind, value._settings, value._store.read(), alias
            )
            return
        try:
            blob = dumps(value)
        except Exception as error:
            raise TypeError(
                f"share.{name} = {type(value).__name__} object: it cannot be sent between "
                f"processes ({type(error).__name__}: {error})"
            ) from None
        link.request(P.SET, name, blob)

    def __delattr__(self, name: str) -> None:
        _refuse_internal(name, "deleted")
        if self._sk.request(P.DELETE, name)[0] == P.MISSING:
            raise AttributeError(f"this Share has no {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._sk_names()))

    def _sk_names(self) -> list[str]:
        names: list[str] = self._sk.request(P.NAMES)[1]
        return names

    # -- travelling -------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        link = self._sk
        return (attach, (link.directory, link.authkey, link.owner, link.timeout))

    def __repr__(self) -> str:
        link = self._sk
        if not self.is_running:
            return f"<Share (stopped) at {link.directory}>"
        return f"<Share {self._sk_names()!r}>"


# Its methods and properties, and "" (not a name: refused here, before `name[0]` is read).
_OWN_ATTRIBUTES = frozenset(
    ["", *(name for name in dir(Share) if not name.startswith("_"))]
)


def _is_internal(name: str) -> bool:
    """Names of the Share itself: ``_sk...`` and dunders. Other names starting with ``_``
    are ordinary shared names."""
    return name.startswith("_sk") or (len(name) > 4 and name[:2] == "__" == name[-2:])


def _refuse_internal(name: str, action: str) -> None:
    if not name:
        raise AttributeError(f"a Share name cannot be empty (it cannot be {action})")
    if name in _OWN_ATTRIBUTES or _is_internal(name):
        raise AttributeError(
            f"share.{name} cannot be {action}: {name!r} is part of the Share itself "
            "(its methods and properties, names starting with '_sk', and dunder names are "
            "reserved); use another name"
        )


class _Missing:
    pass


_MISSING = _Missing()
