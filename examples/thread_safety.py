"""Page: "why circuits" -- "Thread safety" (multiple threads calling the same circuit).

Eight threads call the page's ``worker()`` 1,003 times each on one shared circuit, with
the interpreter switching threads as often as it can. Every short is counted exactly once:
8,024 shorts make exactly 1,604 trips with 4 shorts left over. The page's 1.0 s sleeps
are recorded by ``recorded_sleeps()`` instead of slept.
"""

import sys
import threading

from suitkaise import Circuit
from suitkaise.circuits.testing import recorded_sleeps

circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)


def worker():
    # multiple threads can call this safely
    circuit.short()


THREADS, CALLS = 8, 1003
start = threading.Barrier(THREADS)


def thread_main():
    start.wait()  # all threads hammer the circuit at the same time
    for _ in range(CALLS):
        worker()


sys.setswitchinterval(1e-6)  # switch threads as often as possible
with recorded_sleeps() as sleeps:
    threads = [threading.Thread(target=thread_main) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

shorts = THREADS * CALLS
print(f"{THREADS} threads x {CALLS} shorts = {shorts} shorts")
print(f"total_trips={circuit.total_trips} (expected {shorts // 5})")
print(f"times_shorted={circuit.times_shorted} (expected {shorts % 5})")
print(f"sleeps recorded: {len(sleeps)}, durations: {sorted(set(sleeps.durations))}")
