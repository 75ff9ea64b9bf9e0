"""Solver backends: each solves the canonical equality QP for numeric data.

A backend implements :class:`~diffmodel.solvers.base.Backend`. The direct KKT
backend (``"kkt"``, the default) factors the KKT matrix; the OSQP backend
(``"osqp"``) runs the ADMM solver with tight tolerances and polishing.
Derivatives are always taken through the KKT system at the returned solution.
"""

from __future__ import annotations

from .base import Backend, RawSolution, STATUS_OPTIMAL
from .direct import DirectKKT
from .osqp import OSQPBackend

__all__ = ["Backend", "RawSolution", "DirectKKT", "OSQPBackend", "make_backend",
           "STATUS_OPTIMAL", "SOLVERS"]

SOLVERS = ("kkt", "osqp")


def make_backend(name: str, maps: "KKTMaps") -> Backend:  # noqa: F821
    """Create the backend called ``name`` for the KKT maps of a model."""
    if name == "kkt":
        return DirectKKT(maps)
    if name == "osqp":
        return OSQPBackend(maps)
    from ..errors import ModelError

    raise ModelError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
