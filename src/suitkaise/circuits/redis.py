"""Circuits on Redis: one circuit shared by processes on many machines.

>>> from suitkaise import BreakingCircuit
>>> from suitkaise.circuits.redis import RedisStore
>>> breaker = BreakingCircuit(3, sleep_time_after_trip=1.0,
...                           store=RedisStore("redis://127.0.0.1:6379/0", name="payments-api"))
... # doctest: +SKIP

Every state change is one atomic round trip: a Lua script (loaded once, called by its SHA)
that mirrors the pure transitions of ``_transitions.py`` line by line. Reads are one
``HMGET``. Only the caller that trips sleeps, in its own process, with jitter applied
locally. Needs the extra ``suitkaise[redis]`` (redis-py); ``import suitkaise`` never
imports it.

Key layout: one hash per circuit, ``suitkaise:circuit:{name}``, holding the configuration
(``kind``, ``threshold``, ``sleep``, ``factor``, ``cap``, ``jitter``, written once by the
first creator) and the state (``shorts``, ``trips``, ``current``, ``broken``). Numbers are
stored as decimal strings that round-trip exactly (``%.17g``). No state depends on time, so
no client clock is ever used.

A write is never applied twice. Each operation carries an id: the *lane* it travels on (one
operation in flight at a time per lane; a process has as many lanes as it ever had
operations in flight at once) and a number that grows with every operation of the process.
The script keeps, per lane, one key ``suitkaise:op:{process}:{lane}`` holding the last
operation's number and reply, for ``LANE_MEMORY_S`` seconds (or ten times the store's
timeout, if longer) after the lane's last use. A re-send of that operation (its reply was
lost) gets the first reply back instead of being applied again; an older operation that
arrives late (its caller gave up on it) is not applied at all. Memory: one small key per
lane, overwritten by every operation, so nothing grows with the number of operations.

The store talks to the server through redis-py's connection classes, with the connection
settings of the URL or client it was given (credentials and TLS included) and two things of
its own: the timeouts, and no retries inside redis-py (the store re-sends, with the same
operation id, only after a dropped connection). Connections are shared by every store of
the process with the same settings, never used across a fork, and asyncio connections
belong to their event loop and are closed when it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .._validation import seconds
from ._settings import Settings
from ._stores import LocalStore
from ._transitions import State, Transition, initial_state

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from datetime import timedelta
    from types import TracebackType

    import redis as redis_py
    import redis.asyncio as redis_asyncio

__all__ = ["KEY_PREFIX", "LANE_MEMORY_S", "LANE_PREFIX", "RedisStore", "RedisStoreError"]

KEY_PREFIX = "suitkaise:circuit:"
"""The prefix of every circuit's hash: ``suitkaise:circuit:{name}``."""

LANE_PREFIX = "suitkaise:op:"
"""The prefix of the keys that remember each lane's last operation (see the module doc)."""

LANE_MEMORY_S = 600.0
"""Seconds a lane's key outlives its last operation (at least ten times the timeout)."""

_MAX_RESENDS = 2  # re-sends of one operation after dropped connections, within its timeout
_MAX_REPAIRS = 2  # NOSCRIPT reloads, or re-creations of a deleted key, within one operation

LUA = r"""
-- KEYS[1]: the circuit's hash. KEYS[2]: the lane of the sending caller (it has one
-- operation in flight at a time). ARGV[1]: the operation; ARGV[2]: custom sleep or "";
-- ARGV[3]: '1' to always get the new state back; ARGV[4]: how long the lane remembers its
-- last operation (ms); ARGV[5]: this operation's number (it grows on every lane).
-- Mirrors suitkaise/circuits/_transitions.py: keep the two in step.
local key, lane, op, number = KEYS[1], KEYS[2], ARGV[1], ARGV[5]

-- A re-send of the lane's last operation (its reply was lost) gets the first reply back and
-- is not applied again. An older operation arriving late was given up by its caller: it is
-- not applied at all.
local seen = redis.call('GET', lane)
if seen then
  local cut = string.find(seen, ' ', 1, true)
  if cut then
    local last = string.sub(seen, 1, cut - 1)
    if last == number then return string.sub(seen, cut + 1) end
    if tonumber(last) > tonumber(number) then
      return redis.error_reply('SUITKAISE_STALE operation ' .. number .. ' arrived after '
                               .. last .. ' on ' .. lane)
    end
  end
end

local function answer(reply)
  redis.call('SET', lane, number .. ' ' .. reply, 'PX', ARGV[4])
  return reply
end

local function missing()
  return redis.error_reply('SUITKAISE_MISSING circuit ' .. key .. ' does not exist')
end

local function corrupt(field)
  return redis.error_reply('SUITKAISE_CORRUPT ' .. key .. ' field ' .. field)
end

-- The common case, a short that does not trip: touch only what it needs. Same result as
-- the general path below (shorts + 1, nothing else), about half the server time. Not when
-- ARGV[3] is '1' (fallback mode), which wants the new state back after every call.
if ARGV[3] ~= '1' and (op == 'circuit_short' or op == 'breaker_short') then
  local q = redis.call('HMGET', key, 'threshold', 'shorts', 'broken')
  if not q[1] then return missing() end
  local threshold, counted = tonumber(q[1]), tonumber(q[2])
  if not threshold then return corrupt('threshold') end
  if not counted then return corrupt('shorts') end
  counted = counted + 1
  if counted < threshold or (op == 'breaker_short' and q[3] == '1') then
    redis.call('HSET', key, 'shorts', string.format('%d', counted))
    return answer('')
  end
end

local f = redis.call('HMGET', key, 'threshold', 'sleep', 'factor', 'cap',
                     'shorts', 'trips', 'current', 'broken')
if not f[1] then return missing() end
local names = {'threshold', 'sleep', 'factor', 'cap', 'shorts', 'trips', 'current'}
local n = {}
for i = 1, 7 do
  n[i] = tonumber(f[i])
  if not n[i] then return corrupt(names[i]) end
end
local threshold, initial, factor, cap = n[1], n[2], n[3], n[4]
local shorts, trips, current = n[5], n[6], n[7]
local broken = f[8] == '1'
local custom = nil
if ARGV[2] ~= '' then custom = tonumber(ARGV[2]) end

local function advance(sleep)
  if factor == 1 then return sleep end
  return math.min(sleep * factor, cap)
end

local base = nil
if op == 'circuit_short' or op == 'circuit_trip' then
  if op == 'circuit_short' then shorts = shorts + 1 end
  if op == 'circuit_trip' or shorts >= threshold then
    base = custom or current
    shorts = 0
    trips = trips + 1
    current = advance(current)
  end
elseif op == 'breaker_short' then
  shorts = shorts + 1
  if not broken and shorts >= threshold then
    trips = trips + 1
    broken = true
    base = custom or current
  end
elseif op == 'breaker_trip' then
  if not broken then
    trips = trips + 1
    broken = true
    base = custom or current
  end
elseif op == 'breaker_reset' then
  if broken then current = advance(current) end
  shorts = 0
  broken = false
elseif op == 'reset_backoff' then
  current = initial
else
  return redis.error_reply('SUITKAISE_UNKNOWN operation ' .. op)
end

local state = {string.format('%d', shorts), string.format('%d', trips),
               string.format('%.17g', current), broken and '1' or '0'}
redis.call('HSET', key, 'shorts', state[1], 'trips', state[2], 'current', state[3],
           'broken', state[4])
-- One string (cheaper for the client to parse than an array): the decision ("-" for no
-- trip), then the new state, which fallback mode keeps as the last known state.
local decision = '-'
if base ~= nil then decision = string.format('%.17g', base) end
return answer(decision .. ' ' .. table.concat(state, ' '))
"""

LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest()

INIT_LUA = r"""
-- KEYS[1]: the circuit's hash. ARGV: kind, threshold, sleep, factor, cap, jitter.
-- Creates the circuit if it does not exist; returns the stored configuration.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'kind', ARGV[1], 'threshold', ARGV[2], 'sleep', ARGV[3],
             'factor', ARGV[4], 'cap', ARGV[5], 'jitter', ARGV[6],
             'shorts', '0', 'trips', '0', 'current', ARGV[3], 'broken', '0')
end
return redis.call('HMGET', key, 'kind', 'threshold', 'sleep', 'factor', 'cap', 'jitter')
"""

_FIELDS = ("shorts", "trips", "current", "broken")
_FIELD_NAMES = ("kind", "threshold", "sleep", "factor", "cap", "jitter")
_CONFIG_LABELS = (
    "kind",
    "num_shorts_to_trip",
    "sleep_time_after_trip",
    "backoff_factor",
    "max_sleep_time",
    "jitter",
)


class RedisStoreError(ConnectionError):
    """A call on a ``RedisStore`` failed; the message names the server (password hidden),
    the circuit and the true cause.

    ``outage`` tells the two kinds apart:

    - ``True``: the server did not answer (connection refused, reset or dropped, no reply
      within the store's ``timeout``, a server still loading or busy). Only these are covered
      by ``fallback=True``. After a timeout the operation may or may not have been applied
      (never twice).
    - ``False``: the server answered with a refusal that waiting will not fix (wrong
      password or user, missing ACL permission, out of memory, the key holds another type,
      a database index that does not exist, a server that does not speak Redis or does not
      run Lua scripts, TLS failure, a closed store). Raised in every mode.
    """

    def __init__(self, message: str, *, outage: bool) -> None:
        super().__init__(message)
        self.outage = outage

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (str(self), self.outage))


def _rebuild_error(message: str, outage: bool) -> RedisStoreError:
    return RedisStoreError(message, outage=outage)


def _number(value: float) -> str:
    return f"{value:.17g}"


