"""The Redis store benchmark script runs and prints every row.

Behaviour only: the ratios depend on the machine, so nothing here looks at a number. The
script starts (and stops) its own private redis-server, as the Redis tests do; without
one it still exits 0 but measures nothing, which the "could not measure" check catches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "redis_store.py"

ROW_LABELS = [
    "Circuit.short() vs bare EVALSHA (return 1)",
    "BreakingCircuit.broken vs bare GET",
    "BreakingCircuit.short() vs bare EVALSHA (return 1)",
    "bare EVALSHA of store script vs return 1",
    "Circuit.short() vs bare EVALSHA of store script",
    "bare HMGET of 4 fields vs bare GET",
    "BreakingCircuit.broken vs bare HMGET",
    "short() ops/s vs bare EVALSHA, 1 process",
    "short() ops/s vs bare EVALSHA, 4 processes",
    "short() ops/s, 4 processes vs 1",
    "bare EVALSHA ops/s, 4 processes vs 1",
    "await short.asynced()() vs await bare EVALSHA",
    "await short.asynced()() vs sync short()",
]


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The script imports suitkaise (in its client processes too); make sure it is this
    # checkout's, installed or not.
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
    # A section that raises (or a server that does not start) is reported ("could not
    # measure") and its rows print "-"; the script still exits 0, so this is where a broken
    # section shows up.
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
    # The script checks, at its end, that the server and its client processes are gone.
    assert "left behind" not in quick_run.stdout, quick_run.stdout
