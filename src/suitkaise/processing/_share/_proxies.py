"""What reading ``share.name`` gives back.

- Immutable values (int, float, str, bytes, tuple, complex, frozenset) come back as a
  subclass of their own type that remembers where it came from. Otherwise they are the
  value: they compare, hash, format and compute exactly like it, and pickle as the plain
  value. ``bool`` and ``None`` come back plain.
- Other objects come back as a proxy: attribute reads and method calls run on the one
  shared copy, at the coordinator, and return the real result.

The in-place rule. ``share.n += 1`` is one statement that reads ``share.n``, applies ``+=``
and stores the result back into ``share.n``; it runs as one atomic operation at the
coordinator. Anything else is a local computation followed, maybe, by an assignment of the
whole value: ``t = share.n; t += 1; t += 2; share.n = t`` assigns ``t``. The value's ``+=``
tells the two apart by looking at the bytecode its caller is running (``_compat``): only
when the result goes straight into a ``STORE_ATTR`` of the same name does it return a value
carrying the pending operation, and the Share's ``__setattr__`` applies that operation only
when it is called by that very ``STORE_ATTR`` (same frame, same instruction).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..._compat import getframe, inplace_store

if TYPE_CHECKING:
    from ._link import Link

__all__ = ["INPLACE", "SharedObject", "pending_update", "wrap_value"]

INPLACE = (
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__ilshift__",
    "__irshift__",
    "__iand__",
    "__ixor__",
    "__ior__",
    "__imatmul__",
)


def _inplace_method(method: str) -> Callable[[Any, Any], Any]:
    # The plain operator (add for +=): on an immutable value, in-place is the same thing,
    # and the base type's method gives a plain value back.
    plain = method[3:-2]  # "__iadd__" -> "add"; "and", "or" are "and_", "or_" in operator
    operation = getattr(operator, plain, None) or getattr(operator, plain + "_")

    def apply(self: Any, other: Any) -> Any:
        # Computed here, like the plain value would be: `t = share.n; t += 1` leaves the
        # Share alone and gives a plain value.
        result = operation(self, other)
        if getframe is None:
            return result
        frame = getframe(1)
        target = inplace_store(frame)
        if target is None:
            return result
        origin = self._sk_origin
        cls = _VALUE_CLASSES.get(type(result))
        if target[0] != origin[1] or cls is None:
            return result
        # `obj.name op= other`: if obj is the Share, its __setattr__ applies the operation
        # atomically instead of storing this locally computed result.
        wrapped = cls(result)
        wrapped._sk_origin = origin
        wrapped._sk_pending = (method, other, id(frame), target[1])
        return wrapped

    apply.__name__ = method
    return apply


def _value_class(base: type) -> type:
    namespace: dict[str, Any] = {
        "__doc__": f"A {base.__name__} read from a Share (it is that value).",
        "__reduce__": lambda self: (base, (base(self),)),
        **{method: _inplace_method(method) for method in INPLACE},
    }
    return type(f"Shared{base.__name__.capitalize()}", (base,), namespace)


_VALUE_CLASSES: dict[type, type] = {
    base: _value_class(base) for base in (int, float, complex, str, bytes, tuple, frozenset)
}
_WRAPPED = frozenset(_VALUE_CLASSES.values())


def wrap_value(
    value: Any, link: Link, name: str, pending: tuple[Any, ...] | None = None
) -> Any:
    """``value`` as read from ``share.name``. ``pending``: the in-place operation that
    produced it and where its result is stored, ``(method, operand, frame id, offsets)``."""
    cls = _VALUE_CLASSES.get(type(value))
    if cls is None:
        return value
    wrapped = cls(value)
    wrapped._sk_origin = (link, name)
    wrapped._sk_pending = pending
    return wrapped


def pending_update(value: Any, link: Link, name: str, frame: Any) -> tuple[Any, ...] | None:
    """For ``share.name = value``, called from the ``STORE_ATTR`` running in ``frame``:
    ``(method, operand)`` if this is the store of ``share.name op= operand`` (apply the
    operation atomically), ``()`` if a proxy's ``op=`` already changed the shared object
    (nothing to do), ``None`` for an assignment of the whole value."""
    cls = type(value)
    if cls in _WRAPPED:
        pending = value._sk_pending
        if (
            pending is not None
            and frame is not None
            and id(frame) == pending[2]
            and frame.f_lasti in pending[3]
            and value._sk_origin[0] is link
            and value._sk_origin[1] == name
        ):
            update: tuple[Any, ...] = pending[:2]
            return update
    elif cls is SharedObject and value._sk_stored:
        origin = value._sk_origin
        if origin[0] is link and origin[1] == name:
            return ()
    return None


class _RemoteMethod:
    __slots__ = ("_link", "_method", "_name")

    def __init__(self, link: Link, name: str, method: str) -> None:
        self._link = link
        self._name = name
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._link.call(self._name, self._method, args, kwargs)

    def __repr__(self) -> str:
        return f"<shared method {self._name}.{self._method}>"


class SharedObject:
    """A proxy for an object held by a Share: everything it does runs on the shared copy,
    atomically, at the coordinator. Results come back as copies."""

    __slots__ = ("_sk_methods", "_sk_origin", "_sk_stored", "_sk_type")

    def __init__(self, link: Link, name: str, type_name: str, methods: frozenset[str]) -> None:
        object.__setattr__(self, "_sk_origin", (link, name))
        object.__setattr__(self, "_sk_type", type_name)
        object.__setattr__(self, "_sk_methods", methods)
        object.__setattr__(self, "_sk_stored", False)

    def _sk_call(self, method: str, *args: Any) -> Any:
        link, name = self._sk_origin
        return link.call(name, method, args, {})

    def __getattr__(self, attribute: str) -> Any:
        link, name = self._sk_origin
        if attribute in self._sk_methods:
            return _RemoteMethod(link, name, attribute)
        return link.get_attribute(name, attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        link, name = self._sk_origin
        link.set_attribute(name, attribute, value)

    def __repr__(self) -> str:
        _, name = self._sk_origin
        return f"<shared {self._sk_type} {name}: {self._sk_call('__repr__')}>"

    def __str__(self) -> str:
        return str(self._sk_call("__str__"))

    # The protocols Python looks up on the class: forwarded when the shared object has
    # them, and otherwise failing (or falling back) exactly as they would on it.

    def _sk_lacks(self, method: str) -> bool:
        return method not in self._sk_methods and bool(self._sk_methods)

    def __len__(self) -> int:
        if self._sk_lacks("__len__"):
            raise TypeError(f"object of type '{self._sk_type}' has no len()")
        return int(self._sk_call("__len__"))

    def __bool__(self) -> bool:
        if "__bool__" in self._sk_methods:
            return bool(self._sk_call("__bool__"))
        if "__len__" in self._sk_methods:
            return bool(self._sk_call("__len__"))
        return True

    def __iter__(self) -> Iterator[Any]:
        # Over a snapshot taken atomically at the coordinator.
        link, name = self._sk_origin
        return iter(link.iterate(name))

    def __contains__(self, item: Any) -> bool:
        if self._sk_lacks("__contains__"):
            return any(x is item or x == item for x in self)  # Python's own fallback
        return bool(self._sk_call("__contains__", item))

    def __getitem__(self, key: Any) -> Any:
        if self._sk_lacks("__getitem__"):
            raise TypeError(f"'{self._sk_type}' object is not subscriptable")
        return self._sk_call("__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._sk_lacks("__setitem__"):
            raise TypeError(f"'{self._sk_type}' object does not support item assignment")
        self._sk_call("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        if self._sk_lacks("__delitem__"):
            raise TypeError(f"'{self._sk_type}' object does not support item deletion")
        self._sk_call("__delitem__", key)

    def __eq__(self, other: object) -> bool:
        return bool(self._sk_call("__eq__", other))

    def __ne__(self, other: object) -> bool:
        return bool(self._sk_call("__ne__", other))

    __hash__ = None  # type: ignore[assignment]  # a shared mutable object

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._sk_lacks("__call__"):
            raise TypeError(f"'{self._sk_type}' object is not callable")
        link, name = self._sk_origin
        return link.call(name, "__call__", args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels as a handle: in another process (the coordinator's too) it is a proxy
        # for the same name. Rebuilt without asking the coordinator anything.
        link, name = self._sk_origin
        return (
            _rebuild_proxy,
            (link.share_handle(), name, self._sk_type, tuple(sorted(self._sk_methods))),
        )


def _rebuild_proxy(share: Any, name: str, type_name: str, methods: tuple[str, ...]) -> Any:
    return SharedObject(share._sk, name, type_name, frozenset(methods))


def _proxy_inplace(method: str) -> Callable[[SharedObject, Any], Any]:
    def apply(self: SharedObject, other: Any) -> Any:
        # A proxy is a live handle: `items += [x]` changes the shared object right away
        # (atomically), and the assignment Python then makes is a no-op.
        link, name = self._sk_origin
        link.inplace(name, method, other)
        done = SharedObject(link, name, self._sk_type, self._sk_methods)
        object.__setattr__(done, "_sk_stored", True)
        return done

    apply.__name__ = method
    return apply


for _method in INPLACE:
    setattr(SharedObject, _method, _proxy_inplace(_method))
