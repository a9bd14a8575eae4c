"""Circuits: count failures, back off with jitter, and coordinate workers.

``Circuit`` trips after N failures, sleeps (with exponential backoff and jitter) and
resets itself. ``BreakingCircuit`` breaks after N failures and stays broken until
``reset()``. Both are thread-safe, offer ``.asynced()`` twins of ``short`` and ``trip``,
and keep their state in a store: in-process by default, or shared (Share, Redis).
"""

from ._circuit import BreakingCircuit, Circuit
from ._settings import Settings
from ._stores import CircuitStore, StoreFactory

__all__ = ["BreakingCircuit", "Circuit", "CircuitStore", "Settings", "StoreFactory"]
