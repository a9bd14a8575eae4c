"""Run by test_skprocess_faults.py as ``python forgotten_child.py START_METHOD PIDFILE``.

Starts an Skprocess that loops until stopped and drops the only reference to it at once.
The script must still end (the child is asked to stop at exit, like any running child),
and the child's pid goes to PIDFILE so the test can check it is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

from suitkaise.processing import Skprocess


class Loops(Skprocess):
    def __init__(self, pidfile: str) -> None:
        self.pidfile = pidfile

    def __run__(self) -> None:
        if self.current_run == 1:
            with open(self.pidfile, "w") as out:
                out.write(str(os.getpid()))
        time.sleep(0.01)


def start_and_forget(pidfile: str) -> None:
    Loops(pidfile).start()


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    start_and_forget(sys.argv[2])
    deadline = time.monotonic() + 30
    while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("main done", flush=True)
