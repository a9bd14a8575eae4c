"""``python -m suitkaise demo`` and ``bench``: the command line users are told to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import suitkaise.__main__ as cli

ROOT = Path(__file__).resolve().parent.parent


def _environment() -> dict[str, str]:
    # Run against this checkout even if another copy of suitkaise is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suitkaise", *args],
        cwd=ROOT,
        env={**_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _report(completed: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {completed.returncode}\n--- stdout ---\n{completed.stdout}"
        f"--- stderr ---\n{completed.stderr}"
    )


def test_demo_runs_both_scenarios_and_exits_0() -> None:
    completed = _run("demo")
    out = completed.stdout
    assert completed.returncode == 0, _report(completed)

    # (a) a flaky service failing 12 times, Circuit(3, ...): exactly 4 trips, each reported
    # with its measured sleep and base (0.1, 0.2, 0.4, then capped at 0.4), then success.
    trips = re.findall(
        r"^ +\+\d+\.\d{3}s  call +(\d+): ServiceError -> short\(\)  trip #(\d): "
        r"slept (\d+\.\d{3})s \(base (\d\.\d{3})s \+/-20%\)$",
        out,
        re.MULTILINE,
    )
    assert [(call, n, base) for call, n, _, base in trips] == [
        ("3", "1", "0.100"),
        ("6", "2", "0.200"),
        ("9", "3", "0.400"),
        ("12", "4", "0.400"),
    ], _report(completed)
    for _, _, slept, base in trips:
        assert float(slept) >= float(base) * 0.8 - 0.002, _report(completed)
    assert re.search(r"call 13: '200 OK'$", out, re.MULTILINE), _report(completed)
    assert "recovered after 12 failures and 4 trips" in out, _report(completed)

    # (b) 4 threads, one BreakingCircuit(1): worker 2's fatal error stops everyone.
    assert re.search(
        r"^ +\+\d+\.\d{3}s  worker 2: FatalError \(item 3 is corrupt\) -> shutdown\.short\(\)$",
        out,
        re.MULTILINE,
    ), _report(completed)
    for worker in range(4):
        assert re.search(
            rf"^ +\+\d+\.\d{{3}}s  worker {worker}: saw shutdown\.broken, stopping after "
            rf"\d+ items$",
            out,
            re.MULTILINE,
        ), _report(completed)
    assert "worker 2: saw shutdown.broken, stopping after 2 items" in out, _report(completed)
    assert "all 4 workers stopped" in out, _report(completed)
    assert "(shutdown.total_trips=1)" in out, _report(completed)

    assert re.search(r"^demo finished in [\d.]+s: 4 of 4 scenarios ok$", out, re.MULTILINE)
    assert "FAILED" not in out, _report(completed)


def test_demo_runs_a_single_scenario_by_name() -> None:
    completed = _run("demo", "shutdown", "--seed", "1")
    assert completed.returncode == 0, _report(completed)
    assert "all 4 workers stopped" in completed.stdout
    assert "trip #" not in completed.stdout
    assert "1 of 1 scenarios ok" in completed.stdout


def test_demo_lists_its_scenarios() -> None:
    completed = _run("demo", "--list")
    assert completed.returncode == 0, _report(completed)
    names = [line.split()[0] for line in completed.stdout.splitlines()]
    assert names == ["retry", "shutdown", "processes", "redis"]


def test_unknown_scenario_and_missing_command_are_usage_errors() -> None:
    unknown = _run("demo", "nosuch")
    assert unknown.returncode == 2, _report(unknown)
    assert "unknown demo scenario: nosuch" in unknown.stderr
    assert "retry" in unknown.stderr

    nothing = _run()
    assert nothing.returncode == 2, _report(nothing)
    assert "usage: python -m suitkaise" in nothing.stderr


def test_importing_suitkaise_does_not_import_the_demo() -> None:
    code = (
        "import sys, suitkaise; "
        "print(sorted(m for m in sys.modules if m in "
        "('suitkaise._demo', 'suitkaise.__main__', 'argparse')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, _report(completed)
    assert "suitkaise._demo" not in completed.stdout
    assert "suitkaise.__main__" not in completed.stdout


def test_benchmark_script_is_found_only_in_a_source_checkout(tmp_path: Path) -> None:
    package = tmp_path / "src" / "suitkaise"
    package.mkdir(parents=True)
    assert cli.benchmark_script(package) is None
    script = tmp_path / "benchmarks" / "circuits.py"
    script.parent.mkdir()
    script.write_text("")
    assert cli.benchmark_script(package) == script

    installed = tmp_path / "site-packages" / "suitkaise"
    installed.mkdir(parents=True)
    (tmp_path / "benchmarks" / "circuits.py").touch()
    assert cli.benchmark_script(installed) is None


def test_bench_without_a_checkout_says_where_benchmarks_live(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "benchmark_script", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "benchmarks live in the source repository" in capsys.readouterr().err


def test_bench_runs_the_script_with_the_remaining_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "benchmarks" / "circuits.py"
    script.parent.mkdir()
    log = tmp_path / "argv.txt"
    script.write_text(
        "import sys, pathlib\n"
        f"pathlib.Path({str(log)!r}).write_text(' '.join(sys.argv[1:]))\n"
        "sys.exit(3)\n"
    )
    monkeypatch.setattr(cli, "benchmark_script", lambda: script)
    assert cli.main(["bench", "--quick", "-n", "5"]) == 3
    assert log.read_text() == "--quick -n 5"


def test_processes_scenario_shows_the_shorts_and_all_eight_stopping() -> None:
    completed = _run("demo", "processes")
    out = completed.stdout
    assert completed.returncode == 0, _report(completed)
    for worker, call in ((1, 3), (5, 5), (2, 8)):
        pattern = rf"worker {worker} \(its own process\): ServiceError on call {call} -> short\(\)$"
        assert re.search(pattern, out, re.MULTILINE), _report(completed)
    stopped = re.findall(r"worker (\d) \(its own process\): saw broken after \d+ calls$", out, re.M)
    assert sorted(int(worker) for worker in stopped) == list(range(8)), _report(completed)
    assert re.search(
        r"^  all 8 workers stopped; pool\.map returned 8 x None after [\d.]+s "
        r"\(circuit\.total_trips=1, times_shorted=3\)$",
        out,
        re.MULTILINE,
    ), _report(completed)


def test_redis_scenario_runs_against_a_server(redis_server: Any) -> None:
    completed = _run("demo", "redis", env={"SUITKAISE_REDIS_URL": redis_server.url})
    out = completed.stdout
    assert completed.returncode == 0, _report(completed)
    for machine, call in ((0, 4), (1, 6), (2, 9)):
        assert re.search(rf"machine {machine}: failure on call {call}$", out, re.M), _report(
            completed
        )
    stopped = re.findall(r"machine (\d): saw broken after \d+ calls$", out, re.M)
    assert sorted(stopped) == ["0", "1", "2"], _report(completed)
    assert re.search(r"holds broken=1, trips=1$", out, re.M), _report(completed)


def test_redis_scenario_says_so_when_there_is_no_server() -> None:
    completed = _run("demo", "redis", env={"SUITKAISE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert completed.returncode == 0, _report(completed)
    assert "skipped: no Redis server at redis://127.0.0.1:1/0" in completed.stdout


def test_redis_scenario_says_so_when_redis_py_is_missing(tmp_path: Path) -> None:
    # A package named redis that fails to import stands in front of the real one.
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "__init__.py").write_text("raise ImportError('not here')\n")
    path = os.pathsep.join([str(tmp_path), _environment()["PYTHONPATH"]])
    completed = _run("demo", "redis", env={"PYTHONPATH": path})
    assert completed.returncode == 0, _report(completed)
    assert "skipped: redis-py is not installed (pip install 'suitkaise[redis]')" in (
        completed.stdout
    ), _report(completed)
    assert "no Redis server" not in completed.stdout
