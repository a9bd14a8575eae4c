"""Share: objects (and circuits) shared by processes, with no infrastructure."""

from ._share import Share

__all__ = ["Share"]
