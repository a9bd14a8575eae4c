"""Pool: run a function, or an Skprocess class, over many items in worker processes.

The pool manages its own workers (no ``concurrent.futures``, no private CPython API):

- Up to ``workers`` processes, started on demand from the pool's ``multiprocessing`` context,
  each with its own duplex pipe to the pool. They ignore SIGINT and exit on their own if this
  process dies (``_orphan.py``). What runs in them is in ``_worker.py``.
- A call cuts its items into chunks, pickles them (cloudpickle) in the calling thread and
  queues them. One dispatcher thread per pool hands queued chunks to idle workers, reads the
  replies and watches every worker's sentinel. It knows which worker runs which chunk of
  which call, so:
    * a call that times out, fails, is cancelled or abandoned kills and replaces only the
      workers running *its* chunks and drops *its* queued chunks; other calls carry on;
    * a worker that dies fails only the call whose chunk it was running (a ``ProcessError``
      with its exit code), and is replaced.
- The waiting is done by the caller (or, for ``.background()``/``.asynced()``, a thread of
  the call), on a condition the dispatcher signals, with the call's deadline.

User code never runs in the dispatcher thread, and the dispatcher never waits on a worker
without also watching that worker's sentinel and its own wake-up pipe.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import select
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._validation import count, seconds
from ._errors import ProcessError
from ._orphan import run_at_exit
from ._pickling import dumps, loads
from ._skprocess import Skprocess
from ._worker import REPLY, TASK, worker_main

if TYPE_CHECKING:
    from concurrent.futures import Future
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._skprocess import Context

__all__ = ["Pool", "RemoteTraceback"]

_KINDS = ("map", "unordered_map", "imap", "unordered_imap")
_STOP_GRACE_SECONDS = 5.0  # an idle worker told to exit gets this long before SIGKILL
_START_RETRY_SECONDS = 1.0  # after a worker failed to start, wait this long to try again
_WAIT_SLICE_SECONDS = 1.0  # callers re-check the dispatcher at least this often

_task_ids = itertools.count(1)
_call_ids = itertools.count(1)


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception re-raised from a worker: its traceback, as text."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- the state of one call -------------------------------------------------------------


class _Task:
    """One chunk of a call, queued or running."""

    __slots__ = ("blob", "call", "id", "index")

    def __init__(self, call: _CallState, index: int, blob: bytes) -> None:
        self.call = call
        self.index = index
        self.blob = blob
        self.id = next(_task_ids)


Entry = bytes | BaseException
"""What arrived for a chunk: a worker's reply (results, maybe an item's error), or the
failure that stands for it (the worker running it died)."""


class _CallState:
    """A call's chunks and what came back, guarded by the engine's lock."""

    def __init__(
        self, kind: str, chunks: int, fn_blob: bytes, star: bool, lock: threading.Lock
    ) -> None:
        self.id = next(_call_ids)
        # Its own condition on the engine's lock: an arrival wakes this call's waiter only.
        self.changed = threading.Condition(lock)
        self.kind = kind
        self.fn_blob = fn_blob
        self.star = star
        self.total = chunks
        self.pending: set[int] = set(range(chunks))  # queued or running
        self.arrived: dict[int, Entry] = {}
        self.order: deque[int] = deque()  # arrival order, for the unordered kinds
        self.abort: BaseException | None = None  # the whole call failed (timeout, ...)

    @property
    def finished(self) -> bool:
        """Nothing of this call is queued or running any more."""
        return not self.pending


# -- the engine: workers and the dispatcher ---------------------------------------------


class _Worker:
    __slots__ = ("broken", "conn", "doomed", "loaded", "process", "stopping", "task")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.task: _Task | None = None
        self.loaded = 0  # id of the call whose function the worker holds
        self.doomed = False  # killed on purpose: its death is not news
        self.broken = False  # its pipe failed: only its sentinel is watched
        self.stopping = False  # told to exit

    @property
    def idle(self) -> bool:
        return self.task is None and not (self.doomed or self.broken or self.stopping)


_engines: weakref.WeakSet[_Engine] = weakref.WeakSet()


class _Engine:
    """Everything of a Pool but its public face; the dispatcher thread refers to this, not
    to the Pool, so that a Pool nobody refers to can be collected (and its workers end)."""

    def __init__(self, size: int, context: Context | None) -> None:
        self.size = size
        self.context = context
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.state = "open"  # open -> closing -> closed, or -> terminated
        self.dropped = False  # the Pool was garbage-collected
        self.workers: list[_Worker] = []
        self.starting = 0
        self.retry_at = 0.0
        self.queue: deque[_Task] = deque()
        self.calls: set[_CallState] = set()  # calls with work queued or running
        self.requests: deque[tuple[_CallState, BaseException]] = deque()  # cancel_soon
        self.thread: threading.Thread | None = None
        self.wake_lock = threading.Lock()
        self.wake_fds: tuple[int, int] | None = None
        self.background: set[threading.Thread] = set()
        self.stop_deadline: float | None = None
        # The dispatcher's (only it touches them): its poll object and what each fd is.
        self.poller = select.poll()
        self.watched: dict[int, tuple[str, _Worker | None]] = {}
        _engines.add(self)

    # -- called by the calling threads ------------------------------------------------

    def submit(
        self,
        kind: str,
        fn: Callable[..., Any] | type[Skprocess],
        items: list[Any],
        star: bool,
    ) -> _CallState:
        """Pickle and queue the call's chunks (in the calling thread); returns its state."""
        self.check_usable()
        try:
            fn_blob = dumps(fn)
        except Exception as error:
            raise TypeError(
                f"Pool.{kind}: the function {fn!r} cannot be sent to a worker process "
                f"({type(error).__name__}: {error})"
            ) from error
        if isinstance(fn, type) and issubclass(fn, Skprocess):
            size = 1  # each item is a whole lifecycle: spread them over every worker
        else:
            size = max(1, math.ceil(len(items) / (self.size * 4)))
        blobs = []
        for start in range(0, len(items), size):
            try:
                blobs.append(dumps(items[start : start + size]))
            except Exception as error:
                raise TypeError(
                    f"Pool.{kind}: an item among items {start} to "
                    f"{min(start + size, len(items)) - 1} cannot be sent to a worker process "
                    f"({type(error).__name__}: {error})"
                ) from error
        call = _CallState(kind, len(blobs), fn_blob, star, self.lock)
        if not blobs:
            return call
        with self.lock:
            self.check_usable()
            try:
                self.calls.add(call)
                self.queue.extend(_Task(call, index, blob) for index, blob in enumerate(blobs))
                self._ensure_dispatcher_locked()
            except BaseException as error:  # before the caller even has the call
                self._cancel_locked(call, ProcessError(f"Pool.{kind} was not submitted"))
                raise error
        self.wake()
        return call

    def check_usable(self) -> None:
        if self.pid != os.getpid():
            raise ProcessError(
                f"this Pool belongs to process {self.pid}; create a Pool in this process"
            )
        if self.state != "open":
            raise ProcessError(f"this Pool was {self.state}; create a new one")

    def wait_for(
        self,
        call: _CallState,
        ready: Callable[[], bool],
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        """Wait until ``ready()`` (checked under the lock) or the call is aborted; on the
        deadline, cancel the call and raise ``TimeoutError``."""
        with call.changed:
            while not ready():
                if call.abort is not None:
                    raise call.abort
                step = _WAIT_SLICE_SECONDS
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        expired = TimeoutError(
                            f"Pool.{call.kind} did not finish within {timeout:g} s"
                        )
                        self._cancel_locked(call, expired)
                        raise expired
                    step = min(step, remaining)
                call.changed.wait(step)
                thread = self.thread
                if not call.finished and (thread is None or not thread.is_alive()):
                    # Never expected: the dispatcher is the only one that can finish it.
                    self._cancel_locked(
                        call, ProcessError("the Pool's dispatcher thread is gone")
                    )

    def cancel_soon(self, call: _CallState, failure: BaseException) -> None:
        """Cancel what is left of ``call``, without ever blocking: this runs where a lock
        may already be held (a generator closed by the garbage collector)."""
        if call.finished:
            return
        if self.lock.acquire(blocking=False):
            try:
                self._cancel_locked(call, failure)
            finally:
                self.lock.release()
            return
        self.requests.append((call, failure))  # deque.append: atomic
        self.wake()

    def wake(self) -> None:
        # Never blocks: the pipe is non-blocking, and a full pipe already means "wake up".
        if not self.wake_lock.acquire(blocking=False):
            return  # another thread is writing (or closing) right now: the dispatcher wakes
        try:
            if self.wake_fds is not None:
                with contextlib.suppress(OSError):  # BlockingIOError: already awake
                    os.write(self.wake_fds[1], b"\0")
        finally:
            self.wake_lock.release()

    # -- ending --------------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            if self.state == "open":
                self.state = "closing"
        self.wake()
        self._join_background(None)
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self.lock:
            if self.state == "closing":
                self.state = "closed"

    def terminate(self) -> None:
        with self.lock:
            if self.state != "terminated":
                self.state = "terminated"
                failure = ProcessError("the Pool was terminated while this call was running")
                for call in list(self.calls):
                    self._cancel_locked(call, failure)
                self.queue.clear()
                for worker in self.workers:
                    self._kill_locked(worker)
        self.wake()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(60.0)  # reaping SIGKILLed processes: quick
        self._join_background(10.0)

    def drop(self) -> None:
        """The Pool was garbage-collected: end the workers once nothing runs. Lock-free."""
        self.dropped = True
        self.wake()

    def at_exit(self) -> None:
        if self.pid != os.getpid():
            return
        with self.lock:
            busy = bool(self.calls)
        if busy:
            # A call nobody waits for (a background call after Ctrl-C in the main thread)
            # must not keep the interpreter alive.
            self.terminate()
        else:
            self.close()

    def _join_background(self, timeout: float | None) -> None:
        current = threading.current_thread()
        for thread in list(self.background):
            if thread is not current:
                thread.join(timeout)

    # -- under the lock ------------------------------------------------------------------

    def _ensure_dispatcher_locked(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        run_at_exit(_end_pools)
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        with self.wake_lock:
            self.wake_fds = (read, write)
        self.thread = threading.Thread(
            target=self._dispatch,
            args=((read, write),),
            name="suitkaise-pool-dispatcher",
            daemon=True,
        )
        self.thread.start()

    def _cancel_locked(self, call: _CallState, failure: BaseException) -> None:
        """Fail the whole call with ``failure``: drop its queued chunks, kill the workers
        running its chunks. Other calls are not touched."""
        if call.abort is None and call.pending:
            call.abort = failure
        self._drop_locked(call, set(call.pending))

    def _drop_locked(self, call: _CallState, indexes: set[int]) -> None:
        if not indexes:
            return
        call.pending -= indexes
        self.queue = deque(t for t in self.queue if not (t.call is call and t.index in indexes))
        for worker in self.workers:
            task = worker.task
            if task is not None and task.call is call and task.index in indexes:
                self._kill_locked(worker)
        if call.finished:
            self.calls.discard(call)
        call.changed.notify_all()

    def _kill_locked(self, worker: _Worker) -> None:
        worker.doomed = True
        worker.task = None
        if worker.process.exitcode is None:
            worker.process.kill()  # os.kill: our unreaped child, so the pid is still ours

    def _arrive_locked(self, call: _CallState, index: int, entry: Entry, error: bool) -> None:
        if index not in call.pending:
            return  # cancelled meanwhile
        call.pending.discard(index)
        call.arrived[index] = entry
        call.order.append(index)
        if error:
            if call.kind in ("map", "imap"):
                # In input order: the chunks before this one still come first (and one of
                # them may hold an earlier error); the ones after it are not wanted.
                self._drop_locked(call, {i for i in call.pending if i > index})
            else:
                self._drop_locked(call, set(call.pending))
        if call.finished:
            self.calls.discard(call)
        call.changed.notify_all()

    # -- the dispatcher thread -----------------------------------------------------------

    def _dispatch(self, wake: tuple[int, int]) -> None:
        try:
            self._loop(wake[0])
        except BaseException as error:  # a bug here must not leave a caller waiting
            with self.lock:
                failure = ProcessError(f"the Pool's dispatcher failed: {error!r}")
                for call in list(self.calls):
                    self._cancel_locked(call, failure)
                for worker in self.workers:
                    self._kill_locked(worker)
            for worker in list(self.workers):
                self._reap(worker)
            raise
        finally:
            with self.wake_lock:
                if self.wake_fds == wake:
                    self.wake_fds = None
                os.close(wake[0])
                os.close(wake[1])

    def _loop(self, wake: int) -> None:
        # One poll object for the dispatcher's life: fds are registered as workers come
        # and go (fd -> what it is), rather than a selector built on every turn.
        self.poller = select.poll()
        self.watched = {wake: ("wake", None)}
        self.poller.register(wake, select.POLLIN)
        while True:
            with self.lock:
                while self.requests:
                    call, failure = self.requests.popleft()
                    self._cancel_locked(call, failure)
                ending = self.state in ("closed", "terminated") or (
                    (self.state == "closing" or self.dropped) and not self.calls
                )
                stops: list[_Worker] = []
                if ending:
                    if not self.workers and not self.starting:
                        return
                    stops = [w for w in self.workers if w.idle]
                    for worker in stops:
                        worker.stopping = True
                    if self.stop_deadline is None:
                        self.stop_deadline = time.monotonic() + _STOP_GRACE_SECONDS
                    elif self.stop_deadline <= time.monotonic():
                        # Told to exit and still there (a thread of its own it waits for):
                        # no more waiting.
                        for worker in self.workers:
                            self._kill_locked(worker)
                sends = self._assign_locked()
                start = self._starts_needed_locked()
                self.starting += start
                timeout = self._timeout_locked()
            for worker, parts in sends:
                self._send(worker, parts)
            for worker in stops:
                self._send(worker, (b"",))
            if start:
                # All at once, before any of them is busy: each fork then competes with
                # fewer running processes for the CPUs.
                for _ in range(start):
                    self._start_worker()
                continue
            ready = self.poller.poll(None if timeout is None else math.ceil(timeout * 1000))
            self._handle([fd for fd, _ in ready])

    def _assign_locked(self) -> list[tuple[_Worker, tuple[bytes, ...]]]:
        sends: list[tuple[_Worker, tuple[bytes, ...]]] = []
        idle = [w for w in self.workers if w.idle]
        while self.queue and idle:
            task = self.queue.popleft()
            worker = idle.pop()
            worker.task = task
            call = task.call
            fn = b"" if worker.loaded == call.id else call.fn_blob
            worker.loaded = call.id
            sends.append((worker, (TASK.pack(task.id, call.star, len(fn)), fn, task.blob)))
        return sends

    def _starts_needed_locked(self) -> int:
        """How many workers to start now: one for each queued chunk no worker can take,
        within ``size``."""
        if self.state == "terminated" or time.monotonic() < self.retry_at:
            return 0
        return max(0, min(len(self.queue), self.size - len(self.workers) - self.starting))

    def _timeout_locked(self) -> float | None:
        """Seconds until the dispatcher has something to do on its own, or None."""
        now = time.monotonic()
        deadlines = []
        if self.stop_deadline is not None and self.stop_deadline > now:
            deadlines.append(self.stop_deadline)
        if self.queue and self.retry_at > now:
            deadlines.append(self.retry_at)
        return min(deadlines) - now if deadlines else None

    def _send(self, worker: _Worker, parts: tuple[bytes, ...]) -> None:
        try:
            worker.conn.send_bytes(b"".join(parts))
        except OSError:
            with self.lock:
                # The worker is gone (or its pipe is): it never got the task, so the task
                # goes back to the front of the queue for another worker.
                task = worker.task
                if task is not None and task.index in task.call.pending:
                    self.queue.appendleft(task)
                worker.task = None
                worker.broken = True
                self._kill_locked(worker)

    def _start_worker(self) -> None:
        ctx: Any = self.context or multiprocessing.get_context()
        ours, theirs = ctx.Pipe(duplex=True)
        try:
            process = ctx.Process(
                target=worker_main,
                args=(theirs, os.getpid()),
                name="suitkaise-pool-worker",
                daemon=False,  # daemonic processes may not start processes of their own
            )
            process.start()
        except BaseException as error:
            ours.close()
            theirs.close()
            with self.lock:
                self.starting -= 1
                self.retry_at = time.monotonic() + _START_RETRY_SECONDS
                if not self.workers and not self.starting:
                    # No worker at all: the queued calls cannot run.
                    failure = ProcessError(
                        f"could not start a Pool worker process: {type(error).__name__}: "
                        f"{error}"
                    )
                    for call in list(self.calls):
                        self._cancel_locked(call, failure)
            if not isinstance(error, Exception):
                raise
            return
        theirs.close()
        worker = _Worker(process, ours)
        self._watch(worker.conn.fileno(), "reply", worker)
        self._watch(process.sentinel, "exit", worker)
        with self.lock:
            self.starting -= 1
            self.workers.append(worker)
            if self.state == "terminated":
                self._kill_locked(worker)

    def _watch(self, fd: int, what: str, worker: _Worker) -> None:
        self.watched[fd] = (what, worker)
        self.poller.register(fd, select.POLLIN)

    def _unwatch(self, fd: int) -> None:
        if self.watched.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def _handle(self, ready: list[int]) -> None:
        died = []
        for fd in ready:
            what, worker = self.watched.get(fd, ("gone", None))
            if what == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 4096):
                        pass
            elif what == "reply" and worker is not None:
                self._receive(worker)
            elif what == "exit" and worker is not None:
                died.append(worker)
        for worker in died:  # after the replies: a reply sent just before dying counts
            self._reap(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._unwatch(worker.conn.fileno())  # a hung-up pipe stays "readable"
            with self.lock:
                worker.broken = True
                if worker.process.exitcode is None:
                    # The pipe broke while the process lives on: it can never report.
                    worker.process.kill()
            return
        task_id, _, error_size = REPLY.unpack_from(data)
        with self.lock:
            task = worker.task
            if task is None or task.id != task_id:
                return  # a doomed worker's late reply, or a reply to a cancelled task
            worker.task = None
            if error_size:
                worker.loaded = 0  # the function may not have loaded: send it again
            self._arrive_locked(task.call, task.index, data, bool(error_size))

    def _reap(self, worker: _Worker) -> None:
        # Under the lock: a canceller polls and kills workers under it too, and a kill
        # racing with the reaping could reach a recycled pid.
        with self.lock:
            worker.process.join()  # its sentinel is ready: it has exited (or is exiting)
            code = worker.process.exitcode
            if worker in self.workers:
                self.workers.remove(worker)
            task = worker.task
            worker.task = None
            if task is not None and not worker.doomed:
                failure = _died(worker.process.pid, code, task.call.kind)
                self._arrive_locked(task.call, task.index, failure, True)
            self._unwatch(worker.conn.fileno())
            self._unwatch(worker.process.sentinel)
            worker.conn.close()
            worker.process.close()


def _died(pid: int | None, code: int | None, kind: str) -> ProcessError:
    if code is not None and code < 0:
        try:
            how = f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with exit code {code}"
    return ProcessError(
        f"a Pool worker process (pid {pid}) died while running items of Pool.{kind}: it {how}. "
        "The items it held have no result; the pool started a fresh worker in its place.",
        exit_code=code,
    )


def _end_pools() -> None:
    # Run at exit before anything joins the children (run_at_exit), which idle workers
    # would never satisfy: in the main process, and in a process of ours (an Skprocess
    # child, a Pool worker) that made a pool of its own.
    for engine in list(_engines):
        engine.at_exit()


# -- reading a call's results (in the calling thread) ----------------------------------


def _raise_error(entry: Entry) -> None:
    if isinstance(entry, BaseException):
        raise entry
    _, results_size, error_size = REPLY.unpack_from(entry)
    view = memoryview(entry)[REPLY.size + results_size :]
    try:
        failure: BaseException = loads(view[:error_size])
    except Exception as error:
        raise ProcessError(
            f"an exception from a Pool worker could not be rebuilt here: "
            f"{type(error).__name__}: {error}"
        ) from error
    text = bytes(view[error_size:]).decode("utf-8", "replace")
    raise failure from RemoteTraceback(f'\n"""\n{text}"""')


def _collect(
    engine: _Engine, call: _CallState, deadline: float | None, timeout: float | None
) -> list[Any]:
    """The list a call returns. Each chunk is decoded as soon as it arrives (in this
    thread, while the workers go on); the list is put together at the end, in input order
    (map, imap) or arrival order, and the first error in that order is raised."""
    decoded: dict[int, tuple[list[Any], Entry | None]] = {}
    order: list[int] = []
    try:
        while True:
            engine.wait_for(
                call, lambda: bool(call.order) or call.finished, deadline, timeout
            )
            with engine.lock:
                if call.abort is not None:
                    raise call.abort
                taken = [(i, call.arrived.pop(i)) for i in call.order]
                call.order.clear()
                done = call.finished
            for index, entry in taken:
                order.append(index)
                decoded[index] = _decode(entry)
            if done:
                break
    except BaseException as error:
        engine.cancel_soon(call, ProcessError(f"Pool.{call.kind} was abandoned: {error!r}"))
        raise
    if call.kind in ("map", "imap"):
        order = [index for index in range(call.total) if index in decoded]
    results: list[Any] = []
    for index in order:
        values, error_entry = decoded[index]
        results.extend(values)
        if error_entry is not None:
            _raise_error(error_entry)
    return results


def _decode(entry: Entry) -> tuple[list[Any], Entry | None]:
    """An entry's results, and the entry again if it carries an error (else None)."""
    if isinstance(entry, BaseException):
        return [], entry
    _, results_size, error_size = REPLY.unpack_from(entry)
    view = memoryview(entry)[REPLY.size :]
    try:
        results: list[Any] = loads(view[:results_size])
    except Exception as error:
        raise ProcessError(
            f"a result from a Pool worker could not be rebuilt here: {type(error).__name__}: "
            f"{error} (objects whose __init__ needs arguments must define __reduce__)"
        ) from error
    return results, (entry if error_size else None)


def _iterate(
    pool: Pool,
    engine: _Engine,
    call: _CallState,
    deadline: float | None,
    timeout: float | None,
) -> Iterator[Any]:
    """The iterator of imap / unordered_imap: each chunk's results as soon as it (and, for
    imap, every chunk before it) has arrived; an error where it stands. One flat generator
    (no per-item wrapper), which keeps ``pool`` alive while it exists."""
    ordered = call.kind == "imap"
    index = 0

    def ready() -> bool:
        return index in call.arrived if ordered else bool(call.order)

    try:
        for index in range(call.total):  # ready() reads index
            engine.wait_for(call, ready, deadline, timeout)
            with engine.lock:
                entry = call.arrived.pop(index if ordered else call.order.popleft())
            values, error_entry = _decode(entry)
            yield from values
            if error_entry is not None:
                _raise_error(error_entry)
    except BaseException as error:
        # Ctrl-C, a timeout, an error, or the caller closed the iterator: nothing else will
        # collect the rest, so stop that work rather than let it run on.
        engine.cancel_soon(call, ProcessError(f"Pool.{call.kind} was abandoned: {error!r}"))
        raise


def _abandoned(engine: _Engine, call: _CallState) -> None:
    # The iterator was garbage-collected, perhaps before it was ever started (a generator
    # that never ran has no frame to clean up in): cancel what is left of its call.
    with contextlib.suppress(Exception):  # at interpreter exit the module may be half gone
        engine.cancel_soon(call, ProcessError("the iterator was dropped"))


# -- the public face -------------------------------------------------------------------


class _Call:
    """One of ``pool.map`` / ``unordered_map`` / ``imap`` / ``unordered_imap``, with its
    modifiers. Each modifier returns a new call, so they combine in any order."""

    def __init__(
        self,
        pool: Pool,
        kind: str,
        star: bool = False,
        timeout: float | None = None,
        mode: str = "now",
    ) -> None:
        self._pool = pool
        self._kind = kind
        self._star = star
        self._timeout = timeout
        self._mode = mode

    def _with(self, **changes: Any) -> _Call:
        settings = {
            "star": self._star,
            "timeout": self._timeout,
            "mode": self._mode,
            **changes,
        }
        return _Call(self._pool, self._kind, **settings)

    def timeout(self, seconds: float) -> _Call:
        """Raise ``TimeoutError`` if the whole call takes longer than ``seconds`` (a number
        > 0 or a ``datetime.timedelta``, at most 1e9 s).

        On expiry the workers running this call's items are killed (and replaced) and its
        queued items are dropped; other calls on the pool are not affected.
        """
        return self._with(timeout=_seconds(seconds))

    def background(self) -> _Call:
        """Return a ``concurrent.futures.Future`` at once instead of blocking (an iterator
        call's future resolves to the list of results). ``future.cancel()`` before it is
        done cancels the call."""
        return self._with(mode="background")

    def asynced(self) -> _Call:
        """Return an awaitable for asyncio instead of blocking (an iterator call's awaitable
        resolves to the list of results). Cancelling the awaiting task cancels the call."""
        return self._with(mode="asynced")

    def __call__(self, fn: Callable[..., Any] | type[Skprocess], items: Iterable[Any]) -> Any:
        """Apply ``fn`` to every item (``fn(*item)`` after ``.star()``).

        ``fn`` may be a function (lambdas and local functions included) or an Skprocess
        subclass: each item is then its constructor argument, the object runs its whole
        lifecycle in a worker and the item's result is its ``__result__``.
        """
        if not callable(fn):
            raise TypeError(f"Pool.{self._kind} needs a function or an Skprocess class, got {fn!r}")
        pool = self._pool
        engine = pool._engine
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        eager = self._mode == "now" and self._kind.endswith("imap")
        call = engine.submit(self._kind, fn, list(items), self._star)
        try:
            if eager:
                iterator = _iterate(pool, engine, call, deadline, self._timeout)
                weakref.finalize(iterator, _abandoned, engine, call)
                return iterator
            if self._mode == "now":
                return _collect(engine, call, deadline, self._timeout)
            future = _in_background(
                pool, engine, call, lambda: _collect(engine, call, deadline, self._timeout)
            )
        except BaseException as error:
            # Ctrl-C before anything waits for the call (the generator's own handler covers
            # the rest): nobody would ever collect it, so it must not run on.
            engine.cancel_soon(call, ProcessError(f"Pool.{self._kind} was abandoned: {error!r}"))
            raise
        if self._mode == "background":
            return future
        return _awaited(future)


def _seconds(value: object) -> float:
    return seconds("timeout", value, positive=True)


def _in_background(
    pool: Pool, engine: _Engine, call: _CallState, collect: Callable[[], list[Any]]
) -> Future[list[Any]]:
    from concurrent.futures import Future  # only background and asynced calls need it

    future: Future[list[Any]] = Future()

    def run() -> None:
        try:
            try:
                value = collect()
            except BaseException as error:
                if future.set_running_or_notify_cancel():
                    future.set_exception(error)
            else:
                if future.set_running_or_notify_cancel():
                    future.set_result(value)
        finally:
            engine.background.discard(threading.current_thread())

    def on_done(done: Future[list[Any]]) -> None:
        if done.cancelled():
            engine.cancel_soon(call, ProcessError("the call's future was cancelled"))

    future.add_done_callback(on_done)
    thread = threading.Thread(
        target=run, name="suitkaise-pool-background", args=(), daemon=True
    )
    thread.pool = pool  # type: ignore[attr-defined]  # keeps the pool alive meanwhile
    engine.background.add(thread)
    thread.start()
    return future


async def _awaited(future: Future[list[Any]]) -> list[Any]:
    import asyncio

    return await asyncio.wrap_future(future)


class _Star:
    """``pool.star()``: the same calls, each item unpacked as the function's arguments."""

    def __init__(self, pool: Pool) -> None:
        self.map = _Call(pool, "map", star=True)
        self.unordered_map = _Call(pool, "unordered_map", star=True)
        self.imap = _Call(pool, "imap", star=True)
        self.unordered_imap = _Call(pool, "unordered_imap", star=True)


class Pool:
    """A pool of worker processes.

    Args:
        workers: the most worker processes to run at once, an int >= 1 (default: the CPU
            count). They are started when work needs them and kept for the next calls.
        context: a ``multiprocessing`` context (default: the current default start method).

    Calls (each also available as ``pool.star().NAME`` to unpack tuples):

    - ``pool.map(fn, items) -> list``: results in input order.
    - ``pool.unordered_map(fn, items) -> list``: results in completion order.
    - ``pool.imap(fn, items) -> iterator``: results in input order, as they come.
    - ``pool.unordered_imap(fn, items) -> iterator``: results in completion order.

    Modifiers, combinable: ``.timeout(seconds)``, ``.background()`` (a
    ``concurrent.futures.Future``), ``.asynced()`` (an awaitable), e.g.
    ``await pool.map.timeout(5).asynced()(fn, items)``.

    An exception in a worker is raised in the parent with its own type and the worker's
    traceback as its ``__cause__``; ``sys.exit()``, ``KeyboardInterrupt`` and other
    ``BaseException``\\ s from user code become a ``ProcessError``. A worker that dies
    (SIGKILL, ``os._exit``) fails only the call it was working for, with a ``ProcessError``
    carrying its ``exit_code``, and is replaced. The pool stays usable after all of these,
    and several threads may use it at once. Ctrl-C during a call ends that call's work.
    Workers exit by themselves if this process dies.
    """

    def __init__(self, workers: int | None = None, *, context: Context | None = None) -> None:
        size = (os.cpu_count() or 1) if workers is None else count("workers", workers)
        if context is not None and not isinstance(context, multiprocessing.context.BaseContext):
            raise TypeError(f"context must be a multiprocessing context or None, got {context!r}")
        self.workers: int = size
        self._engine = _Engine(size, context)
        weakref.finalize(self, self._engine.drop).atexit = False
        self.map = _Call(self, "map")
        self.unordered_map = _Call(self, "unordered_map")
        self.imap = _Call(self, "imap")
        self.unordered_imap = _Call(self, "unordered_imap")

    def star(self) -> _Star:
        """The same calls, with each item unpacked: ``fn(*item)``."""
        return _Star(self)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()

    def close(self) -> None:
        """Let running calls finish (background ones included), then stop the workers and
        wait for them. The pool cannot be used after. Safe to call twice, or from several
        threads."""
        self._engine.close()

    def terminate(self) -> None:
        """Kill the workers now; calls in progress raise ``ProcessError``. The pool cannot
        be used after. Safe to call twice, or from several threads."""
        self._engine.terminate()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Pool cannot be sent to another process; create one in the process that uses it"
        )

    def __repr__(self) -> str:
        state = self._engine.state
        return f"<Pool workers={self.workers} {'open' if state == 'open' else state}>"
