"""Classes, an exception and lambdas defined in ``__main__``, used by Skprocess (and Pool) under
the start method given as argv[1]. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from typing import Any

from suitkaise.processing import Pool, RunError, Skprocess

SQUARE = lambda x: x * x  # noqa: E731 - a module-level lambda of __main__ on purpose


class MainError(Exception):
    pass


class MainBase(Skprocess):
    greeting = "hello"

    def helper(self, name: str) -> str:
        return f"{self.greeting}, {name}"


class Worker(MainBase):
    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.scale = lambda x: x * 10
        self.log: list[str] = []
        self.process_config.runs = runs

    def __private(self) -> str:
        return f"private {self.runs}"

    def __prerun__(self) -> None:
        self.log.append(f"prerun{self.current_run}")

    def __run__(self) -> None:
        self.log.append(f"run{self.current_run}")
        fn = self.listen(timeout=30)  # the parent sends a lambda each run
        self.tell(fn(self.current_run))

    def __postrun__(self) -> None:
        self.log.append(f"postrun{self.current_run}")

    def __onfinish__(self) -> None:
        self.log.append(f"onfinish{self.current_run}")

    def __result__(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "helper": self.helper("world"),
            "private": self.__private(),
            "scaled": self.scale(self.runs),
            "module": type(self).__module__,
            "mro": [c.__name__ for c in type(self).__mro__],
        }


class Failing(Skprocess):
    def __init__(self, handle: bool = False) -> None:
        self.handle = handle

    def __run__(self) -> None:
        raise MainError("from main")

    def __error__(self) -> Any:
        if self.handle:
            assert isinstance(self.error, RunError)
            return self.error.original_error  # an exception: raised by result()
        return self.error


class Square(Skprocess):
    def __init__(self, x: int) -> None:
        self.x = x
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.value = SQUARE(self.x)

    def __result__(self) -> int:
        return self.value


def main() -> None:
    method = sys.argv[1]
    multiprocessing.set_start_method(method)
    report: dict[str, Any] = {"method": method}

    worker = Worker(2)
    worker.start()
    replies = []
    for k in (1, 2):
        worker.tell(lambda run, k=k: run * 100 + k)
        replies.append(worker.listen(timeout=30))
    report["replies"] = replies
    assert worker.wait(30)
    report["result"] = worker.result()

    try:
        Failing().run()
    except RunError as error:
        report["error"] = {
            "type": type(error).__name__,
            "current_run": error.current_run,
            "original_is_main_error": isinstance(error.original_error, MainError),
            "message_intact": "MainError: from main" in str(error),
        }
    try:
        Failing(handle=True).run()
    except MainError as error:  # the __main__ class itself, not a copy
        report["handled"] = f"caught MainError: {error}"

    with Pool(2) as pool:
        report["pool"] = pool.map(Square, [1, 2, 3])
        report["pool_lambda"] = pool.map(lambda x: x + 1, [1, 2, 3])

    report["children_left"] = len(multiprocessing.active_children())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
