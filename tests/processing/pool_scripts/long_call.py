"""Run by test_pool.py as ``python long_call.py START_METHOD PIDFILE MODE``.

Starts a Pool call that would take a minute; every worker appends its pid to PIDFILE when it
picks up an item. The test then interrupts (SIGINT) or kills (SIGKILL) this script and checks
that the workers are gone. MODE picks the kind of call. Prints "finished" if the call ever
returns (it should not).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time

from suitkaise.processing import Pool, Skprocess

WORKERS = 2
SECONDS = 60.0


def note_pid(path: str) -> None:
    with open(path, "a") as pids:
        pids.write(f"{os.getpid()}\n")


def work(path: str) -> str:
    note_pid(path)
    time.sleep(SECONDS)
    return path


class Looper(Skprocess):
    """Loops until stopped (it never is): only the pool can end it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __run__(self) -> None:
        if self.current_run == 1:
            note_pid(self.path)
        time.sleep(0.02)


def main() -> None:
    method, pidfile, mode = sys.argv[1:4]
    multiprocessing.set_start_method(method)
    items = [pidfile] * (2 * WORKERS)
    if mode == "with":
        with Pool(WORKERS) as pool:
            pool.map(work, items)
    else:
        pool = Pool(WORKERS)
        if mode == "map":
            pool.map(work, items)
        elif mode == "unordered_imap":
            for _ in pool.unordered_imap(work, items):
                pass
        elif mode == "skprocess":
            pool.map(Looper, items)
        elif mode == "background":
            pool.map.background()(work, items).result()
        elif mode == "asynced":
            asyncio.run(pool.map.asynced()(work, items))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    print("finished", flush=True)


if __name__ == "__main__":
    main()
