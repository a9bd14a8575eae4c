"""Every private or undocumented CPython interface suitkaise relies on, in one place.

Each entry says what it is, why it is needed and on which versions it was checked, and is
gated on ``sys.version_info``: the supported versions (3.10-3.13) use it as verified, and a
newer interpreter takes the same path only where the interface is still there and behaves
the same (checked at import), or falls back to a documented behaviour that is never wrong,
only less capable. Nothing else in the package may touch a private CPython name.

What lives here:

- ``getframe``: ``sys._getframe`` (a CPython implementation detail), so that a value read
  from a Share can tell ``share.n += 1`` (one atomic operation) from ``t = share.n;
  t += 1; share.n = t`` (an assignment of the whole value). See :func:`inplace_store`.
- :func:`inplace_store`: reads the caller's bytecode at ``frame.f_lasti`` (what follows an
  in-place operator differs between 3.10 and 3.11+).
- ``deliver_challenge`` / ``answer_challenge`` and a ``Connection`` built on a raw file
  descriptor, from ``multiprocessing.connection`` (present since 3.3, not in the docs): the
  Share's HMAC handshake, which keeps it compatible with ``multiprocessing.connection``'s
  own ``Client``/``Listener``.
- :class:`PatientConnection`: that ``Connection`` with its private ``_recv`` replaced, so a
  handshake can wait in bounded slices and give up on a frozen peer.
"""

from __future__ import annotations

import dis
import io
import os
import sys
from collections.abc import Callable
from multiprocessing import connection as _mp_connection
from types import CodeType, FrameType

__all__ = [
    "VERSION",
    "Connection",
    "PatientConnection",
    "answer_challenge",
    "deliver_challenge",
    "getframe",
    "inplace_store",
]

VERSION = sys.version_info[:2]
"""The running interpreter's (major, minor)."""

# -- frames ----------------------------------------------------------------------------------

getframe: Callable[[int], FrameType] | None = getattr(sys, "_getframe", None)
"""``sys._getframe`` (CPython; ``None`` elsewhere: in-place operators are then assigned
whole, never applied twice or lost). ``getframe(1)`` is the caller of the function that
calls it."""

# -- bytecode: is an in-place result stored straight back into an attribute? ------------------

# What sits between an in-place operator and the STORE_ATTR of `obj.name op= x`:
# 3.10 compiles `DUP_TOP; LOAD_ATTR name; <x>; INPLACE_<OP>; ROT_TWO; STORE_ATTR name`,
# 3.11-3.13 compile `COPY 1; LOAD_ATTR name; <x>; BINARY_OP <op>=; SWAP 2; STORE_ATTR name`.
# EXTENDED_ARG may precede the STORE_ATTR when the code object has more than 256 names.
if VERSION <= (3, 10):
    _EXCHANGE = frozenset({"ROT_TWO"})
elif VERSION <= (3, 13):
    _EXCHANGE = frozenset({"SWAP"})
else:  # not verified: accept either shape, and still require the exact sequence
    _EXCHANGE = frozenset({"ROT_TWO", "SWAP"})


def _is_inplace(instruction: dis.Instruction) -> bool:
    if instruction.opname.startswith("INPLACE_"):  # 3.10
        return True
    # 3.11+: BINARY_OP whose argument is one of the NB_INPLACE_* codes ("+=", "<<=", ...)
    return instruction.opname == "BINARY_OP" and instruction.argrepr.endswith("=")


def _analyse(code: CodeType, lasti: int) -> tuple[str, frozenset[int]] | None:
    instructions = list(dis.get_instructions(code))
    index = next((i for i, ins in enumerate(instructions) if ins.offset == lasti), None)
    if index is None or not _is_inplace(instructions[index]):
        return None
    rest = instructions[index + 1 : index + 6]
    position = 0
    while position < len(rest) and rest[position].opname == "EXTENDED_ARG":
        position += 1
    if position >= len(rest) or rest[position].opname not in _EXCHANGE:
        return None
    if rest[position].opname == "SWAP" and rest[position].arg != 2:
        return None
    position += 1
    offsets = set()
    while position < len(rest) and rest[position].opname == "EXTENDED_ARG":
        offsets.add(rest[position].offset)
        position += 1
    if position >= len(rest) or rest[position].opname != "STORE_ATTR":
        return None
    store = rest[position]
    offsets.add(store.offset)
    return str(store.argval), frozenset(offsets)


_CACHE_LIMIT = 4096
# (id(code), lasti) -> (code, answer); the code object is kept so that its id is not reused
# while the entry exists.
_analysed: dict[tuple[int, int], tuple[CodeType, tuple[str, frozenset[int]] | None]] = {}


def inplace_store(frame: FrameType) -> tuple[str, frozenset[int]] | None:
    """If ``frame`` is executing an in-place operator whose result goes straight into a
    ``STORE_ATTR`` (``obj.name op= x``): ``(name, offsets)``, where ``offsets`` are the
    values ``frame.f_lasti`` takes while that store runs. ``None`` otherwise (the result
    goes into a local, a subscript, a call, ...).

    Decoded once per call site (cached), so a loop pays a dictionary lookup.
    """
    code = frame.f_code
    lasti = frame.f_lasti
    key = (id(code), lasti)
    found = _analysed.get(key)
    if found is not None and found[0] is code:
        return found[1]
    answer = _analyse(code, lasti)
    if len(_analysed) >= _CACHE_LIMIT:
        _analysed.clear()
    _analysed[key] = (code, answer)
    return answer


# -- multiprocessing.connection's handshake ----------------------------------------------------

Connection = _mp_connection.Connection
"""``multiprocessing.connection.Connection``; ``Connection(fd)`` (a raw descriptor it then
owns) is undocumented but unchanged since 3.3."""

deliver_challenge: Callable[..., None] = _mp_connection.deliver_challenge
"""``deliver_challenge(connection, authkey)``: challenge the peer, refuse a wrong answer
(``AuthenticationError``). 3.12 added an optional digest; the call stays the same."""

answer_challenge: Callable[..., None] = _mp_connection.answer_challenge
"""``answer_challenge(connection, authkey)``: prove the key to the peer."""


class PatientConnection(Connection):
    """A ``Connection`` over a socket whose reads time out (``SO_RCVTIMEO``): each time a
    read waits that long with nothing, ``on_idle()`` is called, which raises to give up or
    returns to keep waiting. Used for the client's side of the handshake, so that a frozen
    coordinator is noticed instead of waited for.

    Replaces ``Connection._recv(size, read=os.read) -> io.BytesIO`` (private; the same
    signature and result on 3.10-3.13).
    """

    on_idle: Callable[[], None]

    def _recv(self, size: int, read: Callable[[int, int], bytes] = os.read) -> io.BytesIO:
        buffer = io.BytesIO()
        handle: int = self._handle  # type: ignore[attr-defined]
        remaining = size
        while remaining > 0:
            try:
                chunk = read(handle, remaining)
            except BlockingIOError:
                self.on_idle()
                continue
            if not chunk:
                if remaining == size:
                    raise EOFError
                raise EOFError("end of stream in the middle of a message")
            buffer.write(chunk)
            remaining -= len(chunk)
        return buffer


if not hasattr(Connection, "_recv"):  # fail at import, not in the middle of a handshake
    raise ImportError(
        "suitkaise needs multiprocessing.connection.Connection._recv, which Python "
        f"{VERSION[0]}.{VERSION[1]} does not have"
    )
