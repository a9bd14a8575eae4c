"""The smoke run of a benchmark script and the checks on it, for tests/test_benchmark*_run.py.

Each of those files names its script and the rows its summary must list, in a subclass of
``QuickRun`` (or of ``GuardedQuickRun``, for the scripts that guard their sections and look
for what they left behind), which runs ``python benchmarks/NAME.py --quick`` once for the
class and checks its output.

Behaviour only: the ratios depend on the machine, so nothing here looks at a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_quick(script: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> --quick`` from the repository root, its output captured."""
    env = dict(os.environ)
    # The script imports suitkaise (in its child processes too); make sure it is this
    # checkout's, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def summary_lines(stdout: str) -> list[str]:
    """The lines of the summary table, its header first."""
    summary = stdout.partition("Summary")[2]
    return [line for line in summary.splitlines() if line.startswith("| ")]


class QuickRun:
    """The checks on any benchmark script's quick run. A test file subclasses it (as
    ``Test...``) and sets ``script`` (a file name in benchmarks/) and ``row_labels`` (the
    summary's rows, in order)."""

    script: ClassVar[str]
    row_labels: ClassVar[list[str]]

    @pytest.fixture(scope="class")
    @classmethod
    def quick_run(cls) -> subprocess.CompletedProcess[str]:
        return run_quick(cls.script)

    @pytest.mark.slow
    def test_quick_run_exits_0(self, quick_run: subprocess.CompletedProcess[str]) -> None:
        assert quick_run.returncode == 0, quick_run.stdout + quick_run.stderr

    @pytest.mark.slow
    def test_quick_run_prints_every_row(self, quick_run: subprocess.CompletedProcess[str]) -> None:
        labels = [line.split("|")[1].strip() for line in summary_lines(quick_run.stdout)]
        assert labels[0] == "operation"  # the header
        assert labels[1:] == self.row_labels, quick_run.stdout

    @pytest.mark.slow
    def test_quick_run_states_every_verdict(
        self, quick_run: subprocess.CompletedProcess[str]
    ) -> None:
        # Each row ends with its verdict column: met, missed, or context-only ("-").
        rows = summary_lines(quick_run.stdout)[1:]
        verdicts = {line.split("|")[6].strip() for line in rows}
        assert verdicts <= {"yes", "NO", "-"}, quick_run.stdout
        last_line = quick_run.stdout.strip().splitlines()[-1]
        assert last_line == "All targets met." or last_line.startswith("Targets missed: ")


class GuardedQuickRun(QuickRun):
    """``QuickRun``'s checks, and those of a script that runs each section guarded (a
    section that raises is reported, its rows print "-", and the script still exits 0)
    and says at its end what it left behind (processes, directories)."""

    @pytest.mark.slow
    def test_quick_run_measures_every_section(
        self, quick_run: subprocess.CompletedProcess[str]
    ) -> None:
        # A section that raises (or, for the Redis script, a server that does not start) is
        # reported ("could not measure") and its rows print "-"; the script still exits 0,
        # so this is where a broken section shows up.
        assert "could not measure" not in quick_run.stdout, quick_run.stdout + quick_run.stderr

    @pytest.mark.slow
    def test_quick_run_leaves_nothing_behind(
        self, quick_run: subprocess.CompletedProcess[str]
    ) -> None:
        # The script checks, at its end, that what it started is gone (the Redis server and
        # client processes; the Share script's children, Shares, Managers and the Shares'
        # private directories) and says so if not.
        assert "left behind" not in quick_run.stdout, quick_run.stdout
