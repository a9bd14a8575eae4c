"""Page: "Share" -- the coordinated shutdown across processes, as written on the page.

Eight separate processes (a Pool of ResilientWorker, an Skprocess subclass) share one
BreakingCircuit through a Share. The simulated flaky service fails on a schedule: three
failures, from whichever workers hit them, break the circuit for all of them, and every
worker stops. `pool.map` returns only when all eight have stopped.
"""

import os
import time

from suitkaise import BreakingCircuit
from suitkaise.processing import Pool, Share, Skprocess


class ServiceError(Exception):
    """What the simulated service raises when it fails."""


def call_flaky_service():
    # Every call takes a little time; roughly one in four fails (pid and clock decide,
    # so the workers fail at different moments).
    time.sleep(0.005)
    if (os.getpid() + time.monotonic_ns() // 1000) % 4 == 0:
        raise ServiceError("503 Service Unavailable")
    return "200 OK"


# -- the page's code, as written ----------------------------------------------------------

share = Share()
share.circuit = BreakingCircuit(num_shorts_to_trip=3)


class ResilientWorker(Skprocess):
    def __init__(self, share):
        self.share = share

    def __run__(self):
        if self.share.circuit.broken:
            self.stop()
            return

        try:
            result = call_flaky_service()  # noqa: F841 (the page keeps the result)
        except ServiceError:
            self.share.circuit.short()


if __name__ == "__main__":
    started = time.monotonic()
    pool = Pool(workers=8)
    results = pool.map(ResilientWorker, [share] * 8)
    elapsed = time.monotonic() - started

    print(f"pool.map returned {results}")
    print(f"circuit: broken={share.circuit.broken} total_trips={share.circuit.total_trips} "
          f"times_shorted={share.circuit.times_shorted}")
    print(f"all 8 workers stopped after {elapsed:.2f}s")
    pool.close()
    share.stop()
