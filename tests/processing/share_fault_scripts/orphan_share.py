"""Creates a Share, a Pool and an Skprocess that use it, prints what they are, then waits.

Usage: python orphan_share.py START_METHOD. Prints one JSON line: the private directory, the
coordinator's pid, the Pool workers' pids and the Skprocess's pid. The test then SIGKILLs
this script and checks that every one of those processes exits (within 2 s) and that the
private directory is removed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

from suitkaise import Circuit
from suitkaise.processing import Pool, Share, Skprocess

WORKERS = 2


class Busy(Skprocess):
    """Keeps using the Share until it is killed (shorts and increments)."""

    def __init__(self, share: Share) -> None:
        self.share = share

    def __prerun__(self) -> None:
        if self.current_run == 1:
            self.tell(os.getpid())

    def __run__(self) -> None:
        self.share.circuit.short()
        self.share.counter += 1
        time.sleep(0.01)


def touch(share: Share) -> int:
    share.counter += 1
    share.circuit.short()
    time.sleep(0.2)  # keeps this worker busy, so that each item lands on another worker
    return os.getpid()


def main() -> None:
    multiprocessing.set_start_method(sys.argv[1])
    share = Share()
    share.counter = 0
    share.circuit = Circuit(10**9)
    pool = Pool(WORKERS)
    workers = sorted(set(pool.map(touch, [share] * WORKERS)))
    counter = int(share.counter)  # before Busy starts adding to it
    process = Busy(share)
    process.start()
    child = process.listen(timeout=60)
    report = {
        "directory": share._sk.directory,
        "coordinator": getattr(share._sk, "running", share._sk).process.pid,
        "workers": workers,
        "skprocess": child,
        "counter": counter,
    }
    print(json.dumps(report), flush=True)
    time.sleep(120)  # killed long before this; a safety net if the test is interrupted
    process.kill()
    pool.terminate()
    share.stop()


if __name__ == "__main__":
    main()
