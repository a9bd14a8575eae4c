"""Page: "why circuits" -- the opening example and "Coordinating multiple workers".

Four threads share one ``BreakingCircuit(num_shorts_to_trip=1)``. One of them hits a
``FatalError``; every worker sees ``broken`` and stops gracefully. The page's code is run
twice: the opening snippet (``shutdown``) and the later one (``shutdown_circuit``).
"""

import builtins
import os
import sys
import threading
import time

from suitkaise import BreakingCircuit

_print_lock = threading.Lock()


def print(*args, **kwargs):
    """print() from several threads without two lines running into each other."""
    with _print_lock:
        builtins.print(*args, **kwargs)


# --- a simulated workload: item #20 (counted over all workers) is fatal -------------------
class FatalError(Exception):
    pass


FATAL_ITEM = 20
_items_lock = threading.Lock()
_items_started = 0
fatal_at: list[float] = []  # when the fatal error happened (time.monotonic())


def process_next_item():
    global _items_started
    with _items_lock:
        _items_started += 1
        item = _items_started
    time.sleep(0.002)  # the "work"
    if item == FATAL_ITEM:
        fatal_at.append(time.monotonic())
        raise FatalError(f"item {item} is corrupt")


def join_all(threads, name):
    deadline = time.monotonic() + 3.0
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    if alive:
        print(f"FAILED: {len(alive)} workers still running after {name}.short()")
        sys.stdout.flush()
        os._exit(1)  # sys.exit() would wait for the (non-daemon) workers forever


# --- the opening example, as on the page -------------------------------------------------
shutdown = BreakingCircuit(num_shorts_to_trip=1)


def worker(worker_id):
    while not shutdown.broken:
        try:
            process_next_item()
        except FatalError:
            shutdown.short()  # all workers see this immediately
    print(f"Worker {worker_id}: shutting down gracefully")


threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()

join_all(threads, "shutdown")
stopped_ms = (time.monotonic() - fatal_at[0]) * 1000
print(f"all 4 workers stopped ({stopped_ms:.0f} ms after the fatal error)")
print(f"shutdown.broken={shutdown.broken} total_trips={shutdown.total_trips}")
print(f"items started before the stop: {_items_started} (fatal item: #{FATAL_ITEM})")

# --- "Coordinating multiple workers": the same pattern with shutdown_circuit -----------------
_items_started = 0
fatal_at.clear()

shutdown_circuit = BreakingCircuit(num_shorts_to_trip=1)


def worker(worker_id):  # the page defines it again for this section
    while not shutdown_circuit.broken:
        try:
            process_next_item()
        except FatalError:
            shutdown_circuit.short()  # signals all workers to stop
    print(f"Worker {worker_id} shutting down")


# start workers
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()

# one worker hits a fatal error
# all workers see shutdown_circuit.broken and stop gracefully
join_all(threads, "shutdown_circuit")
print(f"all 4 workers stopped again; shutdown_circuit.total_trips={shutdown_circuit.total_trips}")
