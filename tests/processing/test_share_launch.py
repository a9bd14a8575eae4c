"""How a Share's coordinator process is started: a bare fork under the fork start method,
the context's own Process otherwise."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time

import pytest
from conftest import START_METHODS
from process_tree import descendants

from suitkaise.processing._share._launch import ForkedProcess, launch

pytestmark = pytest.mark.slow


def _write(path: str, *words: str, end: str = "") -> None:
    with open(path, "w") as out:
        out.write(" ".join(words) + end)


def _exit_with(code: object) -> None:
    sys.exit(code)


def _raise() -> None:
    raise ValueError("boom")


def test_a_forked_process_runs_its_target_with_args_and_kwargs(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "out")
    child = ForkedProcess(_write, (path, "a", "b"), {"end": "!"})
    child.join()
    assert child.exitcode == 0
    assert child.is_alive() is False
    with open(path) as written:
        assert written.read() == "a b!"
    assert child.pid not in descendants()  # reaped, not a zombie


@pytest.mark.parametrize(
    ("target", "args", "code"),
    [(_exit_with, (3,), 3), (_exit_with, ("bye",), 1), (_raise, (), 1)],
    ids=["exit 3", "exit with a message", "an exception"],
)
def test_a_forked_process_reports_how_it_ended(
    target: object, args: tuple[object, ...], code: int, capfd: pytest.CaptureFixture[str]
) -> None:
    child = ForkedProcess(target, args, {})  # type: ignore[arg-type]
    child.join(30.0)
    assert child.exitcode == code
    if target is _raise:
        assert "ValueError: boom" in capfd.readouterr().err


def test_join_with_a_timeout_waits_that_long_and_kill_ends_it() -> None:
    child = ForkedProcess(time.sleep, (60,), {})
    try:
        started = time.monotonic()
        child.join(0.2)
        assert 0.15 < time.monotonic() - started < 5.0
        assert child.is_alive() and child.exitcode is None
        child.terminate()
        child.join(30.0)
        assert child.exitcode == -signal.SIGTERM
        child.kill()  # already gone: nothing to do, no error
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()


def test_a_forked_process_closes_what_it_is_told_to() -> None:
    mine, theirs = socket.socketpair()
    child = ForkedProcess(time.sleep, (60,), {}, close_in_child=(mine,))
    try:
        mine.close()
        theirs.settimeout(5.0)
        # The child closed its copy of `mine`: with ours closed too, this is end of stream
        # at once, although the child is still running.
        assert theirs.recv(1) == b""
        assert child.is_alive()
    finally:
        child.kill()
        child.join()
        theirs.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_launch_uses_a_bare_fork_only_for_the_fork_start_method(method: str) -> None:
    context = multiprocessing.get_context(method)
    process = launch(context, time.sleep, (60,), {})
    try:
        assert isinstance(process, ForkedProcess) is (method == "fork")
        assert process.is_alive()
    finally:
        process.kill()
        process.join()
    assert not process.is_alive()