def _config_args(kind: str, settings: Settings) -> list[str]:
    return [
        kind,
        str(settings.num_shorts_to_trip),
        _number(settings.sleep_time_after_trip),
        _number(settings.backoff_factor),
        _number(settings.max_sleep_time),
        _number(settings.jitter),
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(values: list[Any]) -> State:
    shorts, trips, current, broken = values
    return (int(shorts), int(trips), float(current), broken in (b"1", "1"))


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("RedisStore needs redis-py: pip install 'suitkaise[redis]'") from None
    return redis


# -- the wire: requests are packed once, in the Redis protocol (RESP) ----------------------


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(map(_bulk, parts))


_SCRIPT_LOAD = _command(b"SCRIPT", b"LOAD", LUA.encode())
_NO_CUSTOM = _bulk(b"")


# -- operation ids ---------------------------------------------------------------------------


class _OpIds:
    """Where this process's operation ids come from: a random prefix (renewed in a forked
    child), a counter, and the lanes not in use. Taking an id makes no system call."""

    __slots__ = ("lanes", "numbers", "prefix", "sequence")

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.sequence = itertools.count(1)
        self.numbers = itertools.count()
        # Packed lane keys; list.pop and list.append are atomic, so no lock is needed.
        self.lanes: list[bytes] = []

    def new_lane(self) -> bytes:
        return _bulk(LANE_PREFIX.encode() + self.prefix + b":%d" % next(self.numbers))


_ids = _OpIds()


# -- what to connect to, and how ------------------------------------------------------------

# Keys of a redis-py connection's settings that are plumbing of one process or one client
# (re-created by whoever makes connections), or that the store sets itself.
_PLUMBING = frozenset(
    {
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "socket_timeout",
        "socket_connect_timeout",
        "event_dispatcher",
        "himport_registry",
        "maint_notifications_config",
        "maint_notifications_pool_handler",
        "oss_cluster_maint_notifications_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
        "cache",
        "cache_config",
        "connection_class",
    }
)
_SECRET_SETTINGS = ("password", "ssl_password")


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a connection setting, equal for equal settings."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(_freeze(v)) for v in value)))
    try:
        hash(value)
    except TypeError:
        return (type(value).__module__, type(value).__qualname__, repr(value))
    return value


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _url_secrets(url: str) -> tuple[str, ...]:
    """The secret parts of a URL, even of one too broken to parse: the userinfo's password
    (and, for a password holding "/", "?" or "#", which a parser would cut there, each piece)
    and the password-like query values."""
    import re
    from urllib.parse import unquote

    found: list[str] = []
    scheme_end = url.find("//")
    if scheme_end >= 0:
        rest = url[scheme_end + 2 :]
        userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        elif userinfo:
            found.append(userinfo)  # unix://secret@/path: the whole userinfo may be a token
    for part in re.split(r"[?&]", url):
        name, _, value = part.partition("=")
        if name in _SECRET_SETTINGS and value:
            found.append(value)
    pieces = [piece for secret in found for piece in re.split(r"[/?#]", secret)]
    found = [*found, *pieces, *(unquote(secret) for secret in found)]
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


class _Target:
    """What to connect to and how: a redis-py connection class and its settings, without
    the store's own (timeouts, retries). Compares and hashes by value, pickles as is."""

    __slots__ = ("_key", "connection_class", "db", "secrets", "settings", "url")

    def __init__(self, connection_class: type, settings: dict[str, Any]) -> None:
        self.connection_class = connection_class
        self.settings = settings
        self.db = settings.get("db", 0) or 0
        self.secrets = tuple(
            sorted(
                {str(settings[s]) for s in _SECRET_SETTINGS if settings.get(s)},
                key=len,
                reverse=True,
            )
        )
        self.url = self._display()
        self._key = (
            connection_class,
            tuple(sorted((name, _freeze(value)) for name, value in settings.items())),
        )

    @classmethod
    def from_url(cls, url: str) -> _Target:
        from redis.connection import Connection, parse_url

        secrets = _url_secrets(url)
        try:
            parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as error:
            shown = _scrub(url, secrets)
            raise ValueError(
                f"url_or_client is not a usable Redis URL ({shown!r}): "
                f"{_scrub(str(error), secrets)}; expected redis://[[user]:password@]host"
                "[:port][/db], rediss://... (TLS) or unix://[[user]:password@]/path?db=N"
            ) from None
        connection_class = parsed.pop("connection_class", Connection)
        return cls._checked(connection_class, parsed)

    @classmethod
    def from_client(cls, client: Any) -> _Target:
        pool = getattr(client, "connection_pool", None)
        connection_class = getattr(pool, "connection_class", None)
        settings = getattr(pool, "connection_kwargs", None)
        if not isinstance(connection_class, type) or not isinstance(settings, dict):
            raise TypeError(
                "url_or_client must be a Redis URL (str) or a redis-py client "
                f"(redis.Redis or redis.asyncio.Redis), got {type(client).__name__}"
            )
        return cls._checked(_sync_class(connection_class), dict(settings))

    @classmethod
    def _checked(cls, connection_class: type, settings: dict[str, Any]) -> _Target:
        if "connection_pool" in settings:
            raise TypeError(
                "RedisStore cannot use a client whose connections are chosen by a pool of "
                f"its own ({connection_class.__name__}, e.g. Sentinel); pass a URL or a "
                "client of the primary server"
            )
        kept = {
            name: value
            for name, value in settings.items()
            # A bare object() is redis-py's "not given" marker: it means nothing elsewhere.
            if name not in _PLUMBING and type(value) is not object
        }
        return cls(connection_class, _fitted(connection_class, kept))

    def _display(self) -> str:
        from redis.connection import SSLConnection, UnixDomainSocketConnection

        settings = self.settings
        user = settings.get("username") or ""
        if settings.get("password"):
            user += ":***"
        userinfo = f"{user}@" if user else ""
        if issubclass(self.connection_class, UnixDomainSocketConnection):
            return f"unix://{userinfo}{settings.get('path', '')}?db={self.db}"
        scheme = "rediss" if issubclass(self.connection_class, SSLConnection) else "redis"
        host = str(settings.get("host", "localhost"))
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{userinfo}{host}:{settings.get('port', 6379)}/{self.db}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Target) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Target, (self.connection_class, self.settings))

    def __repr__(self) -> str:
        return f"_Target({self.url!r})"


def _sync_class(connection_class: type) -> type:
    """The redis-py (sync) connection class for a client's connection class."""
    import redis.asyncio.connection as aio
    import redis.connection as sync

    twins = {
        aio.SSLConnection: sync.SSLConnection,
        aio.UnixDomainSocketConnection: sync.UnixDomainSocketConnection,
        aio.Connection: sync.Connection,
    }
    if issubclass(connection_class, sync.AbstractConnection):
        return connection_class
    for base in connection_class.__mro__:
        if base in twins:
            return twins[base]
    raise TypeError(
        f"RedisStore cannot use connection class {connection_class.__qualname__}: it is "
        "not one of redis-py's (Connection, SSLConnection, UnixDomainSocketConnection)"
    )


def _async_class(connection_class: type) -> type:
    """The redis.asyncio twin of a redis-py connection class (of its redis-py base, for a
    subclass)."""
    import redis.asyncio.connection as aio
    import redis.connection as sync

    twins = {
        sync.SSLConnection: aio.SSLConnection,
        sync.UnixDomainSocketConnection: aio.UnixDomainSocketConnection,
        sync.Connection: aio.Connection,
    }
    for base in connection_class.__mro__:
        if base in twins:
            return twins[base]
    raise TypeError(
        f"RedisStore has no asyncio twin for connection class {connection_class.__qualname__}"
    )


