"""The circuit benchmark script runs and prints every row."""

from __future__ import annotations

from benchmark_run import QuickRun

ROW_LABELS = [
    "Circuit.short() vs Lock+int method",
    "BreakingCircuit.short() vs Lock+int method",
    "Circuit.short() vs inline Lock+int",
    "BreakingCircuit.short() vs inline Lock+int",
    "2 threads Circuit.short() vs 1 thread",
    "2 threads Lock+int vs 1 thread",
    "await asynced() short vs sync short",
    "await prebound asynced() vs sync short",
    "await asynced() short vs asyncio.Lock+int",
    "import suitkaise vs import tenacity",
    "import suitkaise vs import pybreaker",
    "import suitkaise vs python -c pass",
    "Circuit.short() vs pybreaker failure record",
    "raise+short() vs pybreaker.call(raising)",
    "Circuit.short() vs circuitbreaker record",
    "raise+short() vs circuitbreaker call(raising)",
]


class TestCircuitsQuickRun(QuickRun):
    """``QuickRun``'s checks (behaviour only) on ``benchmarks/circuits.py --quick``."""

    script = "circuits.py"
    row_labels = ROW_LABELS
