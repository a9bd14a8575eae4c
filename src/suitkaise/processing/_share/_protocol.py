"""The Share's protocol: what a request and a reply are.

A request frame carries an id (chosen by the client, one counter per connection) and a
pickled tuple ``(op, *arguments)``; its reply frame carries the same id and a pickled tuple
``(status, *payload)``. The ids are in the frame header (``_wire``), so a reply can be
matched to its request without unpickling it. Codes are small ints, not enums, because they
are pickled on every call.

The coordinator applies an operation through an explicit table (``_coordinator``), and the
client reads every reply through one decoder (``_link``), so that unknown operations, stale
replies, interrupts and timeouts are handled in one place each.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "OP_NAMES",
    "STATUS_NAMES",
]

# -- operations (client -> coordinator) -------------------------------------------------------

PING: Final = 0  # () -> OK, pid
NAMES: Final = 1  # () -> OK, [names]
GET: Final = 2  # (name) -> VALUE blob | CIRCUIT kind settings slot | OBJECT type methods | MISSING
SET: Final = 3  # (name, blob) -> OK
SET_CIRCUIT: Final = 4  # (name, kind, settings, state, alias slot or -1) -> OK, slot
DELETE: Final = 5  # (name) -> OK | MISSING
CLEAR: Final = 6  # () -> OK
GETATTR: Final = 7  # (name, attribute) -> VALUE blob
SETATTR: Final = 8  # (name, attribute, blob) -> OK
CALL: Final = 9  # (name, method, blob of (args, kwargs)) -> VALUE blob | VIEW kind blob
INPLACE: Final = 10  # (name, method, blob) -> VALUE blob version | OBJECT
ITERATE: Final = 11  # (name) -> VALUE blob of a list: a snapshot to iterate over
STOP: Final = 12  # () -> OK, snapshot, {name: reason it could not be kept}
RESTORED: Final = 13  # () -> OK, {name: reason it could not be restored at start}

OP_NAMES: Final = {
    PING: "ping",
    NAMES: "names",
    GET: "get",
    SET: "set",
    SET_CIRCUIT: "set_circuit",
    DELETE: "delete",
    CLEAR: "clear",
    GETATTR: "getattr",
    SETATTR: "setattr",
    CALL: "call",
    INPLACE: "inplace",
    ITERATE: "iterate",
    STOP: "stop",
    RESTORED: "restored",
}

# -- reply statuses (coordinator -> client) ---------------------------------------------------

OK: Final = 0
VALUE: Final = 1  # a pickled value
CIRCUIT: Final = 2  # a circuit in shared memory: kind, settings, slot
OBJECT: Final = 3  # an object held at the coordinator: reached through a proxy
MISSING: Final = 4  # no such name
VIEW: Final = 5  # a mapping view (keys, values, items), sent as a list: rebuilt as a view
# From here on, a reply is a failure; the decoder raises.
GONE: Final = 6  # the name no longer holds a shared object (deleted or replaced)
RAISE: Final = 7  # the operation raised: a pickled exception, raised in the caller
ERROR: Final = 8  # the coordinator refused the request: a message (ShareError)

STATUS_NAMES: Final = {
    OK: "ok",
    VALUE: "value",
    CIRCUIT: "circuit",
    OBJECT: "object",
    MISSING: "missing",
    VIEW: "view",
    GONE: "gone",
    RAISE: "raise",
    ERROR: "error",
}