def _fitted(connection_class: type, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without those ``connection_class`` does not take (an asyncio client's
    settings for a redis-py connection, or the other way round). A setting that is not
    empty and cannot be honoured is refused rather than dropped."""
    accepted = _accepted(connection_class)
    unsupported = sorted(
        name
        for name, value in settings.items()
        if name not in accepted and value not in (None, False, 0, "")
    )
    if unsupported:
        raise TypeError(
            f"RedisStore cannot honour the connection settings {', '.join(unsupported)} with "
            f"{connection_class.__module__}.{connection_class.__qualname__}, which has no "
            "such setting"
        )
    return {name: value for name, value in settings.items() if name in accepted}


def _accepted(connection_class: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for klass in connection_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                names.add(parameter.name)
    return names


# -- connections, shared per process per (target, timeout) ----------------------------------


def _dropped(error: BaseException) -> bool:
    """The connection broke under a request (reset, closed by the server, broken pipe): the
    request may or may not have run, so only an operation id makes a re-send safe."""
    import redis.exceptions as r

    return type(error) is r.ConnectionError or isinstance(error, OSError)


class _LoopPool:
    """The asyncio connections of one endpoint in one event loop."""

    __slots__ = ("closed", "idle", "watcher")

    def __init__(self) -> None:
        self.idle: list[Any] = []
        self.closed = False
        self.watcher: Any = None

    async def aclose(self) -> None:
        self.closed = True
        idle = self.idle
        while idle:
            connection = idle.pop()
            # A connection that fails to close cleanly is closed all the same.
            with contextlib.suppress(Exception):
                await connection.disconnect()


async def _until_loop_ends(
    endpoint: _Endpoint, loop: Any, pool: _LoopPool
) -> AsyncGenerator[None, None]:
    # An async generator the loop knows of (its first step ran in the loop), so that
    # loop.shutdown_asyncgens() - which asyncio.run(), asyncio.Runner and test runners
    # call before closing a loop - closes this loop's connections while the loop can
    # still run their closing handshakes.
    try:
        yield
    finally:
        if endpoint.loops.get(loop) is pool:
            del endpoint.loops[loop]
        await pool.aclose()


_closing_tasks: set[Any] = set()
_graveyard: list[Any] = []  # a forked child's inherited asyncio connections: never touched


class _Endpoint:
    """The connections to one target with one timeout, shared by every store of this
    process with those settings.

    Sync connections wait in ``idle`` (LIFO, connected, nothing unread); a connection is
    taken by one caller at a time, and a broken one is never put back. Each event loop has
    its own ``_LoopPool``, closed when the loop ends.
    """

    def __init__(self, target: _Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.key = (target, timeout)
        self.refs = 0
        self.closed = False
        self.idle: list[Any] = []
        self.loops: dict[Any, _LoopPool] = {}
        self._async: tuple[type, dict[str, Any]] | None = None

    # -- sync --

    def _options(self, timeout: float) -> dict[str, Any]:
        # No `retry`: redis-py then retries nothing itself; the store re-sends, with the
        # operation's id, only what is safe to re-send.
        return {**self.target.settings, "socket_timeout": timeout,
                "socket_connect_timeout": timeout}  # fmt: skip

    def connect(self, timeout: float | None = None) -> Any:
        """A new connection, connected (authenticated, database selected)."""
        connection = self.target.connection_class(**self._options(timeout or self.timeout))
        try:
            connection.connect()
        except BaseException:
            connection.disconnect()
            raise
        return connection

    def give_back(self, connection: Any) -> None:
        self.idle.append(connection)
        if self.closed:  # closed meanwhile: close() may have emptied the list before us
            self.drop_idle()

    def drop_idle(self) -> None:
        """Disconnect the idle connections (after a drop, they probably broke too)."""
        idle, self.idle = self.idle, []
        while idle:
            idle.pop().disconnect()

    # -- asyncio --

    def _async_options(self, timeout: float) -> tuple[type, dict[str, Any]]:
        if self._async is None:
            connection_class = _async_class(self.target.connection_class)
            self._async = (connection_class, _fitted(connection_class, self.target.settings))
        connection_class, settings = self._async
        return connection_class, {**settings, "socket_timeout": timeout,
                                  "socket_connect_timeout": timeout}  # fmt: skip

    async def connect_async(self, timeout: float | None = None) -> Any:
        connection_class, options = self._async_options(timeout or self.timeout)
        connection = connection_class(**options)
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        return connection

    async def loop_pool(self, loop: Any) -> _LoopPool:
        pool = self.loops.get(loop)
        if pool is not None:
            return pool
        for other in [other for other in self.loops if other.is_closed()]:
            # A loop closed without shutting down its async generators: its connections
            # can no longer close cleanly; dropping them lets the collector close them.
            self.loops.pop(other).closed = True
        pool = self.loops[loop] = _LoopPool()
        if self.closed:
            pool.closed = True
            return pool
        pool.watcher = _until_loop_ends(self, loop, pool)
        await pool.watcher.asend(None)
        return pool

    async def drop_idle_async(self, pool: _LoopPool) -> None:
        idle, pool.idle = pool.idle, []
        while idle:
            await idle.pop().disconnect(nowait=True)

    async def give_back_async(self, pool: _LoopPool, connection: Any) -> None:
        pool.idle.append(connection)
        if pool.closed or self.closed:
            await self.drop_idle_async(pool)

    # -- life cycle --

    def close(self) -> None:
        """Close every connection: sync ones now; an event loop's as soon as that loop
        runs (or, for a loop that is not running, when it ends)."""
        self.closed = True
        self.drop_idle()
        for loop, pool in list(self.loops.items()):
            if loop.is_closed():
                self.loops.pop(loop, None)
                pool.closed = True
            elif loop.is_running():
                loop.call_soon_threadsafe(_close_in_loop, loop, pool)
            else:
                pool.closed = True  # its watcher closes the idle ones when the loop ends

    def after_fork_in_child(self) -> None:
        # The parent's sockets are the parent's: a sync connection closes only this
        # process's copy (redis-py skips the shutdown in another pid); asyncio connections
        # are parked untouched, because closing them would unregister the socket from the
        # epoll instance that the child shares with the parent's event loop. Their file
        # descriptors are closed directly.
        self.drop_idle()
        for pool in self.loops.values():
            pool.closed = True
            for connection in pool.idle:
                _close_descriptor(connection)
            _graveyard.append(pool)
        self.loops = {}
        self._async = None


def _close_in_loop(loop: Any, pool: _LoopPool) -> None:
    task = loop.create_task(pool.aclose())
    _closing_tasks.add(task)
    task.add_done_callback(_closing_tasks.discard)


def _close_descriptor(connection: Any) -> None:
    writer = getattr(connection, "_writer", None)
    transport = getattr(writer, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            os.close(sock.fileno())


_registry_lock = threading.Lock()
_endpoints: dict[tuple[_Target, float], _Endpoint] = {}
_circuit_stores: weakref.WeakSet[RedisCircuitStore] = weakref.WeakSet()


def _acquire(target: _Target, timeout: float) -> _Endpoint:
    with _registry_lock:
        endpoint = _endpoints.get((target, timeout))
        if endpoint is None:
            endpoint = _endpoints[target, timeout] = _Endpoint(target, timeout)
        endpoint.refs += 1
        return endpoint


def _release(endpoint: _Endpoint) -> None:
    with _registry_lock:
        endpoint.refs -= 1
        if endpoint.refs > 0:
            return
        if _endpoints.get(endpoint.key) is endpoint:
            del _endpoints[endpoint.key]
    endpoint.close()


def _after_fork_in_child() -> None:
    global _ids, _registry_lock
    _ids = _OpIds()
    _registry_lock = threading.Lock()
    for endpoint in list(_endpoints.values()):
        endpoint.after_fork_in_child()
    for store in list(_circuit_stores):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the store factory -------------------------------------------------------------------


class RedisStore:
    """Where to keep circuits on Redis: pass it as ``store=`` to a circuit's constructor.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, or a redis-py
            client (``redis.Redis`` or ``redis.asyncio.Redis``). The store uses the client's
            connection settings - host, port, database, user name and password (or
            credential provider), TLS settings, protocol - with connections of its own
            (see ``close()``), its own ``timeout`` and no retries inside redis-py.
        name: the circuit's name. Two circuits built anywhere with the same server and name
            are one circuit; different names never interfere.
        timeout: seconds (or a ``timedelta``; > 0) a call waits for the server's reply
            (and, when it must open a connection first, for that) before it fails with
            ``RedisStoreError``. Default 2.0.
        fallback: if ``True``, a call that gets no answer from Redis (``outage``) is applied
            to a local copy of the last state this process saw, with a ``RuntimeWarning``
            (once per outage), and Redis is tried again by one call at most every
            ``retry_interval`` seconds; once it answers, the shared state is used again
            (local changes made during the outage are not merged into it). Refusals (a
            wrong password, out of memory, ...) are raised in every mode. Default
            ``False``: every failure raises ``RedisStoreError``.
        retry_interval: seconds (or a ``timedelta``; > 0) between attempts to reach Redis
            again in fallback mode. Default 1.0.

    Raises:
        TypeError, ValueError: an argument is malformed; the message names it (and never
            shows a password).

    Building a circuit on the store needs the server, whatever ``fallback`` says: that is
    where the configuration is checked (``ValueError`` if a circuit of this name exists with
    another kind or configuration; ``RedisStoreError`` if the server cannot be used).

    A write is never applied twice: a call that timed out may or may not have been applied;
    a call whose connection broke is re-sent with the same operation id, which the server
    recognises. ``repr()``, errors and warnings show the server's address with its password
    replaced by ``***``. A pickled store (or circuit) reconnects in another process with the
    same settings, credentials included. Thread-safe, and safe to use from many asyncio
    tasks; a forked child opens its own connections.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis | redis_asyncio.Redis,
        name: str,
        *,
        timeout: float | timedelta = 2.0,
        fallback: bool = False,
        retry_interval: float | timedelta = 1.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(fallback, bool):
            raise TypeError(f"fallback must be True or False, got {fallback!r}")
        self.timeout = seconds("timeout", timeout, positive=True)
        self.retry_interval = seconds("retry_interval", retry_interval, positive=True)
        self.fallback = fallback
        self.name = name
        self.key = KEY_PREFIX + name
        _import_redis()
        if isinstance(url_or_client, str):
            self._target = _Target.from_url(url_or_client)
        else:
            self._target = _Target.from_client(url_or_client)
        self.url = self._target.url
        """The server's address, for messages: its password (if any) shows as ``***``."""
        endpoint = _acquire(self._target, self.timeout)
        self._endpoint: _Endpoint | None = endpoint
        self._finalizer = weakref.finalize(self, _release, endpoint)
        self._finalizer.atexit = False  # at exit the OS closes the sockets anyway

    def open(self, kind: str, settings: Settings) -> RedisCircuitStore:
        """Create the circuit on the server if needed, check its configuration, and return
        the store of this circuit object."""
        return RedisCircuitStore(self, kind, settings)

    def close(self) -> None:
        """Let go of this store's connections.

        Stores of this process with the same server, settings and timeout share their
        connections; the last one to close (or to be garbage-collected) closes them: sync
        connections at once, an event loop's asyncio connections as soon as that loop runs
        again (they are also closed, store open or not, when their loop ends through
        ``asyncio.run()``, ``asyncio.Runner`` or ``loop.shutdown_asyncgens()``). Afterwards,
        calls on circuits of this store raise ``RedisStoreError``. Idempotent.
        """
        self._endpoint = None
        self._finalizer()

    @property
    def closed(self) -> bool:
        """``True`` after ``close()``."""
        return self._endpoint is None

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_store,
            (self._target, self.name, self.timeout, self.fallback, self.retry_interval),
        )

    def __repr__(self) -> str:
        closed = ", closed" if self._endpoint is None else ""
        return f"RedisStore({self.url!r}, name={self.name!r}{closed})"


