"""Pool: run a function, or an Skprocess class, over many items in worker processes.

Built on ``concurrent.futures.ProcessPoolExecutor`` (which re-raises worker exceptions with
their type and the worker's traceback, and notices dead workers). Functions travel with
cloudpickle, so lambdas and locally defined functions work under every start method.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from ._errors import ProcessError
from ._orphan import exit_with_parent
from ._pickling import dumps, loads, portable_error
from ._skprocess import Skprocess, _Child, host

if TYPE_CHECKING:
    from ._skprocess import Context

__all__ = ["Pool"]

_KINDS = ("map", "unordered_map", "imap", "unordered_imap")


# -- in the worker --------------------------------------------------------------------


def _worker_init(owner: int) -> None:
    # Ctrl-C reaches the whole process group; the parent ends the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(owner)


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception re-raised from a worker: its traceback, as text."""

    def __str__(self) -> str:
        return str(self.args[0])


_loaded: dict[bytes, Any] = {}

Shipment = tuple[bytes, bytes | None, str]
"""What a worker sends back for a chunk: the results it got (cloudpickled), and, if an item
raised, that exception (cloudpickled) and its traceback as text.

Results and errors travel with cloudpickle because their classes may have travelled that way
too: a class defined in ``__main__`` is rebuilt by value in the worker, and the standard
pickle cannot send its instances back, while cloudpickle maps them to the original class.
"""


def _run_chunk(blob: bytes, star: bool, chunk: list[Any]) -> Shipment:
    results: list[Any] = []
    try:
        target = _loaded.get(blob)
        if target is None:
            _loaded.clear()  # one call at a time per worker: keep only the current target
            target = _loaded[blob] = loads(blob)
        if isinstance(target, type) and issubclass(target, Skprocess):
            for item in chunk:
                results.append(_run_process(target, item, star))
        elif star:
            for item in chunk:
                results.append(target(*item))
        else:
            for item in chunk:
                results.append(target(item))
    except Exception as error:
        # The items before the failing one keep their results (imap yields them first).
        text = "".join(traceback.format_exception(error))
        return dumps(results), portable_error(error, ProcessError), text
    return dumps(results), None, ""


def _run_process(cls: type[Skprocess], item: Any, star: bool) -> Any:
    factory: Any = cls  # the subclass's own __init__ decides what it takes
    obj: Skprocess = factory(*item) if star else factory(item)
    outcome = host(obj, _Child(None, None, None))
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


