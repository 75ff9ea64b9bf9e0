"""Direct backend: one sparse LDLᵀ factorization of the KKT matrix."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import SolverError
from ..kkt import KKTFactorization, KKTMaps
from .base import (
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_NONCONVEX,
    STATUS_UNBOUNDED,
    RawSolution,
)

__all__ = ["DirectKKT", "factorize", "diagnose"]

#: A solve whose relative KKT residual exceeds this is not accepted.
SOLVE_TOL = 1e-9
#: Above this relative residual the KKT system has no solution at all
#: (infeasible or unbounded); between SOLVE_TOL and this it is ill-conditioned.
INCONSISTENT_TOL = 1e-6


def factorize(fact: KKTFactorization, kdata: NDArray[np.float64], *, need_inertia: bool) -> None:
    """Factor K and check that the QP is strictly convex on its feasible set.

    Raises
    ------
    SolverError
        ``nonconvex`` if the factorization breaks down or the inertia of K is
        not (n, m): P is then not positive semidefinite (on the null space of
        A), so the problem is unbounded below or not convex.
    """
    maps = fact.maps
    try:
        fact.factor(kdata, need_inertia=need_inertia)
    except ArithmeticError:
        raise SolverError(
            "the KKT matrix could not be factored: the quadratic objective is not "
            "positive semidefinite for these parameter values (the problem is not convex)",
            STATUS_NONCONVEX,
        ) from None
    if fact.inertia is not None and fact.inertia != (maps.n, maps.m):
        pos, neg = fact.inertia
        raise SolverError(
            f"the objective is not convex on the feasible set for these parameter values: "
            f"the KKT matrix has {neg} negative eigenvalues where a convex QP has {maps.m} "
            f"(P has a direction of negative curvature in the null space of A)",
            STATUS_NONCONVEX,
        )


def diagnose(fact: KKTFactorization, z: NDArray[np.float64], f: NDArray[np.float64],
             residual: float) -> SolverError:
    """Explain why K z = -f has no solution: infeasible or unbounded.

    The refined regularized solves converge to a least-squares point of the
    inconsistent system: if its primal residual ‖Ax − b‖ stays large, the
    equality constraints are inconsistent; otherwise the objective decreases
    without bound along a direction in null(P) ∩ null(A). A small residual
    that refinement could not remove means K is too ill-conditioned.
    """
    if residual <= INCONSISTENT_TOL:
        return SolverError(
            f"the KKT system is too ill-conditioned to solve accurately (relative "
            f"residual {residual:.1e} after iterative refinement); rescale the "
            "problem data or remove nearly dependent constraints",
            STATUS_ERROR,
        )
    n = fact.maps.n
    Kz = fact.K @ z
    primal = np.abs(Kz[n:] + f[n:])  # A x - b
    b_scale = 1.0 + float(np.max(np.abs(f[n:]), initial=0.0))
    rp = float(np.max(primal, initial=0.0)) / b_scale
    if rp > 1e-6:
        worst = int(np.argmax(primal))
        return SolverError(
            f"the equality constraints are inconsistent (infeasible): the best "
            f"point leaves a residual of {rp:.2e} (relative) in row {worst}",
            STATUS_INFEASIBLE,
        )
    return SolverError(
        "the problem is unbounded below: the objective decreases along a "
        "direction that keeps the constraints satisfied (P is singular on the "
        f"null space of A; KKT residual {residual:.2e})",
        STATUS_UNBOUNDED,
    )


class DirectKKT:
    """Solve by factoring K (QDLDL with iterative refinement)."""

    name = "kkt"

    def __init__(self, maps: KKTMaps) -> None:
        self.maps = maps
        self._needs_inertia = maps.P_theta.size > 0

    def solve(self, kdata: NDArray[np.float64], f: NDArray[np.float64],
              fact: KKTFactorization, k_changed: bool) -> RawSolution:
        if k_changed:
            factorize(fact, kdata, need_inertia=self._needs_inertia or fact.count == 0)
        z, residual = fact.solve(-f)
        if not residual <= SOLVE_TOL:
            raise diagnose(fact, z, f, residual)
        n = self.maps.n
        return RawSolution(z[:n], z[n:], fact.refine_steps, residual, True)
