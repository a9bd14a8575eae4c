"""Methods that also offer an awaitable twin: ``obj.method(...)`` and
``await obj.method.asynced()(...)``.

On first access the descriptor asks its binder for a pair of plain closures bound to the
instance (sync and async) and caches the sync one, carrying ``asynced``, in the instance's
``__dict__``; the descriptor has no ``__set__``, so the cached entry wins from then on.
Calling a plain function from the instance dict is as cheap as a method call, and
``.asynced()`` only returns a closure built at the same time: nothing is built per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = ["AsyncableMethod"]

B = TypeVar("B")
"""The type of the bound operation: a Protocol with ``__call__`` and ``asynced()``."""


class AsyncableMethod(Generic[B]):
    """Descriptor whose binder builds an instance's ``(sync, async)`` closures."""

    def __init__(
        self,
        bind: Callable[[Any], tuple[Callable[..., Any], Callable[..., Any]]],
        name: str,
        doc: str,
    ) -> None:
        self._bind = bind
        self._name = name
        self.__doc__ = doc

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> AsyncableMethod[B]: ...

    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> B: ...

    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        sync, async_ = self._bind(obj)

        def asynced() -> Callable[..., Any]:
            return async_

        for function in (sync, async_):
            function.__name__ = function.__qualname__ = self._name
            function.__doc__ = self.__doc__
        sync.asynced = asynced  # type: ignore[attr-defined]
        obj.__dict__[self._name] = sync
        return sync
