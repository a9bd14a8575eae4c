"""Creates a Share (and uses it), prints where it lives, then waits to be killed.

Usage: python killed_together.py START_METHOD. Prints one JSON line: the private directory
and the coordinator's pid. The test then kills this script and its coordinator together
(the coordinator is frozen first, so that it cannot clean up when it sees its owner die),
and checks that the next Share started anywhere removes what they left behind.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time

from suitkaise import Circuit
from suitkaise.processing import Share


def main() -> None:
    multiprocessing.set_start_method(sys.argv[1])
    share = Share()
    share.counter = 0
    share.counter += 1
    share.items = [1, 2, 3]
    share.circuit = Circuit(3)
    share.circuit.short()
    report = {
        "directory": share._sk.directory,
        "coordinator": share._sk.running.process.pid,
    }
    print(json.dumps(report), flush=True)
    time.sleep(120)  # killed long before this; a safety net if the test is interrupted
    share.stop()


if __name__ == "__main__":
    main()
