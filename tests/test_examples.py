"""Every script in examples/ runs, exits 0 and prints what the docs page promises.

The scripts mirror the sections of the users' "why circuits" page. Each one is run with
this interpreter in a subprocess; its output must contain the lines listed in EXPECTED,
chosen so that a circuit that miscounts, does not back off, does not break, blocks the
event loop or ignores a custom sleep would not print them. New scripts are picked up by
the glob and must get an EXPECTED entry.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 30.0  # generous for a loaded machine; the scripts take well under 2 s each

# script name -> regular expressions (re.MULTILINE) that must all match its output.
EXPECTED: dict[str, list[str]] = {
    "cross_process_share.py": [
        r"^pool\.map returned \[None, None, None, None, None, None, None, None\]$",
        r"^circuit: broken=True total_trips=1 times_shorted=([3-9]|\d\d+)$",
        r"^all 8 workers stopped after [\d.]+s$",
    ],
    "coordinated_shutdown_threads.py": [
        *(rf"^Worker {i}: shutting down gracefully$" for i in range(4)),
        r"^all 4 workers stopped \(\d+ ms after the fatal error\)$",
        r"^shutdown\.broken=True total_trips=1$",
        *(rf"^Worker {i} shutting down$" for i in range(4)),
        r"^all 4 workers stopped again; shutdown_circuit\.total_trips=1$",
    ],
    "retry_with_backoff.py": [
        r"^result: \{'status': 'ok', 'call': 31\} after 30 failures$",
        # the service sees a pause of at least base - 10% after every 5th failure
        *(
            rf"^trip {n}: base {base} ms, service saw a pause of [\d.]+ ms before call "
            rf"{5 * n + 1} \([+-]\d+% vs base, ok\)$"
            for n, base in enumerate([10, 20, 40, 80, 160, 300], 1)
        ),
        r"^total_trips=6 times_shorted=0 current_sleep_time=0\.3$",
    ],
    "circuit_vs_breaking.py": [
        r"^Circuit: 24 requests, 12 processed, 12 rate limited$",
        r"^Circuit: total_trips=2 times_shorted=2 \(kept going: last request processed = 24\)",
        r"^BreakingCircuit: broken=True times_shorted=3 total_trips=1 after 5 attempts "
        r"\(last success: 'attempt 3 ok'\)$",
        r"^handle_failure\(\): breaker is broken after 5 attempts",
        r"^after reset\(\): broken=False times_shorted=0 total_trips=1$",
    ],
    "backoff_schedule.py": [
        r"^1st trip: 1\.0s$",
        r"^2nd trip: 2\.0s$",
        r"^3rd trip: 4\.0s$",
        r"^4th trip: 8\.0s$",
        r"^5th trip: 16\.0s$",
        r"^6th trip: 30\.0s \(capped\)$",
        r"^7th trip: 30\.0s \(capped\)$",
        r"^schedule: \[1\.0, 2\.0, 4\.0, 8\.0, 16\.0, 30\.0, 30\.0\]$",
        r"^total_trips=7 current_sleep_time=30\.0$",
        r"^after reset_backoff\(\): current_sleep_time=1\.0$",
        r"^next trip after reset_backoff\(\): \[1\.0\]$",
        r"^total_trips=8 ",
    ],
    "jitter.py": [
        r"^delays: (?:[45]\.\d{3}s, ){9}[45]\.\d{3}s$",
        r"^10 trips, min 4\.[5-9]\d\ds, max 5\.[0-5]\d\ds$",
        r"^all within \[4\.5, 5\.5\]: True$",
        r"^distinct delays: 10 of 10$",
        r"^same seed, same delays: True$",
        r"^5 clients retry at: (?:\+[45]\.\d{3}s, ){4}\+[45]\.\d{3}s$",
        r"^without jitter they retry at: (?:\+5\.000s, ){4}\+5\.000s$",
    ],
    "thread_safety.py": [
        r"^8 threads x 1003 shorts = 8024 shorts$",
        r"^total_trips=1604 \(expected 1604\)$",
        r"^times_shorted=4 \(expected 4\)$",
        r"^sleeps recorded: 1604, durations: \[1\.0\]$",
    ],
    "async_circuit.py": [
        r"^sync: 5 x circuit\.short\(\) -> tripped=True, total_trips=1$",
        r"^async: 4 x await circuit\.short\.asynced\(\)\(\) -> times_shorted=4$",
        r"^async: 5th short -> tripped=True, slept 0\.(?:0[5-9]|[1-9])\d* s, total_trips=2$",
        r"^event loop not blocked: ticker ran [1-9]\d* times during the sleep$",
        r"^mixed: 3 sync \+ 2 async shorts -> tripped=True, total_trips=3$",
        r"^async trip\(\): returned True, total_trips=4$",
        r"^same circuit, same state: total_trips=4 times_shorted=0$",
    ],
    "rate_limiter.py": [
        r"^page limiter: 250 requests, total_trips=2, pauses \[60\.0, 60\.0\]$",
        r"^scaled limiter: 250 requests in [\d.]+ s, total_trips=2$",
        r"^paused \d+ ms before request 100$",
        r"^paused \d+ ms before request 200$",
        r"^requests per window: 99 before the first pause, then 100 between pauses$",
    ],
    "trip_immediately.py": [
        *(
            rf"^call {n}: MinorError -> short\(\) +times_shorted={n} total_trips=0 slept=False$"
            for n in (1, 2, 3)
        ),
        r"^call 4: CriticalError -> trip\(\) +times_shorted=0 total_trips=1 slept=True$",
        r"^call 5: MinorError -> short\(\) +times_shorted=1 total_trips=1 ",
        r"^call 6: ok +times_shorted=1 total_trips=1 ",
        r"^result: 'call 6 ok'$",
    ],
    "custom_sleep.py": [
        # the Retry-After of a short that does not trip is not slept ...
        r"^  call  1: RateLimitError -> short\(custom_sleep=30\.0\) +times_shorted=1 slept -$",
        # ... the one that trips is slept exactly, and the default trip sleeps 1.0 s
        r"^  call  5: RateLimitError -> short\(custom_sleep=30\.0\) +times_shorted=0 "
        r"slept 30\.000s$",
        r"^  call 10: OtherError -> short\(\) +times_shorted=0 slept 1\.000s$",
        r"^  result: call 11: 200 OK$",
        r"^page circuit: total_trips=2, sleeps \[30\.0, 1\.0\]$",
        r"^jitter circuit: sleeps \[30\.000, (?:0\.9\d\d|1\.0\d\d|1\.100)\]$",
        r"^trip\(custom_sleep=30\.0\) on the first 429: sleeps \[30\.0\]$",
    ],
    "state.py": [
        r"^  circuit\.times_shorted += 2 ",
        r"^  circuit\.total_trips += 2 ",
        r"^  circuit\.current_sleep_time = 1\.0 ",
        r"^  breaker\.broken = False$",
        r"^  breaker\.broken += True ",
        r"^  breaker\.times_shorted += 4 ",
        r"^  breaker\.total_trips += 1 ",
        r"^  breaker\.current_sleep_time = 0\.0 ",
        r"BreakingCircuit\(num_shorts_to_trip=3, times_shorted=0, total_trips=1, "
        r"current_sleep_time=0\.0, broken=False\)",
    ],
}


def _environment() -> dict[str, str]:
    # Run against this checkout even if another copy of suitkaise is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("NO_COLOR", None)
    return env


def test_examples_exist() -> None:
    assert EXAMPLES, "no scripts found in examples/"


def test_every_example_has_expectations() -> None:
    missing = sorted({path.name for path in EXAMPLES} - EXPECTED.keys())
    assert not missing, f"add the expected output lines of {missing} to EXPECTED"


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_starts_with_a_docstring_naming_its_page_section(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path.name} has no module docstring"
    assert docstring.startswith("Page: "), docstring.splitlines()[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_and_prints_what_the_page_says(path: Path) -> None:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    elapsed = time.monotonic() - started
    report = (
        f"{path.name} exited {completed.returncode} after {elapsed:.2f}s\n"
        f"--- stdout ---\n{completed.stdout}--- stderr ---\n{completed.stderr}"
    )
    assert completed.returncode == 0, report
    assert completed.stdout.strip(), report
    missing = [
        pattern
        for pattern in EXPECTED.get(path.name, [])
        if not re.search(pattern, completed.stdout, re.MULTILINE)
    ]
    assert not missing, "missing lines:\n  " + "\n  ".join(missing) + "\n" + report