def _rebuild_store(
    target: _Target, name: str, timeout: float, fallback: bool, retry_interval: float
) -> RedisStore:
    store = RedisStore.__new__(RedisStore)
    store.timeout, store.retry_interval, store.fallback = timeout, retry_interval, fallback
    store.name, store.key = name, KEY_PREFIX + name
    _import_redis()
    store._target = target
    store.url = target.url
    endpoint = _acquire(target, timeout)
    store._endpoint = endpoint
    store._finalizer = weakref.finalize(store, _release, endpoint)
    store._finalizer.atexit = False
    return store


# -- one circuit on Redis ---------------------------------------------------------------


class RedisCircuitStore:
    """The state of one circuit on Redis (a ``CircuitStore``).

    Every public method is safe from many threads and asyncio tasks at once: the Redis path
    shares nothing mutable but the connection and lane lists (atomic list operations), and
    the fallback bookkeeping changes under ``_lock``, which is never held during I/O.
    """

    def __init__(self, config: RedisStore, kind: str, settings: Settings) -> None:
        self.config = config
        self.kind = kind
        self.settings = settings
        self._errors = _import_redis().exceptions
        self._fallback = config.fallback
        self._lock = threading.Lock()
        self._local: LocalStore | None = None  # fallback mode, during an outage
        self._last_state: State = initial_state(settings)
        self._retry_at = 0.0
        _circuit_stores.add(self)

        key = config.key.encode()
        window = max(LANE_MEMORY_S, 10 * config.timeout)
        # The request of an operation is its constant parts, packed once, around the lane
        # and the number of the call.
        self._head = b"*10\r\n" + _bulk(b"EVALSHA") + _bulk(LUA_SHA.encode()) + _bulk(b"2")
        self._head += _bulk(key)
        window_ms = b"%d" % math.ceil(window * 1000)
        self._tail = _bulk(b"1" if config.fallback else b"") + _bulk(window_ms)
        self._ops: dict[Transition, bytes] = {}
        self._hmget = _command(b"HMGET", key, *(field.encode() for field in _FIELDS))
        self._init = _command(
            b"EVAL", INIT_LUA.encode(), b"1", key,
            *(arg.encode() for arg in _config_args(kind, settings)),
        )  # fmt: skip
        self._type = _command(b"TYPE", key)
        try:
            self._check_config(self._exchange(self._init))
        except (self._errors.RedisError, OSError) as error:
            raise self._failure(error) from None

    # -- requests ---------------------------------------------------------------------

    def _request(
        self, transition: Transition, custom_sleep: float | None, lane: bytes, ids: _OpIds
    ) -> bytes:
        op = self._ops.get(transition)
        if op is None:
            op = self._ops[transition] = _bulk(transition.__name__.encode())
        custom = _NO_CUSTOM if custom_sleep is None else _bulk(_number(custom_sleep).encode())
        number = b"%d" % next(ids.sequence)
        return b"".join((self._head, lane, op, custom, self._tail, _bulk(number)))

    def _endpoint(self) -> _Endpoint:
        endpoint = self.config._endpoint
        if endpoint is None:
            raise RedisStoreError(
                f"{self.config!r} is closed; circuit {self.config.name!r} cannot use it",
                outage=False,
            )
        return endpoint

    # -- one request, sync and asyncio (the only code that differs between the two) ---

    def _call(self, request: bytes) -> Any:
        """Send one request and return its reply. A connection that broke under it is
        replaced and the request re-sent, within the timeout (safe: see the module doc)."""
        endpoint = self._endpoint()
        try:
            connection = endpoint.idle.pop()
        except IndexError:
            connection = endpoint.connect()
        started = time.monotonic()
        resends = 0
        errors = self._errors
        while True:
            try:
                connection.send_packed_command([request])
                reply = connection.read_response()
            except errors.ResponseError:
                endpoint.give_back(connection)  # the whole reply was read: still usable
                raise
            except Exception as error:
                connection.disconnect()
                left = started + endpoint.timeout - time.monotonic()
                if not _dropped(error) or resends == _MAX_RESENDS or left <= 0:
                    raise
                resends += 1
                endpoint.drop_idle()
                connection = endpoint.connect(left)  # only what is left of the timeout
                continue
            except BaseException:
                connection.disconnect()  # interrupted: a reply may still be on its way
                raise
            if resends:
                connection.disconnect()  # its timeout was cut short: not for the pool
            else:
                endpoint.give_back(connection)
            return reply

    async def _call_async(self, request: bytes) -> Any:
        """``_call`` on the running event loop's connections."""
        import asyncio

        endpoint = self._endpoint()
        loop = asyncio.get_running_loop()
        pool = endpoint.loops.get(loop)
        if pool is None:
            pool = await endpoint.loop_pool(loop)
        try:
            connection = pool.idle.pop()
        except IndexError:
            connection = await endpoint.connect_async()
        started = time.monotonic()
        resends = 0
        errors = self._errors
        while True:
            try:
                await connection.send_packed_command([request])
                reply = await connection.read_response()
            except errors.ResponseError:
                await endpoint.give_back_async(pool, connection)
                raise
            except Exception as error:
                await connection.disconnect(nowait=True)
                left = started + endpoint.timeout - time.monotonic()
                if not _dropped(error) or resends == _MAX_RESENDS or left <= 0:
                    raise
                resends += 1
                await endpoint.drop_idle_async(pool)
                connection = await endpoint.connect_async(left)
                continue
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            if resends:
                await connection.disconnect()
            else:
                await endpoint.give_back_async(pool, connection)
            return reply

    # -- what to do when the server answers with an error ---------------------------------
    # A generator of requests (the driver sends each and sends back its reply, or throws its
    # error in), shared by the sync and asyncio paths.

    def _repair(self, request: bytes, error: Exception) -> Generator[bytes, Any, Any]:
        """The steps after ``request`` failed with ``error``; returns the final reply."""
        errors = self._errors
        reloads = recreations = 0
        while True:
            message = str(error)
            if isinstance(error, errors.NoScriptError):
                if reloads == _MAX_REPAIRS:
                    raise self._refused(
                        "the server keeps forgetting the store's Lua script right after "
                        "loading it (SCRIPT FLUSH in a loop, or a proxy that spreads calls "
                        "over several servers)"
                    )
                reloads += 1
                yield _SCRIPT_LOAD  # a new or flushed server: load once, then again
            elif isinstance(error, errors.ResponseError) and "SUITKAISE_MISSING" in message:
                # The key is gone (a server restarted without persistence, or someone
                # deleted it): create the circuit afresh, as a first creator would.
                if recreations == _MAX_REPAIRS:
                    raise self._refused(
                        f"key {self.config.key!r} is deleted again as soon as it is created"
                    )
                recreations += 1
                self._check_config((yield self._init))
            elif isinstance(error, errors.ResponseError) and message.startswith("WRONGTYPE"):
                found = _text((yield self._type))
                if found == "hash":  # then it is a lane key (ours): someone wrote over it
                    raise self._refused(f"a key of the store holds another type ({message})")
                raise self._refused(
                    f"key {self.config.key!r} holds a {found}, not a circuit (a hash); "
                    "delete it or give the circuit another name"
                )
            else:
                raise error
            try:
                return (yield request)
            except errors.ResponseError as again:
                error = again

    def _drive(self, steps: Generator[bytes, Any, Any]) -> Any:
        request = next(steps)
        while True:
            try:
                reply = self._call(request)
            except Exception as error:
                advance: Callable[[Any], bytes] = steps.throw
                value: Any = error
            else:
                advance, value = steps.send, reply
            try:
                request = advance(value)
            except StopIteration as done:
                return done.value

    async def _drive_async(self, steps: Generator[bytes, Any, Any]) -> Any:
        request = next(steps)
        while True:
            try:
                reply = await self._call_async(request)
            except Exception as error:
                advance: Callable[[Any], bytes] = steps.throw
                value: Any = error
            else:
                advance, value = steps.send, reply
            try:
                request = advance(value)
            except StopIteration as done:
                return done.value

    def _exchange(self, request: bytes) -> Any:
        try:
            return self._call(request)
        except self._errors.ResponseError as error:
            return self._drive(self._repair(request, error))

    async def _exchange_async(self, request: bytes) -> Any:
        try:
            return await self._call_async(request)
        except self._errors.ResponseError as error:
            return await self._drive_async(self._repair(request, error))

    def _check_config(self, stored: list[Any]) -> None:
        mine = _config_args(self.kind, self.settings)
        theirs = [None if v is None else _text(v) for v in stored]
        absent = [f for f, v in zip(_FIELD_NAMES, theirs, strict=True) if v is None]
        if absent:
            raise self._refused(
                f"key {self.config.key!r} holds a hash that is not a suitkaise circuit "
                f"(fields {', '.join(absent)} missing); delete it or give the circuit "
                "another name"
            )
        if theirs != mine:
            diff = ", ".join(
                f"{label}: stored {a}, yours {b}"
                for label, a, b in zip(_CONFIG_LABELS, theirs, mine, strict=True)
                if a != b
            )
            raise ValueError(
                f"a circuit named {self.config.name!r} already exists on {self.config.url} "
                f"with a different configuration ({diff}); use another name, or the same "
                "configuration"
            )

    # -- errors: what happened, in words ----------------------------------------------

    def _refused(self, cause: str) -> RedisStoreError:
        return RedisStoreError(
            f"Redis at {self.config.url} refused circuit {self.config.name!r}: {cause}",
            outage=False,
        )

    def _failure(self, error: BaseException) -> RedisStoreError:
        """``error`` (from redis-py or the socket) as a ``RedisStoreError`` naming its cause."""
        if isinstance(error, RedisStoreError):
            return error
        import ssl

        r = self._errors
        url, name, timeout = self.config.url, self.config.name, self.config.timeout
        said = _scrub(str(error), self.config._target.secrets)
        code = said.split(" ", 1)[0]

        def outage(cause: str) -> RedisStoreError:
            return RedisStoreError(
                f"Redis at {url} did not answer circuit {name!r}: {cause}", outage=True
            )

        if isinstance(error, (r.TimeoutError, TimeoutError)):
            return outage(
                f"no reply within the timeout of {timeout:g} s ({said}); an operation in "
                "flight may or may not have been applied (never twice)"
            )
        if isinstance(error, (r.AuthenticationError, r.AuthorizationError)):
            return self._refused(
                f"authentication failed: wrong password or user name, or the server wants "
                f"credentials this store did not give (the server said: {said})"
            )
        if isinstance(error, r.BusyLoadingError):
            return outage(f"the server is still loading its data set ({said})")
        chain: BaseException | None = error
        while chain is not None:
            if isinstance(chain, ssl.SSLError):
                return self._refused(f"the TLS connection failed ({said})")
            chain = chain.__cause__ or chain.__context__
        if "invalid database" in said.lower() or "db index is out of range" in said.lower():
            return self._refused(
                f"database {self.config._target.db} does not exist on this server ({said})"
            )
        if isinstance(error, (r.ConnectionError, OSError)):
            if "max number of clients" in said:
                return outage(f"the server has no room for another client ({said})")
            return outage(f"the connection failed or broke ({said})")
        if isinstance(error, r.InvalidResponse):
            return self._refused(f"the server does not speak the Redis protocol ({said})")
        if isinstance(error, r.NoPermissionError):
            return self._refused(
                f"the user may not run the store's commands on its keys (ACL: {said}); "
                f"it needs EVALSHA, EVAL, SCRIPT LOAD, HMGET and TYPE on "
                f"{KEY_PREFIX}* and {LANE_PREFIX}*"
            )
        if isinstance(error, r.OutOfMemoryError):
            return self._refused(
                f"the server is out of memory (maxmemory reached) and refuses writes ({said})"
            )
        if isinstance(error, r.ReadOnlyError):
            return self._refused(
                f"the server is a read-only replica; give the store the primary ({said})"
            )
        if code in ("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"):
            return outage(f"the server cannot serve now ({said})")
        if "unknown command" in said.lower():
            return self._refused(f"the server does not run Lua scripts ({said})")
        if "SUITKAISE_CORRUPT" in said:
            return self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                f"circuit ({said}); delete it or give the circuit another name"
            )
        return self._refused(f"{type(error).__name__}: {said}")

    # -- fallback bookkeeping ---------------------------------------------------------

    def _during_outage(self) -> LocalStore | None:
        """In an outage (fallback mode): the local copy to use, or ``None`` when this call
        should knock on Redis (at most one call per ``retry_interval``)."""
        local = self._local
        if local is None:
            return None
        now = time.monotonic()
        if now < self._retry_at:
            return local
        with self._lock:
            if self._local is None or now < self._retry_at:
                return self._local
            self._retry_at = now + self.config.retry_interval
        return None

    def _fall_back(self, failure: RedisStoreError) -> LocalStore:
        """Redis did not answer: the local copy (made, and warned about, once per outage)."""
        with self._lock:
            local = self._local
            began = local is None
            if local is None:
                local = self._local = LocalStore(self._last_state)
            self._retry_at = time.monotonic() + self.config.retry_interval
        if began:
            warnings.warn(
                f"Redis at {self.config.url} is unreachable; circuit {self.config.name!r} "
                f"continues on a local copy of its last known state (fallback mode): {failure}",
                RuntimeWarning,
                stacklevel=4,
            )
        return local

    def _answered(self) -> None:
        with self._lock:
            self._local = None  # Redis is back: the shared state is the truth again

    # -- the store interface -----------------------------------------------------------

    def apply(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        if self._local is not None:
            local = self._during_outage()
            if local is not None:
                return local.apply(transition, settings, custom_sleep)
        ids = _ids
        lanes = ids.lanes
        try:
            lane = lanes.pop()
        except IndexError:
            lane = ids.new_lane()
        try:
            request = self._request(transition, custom_sleep, lane, ids)
            try:
                reply = self._call(request)
            except self._errors.ResponseError as error:
                reply = self._drive(self._repair(request, error))
        except (self._errors.RedisError, OSError, RedisStoreError) as error:
            failure = self._failure(error)
            if not (failure.outage and self._fallback):
                raise failure from None
            return self._fall_back(failure).apply(transition, settings, custom_sleep)
        finally:
            lanes.append(lane)
        if self._local is not None:
            self._answered()
        return self._decision(reply)

    async def _apply_async(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        import sniffio

        if sniffio.current_async_library() == "trio":
            # redis-py's asyncio client needs an asyncio loop: under trio, the same blocking
            # round trip runs in a worker thread, so the trio loop is not blocked either.
            import trio

            return await trio.to_thread.run_sync(self.apply, transition, settings, custom_sleep)
        if self._local is not None:
            local = self._during_outage()
            if local is not None:
                return local.apply(transition, settings, custom_sleep)
        ids = _ids
        lanes = ids.lanes
        try:
            lane = lanes.pop()
        except IndexError:
            lane = ids.new_lane()
        try:
            request = self._request(transition, custom_sleep, lane, ids)
            try:
                reply = await self._call_async(request)
            except self._errors.ResponseError as error:
                reply = await self._drive_async(self._repair(request, error))
        except (self._errors.RedisError, OSError, RedisStoreError) as error:
            failure = self._failure(error)
            if not (failure.outage and self._fallback):
                raise failure from None
            return self._fall_back(failure).apply(transition, settings, custom_sleep)
        finally:
            lanes.append(lane)
        if self._local is not None:
            self._answered()
        return self._decision(reply)

    def _decision(self, reply: bytes | str) -> float | None:
        if not reply:
            return None  # the fast path: a short that did not trip (state not sent)
        text = reply.decode() if isinstance(reply, bytes) else reply
        base, *state = text.split(" ")
        self._last_state = _state(state)
        return None if base == "-" else float(base)

    @property
    def apply_async(self) -> Any:
        return self._apply_async

    def read(self) -> State:
        if self._local is not None:
            local = self._during_outage()
            if local is not None:
                return local.read()
        try:
            try:
                values = self._call(self._hmget)
            except self._errors.ResponseError as error:
                values = self._drive(self._repair(self._hmget, error))
            if values[0] is None:  # the key is gone: see _repair
                values = self._drive(self._recreated(self._hmget))
            state = self._parsed(values)
        except (self._errors.RedisError, OSError, RedisStoreError) as error:
            failure = self._failure(error)
            if not (failure.outage and self._fallback):
                raise failure from None
            return self._fall_back(failure).read()
        self._last_state = state
        if self._local is not None:
            self._answered()
        return state

    def _recreated(self, request: bytes) -> Generator[bytes, Any, Any]:
        self._check_config((yield self._init))
        values = yield request
        if values[0] is None:
            raise self._refused(
                f"key {self.config.key!r} is deleted again as soon as it is created"
            )
        return values

    def _parsed(self, values: list[Any]) -> State:
        try:
            return _state(values)
        except (TypeError, ValueError):
            raise self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                f"circuit ({dict(zip(_FIELDS, map(repr, values), strict=True))}); delete it "
                "or give the circuit another name"
            ) from None

    def portable(self) -> RedisCircuitStore:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisCircuitStore, (self.config, self.kind, self.settings))

    def __repr__(self) -> str:
        return f"RedisCircuitStore({self.config.url!r}, name={self.config.name!r})"
