"""Linear algebra of the KKT system: equilibration, factorization, accuracy.

Nothing here knows about CVXPY, parameters or names: it works on the KKT
matrix of numeric QP data over a chosen set of constraint rows.
"""

from __future__ import annotations

from .factor import Factorization, Refined
from .kernels import SolverPool
from .kkt import KKTPattern
from .memory import held_bytes

__all__ = ["Factorization", "KKTPattern", "Refined", "SolverPool", "held_bytes"]
