"""Skprocess: a class whose instances run their lifecycle in a child process.

The object is shipped to the child with cloudpickle, so classes defined in a script's
``__main__``, in a function, or in a notebook work under fork, spawn and forkserver alike,
and the child runs the real class (inherited and private helpers included).

Messages (``tell``/``listen``) and the child's final report travel over ``Channel``s
(``_channel.py``), which an exception raised in the middle of a call (a section timeout, a
signal handler) cannot desynchronise. Every parent-side operation may be called from several
threads at once: a start is claimed under a lock, the report is collected once under a lock,
and each message goes whole to one caller.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from .._validation import optional_seconds
from ._channel import Channel, ChannelClosed, wait_ready
from ._config import ProcessConfig
from ._errors import ProcessError, ResultError
from ._lifecycle import Outcome, run_lifecycle
from ._orphan import exit_with_parent, run_at_exit
from ._pickling import dumps, loads, round_trip

if TYPE_CHECKING:
    from multiprocessing.context import DefaultContext, ForkContext, ForkServerContext, SpawnContext

    Context = DefaultContext | ForkContext | SpawnContext | ForkServerContext
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

__all__ = ["Skprocess"]

_ATEXIT_GRACE_SECONDS = 5.0


_RUNTIME = ("_sk_parent", "_sk_child", "_sk_stop_flag", "_sk_starting")
"""Keys of an Skprocess's ``__dict__`` that belong to this process only (never shipped)."""

_start_lock = threading.Lock()  # claims a start; held for a dict lookup and an assignment


def _after_fork_in_child() -> None:
    # A child forked while another thread held a lock would never see it released; and the
    # children of the parent are not this process's to stop.
    global _start_lock, _live_lock
    _start_lock = threading.Lock()
    _live_lock = threading.Lock()
    _live.clear()


class _Parent:
    """The parent's handle on a started Skprocess."""

    def __init__(
        self,
        process: BaseProcess,
        messages: Channel,
        results: Channel,
        stop_event: Event,
        current_run: Synchronized[int],
    ) -> None:
        self.process = process
        self.messages = messages
        self.results = results
        self.stop_event = stop_event
        self.current_run = current_run
        self.outcome: Outcome | None = None
        # collect: reading the report (one thread at a time, as long as it takes);
        # process: the multiprocessing.Process calls that reap the child (join, poll), which
        # race when two threads make them (one reaps, the other briefly sees no exit code).
        self.collect = threading.Lock()
        self.process_lock = threading.Lock()
        self.done = False  # reaped

    def exited(self, timeout: float | None) -> bool:
        """Reap the child, waiting at most ``timeout`` seconds; ``True`` once it has exited."""
        if not self.done and not wait_ready([self.process.sentinel], timeout):
            return False
        with self.process_lock:
            self.process.join()
            self.done = True
        return True

    def kill(self) -> None:
        with self.process_lock:
            if self.process.is_alive():
                self.process.kill()
        self.exited(None)  # SIGKILL cannot be ignored: this is quick

    def exit_code(self) -> int | None:
        with self.process_lock:
            return self.process.exitcode

    def alive(self) -> bool:
        with self.process_lock:
            return self.process.is_alive()


