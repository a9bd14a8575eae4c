"""Shared fixtures for the processing tests: start methods, and a leak check on every test."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import pytest
from process_tree import descendants

START_METHODS = ("fork", "spawn", "forkserver")


def _ours(pids: set[int]) -> set[int]:
    # The fork server and the resource tracker are multiprocessing's own long-lived helpers,
    # started once per session: not leaks. What the fork server forks for us still counts.
    helpers = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                text = cmdline.read()
        except OSError:
            continue
        if b"forkserver" in text or b"resource_tracker" in text:
            helpers.add(pid)
    return pids - helpers


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a process of ours behind (after a 3 s grace period)."""
    before = _ours(descendants())
    yield
    deadline = time.monotonic() + 3.0
    leaked = _ours(descendants()) - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _ours(descendants()) - before
    for child in multiprocessing.active_children():
        child.join(0.1)
    assert not leaked, f"processes left behind: {sorted(leaked)}"


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test under each start method (set as the default for its duration)."""
    method: str = request.param
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(method, force=True)
    try:
        yield method
    finally:
        multiprocessing.set_start_method(previous, force=True)
