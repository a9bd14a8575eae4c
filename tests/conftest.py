"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from leaks import Snapshot
from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free 127.0.0.1 port for the whole session, stopped after."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied for this test (and running, if a test stopped it)."""
    import redis

    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor, a /dev/shm/suitkaise-* entry or a
    process behind (after a garbage collection and a 3 s grace period)."""
    before = Snapshot.take()
    yield
    problems = before.leaks()
    assert not problems, "; ".join(problems)