class _Child:
    """What an Skprocess sees of its host while it runs in the child (implements Control)."""

    def __init__(
        self,
        messages: Channel | None,
        stop_event: Event | None,
        current_run: Synchronized[int] | None,
    ) -> None:
        self.messages = messages
        self.stop_event = stop_event
        self.current_run = current_run
        self.run = 0

    def stop_requested(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def entering_run(self, run: int) -> None:
        self.run = run
        if self.current_run is not None:
            self.current_run.value = run


# The children started here that may still run, by their handles: a strong reference, so
# that a child whose Skprocess object was dropped (started and forgotten) is still found at
# exit. Finished ones are pruned at each start() and dropped by wait().
_live: dict[int, _Parent] = {}
_live_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget_finished() -> None:
    with _live_lock:
        handles = list(_live.values())
    if not handles:
        return
    gone = set(wait_ready([h.process.sentinel for h in handles if not h.done], 0))
    with _live_lock:
        for handle in handles:
            if handle.done or handle.process.sentinel in gone:
                _live.pop(id(handle), None)


def _stop_leftovers() -> None:
    # Run at exit before anything joins the children (run_at_exit): ask every child that is
    # still running to finish, give them one grace period, then kill the rest. Without this
    # a child looping until stop() would keep the script (or the child of ours that started
    # it) from ever exiting.
    with _live_lock:
        leftovers = [h for h in _live.values() if h.alive()]
    for handle in leftovers:
        handle.stop_event.set()
    deadline = time.monotonic() + _ATEXIT_GRACE_SECONDS
    for handle in leftovers:
        if not handle.exited(_left(deadline)):
            handle.kill()


class Skprocess:
    """Subclass it and define ``__run__``; ``start()`` runs the object in a child process.

    Lifecycle (all optional but ``__run__``; no ``super().__init__()`` needed):
    ``__prerun__``, ``__run__``, ``__postrun__`` repeat until ``self.stop()``,
    ``process_config.runs`` iterations, or ``process_config.join_in`` seconds; then
    ``__onfinish__``; then ``__result__()`` gives the result. When an error has used up the
    lives, ``self.error`` holds it and ``__error__()`` decides: its return value becomes the
    result, or is raised if it is an exception (the default returns ``self.error``).

    In the child, ``self.tell(obj)`` sends to the parent and ``self.listen()`` receives from
    it; in the parent the same methods talk to the child.
    """

    error: BaseException | None = None
    """In ``__error__``: the ``ProcessError`` that ended the loop (``original_error`` inside)."""

    # -- configuration ----------------------------------------------------------------

    @property
    def process_config(self) -> ProcessConfig:
        """How this process loops: ``runs``, ``join_in``, ``lives``, ``timeouts.*``."""
        config = self.__dict__.get("_sk_config")
        if config is None:
            config = self.__dict__["_sk_config"] = ProcessConfig()
        return config

    # -- lifecycle defaults -----------------------------------------------------------

    def __prerun__(self) -> None:
        """Runs before each ``__run__``. Default: nothing."""

    def __run__(self) -> None:
        """The work of one iteration. Subclasses must define it."""
        raise NotImplementedError(f"{type(self).__name__} must define __run__")

    def __postrun__(self) -> None:
        """Runs after each ``__run__``. Default: nothing."""

    def __onfinish__(self) -> None:
        """Runs once after the loop. Default: nothing."""

    def __result__(self) -> Any:
        """The result of the process. Default: ``None``."""
        return None

    def __error__(self) -> Any:
        """Decides the outcome once the lives are used up. Default: raise ``self.error``."""
        return self.error

    # -- state shipped to the child ---------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for runtime in _RUNTIME:
            state.pop(runtime, None)
        return state

    @property
    def _sk_stop_asked(self) -> bool:
        return bool(self.__dict__.get("_sk_stop_flag", False))

    def _sk_parent_handle(self, action: str) -> _Parent:
        handle: _Parent | None = self.__dict__.get("_sk_parent")
        if handle is None:
            raise ProcessError(f"cannot {action}: {type(self).__name__} has not been started")
        return handle

    # -- parent control -----------------------------------------------------------

    def start(self, *, context: Context | None = None) -> None:
        """Start the child process and return at once.

        ``context`` is a ``multiprocessing`` context (default: the current default start
        method). Raises ``ProcessError`` if this object was already started (also when two
        threads start it at the same time: exactly one of them starts it).
        """
        if type(self).__run__ is Skprocess.__run__:
            raise TypeError(f"{type(self).__name__} must define __run__")
        if context is not None and not isinstance(context, multiprocessing.context.BaseContext):
            raise TypeError(f"context must be a multiprocessing context or None, got {context!r}")
        with _start_lock:
            if "_sk_parent" in self.__dict__ or "_sk_starting" in self.__dict__:
                raise ProcessError(
                    f"{type(self).__name__} was already started; create a new one"
                )
            self.__dict__["_sk_starting"] = True
        try:
            handle = self._sk_launch(context or multiprocessing.get_context())
        except BaseException:
            self.__dict__.pop("_sk_starting", None)
            raise
        self.__dict__["_sk_parent"] = handle
        _forget_finished()
        with _live_lock:
            _live[id(handle)] = handle
        run_at_exit(_stop_leftovers)

    def _sk_launch(self, ctx: Context) -> _Parent:
        payload = dumps(self)
        parent_messages, child_messages = Channel.pair()
        results_reader, results_writer = Channel.pair()
        opened = [parent_messages, child_messages, results_reader, results_writer]
        process: BaseProcess | None = None
        try:
            stop_event = ctx.Event()
            current_run = ctx.Value("q", 0, lock=False)
            process = ctx.Process(
                target=_child_main,
                args=(
                    payload,
                    child_messages,
                    results_writer,
                    stop_event,
                    current_run,
                    os.getpid(),
                ),
                name=f"suitkaise:{type(self).__name__}",
            )
            process.start()
        except BaseException:
            # Interrupted or refused part-way: nothing of it may outlive this call.
            if process is not None and process.pid is not None:
                process.kill()
                process.join()
            for channel in opened:
                channel.close()
            raise
        child_messages.close()
        results_writer.close()
        return _Parent(process, parent_messages, results_reader, stop_event, current_run)

    def stop(self) -> None:
        """Ask the loop to end gracefully.

        In the child (from a section): the loop ends after the current section
        (``__postrun__`` is skipped when called from ``__run__``); ``__onfinish__`` and
        ``__result__`` still run. In the parent: the child does the same at its next check,
        between sections. Does not wait; use ``wait()``.
        """
        child: _Child | None = self.__dict__.get("_sk_child")
        if child is not None or "_sk_parent" not in self.__dict__:
            self.__dict__["_sk_stop_flag"] = True
            return
        self._sk_parent_handle("stop").stop_event.set()

    def kill(self) -> None:
        """Kill the child at once (SIGKILL). Its result becomes a ``ProcessError``."""
        self._sk_parent_handle("kill").kill()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the child has finished, at most ``timeout`` seconds (None: forever).

        Returns ``True`` once the child has reported and exited, ``False`` on timeout.
        ``timeout`` is seconds (a number or a ``datetime.timedelta``, >= 0).
        """
        handle = self._sk_parent_handle("wait")
        timeout = optional_seconds("timeout", timeout, positive=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        if handle.outcome is None:
            if not handle.collect.acquire(timeout=-1 if timeout is None else timeout):
                return False  # another thread is collecting and has not finished yet
            try:
                if handle.outcome is None:
                    outcome = self._sk_collect(handle, deadline)
                    if outcome is None:
                        return False
                    handle.outcome = outcome
                    handle.results.close()  # read once, under this lock: never used again
            finally:
                handle.collect.release()
        if not handle.exited(_left(deadline)):
            return False  # reported, but still exiting (say, a thread it must join)
        with _live_lock:
            _live.pop(id(handle), None)
        return True

    def _sk_collect(self, handle: _Parent, deadline: float | None) -> Outcome | None:
        """The child's report, or ``None`` if none came before ``deadline``."""
        try:
            data = handle.results.recv(_left(deadline), watch=handle.process.sentinel)
        except ChannelClosed:
            # No report, and none can come: the child has exited (or is exiting).
            if not handle.exited(_left(deadline)):
                return None
            code = handle.exit_code()
            how = (
                f"was killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exited with code {code}"
            )
            return Outcome(
                None,
                ProcessError(
                    f"{type(self).__name__} {how} before reporting a result",
                    current_run=handle.current_run.value,
                    exit_code=code,
                ),
            )
        if data is None:
            return None
        try:
            outcome: Outcome = loads(data)
        except Exception as error:  # e.g. a class the child could import and we cannot
            return Outcome(
                None,
                ResultError(
                    f"the outcome of {type(self).__name__} could not be rebuilt in the parent "
                    f"process: {type(error).__name__}: {error}",
                    current_run=handle.current_run.value,
                ),
            )
        return outcome

    def result(self) -> Any:
        """Wait for the child and return the value of ``__result__`` (or of ``__error__``).

        Raises the error the child ended with: a ``ProcessError`` subclass carrying
        ``current_run`` and ``original_error``, or whatever ``__error__`` returned. A
        ``sys.exit()`` or ``KeyboardInterrupt`` in a section is a ``ProcessError`` with
        ``exit_code`` (for ``sys.exit()``) and ``remote_traceback``.
        """
        self.wait()
        outcome = self._sk_parent_handle("get the result").outcome
        assert outcome is not None
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def run(self) -> Any:
        """``start()``, ``wait()`` and ``result()`` in one call."""
        self.start()
        return self.result()

    def tell(self, obj: Any) -> None:
        """Send ``obj`` to the other side: to the child from the parent, or the reverse.

        Waits while the other side's buffer is full. Raises ``ProcessError`` if the other
        side is gone. An exception that interrupts ``tell`` (a signal handler's, a section
        timeout) loses that message whole: the other side never sees part of it.
        """
        data = dumps(obj)
        channel, watch = self._sk_channel("tell")
        try:
            channel.send(data, watch=watch)
        except ChannelClosed as error:
            raise ProcessError(
                f"cannot tell: the other side of {type(self).__name__} is gone"
            ) from error

    def listen(self, timeout: float | None = None) -> Any:
        """Receive the next object sent by the other side with ``tell()``.

        Waits at most ``timeout`` seconds (None: until something arrives; a number or a
        ``datetime.timedelta``, >= 0) and returns ``None`` if nothing came, or if the other
        side is gone. Each message goes whole to exactly one caller, also with several
        threads listening. An exception that interrupts ``listen`` loses nothing: the next
        ``listen`` returns the message it was receiving.
        """
        timeout = optional_seconds("timeout", timeout, positive=False)
        channel, watch = self._sk_channel("listen")
        try:
            data = channel.recv(timeout, watch=watch)
        except ChannelClosed:
            return None
        return None if data is None else loads(data)

    def _sk_channel(self, action: str) -> tuple[Channel, int | None]:
        """The message channel, and the fd that tells us the other side is gone (or None)."""
        child: _Child | None = self.__dict__.get("_sk_child")
        if child is not None:
            if child.messages is None:
                raise ProcessError(f"{action}() is not available to an Skprocess run by a Pool")
            return child.messages, None  # the child exits with its parent
        handle = self._sk_parent_handle(action)
        return handle.messages, handle.process.sentinel

    @property
    def current_run(self) -> int:
        """The run (1-based iteration) in progress or last started; 0 before the first."""
        child: _Child | None = self.__dict__.get("_sk_child")
        if child is not None:
            return child.run
        handle: _Parent | None = self.__dict__.get("_sk_parent")
        return 0 if handle is None else int(handle.current_run.value)

    @property
    def is_alive(self) -> bool:
        """``True`` while the child process is running."""
        handle: _Parent | None = self.__dict__.get("_sk_parent")
        return handle is not None and handle.alive()

    def __repr__(self) -> str:
        handle: _Parent | None = self.__dict__.get("_sk_parent")
        if handle is None:
            status = "not started"
        elif handle.alive():
            status = f"running, pid {handle.process.pid}, run {self.current_run}"
        else:
            status = f"finished, exit code {handle.exit_code()}"
        return f"<{type(self).__name__} ({status})>"


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def host(obj: Skprocess, child: _Child) -> Outcome:
    """Run ``obj``'s lifecycle in this process, with ``child`` as its link to the host."""
    obj.__dict__["_sk_child"] = child
    return run_lifecycle(obj, child)


def portable_outcome(outcome: Outcome) -> bytes:
    """Serialize an outcome for the parent. What cannot make the trip is replaced by a
    ``ProcessError`` that says what it was, so the parent always gets an answer."""
    try:
        return round_trip(outcome)
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
    if outcome.error is None:
        return dumps(
            Outcome(
                None,
                ResultError(
                    f"the result {outcome.value!r:.200} could not be sent to the parent "
                    f"process ({problem})"
                ),
            )
        )
    original = outcome.error
    inner = getattr(original, "original_error", None)
    stand_in = RuntimeError(
        f"{type(inner).__name__}: {inner} (the exception itself could not be sent to the "
        f"parent process: {problem})"
    )
    if isinstance(original, ProcessError):
        replacement = type(original)(
            original.message, current_run=original.current_run, original_error=stand_in
        )
        replacement.remote_traceback = original.remote_traceback
    else:
        replacement = ProcessError(
            f"{type(original).__name__}: {original} (could not be sent to the parent "
            f"process: {problem})"
        )
    return dumps(Outcome(None, replacement))


def _child_main(
    payload: bytes,
    messages: Channel,
    results: Channel,
    stop_event: Event,
    current_run: Synchronized[int],
    owner: int,
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides how its children end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(owner)
    obj: Skprocess = loads(payload)
    outcome = host(obj, _Child(messages, stop_event, current_run))
    with contextlib.suppress(ChannelClosed):  # closed: nobody is waiting for the report
        results.send(portable_outcome(outcome))
    results.close()
    messages.close()
    error = outcome.error
    if isinstance(error, ProcessError) and isinstance(error.original_error, SystemExit):
        raise SystemExit(error.exit_code)  # reported; now leave with the status asked for
