"""What every backend returns, and the closed vocabulary of solver statuses."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from .._typing import FloatArray, IntArray
from ..compiled import ProblemData
from ..linalg import Factorization
from ..linalg.accuracy import exact_dot

__all__ = [
    "STATUS_ERROR",
    "STATUS_INACCURATE",
    "STATUS_INFEASIBLE",
    "STATUS_NONCONVEX",
    "STATUS_OPTIMAL",
    "STATUS_UNBOUNDED",
    "Backend",
    "RawSolution",
    "objective",
]

STATUS_OPTIMAL = "optimal"
STATUS_INFEASIBLE = "infeasible"
STATUS_UNBOUNDED = "unbounded"
STATUS_NONCONVEX = "nonconvex"
STATUS_INACCURATE = "inaccurate"
STATUS_ERROR = "solver_error"



_NONE: IntArray = np.zeros(0, dtype=np.int64)


class RawSolution(NamedTuple):
    """A verified optimal point of the compiled QP, as a backend returns it.

    Attributes
    ----------
    x : ndarray (n,)
        Primal solution (auxiliary variables included).
    y : ndarray (m_eq + m_ineq,)
        Multipliers of all rows of M = [A; G]: ν for the equalities, λ ≥ 0 for
        the inequalities (zero on inactive rows).
    rows : ndarray of int
        The rows of M in the KKT system of this point (all equalities, then
        the active inequalities), which ``factorization`` factors.
    factorization : Factorization or None
        The KKT factorization over ``rows`` at this point's data (None after
        unpickling: :class:`~diffmodel.point.Point` rebuilds it).
    backward_error : float
        Componentwise backward error of the point on the KKT system.
    accuracy : float
        Estimated relative forward error (inf when the point is not unique).
    unique : bool
        False when the KKT matrix is singular: the point is optimal but others
        are too, and no derivative exists.
    iterations : int
        Refinement steps (direct) or ADMM iterations (OSQP).
    objective : float
        ½xᵀPx + qᵀx at the point, without the constant r (see :func:`objective`).
    active : ndarray of int
        Inequality rows (indices among the inequalities) that are binding.
    weak : ndarray of int
        Binding inequality rows whose multiplier is zero to working accuracy
        (weakly active): the solution is not differentiable across them. They
        are in ``rows`` (treated as binding by reverse mode and Jacobians).
    dependent : ndarray of int
        Binding inequality rows left out of ``rows`` because they depend
        linearly on the others; their multipliers share the others' (minimum
        norm) and their derivatives are those of the rows kept.
    """

    x: FloatArray
    y: FloatArray
    rows: IntArray
    factorization: Factorization | None
    backward_error: float
    accuracy: float
    unique: bool
    iterations: int
    objective: float
    active: IntArray = _NONE
    weak: IntArray = _NONE
    dependent: IntArray = _NONE


#: Longest vector whose dot product is taken by BLAS (single-threaded at this size).
_DOT_MAX = 4096
_SUM = np.add.reduce


def objective(rhs: FloatArray, z: FloatArray) -> float:
    """½xᵀPx + qᵀx at a KKT point z of K z = rhs, rhs = (−q, c_R): −½ rhsᵀz.

    At a KKT point P x = −q − M_Rᵀy_R and M_R x = c_R, so ½xᵀPx + qᵀx =
    ½(qᵀx − c_Rᵀy_R): no product with P, and much less cancellation than the
    primal form. When the terms still cancel by more than six digits they are
    summed exactly (:func:`~diffmodel.linalg.accuracy.exact_dot`).
    """
    if rhs.shape[0] <= _DOT_MAX:
        v = -0.5 * float(rhs.dot(z))
        magnitude = float(np.abs(rhs).dot(np.abs(z)))
    else:  # NumPy's pairwise sums: a BLAS dot may spread a long vector over busy threads
        terms = rhs * z
        v = -0.5 * float(_SUM(terms))
        magnitude = float(_SUM(np.abs(terms)))
    if abs(v) < 1e-6 * 0.5 * magnitude:
        v = -0.5 * exact_dot(rhs, z)
    return v


class Backend(Protocol):
    """Solves the compiled QP for the numeric data of one θ.

    ``k_theta`` holds θ̃'s entries that P and M depend on (the key under
    which factorizations are reused).

    Raises
    ------
    SolverError
        With status ``infeasible``, ``unbounded``, ``nonconvex``,
        ``inaccurate`` or ``solver_error``.
    """

    name: str

    def solve(self, data: ProblemData, k_theta: FloatArray, *,
              start: IntArray | None = None) -> RawSolution:
        """``start``: inequality rows known to bind (from an earlier solve of the
        same data), tried first; equality-constrained backends ignore it."""
        ...
