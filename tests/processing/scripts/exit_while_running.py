"""Starts an Skprocess that loops until stopped, prints its pid and exits without waiting.

Usage: python exit_while_running.py MARKER_PATH. At interpreter exit suitkaise asks the child to
stop; its ``__onfinish__`` writes MARKER_PATH, proving the stop was graceful.
"""

from __future__ import annotations

import os
import sys
import time

from suitkaise.processing import Skprocess


class UntilStopped(Skprocess):
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __prerun__(self) -> None:
        if self.current_run == 1:
            self.tell(os.getpid())

    def __run__(self) -> None:
        time.sleep(0.02)

    def __onfinish__(self) -> None:
        with open(self.marker, "w") as out:
            out.write("stopped gracefully")


if __name__ == "__main__":
    process = UntilStopped(sys.argv[1])
    process.start()
    print(process.listen(timeout=30), flush=True)
