"""The Redis store benchmark script runs and prints every row.

The script starts (and stops) its own private redis-server, as the Redis tests do; without
one it still exits 0 but measures nothing, which the "could not measure" check catches.
"""

from __future__ import annotations

from benchmark_run import GuardedQuickRun

ROW_LABELS = [
    "Circuit.short() vs bare EVALSHA (return 1)",
    "BreakingCircuit.broken vs bare GET",
    "BreakingCircuit.short() vs bare EVALSHA (return 1)",
    "bare EVALSHA of store script vs return 1",
    "Circuit.short() vs bare EVALSHA of store script",
    "Circuit.short() vs raw EVALSHA (return 1, packed once)",
    "bare HMGET of 5 fields vs bare GET",
    "BreakingCircuit.broken vs bare HMGET",
    "short() ops/s vs bare EVALSHA, 1 process",
    "short() ops/s vs bare EVALSHA, 4 processes",
    "short() ops/s, 4 processes vs 1",
    "bare EVALSHA ops/s, 4 processes vs 1",
    "await short.asynced()() vs await bare EVALSHA",
    "await short.asynced()() vs sync short()",
]


class TestRedisStoreQuickRun(GuardedQuickRun):
    """``GuardedQuickRun``'s checks (behaviour only) on ``benchmarks/redis_store.py --quick``."""

    script = "redis_store.py"
    row_labels = ROW_LABELS
