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
(``kind``, ``threshold``, ``sleep``, ``factor``, ``cap``, ``jitter``, and ``config``, all
of them joined: the fingerprint every operation checks), the state (``shorts``, ``trips``,
``current``, ``broken``), and the memory of the operation ids (below). Numbers are stored
as decimal strings that round-trip exactly (``%.17g``).

A write is never applied twice. Each operation carries an id: the *lane* it travels on (one
operation in flight at a time per lane; a process has as many lanes as it ever had
operations in flight at once) and a number that grows with every operation of the process.
The circuit's own hash keeps, per lane that used it, one field ``op:{process}:{lane}``
holding the last operation's number, the server time it ran and its reply. A re-send of that
operation (its reply was lost) gets the first reply back instead of being applied again; an
older operation that arrives late (its caller gave up on it) is not applied at all. The
record lives in the circuit's key, so nothing evicts or expires it apart from the circuit
itself; once per ``LANE_MEMORY_S`` seconds (or ten times the store's timeout, if longer) a
call forgets the lanes that have been quiet that long (server ``TIME``).

The store speaks the Redis protocol (RESP2) itself on sockets that redis-py's connection
classes open with the settings of the URL or client it was given (TLS and Unix sockets
included): the handshake (``AUTH``, ``CLIENT SETNAME``, ``SELECT``) is one pipelined round
trip, every error is classified by what failed (the command, the server's error code)
rather than by its text, and the store's ``timeout`` is a deadline for a whole call:
connecting, the handshake, the request, repairs and re-sends. Connections are shared by
every store of the process with the same settings, never used across a fork, and asyncio
connections belong to their event loop and are closed when it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import socket
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
    import asyncio
    from collections.abc import AsyncGenerator
    from datetime import timedelta
    from types import TracebackType

    import redis as redis_py
    import redis.asyncio as redis_asyncio

__all__ = ["KEY_PREFIX", "LANE_MEMORY_S", "LANE_PREFIX", "RedisStore", "RedisStoreError"]

KEY_PREFIX = "suitkaise:circuit:"
"""The prefix of every circuit's hash: ``suitkaise:circuit:{name}``."""

LANE_PREFIX = "op:"
"""The prefix of the fields of a circuit's hash that remember each lane's last operation."""

LANE_MEMORY_S = 600.0
"""Seconds a lane's record outlives its last operation (at least ten times the timeout)."""

_MAX_RESENDS = 2  # re-sends of one operation after dropped connections, within its timeout
_MAX_REPAIRS = 2  # NOSCRIPT reloads, or re-creations of a deleted key, within one operation

ACL_NEEDS = (
    "EVALSHA, EVAL, SCRIPT LOAD, HMGET and TYPE, and for the scripts EXISTS, HMGET, HSET, "
    "HGETALL, HDEL and TIME, on keys " + KEY_PREFIX + "*; and SELECT for a database other "
    "than 0, CLIENT SETNAME for a client_name"
)
"""What an ACL user of the store must be allowed (docs/redis.md has the ``ACL SETUSER`` rule)."""

LUA = r"""
-- KEYS[1]: the circuit's hash. ARGV[1]: the operation; ARGV[2]: custom sleep or "";
-- ARGV[3]: '1' to always get the new state back; ARGV[4]: seconds a lane's record is kept;
-- ARGV[5]: the caller's configuration fingerprint; ARGV[6]: the caller's lane (a field of
-- the hash: one operation in flight at a time); ARGV[7]: this operation's number (it grows
-- on every lane). Mirrors suitkaise/circuits/_transitions.py: keep the two in step.
-- Commands run through pcall, and their errors are returned as they are, so the caller
-- sees the server's own error code (OOM, NOPERM, WRONGTYPE, ...) on every Redis version.
if redis.replicate_commands then redis.replicate_commands() end
local key, op, lane, number = KEYS[1], ARGV[1], ARGV[6], ARGV[7]

local q = redis.pcall('HMGET', key, 'config', lane, 'swept', 'threshold', 'shorts', 'broken')
if q.err then return q end
if not q[1] then return redis.error_reply('SUITKAISE_MISSING the circuit does not exist') end
-- The key may have been deleted and made again by a circuit of another kind or settings.
if q[1] ~= ARGV[5] then return redis.error_reply('SUITKAISE_CONFIG ' .. q[1]) end

-- A re-send of the lane's last operation (its reply was lost) gets the first reply back and
-- is not applied again. An older operation arriving late was given up by its caller: it is
-- not applied at all. A record that does not parse is overwritten.
local seen = q[2]
if seen then
  local a = string.find(seen, ' ', 1, true)
  local b = a and string.find(seen, ' ', a + 1, true)
  local last = b and tonumber(string.sub(seen, 1, a - 1))
  if last then
    if string.sub(seen, 1, a - 1) == number then return string.sub(seen, b + 1) end
    if last > tonumber(number) then
      return redis.error_reply('SUITKAISE_STALE operation ' .. number .. ' arrived after '
                               .. string.sub(seen, 1, a - 1) .. ' on ' .. lane)
    end
  end
end

local clock = redis.pcall('TIME')
if clock.err then return clock end
local now = tonumber(clock[1])
local window = tonumber(ARGV[4])
local fields = {}

-- Once per window, forget the lanes that have been quiet for a whole window (processes that
-- exited, threads that stopped). Deleting them first is harmless if the write below fails.
local swept = tonumber(q[3])
if not swept or now - swept >= window then
  local all = redis.pcall('HGETALL', key)
  if all.err then return all end
  local stale = {}
  for i = 1, #all, 2 do
    local field = all[i]
    if string.sub(field, 1, 3) == 'op:' and field ~= lane then
      local v = all[i + 1]
      local a = string.find(v, ' ', 1, true)
      local b = a and string.find(v, ' ', a + 1, true)
      local stamp = b and tonumber(string.sub(v, a + 1, b - 1))
      if not stamp or now - stamp >= window then stale[#stale + 1] = field end
    end
  end
  for i = 1, #stale, 100 do
    local gone = redis.pcall('HDEL', key, unpack(stale, i, math.min(i + 99, #stale)))
    if type(gone) == 'table' and gone.err then return gone end
  end
  fields = {'swept', string.format('%d', now)}
end

local function answer(reply)
  fields[#fields + 1] = lane
  fields[#fields + 1] = number .. ' ' .. string.format('%d', now) .. ' ' .. reply
  local written = redis.pcall('HSET', key, unpack(fields))
  if type(written) == 'table' and written.err then return written end
  return reply
end

local function corrupt(field)
  return redis.error_reply('SUITKAISE_CORRUPT ' .. field)
end

-- The common case, a short that does not trip: touch only what it needs. Same result as
-- the general path below (shorts + 1, nothing else). Not when ARGV[3] is '1' (fallback
-- mode), which wants the new state back after every call.
if ARGV[3] ~= '1' and (op == 'circuit_short' or op == 'breaker_short') then
  local threshold, counted = tonumber(q[4]), tonumber(q[5])
  if not threshold then return corrupt('threshold') end
  if not counted then return corrupt('shorts') end
  counted = counted + 1
  if counted < threshold or (op == 'breaker_short' and q[6] == '1') then
    fields[#fields + 1] = 'shorts'
    fields[#fields + 1] = string.format('%d', counted)
    return answer('')
  end
end

local f = redis.pcall('HMGET', key, 'threshold', 'sleep', 'factor', 'cap',
                      'shorts', 'trips', 'current', 'broken')
if f.err then return f end
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
local names_out = {'shorts', 'trips', 'current', 'broken'}
for i = 1, 4 do
  fields[#fields + 1] = names_out[i]
  fields[#fields + 1] = state[i]
end
-- One string (cheaper for the client to parse than an array): the decision ("-" for no
-- trip), then the new state, which fallback mode keeps as the last known state.
local decision = '-'
if base ~= nil then decision = string.format('%.17g', base) end
return answer(decision .. ' ' .. table.concat(state, ' '))
"""

LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest()

INIT_LUA = r"""
-- KEYS[1]: the circuit's hash. ARGV: kind, threshold, sleep, factor, cap, jitter.
-- Creates the circuit if there is none; returns the stored configuration and fingerprint.
local key = KEYS[1]
local stored = redis.pcall('HMGET', key, 'kind', 'threshold', 'sleep', 'factor', 'cap',
                           'jitter', 'config')
if stored.err then return stored end
local present = redis.pcall('EXISTS', key)
if type(present) == 'table' then return present end
if present == 0 then
  local made = redis.pcall('HSET', key, 'kind', ARGV[1], 'threshold', ARGV[2],
                           'sleep', ARGV[3], 'factor', ARGV[4], 'cap', ARGV[5],
                           'jitter', ARGV[6], 'shorts', '0', 'trips', '0',
                           'current', ARGV[3], 'broken', '0',
                           'config', table.concat(ARGV, ' ', 1, 6))
  if type(made) == 'table' and made.err then return made end
  return {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], table.concat(ARGV, ' ', 1, 6)}
end
local complete = true
for i = 1, 6 do
  if not stored[i] then complete = false end
end
if complete and not stored[7] then
  -- Made by an earlier version of the library, without the fingerprint.
  stored[7] = table.concat(stored, ' ', 1, 6)
  local marked = redis.pcall('HSET', key, 'config', stored[7])
  if type(marked) == 'table' and marked.err then return marked end
end
return {stored[1], stored[2], stored[3], stored[4], stored[5], stored[6], stored[7]}
"""

_FIELDS = ("shorts", "trips", "current", "broken", "config")
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
      by ``fallback=True``. The message says whether the operation may have been applied
      (it is never applied twice).
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
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _state(values: list[Any]) -> State:
    shorts, trips, current, broken = values[:4]
    return (int(shorts), int(trips), float(current), broken == b"1")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("RedisStore needs redis-py: pip install 'suitkaise[redis]'") from None
    return redis


# -- the wire: the Redis protocol (RESP2), packed and parsed here ---------------------------


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(map(_bulk, parts))


_SCRIPT_LOAD = _command(b"SCRIPT", b"LOAD", LUA.encode())
_NO_CUSTOM = _bulk(b"")
_MAX_LINE = 1 << 16  # a reply line longer than this is not the Redis protocol
_MAX_BULK = 1 << 24  # nor a string longer than this (the store's replies are tiny)
_MAX_ITEMS = 1 << 12


class _ErrorReply:
    """An error the server answered (``-CODE message``): a value, not an exception, so that
    the connection it came on stays usable."""

    __slots__ = ("code", "message")

    def __init__(self, line: bytes) -> None:
        code, _, message = line.partition(b" ")
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"_ErrorReply({self.code!r}, {self.message!r})"


class _Incomplete(Exception):
    """More bytes are needed to parse a reply."""


def _parse(data: bytes, pos: int) -> tuple[Any, int]:
    """One reply from ``data[pos:]``: ``(value, end)``. Raises ``_Incomplete`` when it is
    not all there yet and ``_Garbled`` when it is not the Redis protocol."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        if len(data) - pos > _MAX_LINE:
            raise _Garbled(data[pos:])
        raise _Incomplete
    kind = data[pos]
    try:
        if kind == 36:  # $ bulk string
            length = int(data[pos + 1 : end])
            if length < 0:
                return None, end + 2
            if length > _MAX_BULK:
                raise _Garbled(data[pos:end])
            stop = end + 2 + length
            if len(data) < stop + 2:
                raise _Incomplete
            if data[stop : stop + 2] != b"\r\n":
                raise _Garbled(data[pos:])
            return data[end + 2 : stop], stop + 2
        if kind == 43:  # + simple string
            return data[pos + 1 : end], end + 2
        if kind == 45:  # - error
            return _ErrorReply(data[pos + 1 : end]), end + 2
        if kind == 58:  # : integer
            return int(data[pos + 1 : end]), end + 2
        if kind == 42:  # * array
            count = int(data[pos + 1 : end])
            if count < 0:
                return None, end + 2
            if count > _MAX_ITEMS:
                raise _Garbled(data[pos:end])
            items = []
            at = end + 2
            for _ in range(count):
                item, at = _parse(data, at)
                items.append(item)
            return items, at
    except ValueError:
        raise _Garbled(data[pos:]) from None
    raise _Garbled(data[pos:])


# -- what the store itself ran into (never the caller's own exceptions) ---------------------


class _Failure(Exception):
    """A failure of the store's own I/O or a refusal of the server, before it is put into
    words by ``RedisCircuitStore._failure``. ``sent``: a copy of the request may have
    reached the server (so the operation may have been applied, at most once)."""

    sent = False


class _Timeout(_Failure):
    def __init__(self, doing: str, *, sent: bool = False) -> None:
        super().__init__(doing)
        self.doing = doing
        self.sent = sent


class _Dropped(_Failure):
    def __init__(self, cause: str, *, times: int = 1) -> None:
        super().__init__(cause)
        self.cause = cause
        self.times = times


class _Unreachable(_Failure):
    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


class _Garbled(_Failure):
    def __init__(self, data: bytes) -> None:
        super().__init__("garbled")
        self.data = bytes(data[:40])


class _Refused(_Failure):
    def __init__(self, step: str, reply: _ErrorReply) -> None:
        super().__init__(step)
        self.step = step
        self.reply = reply


class _Closed(_Failure):
    pass


_io_sources: tuple[frozenset[str], tuple[str, ...]] | None = None
_HERE = (lambda: None).__code__.co_filename  # how this module's frames name their file


def _raised_by_io(error: BaseException) -> bool:
    """Whether ``error`` was raised by the I/O the store is doing (a socket, TLS, asyncio,
    redis-py opening a socket) rather than by a signal handler of the caller that ran in the
    middle of it. A handler's exception has the handler's frame innermost in its traceback;
    an error of the I/O has the frame that called the failing C function, or a frame of the
    I/O library, innermost. So must every exception it was raised from (a codec, for one,
    wraps a handler's exception in a new one of the same type)."""
    global _io_sources
    if _io_sources is None:
        import asyncio
        import selectors
        import ssl

        redis = _import_redis()
        _io_sources = (
            frozenset({_HERE, ssl.__file__, socket.__file__, selectors.__file__}),
            (
                os.path.dirname(asyncio.__file__) + os.sep,
                os.path.dirname(redis.__file__) + os.sep,
            ),
        )
    files, prefixes = _io_sources
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        one = pending.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        tb = one.__traceback__
        if tb is None:
            return False
        while tb.tb_next is not None:
            tb = tb.tb_next
        filename = tb.tb_frame.f_code.co_filename
        if filename not in files and not filename.startswith(prefixes):
            return False
        pending.extend(e for e in (one.__cause__, one.__context__) if e is not None)
    return True


def _left(deadline: float, doing: str, *, sent: bool = False) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout(doing, sent=sent)
    return left


def _broken(error: OSError, doing: str, *, sent: bool) -> _Failure:
    """A socket error of the store's own I/O as a failure."""
    if isinstance(error, TimeoutError):
        return _Timeout(doing, sent=sent)
    return _Dropped(f"{type(error).__name__}: {error.strerror or error}")


class _Wire:
    """One connection of the store (sync): a connected socket and the bytes read past the
    last reply. Used by one caller at a time."""

    __slots__ = ("buf", "pid", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = b""
        self.pid = os.getpid()

    def send(self, request: bytes, deadline: float) -> None:
        sock = self.sock
        try:
            sock.settimeout(_left(deadline, "sending the request"))
            sock.sendall(request)
        except OSError as error:
            if not _raised_by_io(error):
                raise
            failure = _broken(error, "sending the request", sent=False)
        else:
            return
        raise failure

    def read(self, deadline: float) -> Any:
        """The next reply (an ``_ErrorReply`` for an error)."""
        data = self.buf
        while True:
            if data:
                try:
                    value, end = _parse(data, 0)
                except _Incomplete:
                    pass
                else:
                    self.buf = data[end:]
                    return value
            sock = self.sock
            try:
                sock.settimeout(_left(deadline, "waiting for the reply", sent=True))
                chunk = sock.recv(65536)
            except OSError as error:
                if not _raised_by_io(error):
                    raise
                failure = _broken(error, "waiting for the reply", sent=True)
            else:
                if not chunk:
                    raise _Dropped("the server closed the connection")
                data = data + chunk if data else chunk
                self.buf = data
                continue
            raise failure

    def exchange(self, request: bytes, deadline: float) -> Any:
        # The hot path: one send and, usually, one recv holding the whole reply.
        sock = self.sock
        try:
            sock.settimeout(_left(deadline, "sending the request"))
            sock.sendall(request)
            chunk = sock.recv(65536)
        except OSError as error:
            if not _raised_by_io(error):
                raise
            # Whether the request went out whole is unknown here; assume it did.
            failure = _broken(error, "waiting for the reply", sent=True)
        else:
            if not chunk:
                raise _Dropped("the server closed the connection")
            try:
                value, end = _parse(chunk, 0)
            except _Incomplete:
                self.buf = chunk
                value = self.read(deadline)
            else:
                self.buf = chunk[end:]
            if self.buf:
                raise _Garbled(self.buf)  # more than one reply to one request: out of step
            return value
        raise failure

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.pid == os.getpid():  # a forked child closes only its own copy
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


class _AsyncWire:
    """One asyncio connection of the store: a stream pair and the bytes read past the last
    reply. Used by one task at a time, in the event loop it was opened in."""

    __slots__ = ("buf", "reader", "writer")

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    def send(self, request: bytes) -> None:
        self.writer.write(request)

    async def read(self) -> Any:
        data = self.buf
        while True:
            if data:
                try:
                    value, end = _parse(data, 0)
                except _Incomplete:
                    pass
                else:
                    self.buf = data[end:]
                    return value
            try:
                chunk = await self.reader.read(65536)
            except OSError as error:
                if not _raised_by_io(error):
                    raise
                failure = _broken(error, "waiting for the reply", sent=True)
            else:
                if not chunk:
                    raise _Dropped("the server closed the connection")
                data = data + chunk if data else chunk
                self.buf = data
                continue
            raise failure

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    async def aclose(self) -> None:
        writer = self.writer
        self.close()
        if writer is not None:
            # A connection that fails to close cleanly is closed all the same.
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# -- operation ids ---------------------------------------------------------------------------


class _Lane:
    """A lane: the packed name of its field. A lane taken by a call that is then interrupted
    before it gives the lane back (a signal handler's exception in between) is given back
    when it is collected, so interruptions never make a process use more lanes."""

    __slots__ = ("ids", "packed")

    def __init__(self, ids: _OpIds, packed: bytes) -> None:
        self.ids = ids
        self.packed = packed

    def __del__(self) -> None:
        ids = getattr(self, "ids", None)
        if ids is not None and ids is _ids:  # not after a fork, nor at interpreter shutdown
            # Should this be cut short in turn after the copy exists, the copy's own
            # __del__ gives the lane back: the pool never gets two copies of one lane.
            ids.lanes.append(_Lane(ids, self.packed))


class _OpIds:
    """Where this process's operation ids come from: a random prefix (renewed in a forked
    child), a counter, and the lanes not in use. Taking an id makes no system call."""

    __slots__ = ("lanes", "numbers", "prefix", "sequence")

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.sequence = itertools.count(1)
        self.numbers = itertools.count()
        # list.pop and list.append are atomic, so no lock is needed.
        self.lanes: list[_Lane] = []

    def new_lane(self) -> _Lane:
        field = LANE_PREFIX.encode() + self.prefix + b":%d" % next(self.numbers)
        return _Lane(self, _bulk(field))


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


_ECHO = "with args beginning with"
_SHORTEST_PIECE = 6  # shorter runs of a secret are common text; whole secrets go at any length


def _redact(message: str) -> str:
    """A server message without the arguments it echoes (Redis repeats the first arguments
    of a command it does not know, and they may be credentials)."""
    cut = message.find(_ECHO)
    if cut >= 0:
        return message[:cut] + _ECHO + ": (not shown)"
    return message


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without any copy of a secret: whole, with its whitespace and control
    characters turned into spaces (as servers print them), or cut short (a prefix of at
    least ``_SHORTEST_PIECE`` characters, as a server truncating what it echoes leaves)."""
    for secret in secrets:
        if not secret:
            continue
        flat = "".join(" " if ch.isspace() or not ch.isprintable() else ch for ch in secret)
        for form in dict.fromkeys((secret, flat, flat.strip())):
            if not form:
                continue
            text = text.replace(form, "***")
            if len(form) <= _SHORTEST_PIECE:
                continue
            start = text.find(form[:_SHORTEST_PIECE])
            while start >= 0:
                length = _SHORTEST_PIECE
                while (
                    length < len(form)
                    and start + length < len(text)
                    and text[start + length] == form[length]
                ):
                    length += 1
                text = text[:start] + "***" + text[start + length :]
                start = text.find(form[:_SHORTEST_PIECE], start + 3)
    return text


def _url_secrets(url: str) -> tuple[str, ...]:
    """The secret parts of a URL, even of one too broken to parse, read the way redis-py
    (``urllib.parse``) reads them: the userinfo's part after its first ``:`` (a userinfo
    without ``:`` is a user name, as redis-py takes it), each piece of it for a password
    holding "/", "?" or "#" (which a parser would cut there), and password-like query
    values."""
    import re
    from urllib.parse import unquote

    found: list[str] = []
    scheme_end = url.find("//")
    if scheme_end >= 0:
        rest = url[scheme_end + 2 :]
        userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for part in re.split(r"[?&]", url):
        name, _, value = part.partition("=")
        if name in _SECRET_SETTINGS and value:
            found.append(value)
    pieces = [piece for secret in found for piece in re.split(r"[/?#]", secret)]
    found = [*found, *pieces, *(unquote(secret) for secret in found)]
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


_connecting = threading.local()  # the deadline of the connect this thread is making


def _deadline_class(connection_class: type) -> type:
    """``connection_class`` whose socket timeouts are what is left of the calling thread's
    connect deadline when redis-py applies them: opening a socket, TCP connect and TLS
    handshake included, ends at the deadline. One object of it serves every thread (it only
    opens sockets), so no connection object is made, or finalized, per connect."""

    def left(self: Any) -> float:
        deadline: float | None = getattr(_connecting, "deadline", None)
        if deadline is None:
            return 1.0  # only read while the object is being built
        return max(deadline - time.monotonic(), 1e-4)

    def ignore(self: Any, value: Any) -> None:
        pass

    timeouts = property(left, ignore)
    return type(
        connection_class.__name__,
        (connection_class,),
        {"socket_timeout": timeouts, "socket_connect_timeout": timeouts},
    )


class _Target:
    """What to connect to and how: a redis-py connection class and its settings, without
    the store's own (timeouts, retries). Compares and hashes by value, pickles as is."""

    __slots__ = ("_key", "connection_class", "db", "secrets", "settings", "url")

    def __init__(
        self, connection_class: type, settings: dict[str, Any], extra_secrets: tuple[str, ...] = ()
    ) -> None:
        self.connection_class = connection_class
        self.settings = settings
        self.db = settings.get("db", 0) or 0
        self.secrets = tuple(
            sorted(
                {str(settings[s]) for s in _SECRET_SETTINGS if settings.get(s)}
                | set(extra_secrets),
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
            failure = ValueError(
                f"url_or_client is not a usable Redis URL ({_scrub(url, secrets)!r}): "
                f"{_scrub(str(error), secrets)}; expected redis://[[user]:password@]host"
                "[:port][/db], rediss://... (TLS) or unix://[[user]:password@]/path?db=N"
            )
        else:
            connection_class = parsed.pop("connection_class", Connection)
            return cls._checked(connection_class, parsed, secrets)
        raise failure

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
        return cls._checked(_sync_class(connection_class), dict(settings), ())

    @classmethod
    def _checked(
        cls, connection_class: type, settings: dict[str, Any], secrets: tuple[str, ...]
    ) -> _Target:
        if "connection_pool" in settings:
            raise TypeError(
                "RedisStore cannot use a client whose connections are chosen by a pool of "
                f"its own ({connection_class.__name__}, e.g. Sentinel); pass a URL or a "
                "client of the primary server"
            )
        if settings.get("redis_connect_func") is not None:
            raise TypeError(
                "RedisStore cannot honour the connection setting redis_connect_func: the "
                "store makes its own handshake (AUTH, CLIENT SETNAME, SELECT)"
            )
        protocol = settings.get("protocol")
        if protocol is not None and str(protocol) not in ("2", "3"):
            raise ValueError(
                "the connection setting protocol of url_or_client must be 2 or 3 (RESP2 or "
                f"RESP3), got {protocol!r}"
            )
        kept = {
            name: value
            for name, value in settings.items()
            # A bare object() is redis-py's "not given" marker: it means nothing elsewhere.
            if name not in _PLUMBING and type(value) is not object
        }
        target = cls(connection_class, _fitted(connection_class, kept), secrets)
        try:
            target.template()  # builds the connection object: checks what it checks
        except Exception as error:
            failure = ValueError(
                f"RedisStore cannot use the connection settings of url_or_client ({target.url}): "
                f"{_scrub(f'{type(error).__name__}: {error}', target.secrets)}"
            )
        else:
            return target
        raise failure

    def template(self) -> Any:
        """A redis-py connection object with these settings (never connected)."""
        return self.connection_class(**self.settings)

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
        return (_Target, (self.connection_class, self.settings, self.secrets))

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


# -- the handshake ----------------------------------------------------------------------------


class _Greeting:
    """What a new connection sends before its first request, pipelined in one round trip:
    ``AUTH`` (if the settings have credentials), ``CLIENT SETNAME``, ``CLIENT SETINFO``
    (the library's name and version, as redis-py sends them; a server too old for it
    answers an error that is ignored) and ``SELECT``. No ``HELLO``: the store speaks RESP2,
    which every Redis server speaks, so it also works where ``HELLO`` is missing (Redis
    before 6) or disabled."""

    __slots__ = ("_encode", "_password", "_provider", "_rest", "_username")

    def __init__(self, target: _Target) -> None:
        template = target.template()
        settings = target.settings
        self._encode: Callable[[Any], bytes] = template.encoder.encode
        self._provider = settings.get("credential_provider")
        self._username = settings.get("username")
        self._password = settings.get("password")
        rest: list[tuple[str, bytes]] = []
        name = settings.get("client_name")
        if name:
            rest.append(("CLIENT SETNAME", _command(b"CLIENT", b"SETNAME", self._encode(name))))
        info = getattr(template, "driver_info", None)
        lib_name = getattr(info, "formatted_name", None) if info is not None else None
        lib_version = getattr(info, "lib_version", None) if info is not None else None
        if info is None:  # redis-py before DriverInfo
            lib_name = getattr(template, "lib_name", None)
            lib_version = getattr(template, "lib_version", None)
        for field, value in (("LIB-NAME", lib_name), ("LIB-VER", lib_version)):
            if isinstance(value, str) and value:
                rest.append(
                    (
                        "CLIENT SETINFO",
                        _command(b"CLIENT", b"SETINFO", field.encode(), self._encode(value)),
                    )
                )
        db = target.db
        if db:
            rest.append(("SELECT", _command(b"SELECT", self._encode(db))))
        self._rest = rest

    def _credentials(self) -> tuple[Any, ...]:
        if self._provider is not None:
            return tuple(self._provider.get_credentials())
        if self._username:
            return (self._username, self._password or "")
        if self._password:
            return (self._password,)
        return ()

    def steps(self) -> Generator[tuple[bytes, list[str]], list[Any], None]:
        """Yields ``(request, steps)``; is sent the replies (one per step)."""
        credentials = self._credentials()
        while True:
            steps: list[str] = []
            parts: list[bytes] = []
            if credentials:
                steps.append("AUTH")
                parts.append(_command(b"AUTH", *map(self._encode, credentials)))
            for step, packed in self._rest:
                steps.append(step)
                parts.append(packed)
            if not steps:
                return
            replies = yield b"".join(parts), steps
            first = self.refusal(steps, replies)
            if first is None:
                return
            if (
                first.step == "AUTH"
                and len(credentials) == 2
                and first.reply.message.startswith(b"wrong number of arguments")
            ):
                # A server before Redis 6 (no user names): the password alone.
                credentials = credentials[1:]
                continue
            raise first

    @staticmethod
    def refusal(steps: list[str], replies: list[Any]) -> _Refused | None:
        """The first error among the replies (there may be fewer replies than steps, when
        the server closed the connection after an error) that is not to be ignored: an old
        server's error for ``CLIENT SETINFO`` is, unless it is the server saying it is full
        (which it says to whatever comes first)."""
        for step, reply in zip(steps, replies):  # noqa: B905 - replies may be cut short
            if type(reply) is not _ErrorReply:
                continue
            if step == "CLIENT SETINFO" and not reply.message.lower().startswith(
                b"max number of clients"
            ):
                continue
            return _Refused(step, reply)
        return None


# -- connections, shared per process per (target, timeout) ----------------------------------


class _LoopPool:
    """The asyncio connections of one endpoint in one event loop."""

    __slots__ = ("closed", "idle", "watcher")

    def __init__(self) -> None:
        self.idle: list[_AsyncWire] = []
        self.closed = False
        self.watcher: Any = None

    async def aclose(self) -> None:
        self.closed = True
        idle = self.idle
        while idle:
            await idle.pop().aclose()


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
        with endpoint.lock:
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
    its own ``_LoopPool``, closed when the loop ends. ``lock`` guards ``loops`` (threads
    running their own loops add and remove entries) and is never held during I/O.
    """

    def __init__(self, target: _Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.key = (target, timeout)
        self.refs = 0
        self.closed = False
        self.lock = threading.RLock()  # re-entrant: close() may run from a finalizer (GC)
        self.idle: list[_Wire] = []
        self.loops: dict[Any, _LoopPool] = {}
        self.greeting = _Greeting(target)
        self._connector: Any = None  # opens sockets (see _deadline_class); made on first use
        self._async: tuple[type, dict[str, Any]] | None = None
        self._async_template: Any = None

    # -- sync --

    def open(self, deadline: float) -> _Wire:
        """A new connection, its handshake done, within ``deadline``."""
        _left(deadline, "connecting")
        connector = self._connector
        if connector is None:
            connector = self._connector = _deadline_class(self.target.connection_class)(
                **self.target.settings
            )
        _connecting.deadline = deadline
        try:
            sock = connector._connect()
        except Exception as error:
            if not _raised_by_io(error):
                raise
            failure = self._unreachable(error, deadline)
        else:
            wire = _Wire(sock)
            steps = self.greeting.steps()
            try:
                request, names = next(steps)
                while True:
                    wire.send(request, deadline)
                    replies: list[Any] = []
                    try:
                        for _ in names:
                            replies.append(wire.read(deadline))
                    except _Dropped:
                        # A server that refuses (full, say) answers, then hangs up.
                        refused = self.greeting.refusal(names, replies)
                        if refused is None:
                            raise
                        raise refused from None
                    request, names = steps.send(replies)
            except StopIteration:
                return wire
            except _Timeout as timeout:
                wire.close()
                timeout.doing, timeout.sent = "the connection's handshake", False
                raise
            except BaseException:
                wire.close()
                raise
        raise failure

    @staticmethod
    def _unreachable(error: Exception, deadline: float) -> _Failure:
        if isinstance(error, TimeoutError) and time.monotonic() >= deadline - 0.01:
            return _Timeout("connecting")
        return _Unreachable(error)

    def give_back(self, wire: _Wire) -> None:
        self.idle.append(wire)
        if self.closed:  # closed meanwhile: close() may have emptied the list before us
            self.drop_idle()

    def drop_idle(self) -> None:
        """Close the idle connections (after a drop, they probably broke too). Pops from the
        list itself, so a connection given back meanwhile is either closed or stays idle,
        never lost in a list nobody looks at."""
        idle = self.idle
        while True:
            try:
                wire = idle.pop()
            except IndexError:
                return
            wire.close()

    # -- asyncio --

    def _async_options(self, timeout: float) -> tuple[type, dict[str, Any]]:
        """The redis.asyncio twin of the connection class, and its settings."""
        if self._async is None:
            connection_class = _async_class(self.target.connection_class)
            self._async = (connection_class, _fitted(connection_class, self.target.settings))
        connection_class, settings = self._async
        return connection_class, {**settings, "socket_timeout": timeout,
                                  "socket_connect_timeout": timeout}  # fmt: skip

    async def open_async(self) -> _AsyncWire:
        """A new asyncio connection, its handshake done. Bounded by the caller's deadline
        (``_Expiry``), which cancels the task."""
        import asyncio

        import redis.asyncio.connection as aio

        template = self._async_template
        if template is None:
            connection_class, options = self._async_options(self.timeout)
            template = self._async_template = connection_class(**options)
        try:
            if isinstance(template, aio.UnixDomainSocketConnection):
                reader, writer = await asyncio.open_unix_connection(path=template.path)
            else:
                reader, writer = await asyncio.open_connection(**template._connection_arguments())
                _tune(writer, template)
        except Exception as error:
            if not _raised_by_io(error):
                raise
            failure: _Failure = _Unreachable(error)
        else:
            wire = _AsyncWire(reader, writer)
            steps = self.greeting.steps()
            try:
                request, names = next(steps)
                while True:
                    wire.send(request)
                    replies: list[Any] = []
                    try:
                        for _ in names:
                            replies.append(await wire.read())
                    except _Dropped:
                        refused = self.greeting.refusal(names, replies)
                        if refused is None:
                            raise
                        raise refused from None
                    request, names = steps.send(replies)
            except StopIteration:
                return wire
            except BaseException:
                wire.close()
                raise
        raise failure

    async def loop_pool(self, loop: Any) -> _LoopPool:
        with self.lock:
            pool = self.loops.get(loop)
            if pool is not None:
                return pool
            for other in [other for other in self.loops if other.is_closed()]:
                # A loop closed without shutting down its async generators: its connections
                # can no longer close cleanly; dropping them lets the collector close them.
                gone = self.loops.pop(other, None)
                if gone is not None:
                    gone.closed = True
            pool = self.loops[loop] = _LoopPool()
            closed = self.closed
        if closed:
            pool.closed = True
            return pool
        # Only this loop's thread gets here for this loop: the watcher starts once.
        pool.watcher = _until_loop_ends(self, loop, pool)
        await pool.watcher.asend(None)
        return pool

    async def drop_idle_async(self, pool: _LoopPool) -> None:
        idle, pool.idle = pool.idle, []
        while idle:
            idle.pop().close()

    async def give_back_async(self, pool: _LoopPool, wire: _AsyncWire) -> None:
        pool.idle.append(wire)
        if pool.closed or self.closed:
            await self.drop_idle_async(pool)

    # -- life cycle --

    def close(self) -> None:
        """Close every connection: sync ones now; an event loop's as soon as that loop
        runs (or, for a loop that is not running, when it ends)."""
        self.closed = True
        self.drop_idle()
        with self.lock:
            pools = list(self.loops.items())
            for loop, _ in pools:
                if loop.is_closed():
                    self.loops.pop(loop, None)
        for loop, pool in pools:
            pool.closed = True  # idle connections given back from now on are closed
            if loop.is_running():
                # Closed in that loop; a loop that is not running closes them when it ends
                # (its watcher), or leaves them to the collector if it never shuts down.
                with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                    loop.call_soon_threadsafe(_close_in_loop, loop, pool)

    def after_fork_in_child(self) -> None:
        # The parent's sockets are the parent's: a sync connection closes only this
        # process's copy (no shutdown in another pid); asyncio connections are parked
        # untouched, because closing them would unregister the socket from the epoll
        # instance that the child shares with the parent's event loop. Their file
        # descriptors are detached from their socket objects and closed directly, so no
        # finalizer ever closes the same number again (reused by then).
        self.lock = threading.RLock()
        self.drop_idle()
        for pool in self.loops.values():
            pool.closed = True
            for wire in pool.idle:
                _close_descriptor(wire)
            _graveyard.append(pool)
        self.loops = {}
        self._async = None
        self._async_template = None


def _tune(writer: Any, template: Any) -> None:
    """TCP options redis-py sets on its asyncio connections."""
    sock = writer.transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if getattr(template, "socket_keepalive", False):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (
                getattr(template, "socket_keepalive_options", None) or {}
            ).items():
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
        except (OSError, TypeError):
            writer.close()
            raise


def _close_in_loop(loop: Any, pool: _LoopPool) -> None:
    task = loop.create_task(pool.aclose())
    _closing_tasks.add(task)
    task.add_done_callback(_closing_tasks.discard)


def _close_descriptor(wire: _AsyncWire) -> None:
    transport = getattr(wire.writer, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    real = getattr(sock, "_sock", sock)
    if real is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        os.close(real.detach())


# Re-entrant: a store's finalizer (_release) runs when the garbage collector finds the store,
# which can be in the middle of anything, this lock's own critical sections included.
_registry_lock = threading.RLock()
_endpoints: dict[tuple[_Target, float], _Endpoint] = {}
_circuit_stores: weakref.WeakSet[RedisCircuitStore] = weakref.WeakSet()


def _acquire(target: _Target, timeout: float) -> _Endpoint:
    key = (target, timeout)
    endpoint = _endpoints.get(key)
    # Made outside the lock (it builds redis-py objects): a spare one is simply dropped.
    made = _Endpoint(target, timeout) if endpoint is None else None
    with _registry_lock:
        endpoint = _endpoints.get(key)
        if endpoint is None:
            endpoint = _endpoints[key] = made if made is not None else _Endpoint(target, timeout)
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
    _registry_lock = threading.RLock()
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
            credential provider), TLS settings, client name - with connections of its own
            (see ``close()``), its own ``timeout`` and no retries inside redis-py. The
            ``protocol`` setting must be 2 or 3 (anything else is a ``ValueError``); the
            store's own connections speak RESP2 either way.
        name: the circuit's name, any non-empty string that UTF-8 can encode (a lone
            surrogate such as ``"\\ud800"`` cannot be). Two circuits built anywhere with
            the same server and name are one circuit; different names never interfere.
        timeout: seconds (or a ``timedelta``; > 0) one call may take in all: opening a
            connection and its handshake if it needs one, the request, the repairs (a script
            to reload, a deleted circuit to make again) and the re-sends after dropped
            connections. Then it fails with ``RedisStoreError``. Default 2.0.
        fallback: if ``True``, a call that gets no answer from Redis (``outage``) is applied
            to a local copy of the last state this process saw, with a ``RuntimeWarning``
            (once per outage), and Redis is tried again by one call at most every
            ``retry_interval`` seconds; once it answers, the shared state is used again
            (local changes made during the outage are not merged into it). Refusals (a
            wrong password, out of memory, ...) are raised in every mode, and end an
            outage: from then on every call gets the refusal. Default ``False``: every
            failure raises ``RedisStoreError``.
        retry_interval: seconds (or a ``timedelta``; > 0) between attempts to reach Redis
            again in fallback mode. Default 1.0.

    Raises:
        TypeError, ValueError: an argument is malformed; the message names it (and never
            shows a password).

    Building a circuit on the store needs the server, whatever ``fallback`` says: that is
    where the configuration is checked (``ValueError`` if a circuit of this name exists with
    another kind or configuration; ``RedisStoreError`` if the server cannot be used). Every
    later operation checks it again, so a circuit deleted and made again elsewhere with
    another configuration is refused with a ``ValueError`` too.

    A write is never applied twice: a call that timed out may or may not have been applied;
    a call whose connection broke is re-sent with the same operation id, which the server
    recognises. ``repr()``, errors and warnings show the server's address with its password
    replaced by ``***``. A pickled store (or circuit) reconnects in another process with the
    same settings, credentials included; a closed store comes back closed. Thread-safe, and
    safe to use from many asyncio tasks; a forked child opens its own connections.
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
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"name must be a string that UTF-8 can encode (it is the key's name on the "
                f"server), got {name!r}: {error.reason} at position {error.start}"
            ) from None
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
        self._endpoint: _Endpoint | None = None
        self._finalizer: Any = None
        self._open()

    def _open(self) -> None:
        endpoint = _acquire(self._target, self.timeout)
        self._endpoint = endpoint
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
        calls on circuits of this store raise ``RedisStoreError``. Idempotent; a closed
        store pickles as a closed store.
        """
        self._endpoint = None
        if self._finalizer is not None:
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
            (
                self._target,
                self.name,
                self.timeout,
                self.fallback,
                self.retry_interval,
                self._endpoint is None,
            ),
        )

    def __repr__(self) -> str:
        closed = ", closed" if self._endpoint is None else ""
        return f"RedisStore({self.url!r}, name={self.name!r}{closed})"


def _rebuild_store(
    target: _Target,
    name: str,
    timeout: float,
    fallback: bool,
    retry_interval: float,
    closed: bool = False,
) -> RedisStore:
    store = RedisStore.__new__(RedisStore)
    store.timeout, store.retry_interval, store.fallback = timeout, retry_interval, fallback
    store.name, store.key = name, KEY_PREFIX + name
    _import_redis()
    store._target = target
    store.url = target.url
    store._endpoint = None
    store._finalizer = None
    if not closed:
        store._open()
    return store


# -- one circuit on Redis ---------------------------------------------------------------


class _Expiry:
    """The deadline of one asyncio call: when it passes, the call's task is cancelled, and
    the call turns that cancellation (its own, not the caller's) into a timeout. Armed
    inside the call's ``try`` and disarmed in its ``finally``: a timer that outlives the
    call (its handle lost to an interruption) finds it disarmed and does nothing."""

    __slots__ = ("armed", "fired", "handle", "task")

    def __init__(self) -> None:
        self.armed = False
        self.fired = False
        self.handle: Any = None
        self.task: Any = None

    def arm(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        import asyncio

        self.task = asyncio.current_task(loop)
        self.armed = True
        self.handle = loop.call_later(timeout, self._fire)

    def disarm(self) -> None:
        self.armed = False
        if self.handle is not None:
            self.handle.cancel()

    def _fire(self) -> None:
        if self.armed and self.task is not None:
            self.fired = True
            self.task.cancel()

    def expired(self) -> bool:
        """After a ``CancelledError``: was it this deadline, and only this deadline?"""
        if not self.fired:
            return False
        uncancel = getattr(self.task, "uncancel", None)
        return uncancel is None or uncancel() == 0


class _Progress:
    __slots__ = ("doing", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.doing = "connecting"


class RedisCircuitStore:
    """The state of one circuit on Redis (a ``CircuitStore``).

    Every public method is safe from many threads and asyncio tasks at once: the Redis path
    shares nothing mutable but the connection and lane lists (atomic list operations), and
    the fallback bookkeeping changes under ``_lock``, which is never held during I/O.
    """

    def __init__(
        self,
        config: RedisStore,
        kind: str,
        settings: Settings,
        *,
        last_state: State | None = None,
        check: bool = True,
    ) -> None:
        self.config = config
        self.kind = kind
        self.settings = settings
        self._timeout = config.timeout
        self._fallback = config.fallback
        self._lock = threading.Lock()
        self._local: LocalStore | None = None  # fallback mode, during an outage
        self._last_state: State = last_state if last_state is not None else initial_state(settings)
        self._retry_at = 0.0
        _circuit_stores.add(self)

        key = config.key.encode()
        window = max(LANE_MEMORY_S, 10 * config.timeout)
        self._mine = _config_args(kind, settings)
        self._fingerprint = " ".join(self._mine).encode()
        # The request of an operation is its constant parts, packed once, around the lane
        # and the number of the call.
        self._head = b"*11\r\n" + _bulk(b"EVALSHA") + _bulk(LUA_SHA.encode()) + _bulk(b"1")
        self._head += _bulk(key)
        self._tail = (
            _bulk(b"1" if config.fallback else b"")
            + _bulk(b"%d" % math.ceil(window))
            + _bulk(self._fingerprint)
        )
        self._ops: dict[Transition, bytes] = {}
        self._hmget = _command(b"HMGET", key, *(field.encode() for field in _FIELDS))
        self._init = _command(
            b"EVAL", INIT_LUA.encode(), b"1", key, *(arg.encode() for arg in self._mine)
        )
        self._type = _command(b"TYPE", key)
        if check:
            deadline = time.monotonic() + self._timeout
            try:
                self._drive(self._create(), deadline)
            except _Failure as error:
                failure = self._failure(error, write=False)
            else:
                return
            raise failure

    # -- requests ---------------------------------------------------------------------

    def _request(
        self, transition: Transition, custom_sleep: float | None, lane: bytes, ids: _OpIds
    ) -> bytes:
        op = self._ops.get(transition)
        if op is None:
            op = self._ops[transition] = _bulk(transition.__name__.encode())
        custom = _NO_CUSTOM if custom_sleep is None else _bulk(_number(custom_sleep).encode())
        number = b"%d" % next(ids.sequence)
        return b"".join((self._head, op, custom, self._tail, lane, _bulk(number)))

    # -- one request, sync and asyncio (the only code that differs between the two) ---

    def _call(self, request: bytes, deadline: float) -> Any:
        """Send one request and return its reply (an ``_ErrorReply`` for an error). A
        connection that broke under it (or during its handshake) is replaced and the request
        re-sent, at most ``_MAX_RESENDS`` times and within the deadline (safe: see the
        module doc)."""
        endpoint = self.config._endpoint
        if endpoint is None:
            raise _Closed
        try:
            wire: _Wire | None = endpoint.idle.pop()
        except IndexError:
            wire = None
        resends = 0
        sent = False  # a copy of the request may have reached the server
        while True:
            try:
                if wire is None:
                    wire = endpoint.open(deadline)
                reply = wire.exchange(request, deadline)
            except _Dropped as dropped:
                if wire is not None:  # it broke under the request, not in its handshake
                    wire.close()
                    wire = None
                    sent = True
                elif not sent:
                    # The first connection of the call broke in its handshake: the server
                    # closes new connections (down behind a proxy, full); nothing was sent,
                    # and trying again at once would only knock harder.
                    raise
                if resends == _MAX_RESENDS:
                    dropped.sent, dropped.times = sent, resends + 1
                    raise
                resends += 1
                endpoint.drop_idle()
                continue
            except _Failure as failure:
                if wire is not None:
                    wire.close()
                failure.sent = failure.sent or sent
                raise
            except BaseException:
                # Interrupted, or out of step: a reply may still be on its way.
                if wire is not None:
                    wire.close()
                raise
            endpoint.give_back(wire)
            return reply

    async def _call_async(self, request: bytes, progress: _Progress) -> Any:
        """``_call`` on the running event loop's connections; the caller's ``_Expiry``
        bounds it."""
        import asyncio

        endpoint = self.config._endpoint
        if endpoint is None:
            raise _Closed
        loop = asyncio.get_running_loop()
        pool = endpoint.loops.get(loop)
        if pool is None:
            pool = await endpoint.loop_pool(loop)
        try:
            wire: _AsyncWire | None = pool.idle.pop()
        except IndexError:
            wire = None
        resends = 0
        while True:
            try:
                if wire is None:
                    progress.doing = "connecting"
                    wire = await endpoint.open_async()
                progress.doing = "waiting for the reply"
                wire.send(request)
                progress.sent = True
                reply = await wire.read()
                if wire.buf:
                    raise _Garbled(wire.buf)  # more than one reply: out of step
            except _Dropped as dropped:
                if wire is not None:
                    wire.close()
                    wire = None
                elif not progress.sent:
                    raise  # the first connection broke in its handshake: see _call
                if resends == _MAX_RESENDS:
                    dropped.sent, dropped.times = progress.sent, resends + 1
                    raise
                resends += 1
                await endpoint.drop_idle_async(pool)
                continue
            except _Failure as failure:
                if wire is not None:
                    wire.close()
                failure.sent = failure.sent or progress.sent
                raise
            except BaseException:
                if wire is not None:
                    wire.close()
                raise
            await endpoint.give_back_async(pool, wire)
            return reply

    # -- what to do when the server answers with an error ---------------------------------
    # Generators of requests (the driver sends each and sends back its reply), shared by
    # the sync and asyncio paths.

    def _repair(self, request: bytes, error: _ErrorReply, step: str) -> Generator[bytes, Any, Any]:
        """The steps after ``request`` was answered with ``error``; returns the final reply."""
        reloads = recreations = 0
        while True:
            code = error.code
            if code == b"NOSCRIPT":
                if reloads == _MAX_REPAIRS:
                    raise self._refused(
                        "the server keeps forgetting the store's Lua script right after "
                        "loading it (SCRIPT FLUSH in a loop, or a proxy that spreads calls "
                        "over several servers)"
                    )
                reloads += 1
                loaded = yield _SCRIPT_LOAD  # a new or flushed server: load once, then again
                if type(loaded) is _ErrorReply:
                    error, step = loaded, "SCRIPT LOAD"
                    continue
            elif code == b"SUITKAISE_MISSING":
                # The key is gone (a server restarted without persistence, someone deleted
                # it, or eviction): create the circuit afresh, as a first creator would.
                if recreations == _MAX_REPAIRS:
                    raise self._refused(
                        f"key {self.config.key!r} is deleted again as soon as it is created"
                    )
                recreations += 1
                made = yield self._init
                if type(made) is _ErrorReply:
                    error, step = made, "EVAL"
                    continue
                self._check_config(made)
            elif code == b"SUITKAISE_CONFIG":
                raise self._mismatch(_text(error.message).split(" "), again=True)
            elif code == b"WRONGTYPE":
                found = yield self._type
                if type(found) is _ErrorReply:
                    raise _Refused("TYPE", found)
                raise self._refused(
                    f"key {self.config.key!r} holds a {_text(found)}, not a circuit (a hash); "
                    "delete it or give the circuit another name"
                )
            else:
                raise _Refused(step, error)
            reply = yield request
            if type(reply) is not _ErrorReply:
                return reply
            error, step = reply, "EVALSHA"

    def _create(self) -> Generator[bytes, Any, None]:
        made = yield self._init
        if type(made) is _ErrorReply:
            made = yield from self._repair(self._init, made, "EVAL")
        self._check_config(made)

    def _reread(self, values: Any) -> Generator[bytes, Any, Any]:
        """The steps after an ``HMGET`` of the state answered ``values`` that are not those
        of this circuit; returns the values once they are."""
        if type(values) is _ErrorReply:
            values = yield from self._repair(self._hmget, values, "HMGET")
        for _ in range(_MAX_REPAIRS):
            if type(values) is not list or len(values) != len(_FIELDS):
                raise _Garbled(repr(values).encode())
            config = values[4]
            if config == self._fingerprint:
                return values
            if config is not None:
                raise self._mismatch(_text(config).split(" "), again=True)
            # Missing (deleted, evicted, a server restarted empty), or made by an earlier
            # version of the library (no fingerprint): the creation script settles both.
            made = yield self._init
            if type(made) is _ErrorReply:
                made = yield from self._repair(self._init, made, "EVAL")
            self._check_config(made)
            values = yield self._hmget
            if type(values) is _ErrorReply:
                values = yield from self._repair(self._hmget, values, "HMGET")
        raise self._refused(f"key {self.config.key!r} is deleted again as soon as it is created")

    def _drive(self, steps: Generator[bytes, Any, Any], deadline: float) -> Any:
        try:
            request = next(steps)
        except StopIteration as done:
            return done.value
        while True:
            reply = self._call(request, deadline)
            try:
                request = steps.send(reply)
            except StopIteration as done:
                return done.value

    async def _drive_async(self, steps: Generator[bytes, Any, Any], progress: _Progress) -> Any:
        try:
            request = next(steps)
        except StopIteration as done:
            return done.value
        while True:
            reply = await self._call_async(request, progress)
            try:
                request = steps.send(reply)
            except StopIteration as done:
                return done.value

    def _check_config(self, stored: Any) -> None:
        if type(stored) is not list or len(stored) != 7:
            raise _Garbled(repr(stored).encode())
        theirs = [None if v is None else _text(v) for v in stored[:6]]
        absent = [label for label, v in zip(_CONFIG_LABELS, theirs, strict=True) if v is None]
        if absent:
            raise self._refused(
                f"key {self.config.key!r} holds a hash that is not a suitkaise circuit "
                f"(fields for {', '.join(absent)} missing); delete it or give the circuit "
                "another name"
            )
        if theirs != self._mine:
            raise self._mismatch([str(v) for v in theirs], again=False)
        if stored[6] != self._fingerprint:
            raise self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                f"circuit (its config field does not match its configuration); delete it or "
                "give the circuit another name"
            )

    def _mismatch(self, theirs: list[str], *, again: bool) -> BaseException:
        if len(theirs) != len(_CONFIG_LABELS):
            return self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                "circuit (config); delete it or give the circuit another name"
            )

        def listing(values: list[str]) -> str:
            return ", ".join(
                f"{label}={v}" for label, v in zip(_CONFIG_LABELS, values, strict=True)
            )

        diff = ", ".join(
            f"{label}: stored {a}, yours {b}"
            for label, a, b in zip(_CONFIG_LABELS, theirs, self._mine, strict=True)
            if a != b
        )
        if again:
            return ValueError(
                f"circuit {self.config.name!r} on {self.config.url} was deleted and made "
                f"again with a different configuration ({diff}): stored {listing(theirs)}; "
                f"this circuit {listing(self._mine)}; use another name, or the same "
                "configuration"
            )
        return ValueError(
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

    def _outage(self, cause: str) -> RedisStoreError:
        return RedisStoreError(
            f"Redis at {self.config.url} did not answer circuit {self.config.name!r}: {cause}",
            outage=True,
        )

    def _failure(self, error: _Failure, *, write: bool) -> RedisStoreError:
        """A failure of the store as a ``RedisStoreError`` naming its cause. Classified by
        what failed (the kind of failure, the step, the server's error code), never by
        searching the text (which may hold the circuit's name)."""
        import ssl

        timeout = self.config.timeout
        applied = (
            "; the operation may or may not have been applied (never twice)"
            if write and error.sent
            else ""
        )
        if isinstance(error, _Closed):
            return self._refused(f"{self.config!r} is closed")
        if isinstance(error, _Timeout):
            return self._outage(
                f"no reply within the timeout of {timeout:g} s ({error.doing}){applied}"
            )
        if isinstance(error, _Dropped):
            times = f" {error.times} times" if error.times > 1 else ""
            return self._outage(
                f"the connection failed or broke{times} ({self._said(error.cause)})"
                + (
                    "; the operation may have been applied (at most once)"
                    if write and error.sent
                    else ""
                )
            )
        if isinstance(error, _Unreachable):
            cause: BaseException | None = error.error
            while cause is not None:
                if isinstance(cause, ssl.SSLError):
                    return self._refused(f"the TLS connection failed ({self._said(str(cause))})")
                cause = cause.__cause__ or cause.__context__
            said = self._said(f"{type(error.error).__name__}: {error.error}")
            if isinstance(error.error, OSError):
                return self._outage(
                    f"the connection failed or broke (could not connect: {said}){applied}"
                )
            return self._refused(
                f"no connection could be opened with the store's settings ({said})"
            )
        if isinstance(error, _Garbled):
            return self._refused(
                f"the server does not speak the Redis protocol (it sent {error.data!r})"
            )
        if isinstance(error, _Refused):
            return self._answered_error(error.step, error.reply)
        return self._refused(repr(error))  # pragma: no cover - every failure is named above

    def _said(self, text: str) -> str:
        return _scrub(_redact(text), self.config._target.secrets)

    def _answered_error(self, step: str, reply: _ErrorReply) -> RedisStoreError:
        code, text = reply.code, reply.message
        said = self._said(_text(code + b" " + text if text else code))
        lowered = text.lower()
        if code in (b"BUSY", b"MASTERDOWN", b"TRYAGAIN", b"CLUSTERDOWN"):
            return self._outage(f"the server cannot serve now ({said})")
        if code == b"LOADING":
            return self._outage(f"the server is still loading its data set ({said})")
        if code == b"ERR" and lowered.startswith(b"max number of clients"):
            return self._outage(f"the server has no room for another client ({said})")
        if code == b"ERR" and step == "AUTH" and lowered.startswith(b"unknown command"):
            return self._refused(
                f"the server does not know the AUTH command, so the credentials cannot be "
                f"given to it (an old or renamed command, or not Redis) ({said})"
            )
        if code in (b"NOAUTH", b"WRONGPASS") or step == "AUTH":
            return self._refused(
                "authentication failed: wrong password or user name, or the server wants "
                f"credentials this store did not give (the server said: {said})"
            )
        if code == b"NOPERM" or (
            code == b"ERR" and text.startswith(b"The user executing the script can't")
        ):
            return self._refused(
                f"the user may not run the store's commands on its keys (ACL: {said}); it "
                f"needs {ACL_NEEDS}"
            )
        if code == b"OOM":
            return self._refused(
                f"the server is out of memory (maxmemory reached) and refuses writes ({said})"
            )
        if code == b"READONLY":
            return self._refused(
                f"the server is a read-only replica; give the store the primary ({said})"
            )
        if code in (b"MOVED", b"ASK", b"CROSSSLOT"):
            return self._refused(
                f"Redis Cluster is not supported; give the store one server ({said})"
            )
        if step == "SELECT":
            return self._refused(
                f"database {self.config._target.db} does not exist on this server ({said})"
            )
        if step == "CLIENT SETNAME":
            return self._refused(f"the server refused the connection's client_name ({said})")
        if code == b"ERR" and lowered.startswith(b"unknown command"):
            if step in ("EVALSHA", "EVAL", "SCRIPT LOAD"):
                return self._refused(f"the server does not run Lua scripts ({said})")
            return self._refused(f"the server does not know the {step} command ({said})")
        if code == b"SUITKAISE_CORRUPT":
            return self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                f"circuit (field {_text(text)}); delete it or give the circuit another name"
            )
        if code == b"MISCONF":
            return self._refused(f"the server refuses writes ({said})")
        return self._refused(f"the server answered {step} with an error ({said})")

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
        # Redis answered (with a result, a refusal or a configuration mismatch): the shared
        # state is the truth again, and every caller goes back to Redis.
        with self._lock:
            self._local = None

    def _end_outage(self, error: BaseException) -> None:
        """A call that got an answer from Redis other than a result (a refusal, a
        configuration mismatch) ends an outage: every caller goes back to Redis, and gets
        that answer too. An exception of the caller's own (a signal handler's) does not."""
        if self._local is not None and _raised_here(error):
            self._answered()

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
            request = self._request(transition, custom_sleep, lane.packed, ids)
            deadline = time.monotonic() + self._timeout
            reply = self._call(request, deadline)
            if type(reply) is _ErrorReply:
                reply = self._drive(self._repair(request, reply, "EVALSHA"), deadline)
            decision = self._decision(reply)
        except _Failure as error:
            failure = self._failure(error, write=True)
        except (ValueError, RedisStoreError) as error:
            self._end_outage(error)
            raise
        else:
            if self._local is not None:
                self._answered()
            return decision
        finally:
            lanes.append(lane)
        # Raised here, outside the except clause: the error carries no context that could
        # hold what the server echoed.
        if failure.outage and self._fallback:
            return self._fall_back(failure).apply(transition, settings, custom_sleep)
        self._end_outage(failure)
        raise failure

    async def _apply_async(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        import asyncio

        import sniffio

        if sniffio.current_async_library() == "trio":
            # redis-py's asyncio streams need an asyncio loop: under trio, the same blocking
            # round trip runs in a worker thread, so the trio loop is not blocked either. A
            # cancelled call abandons the thread, which ends within the store's timeout.
            import trio

            decision: float | None = await _trio_run(
                trio, self.apply, transition, settings, custom_sleep
            )
            return decision
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
        progress = _Progress()
        expiry = _Expiry()
        try:
            expiry.arm(asyncio.get_running_loop(), self._timeout)
            request = self._request(transition, custom_sleep, lane.packed, ids)
            reply = await self._call_async(request, progress)
            if type(reply) is _ErrorReply:
                reply = await self._drive_async(self._repair(request, reply, "EVALSHA"), progress)
            decision = self._decision(reply)
        except asyncio.CancelledError:
            if not expiry.expired():
                raise
            failure = self._failure(_Timeout(progress.doing, sent=progress.sent), write=True)
        except _Failure as error:
            failure = self._failure(error, write=True)
        except (ValueError, RedisStoreError) as error:
            self._end_outage(error)
            raise
        else:
            if self._local is not None:
                self._answered()
            return decision
        finally:
            expiry.disarm()
            lanes.append(lane)
        if failure.outage and self._fallback:
            return self._fall_back(failure).apply(transition, settings, custom_sleep)
        self._end_outage(failure)
        raise failure

    def _decision(self, reply: Any) -> float | None:
        if reply == b"":
            return None  # the fast path: a short that did not trip (state not sent)
        if type(reply) is not bytes:
            raise _Garbled(repr(reply).encode())
        try:
            base, *state = reply.decode().split(" ")
            self._last_state = _state([part.encode() for part in state])
            decision: float | None = None if base == "-" else float(base)
        except (ValueError, UnicodeDecodeError):
            raise _Garbled(reply) from None
        return decision

    @property
    def apply_async(self) -> Any:
        return self._apply_async

    def read(self) -> State:
        if self._local is not None:
            local = self._during_outage()
            if local is not None:
                return local.read()
        try:
            deadline = time.monotonic() + self._timeout
            values = self._call(self._hmget, deadline)
            if type(values) is not list or len(values) != 5 or values[4] != self._fingerprint:
                values = self._drive(self._reread(values), deadline)
            state = self._parsed(values)
        except _Failure as error:
            failure = self._failure(error, write=False)
        except (ValueError, RedisStoreError) as error:
            self._end_outage(error)
            raise
        else:
            self._last_state = state
            if self._local is not None:
                self._answered()
            return state
        if failure.outage and self._fallback:
            return self._fall_back(failure).read()
        self._end_outage(failure)
        raise failure

    def _parsed(self, values: list[Any]) -> State:
        try:
            return _state(values)
        except (TypeError, ValueError):
            shown = dict(zip(_FIELDS[:4], map(repr, values), strict=False))
            raise self._refused(
                f"key {self.config.key!r} holds a hash whose fields are not those of a "
                f"circuit ({shown}); delete it or give the circuit another name"
            ) from None

    def portable(self) -> RedisCircuitStore:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # No I/O when unpickled (in a worker during an outage, with fallback, it must
        # work): every operation checks the configuration fingerprint anyway.
        return (_rebuild_circuit_store, (self.config, self.kind, self.settings, self._last_state))

    def __repr__(self) -> str:
        return f"RedisCircuitStore({self.config.url!r}, name={self.config.name!r})"


def _rebuild_circuit_store(
    config: RedisStore, kind: str, settings: Settings, last_state: State
) -> RedisCircuitStore:
    return RedisCircuitStore(config, kind, settings, last_state=last_state, check=False)


def _raised_here(error: BaseException) -> bool:
    """Whether this module made ``error`` (a configuration mismatch, a refusal) rather
    than, say, a signal handler of the caller raised it. A refusal built but not raised yet
    has no traceback: it is ours too."""
    tb = error.__traceback__
    if tb is None:
        return isinstance(error, RedisStoreError)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename == _HERE


async def _trio_run(trio: Any, function: Callable[..., Any], *args: Any) -> Any:
    import inspect

    run_sync = trio.to_thread.run_sync
    # trio before 0.23 called it "cancellable".
    if "abandon_on_cancel" in inspect.signature(run_sync).parameters:
        return await run_sync(function, *args, abandon_on_cancel=True)
    return await run_sync(function, *args, cancellable=True)
