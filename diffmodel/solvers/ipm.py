"""Clarabel, the interior-point solver CVXPY installs: a last guess of the active set.

OSQP is a first-order method: on a QP whose objective is flat along some
feasible directions and whose rows are scaled over many orders of
magnitude, it can run out of iterations without its iterate pointing at the
active set. An interior-point method converges on such problems in a few
dozen iterations whatever the scaling, so when OSQP's point leads nowhere,
the active-set backend asks Clarabel (a dependency of CVXPY, hence always
present with it) for one more point. As with OSQP's, the point only suggests
which rows bind: the answer is the active set verified on diffmodel's own
equilibrated KKT factorization, never Clarabel's numbers. Likewise where
OSQP's certificate of infeasibility or unboundedness does not hold on the
data: Clarabel's is checked the same way, or its point polished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray
from ..compiled import CompiledProblem, ProblemData

__all__ = ["ClarabelRunner", "ClarabelResult", "CLARABEL_SETTINGS"]

#: Clarabel's settings: tight, and silent. (Its answer is polished anyway.)
CLARABEL_SETTINGS: dict[str, object] = {
    "verbose": False,
    "tol_gap_abs": 1e-10,
    "tol_gap_rel": 1e-10,
    "tol_feas": 1e-10,
    "max_iter": 200,
}


class ClarabelRunner:
    """Solves the compiled problem with Clarabel: M x + s = c, s = 0 on the
    equality rows and s ≥ 0 on the inequality rows, so that its dual z
    satisfies P x + q + Mᵀ z = 0 with z ≥ 0 on the inequalities: the same
    convention as diffmodel's."""

    def __init__(self, problem: CompiledProblem,
                 matrices: Callable[[ProblemData], tuple[sp.csc_matrix, sp.csc_matrix]]
                 ) -> None:
        self.problem = problem
        #: P's upper triangle and M by columns at some data (OSQPRunner.matrices).
        self.matrices = matrices
        #: Clarabel solves run so far.
        self.count = 0
        self._lock = threading.Lock()

    def run(self, data: ProblemData) -> ClarabelResult | None:
        """Clarabel's answer at these data: a point (x, z), or a certificate of
        infeasibility (z) or unboundedness (x); None where Clarabel is not
        installed, fails, or ends with another status or non-finite numbers."""
        try:
            import clarabel
        except ImportError:  # pragma: no cover - CVXPY depends on it
            return None
        problem = self.problem
        with self._lock:
            self.count += 1
        P, M = self.matrices(data)
        cones: list[Any] = []
        if problem.m_eq:
            cones.append(clarabel.ZeroConeT(problem.m_eq))
        if problem.m_ineq:
            cones.append(clarabel.NonnegativeConeT(problem.m_ineq))
        settings = clarabel.DefaultSettings()
        for key, value in CLARABEL_SETTINGS.items():
            setattr(settings, key, value)
        try:
            solution = clarabel.DefaultSolver(P, np.asarray(data.q, dtype=np.float64), M,
                                              np.asarray(data.c, dtype=np.float64), cones,
                                              settings).solve()
        except Exception:  # noqa: BLE001 - a failed guess is no answer, not an error
            return None
        status = _STATUS.get(str(solution.status).rsplit(".", 1)[-1])
        x = np.asarray(solution.x, dtype=np.float64)
        z = np.asarray(solution.z, dtype=np.float64)
        if status is None or not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
            return None
        return ClarabelResult(status, x, z)


#: Clarabel's statuses that carry an answer: a point, or a certificate
#: (its "Almost" statuses: to looser tolerances; the answer is checked anyway).
_STATUS = {"Solved": "solved", "AlmostSolved": "solved",
           "PrimalInfeasible": "infeasible", "AlmostPrimalInfeasible": "infeasible",
           "DualInfeasible": "unbounded", "AlmostDualInfeasible": "unbounded"}


class ClarabelResult(NamedTuple):
    """Clarabel's answer: ``status`` ``"solved"`` with the point (x, z),
    ``"infeasible"`` with the certificate in z (weights of the rows), or
    ``"unbounded"`` with the direction in x."""

    status: str
    x: FloatArray
    z: FloatArray
