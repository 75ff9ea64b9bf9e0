"""Solver backends: each finds a verified optimal point of the compiled QP.

A backend implements :class:`~diffmodel.solvers.base.Backend`. The direct
KKT backend (``"kkt"``, the default) factors the KKT matrix; the OSQP
backend (``"osqp"``) runs the ADMM solver and then refines its answer on the
same factorization. Either way the point is accepted only on componentwise
evidence (:mod:`~diffmodel.solvers.verify`), and derivatives are taken
through the factorization of the point.
"""

from __future__ import annotations

from ..compiled import CompiledProblem
from ..errors import ModelError
from .active_set import ActiveSetBackend
from .base import STATUS_OPTIMAL, Backend, RawSolution
from .cache import KKTCache
from .direct import DirectKKT
from .osqp import OSQPBackend

__all__ = [
    "SOLVERS",
    "STATUS_OPTIMAL",
    "ActiveSetBackend",
    "Backend",
    "DirectKKT",
    "KKTCache",
    "OSQPBackend",
    "RawSolution",
    "check_solver",
    "make_backend",
]

SOLVERS = ("kkt", "osqp")


def check_solver(name: object) -> str:
    """The solver name, or a ModelError listing the valid ones."""
    if name not in SOLVERS:
        raise ModelError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    return str(name)


def make_backend(name: str, problem: CompiledProblem, cache: KKTCache) -> Backend:
    """Create the backend called ``name`` for a compiled problem.

    Problems with inequalities are solved by :class:`ActiveSetBackend` under
    either name (``"kkt"`` reuses the last active set first, ``"osqp"`` runs
    OSQP first).
    """
    check_solver(name)
    if problem.m_ineq:
        return ActiveSetBackend(problem, cache, name)
    if name == "kkt":
        return DirectKKT(problem, cache)
    return OSQPBackend(problem, cache)
