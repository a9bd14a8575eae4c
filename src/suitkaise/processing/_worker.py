"""What runs inside a Pool worker process, and the wire between it and the pool.

A worker owns one end of a duplex pipe to the pool's dispatcher and runs one task at a time:

- task (pool -> worker): ``TASK`` header (task id, star flag, size of the function), the
  function (cloudpickled; only when it differs from the one the worker holds, size 0
  otherwise), then the chunk of items (cloudpickled list). An empty message means "exit".
- reply (worker -> pool): ``REPLY`` header (task id, size of the results, size of the
  error), the results of the items that completed (cloudpickled list), the exception of the
  item that failed (cloudpickled, or nothing), then its traceback as UTF-8 text.

Functions, items, results and exceptions all travel with cloudpickle, so a lambda, an
instance of a class defined in a function or in ``__main__``, or an exception class defined
in ``__main__``, make the trip under fork, spawn and forkserver alike.

Any ``BaseException`` that user code raises (``sys.exit()``, ``KeyboardInterrupt``, ...) is
caught and reported as a ``ProcessError`` carrying it (and, for ``sys.exit()``, the exit
status): the worker never exits because of an item, and the parent never receives a bare
``SystemExit`` that would end it.
"""

from __future__ import annotations

import signal
import struct
import traceback
from typing import TYPE_CHECKING, Any

from ._errors import ProcessError
from ._lifecycle import stop_request
from ._orphan import exit_with_parent
from ._pickling import dumps, loads, portable_error
from ._skprocess import Skprocess, _Child, host

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["REPLY", "TASK", "worker_main"]

TASK = struct.Struct("!QBQ")  # task id, star (0/1), size of the function blob (0: same)
REPLY = struct.Struct("!QQQ")  # task id, size of the results blob, size of the error blob


def worker_main(conn: Connection, owner: int) -> None:
    """The worker's loop: run tasks from ``conn`` until told to exit or the pool is gone."""
    # Ctrl-C reaches the whole process group; the pool ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(owner)
    target: Any = None
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        task, star, fn_size = TASK.unpack_from(message)
        body = memoryview(message)[TASK.size :]
        if fn_size:
            target = None  # stays None if loading fails: the next task resends nothing
            try:
                target = loads(body[:fn_size])
            except BaseException as error:
                conn.send_bytes(_reply(task, [], error, "the Pool function"))
                continue
        conn.send_bytes(_run(task, target, bool(star), body[fn_size:]))
        del message, body
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # an item changed it: undo


def _run(task: int, target: Any, star: bool, items_blob: memoryview) -> bytes:
    results: list[Any] = []
    where = "a Pool item"
    try:
        if target is None:
            raise ProcessError("the Pool function could not be loaded in the worker process")
        where = f"a Pool item of {getattr(target, '__qualname__', repr(target))}"
        items: list[Any] = loads(items_blob)
        if isinstance(target, type) and issubclass(target, Skprocess):
            for item in items:
                results.append(_run_process(target, item, star))
        elif star:
            for item in items:
                results.append(target(*item))
        else:
            for item in items:
                results.append(target(item))
    except BaseException as error:
        # The items before the failing one keep their results (imap yields them first).
        return _reply(task, results, error, where)
    return _reply(task, results, None, where)


def _run_process(cls: type[Skprocess], item: Any, star: bool) -> Any:
    factory: Any = cls  # the subclass's own __init__ decides what it takes
    obj: Skprocess = factory(*item) if star else factory(item)
    outcome = host(obj, _Child(None, None, None))
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def _reply(task: int, results: list[Any], error: BaseException | None, where: str) -> bytes:
    try:
        results_blob = dumps(results)
    except Exception as problem:
        results_blob = dumps([])
        if error is None:
            error = ProcessError(
                f"a result could not be sent back to the parent process ({where}): "
                f"{type(problem).__name__}: {problem}"
            )
    if error is None:
        return REPLY.pack(task, len(results_blob), 0) + results_blob
    if isinstance(error, Exception):
        text = "".join(traceback.format_exception(error))
    else:
        error = stop_request(error, where, None)
        text = error.remote_traceback or ""
    error_blob = portable_error(error, ProcessError)
    return b"".join(
        (
            REPLY.pack(task, len(results_blob), len(error_blob)),
            results_blob,
            error_blob,
            text.encode("utf-8", "replace"),
        )
    )
