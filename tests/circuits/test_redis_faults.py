"""The Redis store under faults: it never counts one operation twice, never shows a secret,
names every error truly, holds no resource past its use, and is exact from many threads.

Each test runs against a real redis-server: the session's (``redis_url``) or one of its own
(``PrivateRedis``: passwords, ACL users, TLS, maxmemory), often through ``RedisProxy``, a
loopback proxy that drops, stalls or rewrites replies. Everything is started and stopped by
the test, and ``no_leaks`` checks that no file descriptor or process is left behind.

What the tests pin down (docs/redis.md, "Failure modes", says the same for users):

- a reply lost after the server ran the operation: the store re-sends it with the same
  operation id, the server recognises it and answers the first result; the count is exact;
- a reply that does not come: ``RedisStoreError`` (``outage``) after about ``timeout``, the
  operation applied once (never re-sent), whatever retry policy the user's client has;
- refusals (wrong password, ACL, OOM, WRONGTYPE, bad database, NOSCRIPT loop, no Lua, another
  protocol, TLS) are ``RedisStoreError`` with ``outage == False`` naming the cause, at once,
  at construction and on every call, sync and async, also with ``fallback=True``;
- passwords never appear in ``repr()``, errors or warnings; pickled stores reconnect with
  the same user, password and TLS settings in other processes (spawn, fork, forkserver);
- stores with the same settings share their connections; a loop's connections close when
  ``asyncio.run()`` ends; ``close()`` closes the rest; a forked child opens its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_faults import (
    FakeRedis,
    PrivateRedis,
    RedisProxy,
    other_protocol_server,
    tls_material,
)

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits import redis as redis_module
from suitkaise.circuits.redis import KEY_PREFIX, LUA, RedisStore, RedisStoreError

TIMEOUT = 0.5  # the store timeout of the outage tests
SLOW = 5.0  # the store timeout of the refusal tests: a refusal must come long before it
INSTANT = 1.5  # a refusal arrives within this (seconds), far below SLOW
START_METHODS = [m for m in ("fork", "spawn", "forkserver")
                 if m in multiprocessing.get_all_start_methods()]  # fmt: skip
ADMIN_PW = "admin-S3cret-pw"
BOB_PW = "bob-S3cret-pw"

fork_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork\\(\\) may lead to deadlocks"
)


@pytest.fixture(scope="module", autouse=True)
def multiprocessing_helpers() -> None:
    """Start multiprocessing's session-long helpers (the fork server, the resource tracker)
    before any leak check: their pipes stay open for the whole session, by design."""
    from multiprocessing import forkserver, resource_tracker

    if "forkserver" in START_METHODS:
        forkserver.ensure_running()
    resource_tracker.ensure_running()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def counts(url: str, name: str) -> tuple[int, int]:
    """``(shorts, trips)`` of a circuit, read directly from the server."""
    with contextlib.closing(redis.Redis.from_url(url)) as client:
        shorts, trips = client.hmget(KEY_PREFIX + name, ["shorts", "trips"])
    return int(shorts), int(trips)


def close(store: Any) -> None:
    closer = getattr(store, "close", None)  # the starting code had no close()
    if closer is not None:
        closer()


@contextlib.contextmanager
def store_on(kind: str, url: str, name: str, **options: Any) -> Iterator[RedisStore]:
    """A store built from ``url`` (``kind="url"``) or from a redis-py client of it: with
    redis-py's defaults (``"client"``: retries on, socket timeout 5 s in redis-py 8) or
    with a short timeout and 3 retries on timeouts and dropped connections."""
    client: redis.Redis | None = None
    if kind == "client":
        client = redis.Redis.from_url(url)
    elif kind == "retrying-client":
        client = redis.Redis.from_url(
            url,
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
            retry=Retry(NoBackoff(), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    store = RedisStore(url if client is None else client, name, **options)
    try:
        yield store
    finally:
        close(store)
        if client is not None:
            client.close()


STORE_KINDS = ["url", "client", "retrying-client"]


def _child_main(conn: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result: tuple[bool, Any] = (True, target(*args))
    except BaseException as error:  # reported to the parent, which fails the test
        result = (False, f"{type(error).__name__}: {error}")
    conn.send(result)
    conn.close()


def run_child(method: str, target: Callable[..., Any], *args: Any) -> Any:
    """Run ``target(*args)`` in a child process started with ``method``; its result."""
    context = multiprocessing.get_context(method)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, target, args), daemon=True)
    child.start()
    sender.close()
    try:
        assert receiver.poll(60), f"child {child.pid} did not answer"
        ok, value = receiver.recv()
        child.join(30)
        assert child.exitcode == 0, f"child {child.pid} exited with {child.exitcode}"
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)
        child.close()
        receiver.close()
    assert ok, value
    return value


# -- 1. a write is never applied twice ---------------------------------------------------------


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_dropped_reply_is_re_sent_and_applied_once(
    redis_url: str, no_leaks: None, kind: str, path: str
) -> None:
    """Every other reply (from the second on, so that connections are open) is lost after
    the server ran the short: the proxy closes the client's connection instead of forwarding
    it. The store re-sends the same operation; the server answers its first result without
    applying it again: the returns are those of a local circuit and the counts are exact."""
    steps = 14
    with (
        RedisProxy(port_of(redis_url)) as proxy,
        store_on(kind, proxy.url, "dropped", timeout=2.0) as store,
    ):
        circuit = Circuit(3, store=store)
        if path == "sync":
            returns = []
            for step in range(steps):
                if step % 2 == 1:
                    proxy.drop_replies(1)
                returns.append(circuit.short())
        else:

            async def main() -> list[bool]:
                got = []
                for step in range(steps):
                    if step % 2 == 1:
                        proxy.drop_replies(1)
                    got.append(await circuit.short.asynced()())
                return got

            returns = asyncio.run(main())
        dropped = proxy.dropped
    local = Circuit(3)
    assert returns == [local.short() for _ in range(steps)]
    assert dropped == steps // 2
    assert counts(redis_url, "dropped") == (local.times_shorted, local.total_trips)


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_stalled_reply_fails_within_the_timeout_and_counts_once(
    redis_url: str, no_leaks: None, kind: str, path: str
) -> None:
    """The server runs the short but its reply is held for 3 s. The call fails after about
    the store's timeout (whatever the client's own socket timeout), as an outage that may or
    may not have been applied; it is applied exactly once (no retry re-sends it)."""
    with (
        RedisProxy(port_of(redis_url)) as proxy,
        store_on(kind, proxy.url, "stalled", timeout=TIMEOUT) as store,
    ):
        circuit = Circuit(100, store=store)

        def stalled_short(short: Callable[[], Any]) -> tuple[BaseException | None, float]:
            proxy.stall(3.0)
            began = time.monotonic()
            try:
                short()
            except RedisStoreError as error:
                return error, time.monotonic() - began
            finally:
                proxy.resume()
            return None, time.monotonic() - began

        if path == "sync":
            assert circuit.short() is False  # connected
            error, elapsed = stalled_short(circuit.short)
            after = circuit.short()
        else:

            async def main() -> tuple[BaseException | None, float, bool]:
                short = circuit.short.asynced()
                assert await short() is False
                proxy.stall(3.0)
                began = time.monotonic()
                caught: BaseException | None = None
                try:
                    await short()
                except RedisStoreError as failure:
                    caught = failure
                finally:
                    proxy.resume()
                took = time.monotonic() - began
                return caught, took, await short()

            error, elapsed, after = asyncio.run(main())
    assert counts(redis_url, "stalled") == (3, 0)  # the stalled short ran once, not twice
    assert isinstance(error, RedisStoreError), f"no error after {elapsed:.2f} s"
    assert elapsed < TIMEOUT + 1.5
    assert after is False
    assert error.outage is True
    assert "may or may not have been applied" in str(error)


class Interrupted(BaseException):
    """Raised by a signal handler in the middle of a blocking call, like KeyboardInterrupt."""


@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_interrupted_call_leaves_no_stray_reply(
    redis_url: str, no_leaks: None, path: str
) -> None:
    """A call interrupted while its reply is on the way (KeyboardInterrupt in a blocking
    read, or a cancelled task) must not leave that reply on a connection that the next call
    reads: each later call gets its own reply. The server ran the interrupted short."""
    import signal

    with (
        RedisProxy(port_of(redis_url)) as proxy,
        store_on("url", proxy.url, "interrupted", timeout=SLOW) as store,
    ):
        circuit = Circuit(2, store=store)
        if path == "sync":

            def interrupt(signum: int, frame: Any) -> None:
                raise Interrupted

            previous = signal.signal(signal.SIGALRM, interrupt)
            try:
                assert circuit.short() is False
                proxy.stall(2.0)
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                with pytest.raises(Interrupted):
                    circuit.short()  # the server trips the circuit; the reply is held
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                proxy.resume()
            time.sleep(0.1)
            returns = [circuit.short(), circuit.short()]
        else:

            async def main() -> list[bool]:
                short = circuit.short.asynced()
                assert await short() is False
                proxy.stall(2.0)
                task = asyncio.ensure_future(short())
                await asyncio.sleep(0.3)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                proxy.resume()
                await asyncio.sleep(0.1)
                return [await short(), await short()]

            returns = asyncio.run(main())
    assert returns == [False, True]  # not the held reply of the interrupted (tripping) call
    assert counts(redis_url, "interrupted") == (0, 2)


def test_the_script_recognises_a_re_sent_operation_and_refuses_a_late_one(
    redis_url: str,
) -> None:
    """The operation id at the script level: the same number on the same lane is answered
    from the lane's record; a lower one (an operation its caller gave up on, arriving late)
    is not applied; a higher one is applied. The record lives in the circuit's hash, and a
    lane quiet for a whole window is forgotten by the next call after the window."""
    store = RedisStore(redis_url, "lane")
    circuit = Circuit(2, store=store)
    key = KEY_PREFIX + "lane"
    fingerprint = "Circuit 2 0 1 10 0"
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        sha = client.script_load(LUA)

        def send(number: int, lane: str = "op:test-process:0", window: int = 60) -> bytes:
            reply: bytes = client.evalsha(
                sha, 1, key, "circuit_short", "", "", str(window), fingerprint, lane, str(number)
            )
            return reply

        assert send(5) == b""  # counted: 1 short
        assert send(5) == b""  # a re-send: answered, not counted
        assert circuit.times_shorted == 1
        assert send(6).startswith(b"0 ")  # trips: "<sleep> <state>"
        assert send(6).startswith(b"0 ")  # the same answer again, not a second trip
        assert (circuit.times_shorted, circuit.total_trips) == (0, 1)
        with pytest.raises(redis.ResponseError, match="SUITKAISE_STALE"):
            send(5)
        assert (circuit.times_shorted, circuit.total_trips) == (0, 1)
        record = client.hget(key, "op:test-process:0")
        assert record is not None and record.split(b" ")[0] == b"6"
        assert len(record) < 60  # bytes: one small field per lane
        # A record that does not parse is overwritten, never a script error.
        client.hset(key, "op:test-process:0", "garbage")
        assert send(7) == b""
        # Quiet lanes are forgotten once per window: made old, they go at the next sweep.
        now = int(client.time()[0])
        client.hset(key, mapping={"op:gone:0": f"1 {now - 100} ", "op:recent:0": f"1 {now} ",
                                  "swept": str(now - 100)})  # fmt: skip
        assert send(8, window=50).startswith(b"0 ")  # the second short since the trip
        assert (circuit.times_shorted, circuit.total_trips) == (0, 2)
        fields = {f.decode() for f in client.hkeys(key) if f.startswith(b"op:")}
        assert fields == {"op:test-process:0", "op:recent:0"}
        assert int(client.hget(key, "swept")) >= now
        # Another configuration's fingerprint is refused, and nothing is applied.
        with pytest.raises(redis.ResponseError, match="SUITKAISE_CONFIG Circuit 2 0 1 10 0"):
            client.evalsha(sha, 1, key, "circuit_short", "", "", "60", "Circuit 3 0 1 10 0",
                           "op:x:0", "1")  # fmt: skip
        assert (circuit.times_shorted, circuit.total_trips) == (0, 2)
    close(store)


def _ids_in_child() -> str:
    return redis_module._ids.prefix.decode()


@fork_with_threads
def test_operation_ids_need_no_system_call_and_are_renewed_in_a_forked_child(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_url, "ids")
    circuit = Circuit(1000, store=store)
    circuit.short()
    prefix = redis_module._ids.prefix.decode()

    def forbidden(*args: Any) -> Any:
        raise AssertionError("a system call for an operation id")

    with monkeypatch.context() as patch:
        patch.setattr(os, "urandom", forbidden)
        patch.setattr(os, "getpid", forbidden)
        for _ in range(50):
            circuit.short()
        asyncio.run(circuit.short.asynced()())
    assert circuit.times_shorted == 52
    assert run_child("fork", _ids_in_child) != prefix
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        fields = client.hkeys(KEY_PREFIX + "ids")
    lanes = [f.decode() for f in fields if f.startswith(redis_module.LANE_PREFIX.encode())]
    # One lane: the calls above never overlapped. Per process, not per operation.
    assert len(lanes) == 1 and lanes[0].startswith(f"{redis_module.LANE_PREFIX}{prefix}:")
    close(store)


# -- 2. credentials and TLS ------------------------------------------------------------------


@contextlib.contextmanager
def acl_server(*extra: str) -> Iterator[PrivateRedis]:
    """A private server whose default user needs ADMIN_PW, with an ACL user bob."""
    with PrivateRedis(*extra, password=ADMIN_PW) as server:
        with contextlib.closing(server.admin()) as admin:
            admin.execute_command("ACL", "SETUSER", "bob", "on", f">{BOB_PW}", "~*", "+@all")
        yield server


def secrets_in(text: str) -> list[str]:
    return [secret for secret in (ADMIN_PW, BOB_PW, "S3cret") if secret in text]


def _short_through_pickles(store_bytes: bytes, circuit_bytes: bytes) -> list[Any]:
    store = pickle.loads(store_bytes)
    circuit = pickle.loads(circuit_bytes)
    mine = Circuit(3, store=store)
    result = [circuit.short(), mine.short(), asyncio.run(circuit.short.asynced()()), repr(store)]
    close(store)
    return result


@fork_with_threads
@pytest.mark.parametrize("source", ["client", "url"])
def test_an_acl_user_and_password_are_used_everywhere_and_shown_nowhere(
    no_leaks: None, source: str
) -> None:
    with acl_server() as server:
        url = f"redis://bob:{BOB_PW}@127.0.0.1:{server.port}/0"
        client = redis.Redis(host="127.0.0.1", port=server.port, username="bob", password=BOB_PW)
        store = RedisStore(client if source == "client" else url, "cred", timeout=SLOW)
        try:
            circuit = Circuit(3, store=store)
            assert circuit.short() is False
            assert asyncio.run(circuit.short.asynced()()) is False  # the asyncio path too
            assert circuit.short() is True
            assert (
                repr(store)
                == f"RedisStore('redis://bob:***@127.0.0.1:{server.port}/0', name='cred')"
            )
            assert secrets_in(repr(store) + repr(circuit) + repr(circuit._store)) == []
            with contextlib.closing(server.admin()) as admin:
                users = {
                    entry["user"] for entry in admin.client_list() if entry["cmd"] != "client|list"
                }
            assert users == {"bob"}
            # Pickled, in other processes: the same user and password, the same circuit.
            for method in START_METHODS:
                returns = run_child(
                    method, _short_through_pickles, pickle.dumps(store), pickle.dumps(circuit)
                )
                assert returns[:3] == [False, False, True], method
                assert secrets_in(returns[3]) == []
            assert circuit.times_shorted == 0 and circuit.total_trips == 1 + len(START_METHODS)
            # An outage: the error and the fallback warning name the server, not the password.
            fallback_store = RedisStore(url, "cred", timeout=TIMEOUT, fallback=True)
            fallback = Circuit(3, store=fallback_store)
            server.stop()
            with pytest.raises(RedisStoreError) as info:
                circuit.short()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fallback.short()
            messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
            assert len(messages) == 1 and "bob:***@127.0.0.1" in messages[0]
            assert "bob:***@127.0.0.1" in str(info.value)
            assert secrets_in(str(info.value) + messages[0]) == []
            close(fallback_store)
        finally:
            close(store)
            client.close()


def test_a_wrong_password_is_refused_at_once_and_not_shown(no_leaks: None) -> None:
    with acl_server() as server:
        wrong = "wrong-S3cret-password"
        for source in (
            f"redis://bob:{wrong}@127.0.0.1:{server.port}/0",
            f"redis://:{wrong}@127.0.0.1:{server.port}/0",
            redis.Redis(host="127.0.0.1", port=server.port, username="bob", password=wrong),
            f"redis://127.0.0.1:{server.port}/0",  # no password at all
        ):
            for fallback in (False, True):
                began = time.monotonic()
                with pytest.raises(RedisStoreError) as info:
                    Circuit(2, store=RedisStore(source, "pw", timeout=SLOW, fallback=fallback))
                assert time.monotonic() - began < INSTANT
                message = str(info.value)
                assert wrong not in message and "did not answer" not in message, message
                assert "authentication failed" in message
                assert info.value.outage is False
            if isinstance(source, redis.Redis):
                source.close()


def test_a_url_password_never_shows_in_errors_about_the_url() -> None:
    with pytest.raises(ValueError) as info:
        RedisStore("redis://bob:S3cret/word@127.0.0.1:6379/0", "x")
    assert "S3cret" not in str(info.value) and "url_or_client" in str(info.value)
    with pytest.raises(ValueError) as info:
        RedisStore("http://bob:S3cret@127.0.0.1:6379/0", "x")
    assert "S3cret" not in str(info.value)
    store = RedisStore("redis://:S3cret%40x@127.0.0.1:6379/0", "x")
    assert secrets_in(repr(store) + store.url) == []
    close(store)
    with pytest.raises(TypeError, match="url_or_client"):
        RedisStore(b"redis://127.0.0.1:6379/0", "x")  # type: ignore[arg-type]


def test_tls_settings_are_carried_to_every_path(tmp_path: Path) -> None:
    """From a TLS client: the store's connections, its asyncio twin and a pickled copy all
    use ``SSLConnection`` with the client's certificate settings and credentials."""
    from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
    from redis.connection import SSLConnection

    client = redis.Redis(
        host="127.0.0.1", port=6390, ssl=True, ssl_ca_certs=str(tmp_path / "ca.pem"),
        ssl_certfile=str(tmp_path / "me.pem"), ssl_keyfile=str(tmp_path / "me.key"),
        ssl_check_hostname=False, username="bob", password=BOB_PW, db=3,
    )  # fmt: skip
    store = RedisStore(client, "tls")
    try:
        assert store.url == "rediss://bob:***@127.0.0.1:6390/3"
        copy = pickle.loads(pickle.dumps(store))
        for one in (store, copy):
            target = one._target
            assert target.connection_class is SSLConnection
            for name, value in {
                "ssl_ca_certs": str(tmp_path / "ca.pem"), "ssl_certfile": str(tmp_path / "me.pem"),
                "ssl_keyfile": str(tmp_path / "me.key"), "ssl_check_hostname": False,
                "username": "bob", "password": BOB_PW, "db": 3, "port": 6390,
            }.items():  # fmt: skip
                assert target.settings[name] == value, name
            assert one._endpoint is not None
            connection_class, options = one._endpoint._async_options(1.0)
            assert connection_class is AsyncSSLConnection
            assert options["ssl_ca_certs"] == str(tmp_path / "ca.pem")
            assert options["password"] == BOB_PW and options["socket_timeout"] == 1.0
        close(copy)
    finally:
        close(store)
        client.close()


