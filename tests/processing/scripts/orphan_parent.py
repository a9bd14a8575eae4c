"""Starts an Skprocess that loops forever, prints the child's pid, then waits to be killed.

Usage: python orphan_parent.py START_METHOD. The test SIGKILLs this script and checks that the
child exits by itself (within 2 s).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

from suitkaise.processing import Skprocess


class Forever(Skprocess):
    def __prerun__(self) -> None:
        if self.current_run == 1:
            self.tell(os.getpid())

    def __run__(self) -> None:
        time.sleep(0.05)


def main() -> None:
    multiprocessing.set_start_method(sys.argv[1])
    process = Forever()
    process.start()
    print(process.listen(timeout=60), flush=True)
    time.sleep(120)  # killed long before this; a safety net if the test is interrupted
    process.kill()


if __name__ == "__main__":
    main()
