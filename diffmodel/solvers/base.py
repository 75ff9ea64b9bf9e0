"""What every backend returns, and the closed vocabulary of solver statuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._typing import FloatArray, IntArray
from ..compiled import ProblemData
from ..linalg import Factorization

__all__ = ["Backend", "RawSolution", "STATUS_OPTIMAL", "STATUS_INFEASIBLE",
           "STATUS_UNBOUNDED", "STATUS_NONCONVEX", "STATUS_INACCURATE", "STATUS_ERROR"]

STATUS_OPTIMAL = "optimal"
STATUS_INFEASIBLE = "infeasible"
STATUS_UNBOUNDED = "unbounded"
STATUS_NONCONVEX = "nonconvex"
STATUS_INACCURATE = "inaccurate"
STATUS_ERROR = "solver_error"



@dataclass(frozen=True, eq=False)
class RawSolution:
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
    """

    x: FloatArray
    y: FloatArray
    rows: IntArray
    factorization: Factorization | None
    backward_error: float
    accuracy: float
    unique: bool
    iterations: int


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

    def solve(self, data: ProblemData, k_theta: FloatArray) -> RawSolution: ...
