"""The cross-process example of the docs page ("why circuits", section Share), as written.

Only ``call_flaky_service`` and ``ServiceError`` are ours: the service fails half of the time.
Run as ``python page_example.py START_METHOD``; prints one JSON line with what ``pool.map``
returned and the circuit's final state.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sys


class ServiceError(Exception):
    pass


def call_flaky_service() -> str:
    if random.random() < 0.5:
        raise ServiceError("the service is down")
    return "ok"


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])

    # -- the page's code, unchanged (only the result of pool.map is kept) -------------
    from suitkaise.processing import Share, Pool, Skprocess  # noqa: I001
    from suitkaise import BreakingCircuit

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
                result = call_flaky_service()  # noqa: F841
            except ServiceError:
                self.share.circuit.short()

    pool = Pool(workers=8)
    results = pool.map(ResilientWorker, [share] * 8)
    # -- end of the page's code ------------------------------------------------------------

    print(
        json.dumps(
            {
                "start_method": multiprocessing.get_start_method(),
                "results": results,
                "broken": share.circuit.broken,
                "total_trips": share.circuit.total_trips,
                "times_shorted": share.circuit.times_shorted,
            }
        )
    )
