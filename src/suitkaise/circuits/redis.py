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
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from ._settings import Settings
from ._stores import LocalStore
from ._transitions import State, Transition, initial_state

if TYPE_CHECKING:
    import redis as redis_py

__all__ = ["KEY_PREFIX", "RedisStore", "RedisStoreError"]

KEY_PREFIX = "suitkaise:circuit:"

LUA = r"""
-- KEYS[1]: the circuit's hash. ARGV[1]: the operation; ARGV[2]: custom sleep or "";
-- ARGV[3]: '1' to always get the new state back.
-- Mirrors suitkaise/circuits/_transitions.py: keep the two in step.
local key = KEYS[1]
local op = ARGV[1]

-- The common case, a short that does not trip: touch only what it needs. Same result as
-- the general path below (shorts + 1, nothing else), about half the server time. Not when
-- ARGV[3] is '1' (fallback mode), which wants the new state back after every call.
if ARGV[3] ~= '1' and (op == 'circuit_short' or op == 'breaker_short') then
  local q = redis.call('HMGET', key, 'threshold', 'shorts', 'broken')
  if not q[1] then
    return redis.error_reply('SUITKAISE_MISSING circuit ' .. key .. ' does not exist')
  end
  local counted = tonumber(q[2]) + 1
  if counted < tonumber(q[1]) or (op == 'breaker_short' and q[3] == '1') then
    redis.call('HSET', key, 'shorts', string.format('%d', counted))
    return ''
  end
end

local f = redis.call('HMGET', key, 'threshold', 'sleep', 'factor', 'cap',
                     'shorts', 'trips', 'current', 'broken')
if not f[1] then
  return redis.error_reply('SUITKAISE_MISSING circuit ' .. key .. ' does not exist')
end
local threshold, initial, factor, cap = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]),
                                        tonumber(f[4])
local shorts, trips, current = tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
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
return decision .. ' ' .. table.concat(state, ' ')
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


class RedisStoreError(ConnectionError):
    """The Redis server could not be reached (or answered with an error) in time."""


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


def _state(values: list[Any]) -> State:
    shorts, trips, current, broken = values
    return (int(shorts), int(trips), float(current), broken in (b"1", "1"))


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError(
            "RedisStore needs redis-py: pip install 'suitkaise[redis]'"
        ) from None
    return redis


class RedisStore:
    """Where to keep circuits on Redis: pass it as ``store=`` to a circuit's constructor.

    Args:
        url_or_client: a ``redis://`` URL, or a redis-py ``Redis`` client (sync; the async
            path builds a ``redis.asyncio`` client with the same connection settings).
        name: the circuit's name. Two circuits built anywhere with the same server and name
            are one circuit; different names never interfere.
        timeout: seconds a call may wait for the server (connect and reply) before it fails
            with ``RedisStoreError``. Default 2.0.
        fallback: if ``True``, a call that cannot reach Redis is applied to a local copy of
            the last state this process saw, with a ``RuntimeWarning`` (once per outage), and
            Redis is tried again at most every ``retry_interval`` seconds; once it answers,
            the shared state is used again (local changes made during the outage are not
            merged into it). Default ``False``: such calls raise ``RedisStoreError``.
        retry_interval: seconds between attempts to reach Redis again in fallback mode.

    Raises (at circuit construction, which always needs the server: that is where the
    configuration is checked, whatever ``fallback`` says):
        ValueError: a circuit with this name already exists on the server with a different
            kind or configuration.
        RedisStoreError: the server cannot be reached.

    A call that fails with a timeout may still have been applied by the server (the reply
    was late, not the request); it is never sent twice.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        name: str,
        *,
        timeout: float = 2.0,
        fallback: bool = False,
        retry_interval: float = 1.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.name = name
        self.key = KEY_PREFIX + name
        self.timeout = float(timeout)
        self.fallback = bool(fallback)
        self.retry_interval = float(retry_interval)
        redis = _import_redis()
        if isinstance(url_or_client, str):
            self.url = url_or_client
            self.client: redis_py.Redis = redis.Redis.from_url(url_or_client, **self._options())
        else:
            self.client = url_or_client
            kwargs = url_or_client.connection_pool.connection_kwargs
            host, port, db = kwargs.get("host"), kwargs.get("port"), kwargs.get("db", 0)
            path = kwargs.get("path")
            password = kwargs.get("password")
            auth = f":{password}@" if password else ""
            # The URL rebuilds an equivalent connection (asyncio client, other processes).
            self.url = (
                f"unix://{auth}{path}?db={db}" if path else f"redis://{auth}{host}:{port}/{db}"
            )

    def _options(self, for_asyncio: bool = False) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        # One quick retry, on a dropped connection only: redis-py then transparently
        # replaces a connection the server closed while idle. Never on a timeout: the
        # script may have run, and running it twice would count one short twice.
        if for_asyncio:
            from redis.asyncio.retry import Retry as AsyncRetry

            retry: Any = AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        else:
            from redis.retry import Retry

            retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": retry,
        }

    def open(self, kind: str, settings: Settings) -> RedisCircuitStore:
        """Create the circuit on the server if needed, check its configuration, and return
        the store of this circuit object."""
        return RedisCircuitStore(self, kind, settings)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_store,
            (self.url, self.name, self.timeout, self.fallback, self.retry_interval),
        )

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, name={self.name!r})"


