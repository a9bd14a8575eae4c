"""The pool benchmark script runs and prints every row.

Behaviour only: the ratios depend on the machine, so nothing here looks at a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "pool.py"

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


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The script imports suitkaise (in its workers too); make sure it is this checkout's.
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
def test_quick_run_states_every_verdict(quick_run: subprocess.CompletedProcess[str]) -> None:
    # Each row ends with its verdict column: met, missed, or context-only ("-").
    summary = quick_run.stdout.partition("Summary")[2]
    rows = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    verdicts = {line.split("|")[6].strip() for line in rows}
    assert verdicts <= {"yes", "NO", "-"}, quick_run.stdout
    last_line = quick_run.stdout.strip().splitlines()[-1]
    assert last_line == "All targets met." or last_line.startswith("Targets missed: ")