def test_an_asyncio_client_gives_its_settings_and_unusable_ones_are_refused(
    redis_url: str, no_leaks: None
) -> None:
    import redis.asyncio

    port = port_of(redis_url)
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, db=2, client_name="from-aio")
    store = RedisStore(client, "aio-client", timeout=SLOW)
    circuit = Circuit(2, store=store)
    assert store.url == f"redis://127.0.0.1:{port}/2"
    assert [circuit.short(), asyncio.run(circuit.short.asynced()())] == [False, True]
    with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, db=2)) as raw:
        assert raw.hget(KEY_PREFIX + "aio-client", "trips") == b"1"
        raw.flushdb()
    close(store)
    # A setting the asyncio twin cannot honour is refused, not silently dropped.
    ocsp = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_validate_ocsp=True)
    strict = RedisStore(ocsp, "ocsp")
    assert strict._endpoint is not None
    with pytest.raises(TypeError, match="ssl_validate_ocsp"):
        strict._endpoint._async_options(1.0)  # what the first .asynced() call builds
    close(strict)
    ocsp.close()


@fork_with_threads
def test_a_tls_server_is_used_with_the_clients_settings(no_leaks: None, tmp_path: Path) -> None:
    material = tls_material(tmp_path)
    if material is None:  # this machine's redis-server cannot do TLS: the settings test above
        return
    cert = str(material[0])
    with PrivateRedis(password=ADMIN_PW, tls=material) as server:
        client = redis.Redis(
            host="127.0.0.1", port=server.port, ssl=True, ssl_ca_certs=cert, password=ADMIN_PW
        )
        store = RedisStore(client, "tls", timeout=SLOW)
        url_store = RedisStore(
            f"rediss://:{ADMIN_PW}@127.0.0.1:{server.port}/0?ssl_ca_certs={cert}", "tls"
        )
        try:
            circuit = Circuit(3, store=store)
            twin = Circuit(3, store=url_store)
            assert circuit.short() is False
            assert asyncio.run(twin.short.asynced()()) is False
            assert run_child(
                "spawn", _short_through_pickles, pickle.dumps(store), pickle.dumps(circuit)
            )[:3] == [True, False, False]
            assert store.url.startswith("rediss://:***@")
            # A plain-text client of a TLS port, or TLS to a plain server, is refused.
            plain = RedisStore(f"redis://:{ADMIN_PW}@127.0.0.1:{server.port}/0", "x", timeout=1)
            with pytest.raises(RedisStoreError):
                Circuit(3, store=plain)
            plain.close()
        finally:
            close(store)
            close(url_store)
            client.close()
    # A certificate the client does not trust: refused at once, naming TLS.
    with PrivateRedis(tls=material) as server:
        untrusted = RedisStore(f"rediss://127.0.0.1:{server.port}/0", "x", timeout=SLOW)
        error, elapsed = attempt(lambda: Circuit(3, store=untrusted))
        assert isinstance(error, RedisStoreError), repr(error)
        assert error.outage is False and "TLS" in str(error), str(error)
        assert elapsed < INSTANT
        close(untrusted)


