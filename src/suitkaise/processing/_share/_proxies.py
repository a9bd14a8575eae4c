"""What reading ``share.name`` gives back.

- Immutable values (int, float, str, bytes, tuple, complex, frozenset) come back as a
  subclass of their own type that remembers where it came from, so that
  ``share.counter += 1`` runs as one atomic operation at the coordinator instead of a read
  followed by a write. Otherwise they are the value: they compare, hash, format and compute
  exactly like it, and pickle as the plain value. ``bool`` and ``None`` come back plain.
- Other objects come back as a proxy: attribute reads and method calls run on the one
  shared copy, at the coordinator, and return the real result.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._share import _Link

__all__ = ["INPLACE", "SharedObject", "wrap_value"]

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
    operation = getattr(operator, method[2:-2])

    def apply(self: Any, other: Any) -> Any:
        # Computed here, like the plain value would: `x = share.n; x += 1` leaves the Share
        # alone. The result remembers the operation, so that `share.n += 1` (which assigns
        # it back to the same name) is applied atomically at the coordinator instead.
        link, name = self._sk_origin
        result = operation(self._sk_plain(), other)
        return wrap_value(result, link, name, pending=(method, other))

    apply.__name__ = method
    return apply


def _value_class(base: type) -> type:
    namespace: dict[str, Any] = {
        "__doc__": f"A {base.__name__} read from a Share (it is that value).",
        "__reduce__": lambda self: (base, (base(self),)),
        "_sk_plain": lambda self: base(self),
        **{method: _inplace_method(method) for method in INPLACE},
    }
    return type(f"Shared{base.__name__.capitalize()}", (base,), namespace)


_VALUE_CLASSES: dict[type, type] = {
    base: _value_class(base) for base in (int, float, complex, str, bytes, tuple, frozenset)
}


def wrap_value(
    value: Any, link: _Link, name: str, pending: tuple[str, Any] | None = None
) -> Any:
    """``value`` as read from ``share.name``. ``pending`` is the in-place operation that
    produced it (``("__iadd__", 1)``), to be applied if it is assigned back to that name."""
    cls = _VALUE_CLASSES.get(type(value))
    if cls is None:
        return value
    wrapped = cls(value)
    wrapped._sk_origin = (link, name)
    wrapped._sk_pending = pending
    return wrapped


def pending_update(value: Any, link: _Link, name: str) -> tuple[Any, ...] | None:
    """For ``share.name = value`` where ``value`` is the result of ``share.name op= x``:
    the operation still to apply, ``(method, x)``, or ``()`` if a proxy already applied it.
    ``None``: a plain assignment."""
    if type(value) in _VALUE_CLASSES.values():
        origin = value._sk_origin
        if origin[0] is link and origin[1] == name:
            pending: tuple[Any, ...] | None = value._sk_pending
            return pending
    elif isinstance(value, SharedObject) and value._sk_stored:
        origin = value._sk_origin
        if origin[0] is link and origin[1] == name:
            return ()
    return None


class _RemoteMethod:
    __slots__ = ("_link", "_method", "_name")

    def __init__(self, link: _Link, name: str, method: str) -> None:
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

    def __init__(self, link: _Link, name: str, type_name: str, methods: frozenset[str]) -> None:
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

    def __len__(self) -> int:
        return int(self._sk_call("__len__"))

    def __bool__(self) -> bool:
        if "__bool__" in self._sk_methods:
            return bool(self._sk_call("__bool__"))
        if "__len__" in self._sk_methods:
            return bool(self._sk_call("__len__"))
        return True

    def __iter__(self) -> Iterator[Any]:
        return iter(self._sk_call("__iter__"))

    def __contains__(self, item: Any) -> bool:
        return bool(self._sk_call("__contains__", item))

    def __getitem__(self, key: Any) -> Any:
        return self._sk_call("__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._sk_call("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._sk_call("__delitem__", key)

    def __eq__(self, other: object) -> bool:
        return bool(self._sk_call("__eq__", other))

    def __ne__(self, other: object) -> bool:
        return bool(self._sk_call("__ne__", other))

    __hash__ = None  # type: ignore[assignment]  # a shared mutable object

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        link, name = self._sk_origin
        return link.call(name, "__call__", args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels as a handle: in another process it is a proxy for the same object.
        link, name = self._sk_origin
        return (_proxy_from_share, (link.share_handle(), name))


def _proxy_from_share(share: Any, name: str) -> Any:
    return getattr(share, name)


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