# -- in the parent ----------------------------------------------------------------------


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
        """Raise ``TimeoutError`` if the whole call takes longer than ``seconds``.

        On expiry the pool kills its busy workers (their items are abandoned) and starts
        fresh ones on next use.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"timeout must be a number of seconds, got {seconds!r}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {seconds!r}")
        return self._with(timeout=float(seconds))

    def background(self) -> _Call:
        """Return a ``concurrent.futures.Future`` at once instead of blocking (an iterator
        call's future resolves to the list of results)."""
        return self._with(mode="background")

    def asynced(self) -> _Call:
        """Return an awaitable for asyncio instead of blocking (an iterator call's awaitable
        resolves to the list of results)."""
        return self._with(mode="asynced")

    def __call__(self, fn: Callable[..., Any] | type[Skprocess], items: Iterable[Any]) -> Any:
        """Apply ``fn`` to every item (``fn(*item)`` after ``.star()``).

        ``fn`` may be a function (lambdas and local functions included) or an Skprocess
        subclass: each item is then its constructor argument, the object runs its whole
        lifecycle in a worker and the item's result is its ``__result__``.
        """
        if not callable(fn):
            raise TypeError(f"Pool.{self._kind} needs a function or an Skprocess class, got {fn!r}")
        results = self._pool._execute(self._kind, fn, list(items), self._star, self._timeout)
        if self._mode == "now":
            return results if self._kind.endswith("imap") else list(results)
        future = self._pool._in_background(lambda: list(results))
        if self._mode == "background":
            return future
        return _awaited(future)


class _Star:
    """``pool.star()``: the same calls, each item unpacked as the function's arguments."""

    def __init__(self, pool: Pool) -> None:
        self.map = _Call(pool, "map", star=True)
        self.unordered_map = _Call(pool, "unordered_map", star=True)
        self.imap = _Call(pool, "imap", star=True)
        self.unordered_imap = _Call(pool, "unordered_imap", star=True)


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


def _end_background_calls() -> None:
    # Runs at interpreter exit before concurrent.futures' own hook, which would wait for
    # every running item. A background call nobody waited for (say, after Ctrl-C in the
    # main thread) must not keep the script alive: its workers are killed.
    for pool in list(_pools):
        if pool._threads:
            pool._kill_workers()


threading._register_atexit(_end_background_calls)  # type: ignore[attr-defined]


class Pool:
    """A pool of worker processes.

    Args:
        workers: number of worker processes (default: the CPU count).
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
    traceback as its ``__cause__``; the pool stays usable. A worker that dies (SIGKILL,
    ``os._exit``) raises ``ProcessError`` for the call, and the pool replaces its workers.
    Ctrl-C during a call ends the workers. Workers exit by themselves if this process dies.
    """

    def __init__(self, workers: int | None = None, *, context: Context | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)):
            raise TypeError(f"workers must be an int >= 1 or None, got {workers!r}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be an int >= 1 or None, got {workers!r}")
        self.workers: int = workers or os.cpu_count() or 1
        self._context = context
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.map = _Call(self, "map")
        self.unordered_map = _Call(self, "unordered_map")
        self.imap = _Call(self, "imap")
        self.unordered_imap = _Call(self, "unordered_imap")
        _pools.add(self)

    def star(self) -> _Star:
        """The same calls, with each item unpacked: ``fn(*item)``."""
        return _Star(self)

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()

    def close(self) -> None:
        """Let running calls finish, then stop the workers. The pool cannot be used after."""
        self._closed = True
        for thread in list(self._threads):
            thread.join()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def terminate(self) -> None:
        """Kill the workers now; calls in progress fail. The pool cannot be used after."""
        self._closed = True
        self._kill_workers()

    def _kill_workers(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to kill busy workers (3.14 adds one).
        processes = list(getattr(executor, "_processes", {}).values())
        for process in processes:
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=True, cancel_futures=True)
        for process in processes:
            process.join()

    def _get_executor(self) -> ProcessPoolExecutor:
        if getattr(self._executor, "_broken", False):
            # A worker died between calls (OOM killer, kill -9): replace the workers.
            self._kill_workers()
        with self._lock:
            if self._closed:
                raise ProcessError("this Pool was closed; create a new one")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=self._context,
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            return self._executor

    # -- running calls ----------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., Any] | type[Skprocess], items: list[Any], star: bool
    ) -> list[tuple[Future[Shipment], int]]:
        """Submit items in chunks; returns (future, index of the chunk's first item)."""
        blob = dumps(fn)
        if isinstance(fn, type) and issubclass(fn, Skprocess):
            size = 1  # each item is a whole lifecycle: spread them over every worker
        else:
            size = max(1, math.ceil(len(items) / (self.workers * 4)))
        executor = self._get_executor()
        return [
            (executor.submit(_run_chunk, blob, star, items[start : start + size]), start)
            for start in range(0, len(items), size)
        ]

    def _execute(
        self,
        kind: str,
        fn: Callable[..., Any] | type[Skprocess],
        items: list[Any],
        star: bool,
        timeout: float | None,
    ) -> Iterator[Any]:
        """Submit everything now; the returned iterator collects the results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._collect(kind, self._submit(fn, items, star), deadline, timeout)

    def _collect(
        self,
        kind: str,
        chunks: list[tuple[Future[Shipment], int]],
        deadline: float | None,
        timeout: float | None,
    ) -> Iterator[Any]:
        try:
            if kind in ("map", "imap"):
                for future, _ in chunks:
                    yield from _unpack(future, _remaining(deadline))
            else:
                pending = {future for future, _ in chunks}
                while pending:
                    done, pending = wait_futures(
                        pending, _remaining(deadline), return_when=FIRST_COMPLETED
                    )
                    if not done:
                        raise TimeoutError
                    for future in done:
                        yield from _unpack(future, None)
        except (TimeoutError, FuturesTimeoutError):  # distinct classes before Python 3.11
            self._kill_workers()
            raise TimeoutError(f"Pool.{kind} did not finish within {timeout:g} s") from None
        except BrokenProcessPool as broken:
            codes = self._dead_worker_codes()
            self._kill_workers()
            how = f" (exit code {codes[0]})" if codes else ""
            raise ProcessError(
                f"a Pool worker process died{how} while running Pool.{kind}; "
                "the items it held have no result. "
                "The pool starts fresh workers on its next call."
            ) from broken
        except BaseException:
            # KeyboardInterrupt, or the caller abandoned an iterator: nothing else will
            # collect these results, so stop the work rather than let it run on.
            for future, _ in chunks:
                future.cancel()
            if any(future.running() for future, _ in chunks):
                self._kill_workers()
            raise

    def _dead_worker_codes(self) -> list[int]:
        # The executor SIGTERMs the surviving workers once one has died: skip those.
        executor = self._executor
        processes = [] if executor is None else getattr(executor, "_processes", {}).values()
        codes = [p.exitcode for p in processes]
        return [c for c in codes if c is not None and c not in (0, -signal.SIGTERM)]

    def _in_background(self, work: Callable[[], list[Any]]) -> Future[list[Any]]:
        future: Future[list[Any]] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(work())
            except BaseException as error:
                future.set_exception(error)
            finally:
                self._threads.remove(threading.current_thread())

        thread = threading.Thread(target=run, name="suitkaise-pool-background", daemon=True)
        self._threads.append(thread)
        thread.start()
        return future

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Pool workers={self.workers} {state}>"


async def _awaited(future: Future[list[Any]]) -> list[Any]:
    import asyncio

    return await asyncio.wrap_future(future)


def _unpack(future: Future[Shipment], timeout: float | None) -> Iterator[Any]:
    data, error_payload, text = future.result(timeout)
    try:
        results: list[Any] = loads(data)
    except Exception as error:
        raise ProcessError(
            f"a result from a Pool worker could not be rebuilt here: {type(error).__name__}: "
            f"{error} (objects whose __init__ needs arguments must define __reduce__)"
        ) from error
    yield from results
    if error_payload is not None:
        failure: BaseException = loads(error_payload)
        raise failure from RemoteTraceback(f'\n"""\n{text}"""')


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