# -- 3. every error named truly ---------------------------------------------------------------


class Scene:
    """A private server (default user ADMIN_PW, ACL user bob), a proxy in front of it, and
    stores built through the proxy as bob: one strict, one in fallback mode."""

    def __init__(self, server: PrivateRedis, proxy: RedisProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.url = f"redis://bob:{BOB_PW}@127.0.0.1:{proxy.port}/0"
        self.stores: list[RedisStore] = []

    def store(self, name: str = "c", **options: Any) -> RedisStore:
        store = RedisStore(self.url, name, timeout=SLOW, **options)
        self.stores.append(store)
        return store

    def admin(self, *command: Any) -> Any:
        with contextlib.closing(self.server.admin()) as admin:
            return admin.execute_command(*command)


@contextlib.contextmanager
def scene(*extra: str) -> Iterator[Scene]:
    with acl_server(*extra) as server, RedisProxy(server.port) as proxy:
        made = Scene(server, proxy)
        try:
            yield made
        finally:
            for store in made.stores:
                close(store)


# fault -> (what turns it on after the circuit exists, what the message says, reads fail too)
FAULTS: dict[str, tuple[Callable[[Scene], None], str, bool]] = {
    "oom": (lambda s: s.admin("CONFIG", "SET", "maxmemory", "1"), "out of memory", False),
    "wrongtype": (
        lambda s: (s.admin("DEL", KEY_PREFIX + "c"), s.admin("SET", KEY_PREFIX + "c", "x")),
        "holds a string, not a circuit",
        True,
    ),
    "wrong password": (
        lambda s: (
            s.admin("ACL", "SETUSER", "bob", "resetpass", ">another-password"),
            s.admin("CLIENT", "KILL", "USER", "bob"),
        ),
        "authentication failed",
        True,
    ),
    "acl": (lambda s: s.admin("ACL", "SETUSER", "bob", "-@scripting"), "(ACL:", False),
    "noscript loop": (
        lambda s: setattr(s.proxy, "mode", "noscript"),
        "keeps forgetting the store's Lua script",
        False,
    ),
    "no lua": (
        lambda s: setattr(s.proxy, "mode", "unscripted"),
        "does not run Lua scripts",
        False,
    ),
    "other protocol": (
        lambda s: setattr(s.proxy, "mode", "garble"),
        "does not speak the Redis protocol",
        True,
    ),
}


def assert_refusal(error: BaseException, cause: str, url: str, name: str = "c") -> None:
    assert isinstance(error, RedisStoreError), repr(error)
    message = str(error)
    assert "did not answer" not in message, message
    assert cause in message, message
    assert f"circuit {name!r}" in message and url in message, message
    assert secrets_in(message) == []
    assert error.outage is False, message


def attempt(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    began = time.monotonic()
    try:
        call()
    except Exception as error:
        return error, time.monotonic() - began
    return None, time.monotonic() - began


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_refusal_on_every_call_is_named_and_never_falls_back(no_leaks: None, fault: str) -> None:
    turn_on, cause, reads_fail = FAULTS[fault]
    with scene() as s:
        strict = BreakingCircuit(3, store=s.store())
        lenient = BreakingCircuit(3, store=s.store(fallback=True))
        strict.short()
        asyncio.run(lenient.short.asynced()())  # both paths connected before the fault
        turn_on(s)
        url = f"redis://bob:***@127.0.0.1:{s.proxy.port}/0"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for circuit in (strict, lenient):
                calls: list[Callable[[], Any]] = [
                    circuit.short,
                    circuit.trip,
                    circuit.reset,
                    lambda c=circuit: asyncio.run(c.short.asynced()()),
                    lambda c=circuit: asyncio.run(c.trip.asynced()()),
                ]
                for call in calls:
                    error, elapsed = attempt(call)
                    assert error is not None, f"{fault}: no error"
                    assert_refusal(error, cause, url)
                    assert elapsed < INSTANT, f"{fault}: {elapsed:.2f} s"
                error, _ = attempt(lambda c=circuit: c.broken)
                if reads_fail:
                    assert error is not None
                    assert_refusal(error, cause, url)
                else:
                    assert error is None, repr(error)
        assert [w for w in caught if w.category is RuntimeWarning] == []


CONSTRUCTION_FAULTS: dict[str, tuple[Callable[[Scene], str], str]] = {
    "oom": (lambda s: (s.admin("CONFIG", "SET", "maxmemory", "1"), s.url)[1], "out of memory"),
    "wrongtype": (
        lambda s: (s.admin("SET", KEY_PREFIX + "c", "x"), s.url)[1],
        "holds a string, not a circuit",
    ),
    "foreign hash": (
        lambda s: (s.admin("HSET", KEY_PREFIX + "c", "owner", "someone"), s.url)[1],
        "not a suitkaise circuit",
    ),
    "acl": (lambda s: (s.admin("ACL", "SETUSER", "bob", "-@scripting"), s.url)[1], "(ACL:"),
    "no lua": (
        lambda s: (setattr(s.proxy, "mode", "unscripted"), s.url)[1],
        "does not run Lua scripts",
    ),
    "other protocol": (
        lambda s: (setattr(s.proxy, "mode", "garble"), s.url)[1],
        "does not speak the Redis protocol",
    ),
    "bad db": (lambda s: s.url.replace("/0", "/99"), "database 99 does not exist"),
}


@pytest.mark.parametrize("fault", sorted(CONSTRUCTION_FAULTS))
def test_a_refusal_at_construction_is_named(no_leaks: None, fault: str) -> None:
    turn_on, cause = CONSTRUCTION_FAULTS[fault]
    with scene() as s:
        url = turn_on(s)
        for fallback in (False, True):
            store = RedisStore(url, "c", timeout=SLOW, fallback=fallback)
            s.stores.append(store)
            error, elapsed = attempt(lambda store=store: BreakingCircuit(3, store=store))
            assert error is not None
            assert_refusal(error, cause, store.url)
            assert elapsed < INSTANT


def test_a_server_of_another_protocol_is_named(no_leaks: None) -> None:
    with other_protocol_server() as url:
        store = RedisStore(url, "c", timeout=SLOW)
        error, elapsed = attempt(lambda: Circuit(3, store=store))
        assert error is not None
        assert_refusal(error, "does not speak the Redis protocol", url)
        assert elapsed < INSTANT
        close(store)


# (the command the fake server answers with an error, its raw reply, URL options, outage,
# what the message says). Classified by what failed: the command (a step of the handshake or
# the request) and the server's error code, never by searching the text.
ERRORS: list[tuple[bytes, bytes, str, bool, str]] = [
    (b"EVALSHA", b"-BUSY Redis is busy running a script.\r\n", "", True, "cannot serve now"),
    (b"EVALSHA", b"-MASTERDOWN Link with MASTER is down\r\n", "", True, "cannot serve now"),
    (b"EVALSHA", b"-LOADING Redis is loading the dataset\r\n", "", True, "still loading"),
    (b"AUTH", b"-ERR max number of clients reached\r\n", "pw", True, "no room for another"),
    (b"CLIENT", b"-ERR max number of clients reached\r\n", "full", True, "no room for another"),
    (b"AUTH", b"-WRONGPASS invalid username-password pair\r\n", "pw", False, "authentication"),
    (b"AUTH", b"-ERR invalid password\r\n", "pw", False, "authentication failed"),
    (b"EVAL", b"-NOAUTH Authentication required.\r\n", "", False, "authentication failed"),
    (b"EVALSHA", b"-NOPERM this user has no permissions\r\n", "", False, "(ACL:"),
    (b"EVALSHA", b"-ERR The user executing the script can't run this command\r\n", "", False,
     "(ACL:"),
    (b"EVALSHA", b"-OOM command not allowed when used memory > 'maxmemory'.\r\n", "", False,
     "out of memory"),
    (b"EVALSHA", b"-READONLY You can't write against a read only replica.\r\n", "", False,
     "read-only replica"),
    (b"SELECT", b"-ERR DB index is out of range\r\n", "db", False, "database 7 does not exist"),
    (b"CLIENT", b"-ERR Client names cannot contain spaces\r\n", "name", False, "client_name"),
    (b"EVALSHA", b"-ERR unknown command 'EVALSHA'\r\n", "", False, "does not run Lua scripts"),
    (b"EVAL", b"-ERR unknown command 'EVAL'\r\n", "", False, "does not run Lua scripts"),
    (b"EVALSHA", b"-MOVED 3999 127.0.0.1:6381\r\n", "", False, "Cluster is not supported"),
    (b"EVALSHA", b"-MISCONF cannot persist on disk\r\n", "", False, "refuses writes (MISCONF"),
    (b"EVALSHA", b"-SUITKAISE_CORRUPT shorts\r\n", "", False, "fields are not those of"),
    (b"EVALSHA", b"-WEIRD something new\r\n", "", False, "answered EVALSHA with an error"),
    (b"EVALSHA", b"HTTP/1.1 400 Bad Request\r\n\r\n", "", False, "does not speak the Redis"),
    (b"EVALSHA", b"", "", True, "connection failed or broke"),
]  # fmt: skip
URL_OPTIONS = {
    "": "/0",
    "pw": "/0",
    "db": "/7",
    "name": "/0?client_name=me",
    "full": "/0",
}


@pytest.mark.parametrize(
    ("command", "reply", "options", "outage", "cause"), ERRORS, ids=lambda v: repr(v)[:32]
)
def test_every_server_answer_is_classified(
    no_leaks: None, command: bytes, reply: bytes, options: str, outage: bool, cause: str
) -> None:
    """What each answer of the server becomes, at the step where it comes (the handshake,
    the creation of the circuit, or an operation), for those hard to provoke for real."""
    # A full server answers whatever comes first, then hangs up.
    hang_up = command if options == "full" else b""
    with FakeRedis({command: reply}, hang_up_after=hang_up) as server:
        password = ":S3cret-pw@" if options == "pw" else ""
        url = f"redis://{password}127.0.0.1:{server.port}{URL_OPTIONS[options]}"
        store = RedisStore(url, "classify", timeout=SLOW)
        began = time.monotonic()
        with pytest.raises(RedisStoreError) as info:
            circuit = Circuit(2, store=store)  # the handshake and the creation script
            circuit.short()  # an operation
        elapsed = time.monotonic() - began
        store.close()
    failure = info.value
    message = str(failure)
    assert failure.outage is outage, message
    assert cause in message and "'classify'" in message and store.url in message, message
    assert "S3cret" not in message
    assert elapsed < INSTANT
    assert failure.__context__ is None and failure.__cause__ is None
    # It travels between processes (a Pool worker raising it) with its flag.
    copy = pickle.loads(pickle.dumps(failure))
    assert (type(copy), str(copy), copy.outage) == (RedisStoreError, message, outage)


def test_a_read_only_replica_is_named(no_leaks: None) -> None:
    with (
        PrivateRedis() as primary,
        PrivateRedis("--replicaof", "127.0.0.1", str(primary.port)) as replica,
    ):
        store = RedisStore(f"redis://127.0.0.1:{replica.port}/0", "c", timeout=SLOW)
        error, elapsed = attempt(lambda: Circuit(3, store=store))
        assert error is not None
        assert_refusal(error, "read-only replica", store.url)
        assert elapsed < INSTANT
        close(store)


def test_outages_are_named_as_such_and_fall_back(no_leaks: None) -> None:
    """Refused connections, a restarted server and a busy one are outages: ``outage`` is
    True, and fallback mode carries on locally."""
    with PrivateRedis("--busy-reply-threshold", "100") as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        strict_store = RedisStore(url, "c", timeout=SLOW)
        lenient_store = RedisStore(url, "c", timeout=SLOW, fallback=True, retry_interval=60)
        strict, lenient = Circuit(3, store=strict_store), Circuit(3, store=lenient_store)
        strict.short()
        lenient.short()
        with contextlib.closing(server.admin()) as admin:
            busy = threading.Thread(
                target=lambda: admin.eval(
                    "local t = redis.call('TIME') repeat local n = redis.call('TIME') "
                    "until n[1] - t[1] >= 2 return 1",
                    0,
                )
            )
            busy.start()
            time.sleep(0.3)  # past the busy threshold: the server answers BUSY
            error, _ = attempt(strict.short)
            with pytest.warns(RuntimeWarning, match="fallback"):
                assert lenient.short() is True  # 1 + 1 shorts locally: trips at 3
            busy.join(10)
        assert isinstance(error, RedisStoreError) and error.outage is True, repr(error)
        assert "cannot serve now" in str(error)
        server.stop()
        error, _ = attempt(strict.short)
        assert isinstance(error, RedisStoreError) and error.outage is True
        assert "did not answer" in str(error) and url in str(error)
        close(strict_store)
        close(lenient_store)


def test_a_deleted_key_and_a_flushed_script_are_repaired(redis_url: str, no_leaks: None) -> None:
    store = RedisStore(redis_url, "repair", timeout=SLOW)
    circuit = BreakingCircuit(2, store=store)
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        circuit.short()
        client.delete(KEY_PREFIX + "repair")
        client.script_flush()
        assert circuit.short() is None  # recreated afresh, the script loaded again
        assert circuit.times_shorted == 1
        client.delete(KEY_PREFIX + "repair")
        assert circuit.broken is False  # a read recreates it too
        client.script_flush()
        client.delete(KEY_PREFIX + "repair")
        assert asyncio.run(circuit.short.asynced()()) is None
        assert (circuit.times_shorted, circuit.total_trips) == (1, 0)
    close(store)


# -- 4. resources ----------------------------------------------------------------------------


def connected(server: PrivateRedis, name: str = "suitkaise-test") -> int:
    with contextlib.closing(server.admin()) as admin:
        return sum(1 for entry in admin.client_list() if entry["name"] == name)


def settle(server: PrivateRedis, expected: int) -> int:
    """The number of store connections, once it reached ``expected`` (or after 3 s)."""
    deadline = time.monotonic() + 3
    found = connected(server)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        found = connected(server)
    return found


def test_stores_share_connections_and_event_loops_leave_none_open(no_leaks: None) -> None:
    with PrivateRedis() as server:
        url = f"redis://127.0.0.1:{server.port}/0?client_name=suitkaise-test"
        stores = [RedisStore(url, f"c{i}") for i in range(20)]
        stores += [RedisStore(url.replace("/0", "/1"), "other-db"), RedisStore(url, "t", timeout=3)]
        circuits = [Circuit(2, store=store) for store in stores]
        for circuit in circuits:
            circuit.short()
        # One connection per (server, settings, timeout): three, not one per store.
        assert connected(server) == 3

        async def everyone() -> list[bool]:
            return list(await asyncio.gather(*(c.short.asynced()() for c in circuits)))

        for loop in range(10):
            tripped = loop % 2 == 0  # threshold 2: every other short trips
            assert asyncio.run(everyone()) == [tripped] * len(circuits)
            # The loop's connections closed as asyncio.run() ended; the sync ones stay.
            assert settle(server, 3) == 3
        for store in stores:
            close(store)
        assert settle(server, 0) == 0
        with pytest.raises(RedisStoreError, match="is closed") as info:
            circuits[0].short()
        assert info.value.outage is False
        stores[0].close()  # idempotent


def test_a_store_closes_when_garbage_collected_and_in_a_with_block(no_leaks: None) -> None:
    import gc

    with PrivateRedis() as server:
        url = f"redis://127.0.0.1:{server.port}/0?client_name=suitkaise-test"
        with RedisStore(url, "w") as store:
            Circuit(2, store=store).short()
            assert connected(server) == 1
        assert store.closed and settle(server, 0) == 0
        circuit = Circuit(2, store=RedisStore(url, "gc"))
        circuit.short()
        assert connected(server) == 1
        del circuit
        gc.collect()
        assert settle(server, 0) == 0


def _fork_child_shorts(circuit: Any, count: int) -> int:
    for _ in range(count):
        circuit.short()
    return count


def _pickled_child_shorts(circuit_bytes: bytes, count: int) -> int:
    return _fork_child_shorts(pickle.loads(circuit_bytes), count)


@fork_with_threads
@pytest.mark.parametrize("method", START_METHODS)
def test_a_child_process_uses_its_own_connections(no_leaks: None, method: str) -> None:
    """While the parent keeps shorting, a child (forked with the circuit, or given a pickled
    one) shorts the same circuit on connections of its own: exact counts, and the parent's
    connection is the one it had before (the child neither used nor closed it)."""
    with PrivateRedis() as server:
        url = f"redis://127.0.0.1:{server.port}/0?client_name=suitkaise-test"
        store = RedisStore(url, "fork")
        circuit = Circuit(1_000_000, store=store)
        circuit.short()
        asyncio.run(circuit.short.asynced()())
        with contextlib.closing(server.admin()) as admin:
            before = {e["id"] for e in admin.client_list() if e["name"] == "suitkaise-test"}
        assert len(before) == 1
        stop = threading.Event()
        parent_shorts = [0]

        def keep_shorting() -> None:
            while not stop.is_set():
                circuit.short()
                parent_shorts[0] += 1

        worker = threading.Thread(target=keep_shorting)
        worker.start()
        try:
            if method == "fork":
                child = run_child(method, _fork_child_shorts, circuit, 300)
            else:
                child = run_child(method, _pickled_child_shorts, pickle.dumps(circuit), 300)
        finally:
            stop.set()
            worker.join(30)
        assert child == 300
        assert circuit.times_shorted == 2 + parent_shorts[0] + 300
        with contextlib.closing(server.admin()) as admin:
            after = {e["id"] for e in admin.client_list() if e["name"] == "suitkaise-test"}
        assert before <= after  # the parent's connection survived the child
        close(store)


def test_handles_survive_a_server_restart(no_leaks: None) -> None:
    with PrivateRedis() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        store = RedisStore(url, "restart", timeout=SLOW)
        circuit = Circuit(3, store=store)
        circuit.short()

        async def two() -> list[bool]:
            return [await circuit.short.asynced()(), await circuit.short.asynced()()]

        server.stop()
        server.start()  # empty again (no persistence), the same port
        assert circuit.short() is False  # recreated afresh
        assert asyncio.run(two()) == [False, True]
        server.stop()
        server.start()
        assert asyncio.run(two()) == [False, False]
        assert circuit.short() is True
        assert counts(url, "restart") == (0, 1)
        close(store)


# -- 5. many threads and tasks at once -------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True])
def test_eight_threads_on_one_redis_circuit_count_exactly(
    redis_url: str, no_leaks: None, fallback: bool
) -> None:
    store = RedisStore(redis_url, "threads", timeout=SLOW, fallback=fallback)
    circuit = Circuit(7, store=store)
    barrier = threading.Barrier(8)
    trips = [0] * 8

    def work(index: int) -> None:
        barrier.wait(30)
        trips[index] = sum(1 for _ in range(500) if circuit.short())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(trips) == 4000 // 7
    assert (circuit.times_shorted, circuit.total_trips) == (4000 % 7, 4000 // 7)
    close(store)


def test_many_tasks_and_loops_in_threads_count_exactly(redis_url: str, no_leaks: None) -> None:
    store = RedisStore(redis_url, "tasks", timeout=SLOW)
    circuit = Circuit(7, store=store)

    async def tasks() -> int:
        async def one() -> int:
            return sum([await circuit.short.asynced()() for _ in range(25)])

        return sum(await asyncio.gather(*(one() for _ in range(20))))

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(asyncio.run(tasks())))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(results) == 2000 // 7
    assert (circuit.times_shorted, circuit.total_trips) == (2000 % 7, 2000 // 7)
    close(store)


class SlowLocalStore(redis_module.LocalStore):
    """A local copy that takes a while to make: any thread that checks-then-creates the copy
    without a lock makes its own, and the shorts counted on the others are lost."""

    def __init__(self, state: Any) -> None:
        time.sleep(0.05)
        super().__init__(state)


def test_eight_threads_in_an_outage_share_one_local_copy(
    no_leaks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "LocalStore", SlowLocalStore)
    with PrivateRedis() as server:
        store = RedisStore(
            f"redis://127.0.0.1:{server.port}/0", "outage", fallback=True, retry_interval=60
        )
        circuit = Circuit(7, store=store)
        server.stop()
        barrier = threading.Barrier(8)
        trips = [0] * 8

        def work(index: int) -> None:
            barrier.wait(30)
            trips[index] = sum(1 for _ in range(500) if circuit.short())

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert len([w for w in caught if w.category is RuntimeWarning]) == 1
        assert sum(trips) == 4000 // 7
        assert (circuit.times_shorted, circuit.total_trips) == (4000 % 7, 4000 // 7)
        close(store)


def test_in_an_outage_one_caller_at_a_time_knocks_on_redis(no_leaks: None) -> None:
    with PrivateRedis() as server, RedisProxy(server.port) as proxy:
        store = RedisStore(proxy.url, "knock", fallback=True, retry_interval=0.3, timeout=SLOW)
        circuit = Circuit(1_000_000, store=store)
        circuit.short()
        server.stop()
        accepted = proxy.attempts
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                circuit.short()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            threads = [threading.Thread(target=hammer) for _ in range(8)]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(1.2)
            stop.set()
            for thread in threads:
                thread.join(30)
            elapsed = time.monotonic() - began
        knocks = proxy.attempts - accepted
        # Up to one per thread when the outage is found, then one per retry_interval.
        assert knocks <= 8 + elapsed / 0.3 + 1, knocks
        close(store)


# -- 6. durations ----------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["timeout", "retry_interval"])
def test_durations_are_validated(argument: str) -> None:
    url = "redis://127.0.0.1:6379/0"
    for bad, kind in [(True, TypeError), ("1", TypeError), (None, TypeError), (0, ValueError),
                      (-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                      (1e10, ValueError)]:  # fmt: skip
        with pytest.raises(kind, match=re.escape(argument)):
            RedisStore(url, "x", **{argument: bad})
    store = RedisStore(url, "x", **{argument: timedelta(milliseconds=1500)})
    assert getattr(store, argument) == 1.5
    close(store)
    with pytest.raises(TypeError, match="fallback"):
        RedisStore(url, "x", fallback="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        RedisStore(url, "")