def _rebuild_store(
    url: str, name: str, timeout: float, fallback: bool, retry_interval: float
) -> RedisStore:
    return RedisStore(url, name, timeout=timeout, fallback=fallback, retry_interval=retry_interval)


class RedisCircuitStore:
    """The state of one circuit on Redis (a ``CircuitStore``)."""

    def __init__(self, config: RedisStore, kind: str, settings: Settings) -> None:
        self.config = config
        self.kind = kind
        self.settings = settings
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._redis = _import_redis()
        # Fallback mode keeps the last known state, so it asks for it after every call.
        self._full = "1" if config.fallback else ""
        self._lock = threading.Lock()
        self._local: LocalStore | None = None  # fallback mode: the state during an outage
        self._last_state: State = initial_state(settings)
        self._retry_at = 0.0
        self._call(self._create)

    # -- Redis calls, with the failure policy in one place ---------------------------------

    def _create(self) -> None:
        redis = self._redis
        try:
            stored = self.config.client.eval(
                INIT_LUA, 1, self.config.key, *_config_args(self.kind, self.settings)
            )
        except redis.ResponseError as error:
            raise RedisStoreError(f"Redis at {self.config.url} refused: {error}") from None
        mine = _config_args(self.kind, self.settings)
        theirs = [v.decode() if isinstance(v, bytes) else v for v in stored]
        if theirs != mine:
            labels = ("kind", "num_shorts_to_trip", "sleep_time_after_trip", "backoff_factor",
                      "max_sleep_time", "jitter")
            diff = ", ".join(
                f"{label}: stored {a}, yours {b}"
                for label, a, b in zip(labels, theirs, mine, strict=True)
                if a != b
            )
            raise ValueError(
                f"a circuit named {self.config.name!r} already exists on {self.config.url} "
                f"with a different configuration ({diff}); use another name, or the same "
                "configuration"
            )

    def _unreachable(self) -> tuple[type[BaseException], ...]:
        """The errors that mean "Redis did not answer" (as opposed to "Redis said no")."""
        return (self._redis.ConnectionError, self._redis.TimeoutError, OSError)

    def _outage(self, error: BaseException) -> RedisStoreError:
        return RedisStoreError(
            f"Redis at {self.config.url} did not answer within {self.config.timeout:g} s "
            f"({type(error).__name__}: {error})"
        )

    def _call(self, work: Any) -> Any:
        try:
            return work()
        except self._unreachable() as error:
            raise self._outage(error) from None

    def _local_copy(self) -> LocalStore:
        if self._local is None:
            self._local = LocalStore(self._last_state)
            warnings.warn(
                f"Redis at {self.config.url} is unreachable; circuit {self.config.name!r} "
                "continues on a local copy of its last known state (fallback mode)",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._local

    def _through(self, remote: Any, local: Any) -> Any:
        """Run ``remote`` on Redis; in fallback mode, ``local`` on the local copy instead
        when Redis is unreachable (and do not knock again before ``retry_interval``)."""
        if not self.config.fallback:
            return self._call(remote)
        if self._waiting_to_retry():
            return local(self._local)
        try:
            result = self._call(remote)
        except RedisStoreError:
            return local(self._fall_back())
        self._local = None  # Redis is back: the shared state is the truth again
        return result

    def _waiting_to_retry(self) -> bool:
        """Fallback mode, in an outage, and too early to knock on Redis again."""
        return (
            self.config.fallback
            and self._local is not None
            and time.monotonic() < self._retry_at
        )

    def _fall_back(self) -> LocalStore:
        """Redis just failed to answer: use the local copy until ``retry_interval`` ends."""
        self._retry_at = time.monotonic() + self.config.retry_interval
        return self._local_copy()

    # -- the store interface ---------------------------------------------------------

    def apply(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        custom = "" if custom_sleep is None else _number(custom_sleep)
        redis = self._redis

        def remote() -> float | None:
            client, key, op = self.config.client, self.config.key, transition.__name__
            full = self._full
            try:
                try:
                    reply = client.evalsha(LUA_SHA, 1, key, op, custom, full)
                except redis.exceptions.NoScriptError:
                    client.script_load(LUA)  # a new or flushed server: load once, retry
                    reply = client.evalsha(LUA_SHA, 1, key, op, custom, full)
            except redis.ResponseError as error:
                if "SUITKAISE_MISSING" not in str(error):
                    raise
                # The key is gone (a server restarted without persistence, or someone
                # deleted it): create the circuit afresh, as a first creator would.
                self._create()
                reply = client.evalsha(LUA_SHA, 1, key, op, custom, full)
            return self._decision(reply)

        return self._through(  # type: ignore[no-any-return]
            remote, lambda store: store.apply(transition, settings, custom_sleep)
        )

    async def _apply_async(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        import sniffio

        if sniffio.current_async_library() == "trio":
            # redis-py's asyncio client needs an asyncio loop: under trio, the same blocking
            # round trip runs in a worker thread, so the trio loop is not blocked either.
            import trio

            return await trio.to_thread.run_sync(self.apply, transition, settings, custom_sleep)
        copy = self._local
        if copy is not None and self._waiting_to_retry():
            return copy.apply(transition, settings, custom_sleep)
        client = self._client_for_this_loop()
        custom = "" if custom_sleep is None else _number(custom_sleep)
        redis_module = self._redis
        args = (1, self.config.key, transition.__name__, custom, self._full)
        try:
            try:
                try:
                    reply = await client.evalsha(LUA_SHA, *args)
                except redis_module.exceptions.NoScriptError:
                    await client.script_load(LUA)
                    reply = await client.evalsha(LUA_SHA, *args)
            except redis_module.ResponseError as error:
                if "SUITKAISE_MISSING" not in str(error):
                    raise
                self._create()  # the key is gone: see apply(); rare, so done synchronously
                reply = await client.evalsha(LUA_SHA, *args)
        except self._unreachable() as error:
            if self.config.fallback:
                return self._fall_back().apply(transition, settings, custom_sleep)
            raise self._outage(error) from None
        self._local = None
        return self._decision(reply)

    def _client_for_this_loop(self) -> Any:
        # An asyncio client belongs to the event loop it first ran in: one per loop, so that
        # successive asyncio.run() calls (or several loops in threads) each get their own.
        import asyncio

        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = redis.asyncio.Redis.from_url(
                self.config.url, **self.config._options(for_asyncio=True)
            )
        return client

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
        def remote() -> State:
            values = self.config.client.hmget(self.config.key, _FIELDS)
            if values[0] is None:  # the key is gone: see apply()
                self._create()
                values = self.config.client.hmget(self.config.key, _FIELDS)
            state = _state(values)
            self._last_state = state
            return state

        return self._through(remote, lambda store: store.read())  # type: ignore[no-any-return]

    def portable(self) -> RedisCircuitStore:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisCircuitStore, (self.config, self.kind, self.settings))

    def __repr__(self) -> str:
        return f"RedisCircuitStore({self.config.url!r}, name={self.config.name!r})"
