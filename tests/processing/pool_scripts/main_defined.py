"""Run by test_pool.py as ``python main_defined.py START_METHOD``.

Everything the pool runs here is defined in this script's ``__main__``: a lambda, a closure,
Skprocess subclasses and a custom exception class. Under spawn and forkserver the workers
cannot import them by name, so they must travel by value (cloudpickle) and the exception must
come back as the very class defined here. Prints one JSON line of results. The pool is
deliberately not closed: the end of the script must end its workers.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
from typing import Any

from suitkaise.processing import Pool, RunError, Skprocess


class MainError(Exception):
    """A user exception defined in ``__main__``."""


class Square(Skprocess):
    """Two runs, each adding n*n: the result is 2*n*n."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.total = 0
        self.process_config.runs = 2

    def __run__(self) -> None:
        self.total += self.n * self.n

    def __result__(self) -> int:
        return self.total


class Pair(Skprocess):
    """Takes two constructor arguments (used with ``.star()``) and stops itself."""

    def __init__(self, tens: int, units: int) -> None:
        self.tens = tens
        self.units = units
        self.value = -1

    def __run__(self) -> None:
        self.value = self.tens * 10 + self.units
        self.stop()

    def __result__(self) -> int:
        return self.value


class Failing(Skprocess):
    """Raises the ``__main__`` exception on its second run."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.process_config.runs = 3

    def __run__(self) -> None:
        if self.current_run == 2:
            raise MainError(f"run {self.current_run} of {self.n}")


triple = lambda x: x * 3  # noqa: E731  (a lambda bound to a name in __main__ is the point)


def main_boom(x: int) -> int:
    raise MainError(f"boom {x}")


def make_scaler(k: int) -> Any:
    def scale(x: int) -> int:
        return x * k

    return scale


def main() -> None:
    multiprocessing.set_start_method(sys.argv[1])
    out: dict[str, Any] = {"start_method": multiprocessing.get_start_method()}
    pool = Pool(2)
    out["lambda"] = pool.map(lambda x: x + 1, range(6))
    out["named_lambda"] = sorted(pool.unordered_map(triple, range(6)))
    out["closure"] = list(pool.imap(make_scaler(7), range(4)))
    out["star_lambda"] = pool.star().map(lambda a, b: a - b, [(5, 1), (9, 4), (0, 3)])
    out["square"] = pool.map(Square, [1, 2, 3])
    out["pair"] = pool.star().map(Pair, [(1, 2), (3, 4)])
    try:
        pool.map(main_boom, [1, 2, 3])
    except MainError as error:
        out["main_error"] = {
            "exact_type": type(error) is MainError,
            "args": list(error.args),
            "cause_names_function": "main_boom" in str(error.__cause__),
        }
    try:
        pool.map(Failing, [5])
    except RunError as error:
        out["run_error"] = {
            "exact_type": type(error) is RunError,
            "current_run": error.current_run,
            "original_is_main_error": type(error.original_error) is MainError,
            "original": str(error.original_error),
        }
    out["after_errors"] = pool.map(abs, [-1, -2])
    out["asynced_star"] = asyncio.run(
        pool.star().map.asynced()(lambda a, b: a * b, [(2, 3), (4, 5)])
    )
    out["pids"] = sorted(set(pool.map(lambda _: os.getpid(), range(8))))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
