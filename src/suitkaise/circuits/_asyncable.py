"""Methods that also offer an awaitable twin: ``obj.method(...)`` and
``await obj.method.asynced()(...)``.

On first access the descriptor asks its binder for a pair of plain closures bound to the
instance (sync and async) and caches the sync one, carrying ``asynced``, in the instance's
``__dict__``; the descriptor has no ``__set__``, so the cached entry wins from then on.
Calling a plain function from the instance dict is as cheap as a method call, and
``.asynced()`` only returns a closure built at the same time: nothing is built per call.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

__all__ = ["Asyncable", "AsyncableMethod"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Asyncable(Protocol[P, R_co]):
    """A bound operation: call it, or ``await op.asynced()(...)`` for the async twin."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def asynced(self) -> Callable[P, Coroutine[Any, Any, R_co]]:
        """The same operation as a coroutine function: same state change and result, but
        it waits with the running event loop's sleep instead of blocking the thread."""
        ...


Binder = Callable[[Any], tuple[Callable[P, R], Callable[P, Coroutine[Any, Any, R]]]]


class AsyncableMethod(Generic[P, R]):
    """Descriptor whose binder builds the instance's ``(sync, async)`` closures."""

    def __init__(self, bind: Binder[P, R], name: str, doc: str) -> None:
        self._bind = bind
        self._name = name
        self.__doc__ = doc

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> AsyncableMethod[P, R]: ...

    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> Asyncable[P, R]: ...

    def __get__(
        self, obj: object | None, owner: type[Any] | None = None
    ) -> AsyncableMethod[P, R] | Asyncable[P, R]:
        if obj is None:
            return self
        sync, async_ = self._bind(obj)

        def asynced() -> Callable[P, Coroutine[Any, Any, R]]:
            return async_

        for function in (sync, async_):
            function.__name__ = function.__qualname__ = self._name
            function.__doc__ = self.__doc__
        bound = cast(Asyncable[P, R], sync)
        bound.asynced = asynced  # type: ignore[method-assign]
        obj.__dict__[self._name] = bound
        return bound
