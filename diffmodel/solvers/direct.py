"""Direct backend: one sparse LDLᵀ factorization of the KKT matrix."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import SolverError
from ..diff import SINGULAR_TOL
from ..kkt import KKTFactorization, KKTMaps
from .base import (
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_NONCONVEX,
    STATUS_UNBOUNDED,
    RawSolution,
)

__all__ = ["DirectKKT", "factorize", "check_solution"]

#: A solve whose relative KKT residual exceeds this is not accepted.
SOLVE_TOL = 1e-9
#: A singular system K z = −f is inconsistent when |eᵀf| exceeds this times
#: ‖f‖ for a unit null vector e.
CONSISTENCY_TOL = 1e-8


def factorize(fact: KKTFactorization, kdata: NDArray[np.float64], *, need_inertia: bool) -> None:
    """Factor K and check that the QP is convex on its feasible set.

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


def check_solution(fact: KKTFactorization, z: NDArray[np.float64], f: NDArray[np.float64],
                   residual: float) -> SolverError | None:
    """None if z solves K z = −f; otherwise the error that explains why not.

    A nonsingular K always has a solution, so a large residual there means
    the system is too ill-conditioned to solve accurately. A singular K
    (redundant constraints, a flat objective direction) has a solution only
    if −f is orthogonal to null(K). With P ⪰ 0 every null vector (d, w) of K
    splits into (d, 0) with P d = 0, A d = 0 and (0, w) with Aᵀw = 0, so a null
    vector gives a certificate: bᵀw ≠ 0 proves the equalities inconsistent
    (infeasible), qᵀd ≠ 0 a feasible direction along which the objective
    decreases without bound (unbounded).
    """
    sigma = fact.sigma_min()
    if sigma >= SINGULAR_TOL:
        if residual <= SOLVE_TOL:
            return None
        return SolverError(
            f"the KKT system is too ill-conditioned to solve accurately (relative "
            f"residual {residual:.1e} after iterative refinement, estimated "
            f"smallest singular value {sigma:.1e} relative to the largest entry); "
            "rescale the problem data or remove nearly dependent constraints",
            STATUS_ERROR,
        )
    n = fact.maps.n
    e = fact.null_vector()
    d, w = e[:n], e[n:]
    q, b = f[:n], -f[n:]
    tol = CONSISTENCY_TOL * float(np.linalg.norm(f))
    if abs(float(b @ w)) > tol * max(float(np.linalg.norm(w)), 1e-300) and np.linalg.norm(w) > 0.1:
        return SolverError(
            "the equality constraints are inconsistent (infeasible): a combination "
            "of the constraint rows cancels on the left-hand side but not on the "
            "right-hand side",
            STATUS_INFEASIBLE,
        )
    if abs(float(q @ d)) > tol * max(float(np.linalg.norm(d)), 1e-300) and np.linalg.norm(d) > 0.1:
        return SolverError(
            "the problem is unbounded below: there is a feasible direction along "
            "which the quadratic term is flat and the linear term decreases",
            STATUS_UNBOUNDED,
        )
    if residual <= SOLVE_TOL:
        return None  # consistent: an optimal point, not unique (see derivatives)
    # The null vector mixes both parts: test consistency of the whole system.
    if abs(float(f @ e)) > tol:
        return SolverError(
            "the problem has no optimal solution: the KKT system is singular and "
            "inconsistent (infeasible constraints or an unbounded objective)",
            STATUS_INFEASIBLE if np.linalg.norm(w) >= np.linalg.norm(d) else STATUS_UNBOUNDED,
        )
    return SolverError(
        f"the KKT system is singular and could not be solved accurately (relative "
        f"residual {residual:.1e})",
        STATUS_ERROR,
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
        error = check_solution(fact, z, f, residual)
        if error is not None:
            raise error
        n = self.maps.n
        return RawSolution(z, fact.refine_steps, residual, True)
