"""The Share benchmark script runs and prints every row."""

from __future__ import annotations

from benchmark_run import GuardedQuickRun

ROW_LABELS = [
    "share.circuit.short() from child vs Manager call",
    "share.circuit.short() from child, absolute",
    "share.breaker.broken from child vs Manager call",
    "share.breaker.broken from child, absolute",
    "trip seen by another process, p99",
    "share.obj.incr() from child vs Manager call",
    "Share() + first assignment vs Manager()",
    "held circuit c.short() from child vs Manager call",
    "trip seen by another process, median",
    "share.counter += 1 from child vs Manager call",
    "share.value read from child vs Manager call",
    "Manager value.get() vs counter.incr()",
    "Share() + x = 1 vs Manager() + Namespace x = 1",
    "helper processes' RSS vs Manager server",
    "helper processes' PSS vs Manager server",
]


class TestShareQuickRun(GuardedQuickRun):
    """``GuardedQuickRun``'s checks (behaviour only) on ``benchmarks/share.py --quick``."""

    script = "share.py"
    row_labels = ROW_LABELS
