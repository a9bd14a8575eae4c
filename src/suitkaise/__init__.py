"""suitkaise: coordinated failure handling for threads, asyncio, processes and machines.

>>> from suitkaise import Circuit, BreakingCircuit
"""

from .circuits import BreakingCircuit, Circuit

__version__ = "0.1.0"

__all__ = ["BreakingCircuit", "Circuit", "__version__"]
