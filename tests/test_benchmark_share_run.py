"""The Share benchmark script runs and prints every row.

Behaviour only: the ratios depend on the machine, so nothing here looks at a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "share.py"

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


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The script imports suitkaise (in its children too); make sure it is this checkout's.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_quick_run_exits_0(quick_run: subprocess.CompletedProcess[str]) -> None:
    assert quick_run.returncode == 0, quick_run.stdout + quick_run.stderr


@pytest.mark.slow
def test_quick_run_prints_every_row(quick_run: subprocess.CompletedProcess[str]) -> None:
    summary = quick_run.stdout.partition("Summary")[2]
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    labels = [line.split("|")[1].strip() for line in rows]
    assert labels[0] == "operation"  # the header
    assert labels[1:] == ROW_LABELS, quick_run.stdout


@pytest.mark.slow
def test_quick_run_measures_every_section(quick_run: subprocess.CompletedProcess[str]) -> None:
    # A section that raises is reported ("could not measure") and its rows print "-";
    # the script still exits 0, so this is where a broken section shows up.
    assert "could not measure" not in quick_run.stdout, quick_run.stdout + quick_run.stderr


@pytest.mark.slow
def test_quick_run_states_every_verdict(quick_run: subprocess.CompletedProcess[str]) -> None:
    # Each row ends with its verdict column: met, missed, or context-only ("-").
    summary = quick_run.stdout.partition("Summary")[2]
    rows = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    verdicts = {line.split("|")[6].strip() for line in rows}
    assert verdicts <= {"yes", "NO", "-"}, quick_run.stdout
    last_line = quick_run.stdout.strip().splitlines()[-1]
    assert last_line == "All targets met." or last_line.startswith("Targets missed: ")


@pytest.mark.slow
def test_quick_run_leaves_nothing_behind(quick_run: subprocess.CompletedProcess[str]) -> None:
    # The script checks, at its end, that its children, Shares and Managers are gone and
    # that its Shares' private directories were removed; it says so if not.
    assert "left behind" not in quick_run.stdout, quick_run.stdout
