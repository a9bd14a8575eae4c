"""The pool benchmark script runs and prints every row."""

from __future__ import annotations

from benchmark_run import QuickRun

ROW_LABELS = [
    "Pool(8).map 8 Skprocess e2e, default start",
    "Pool(8).map 8 Skprocess e2e, spawn",
    "Pool(8).map 8 Skprocess e2e, forkserver",
    "cold process: import + Pool(8).map e2e",
    "Pool.map 10,000 items, pools started",
    "Pool.map lambda, 10,000 items",
    "Pool.unordered_map, 10,000 items",
    "Pool.imap, 10,000 items",
]


class TestPoolQuickRun(QuickRun):
    """``QuickRun``'s checks (behaviour only) on ``benchmarks/pool.py --quick``."""

    script = "pool.py"
    row_labels = ROW_LABELS
