"""OSQP: the ADMM solver, set up once per model and given new numbers per solve.

:class:`OSQPRunner` passes the compiled problem to OSQP as l ≤ M x ≤ u, with
l = u = b on the equality rows and (−∞, h] on the inequality rows, so that
OSQP's dual y satisfies P x + q + Mᵀ y = 0 with y ≥ 0 on active inequality
rows: the same convention as diffmodel's. Each thread takes its own OSQP
workspace from a small pool, so no two solves share one; a workspace is set
up once and then only updated (and warm-started).

:class:`OSQPBackend` (``solver="osqp"`` for equality-constrained models)
never returns OSQP's answer as it is: the point is refined with the
equilibrated KKT factorization (the polish of OSQP's paper, done with
diffmodel's factorization) and must pass the same componentwise acceptance
test as the direct backend, or the solve raises. Inequality-constrained
models use OSQP through :mod:`~diffmodel.solvers.active_set`.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import osqp
import scipy.sparse as sp

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..errors import SolverError
from .base import (
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_NONCONVEX,
    STATUS_UNBOUNDED,
    RawSolution,
    objective,
)
from .cache import KKTCache
from .direct import factor
from .verify import accept

__all__ = ["OSQP_SETTINGS", "ROUGH_SETTINGS", "STATUS_MAP", "OSQPBackend", "OSQPResult", "OSQPRunner"]

#: Settings of every OSQP solve. Tight enough that the active set is
#: identified reliably; the point is refined and verified afterwards.
OSQP_SETTINGS: dict[str, object] = {
    "eps_abs": 1e-9,
    "eps_rel": 1e-9,
    "eps_prim_inf": 1e-10,
    "eps_dual_inf": 1e-10,
    # No polishing: the point is refined on diffmodel's own factorization
    # (and OSQP's polish prints to the terminal when it finds no active set).
    "polishing": False,
    "max_iter": 200_000,
    "verbose": False,
}
#: A first, rough OSQP solve (the active-set backend's, before the tight
#: one): on nearly linear objectives OSQP needs thousands of times more
#: iterations for 1e-9 than for 1e-6, and a guess of the active set
#: rarely needs the last digits (the point is polished and verified).
ROUGH_SETTINGS: dict[str, object] = {"eps_abs": 1e-6, "eps_rel": 1e-6, "max_iter": 4_000}
_TIGHT = {key: OSQP_SETTINGS[key] for key in ROUGH_SETTINGS}

_MEANING = {
    STATUS_INFEASIBLE: "the constraints are inconsistent (infeasible)",
    STATUS_UNBOUNDED: "the problem is unbounded below",
    STATUS_NONCONVEX: "the objective is not convex",
    STATUS_ERROR: "no accurate solution",
}

_S = osqp.SolverStatus
#: OSQP's statuses mapped to diffmodel's closed vocabulary (None: a point to refine).
STATUS_MAP: dict[object, str | None] = {
    _S.OSQP_SOLVED: None,
    _S.OSQP_SOLVED_INACCURATE: None,  # refined and verified afterwards
    _S.OSQP_PRIMAL_INFEASIBLE: STATUS_INFEASIBLE,
    _S.OSQP_PRIMAL_INFEASIBLE_INACCURATE: STATUS_INFEASIBLE,
    _S.OSQP_DUAL_INFEASIBLE: STATUS_UNBOUNDED,
    _S.OSQP_DUAL_INFEASIBLE_INACCURATE: STATUS_UNBOUNDED,
    _S.OSQP_MAX_ITER_REACHED: STATUS_ERROR,
    _S.OSQP_TIME_LIMIT_REACHED: STATUS_ERROR,
    _S.OSQP_NON_CVX: STATUS_NONCONVEX,
    _S.OSQP_SIGINT: STATUS_ERROR,
    _S.OSQP_UNSOLVED: STATUS_ERROR,
}


class OSQPResult(NamedTuple):
    """OSQP's answer: a point, or the status and certificate of a failure
    (with OSQP's last iterate, where finite, when it stopped short)."""

    status: str | None  # None: a point; otherwise a status of the closed vocabulary
    x: FloatArray  # empty for infeasible, unbounded, or a non-finite iterate
    y: FloatArray
    iterations: int
    certificate: FloatArray  # δy (infeasible) or δx (unbounded); empty otherwise
    message: str


class _Workspace:
    """One OSQP solver object, the K data it was last given, and whether its
    settings are the rough ones."""

    def __init__(self) -> None:
        self.solver: osqp.OSQP | None = None
        self.P_data: FloatArray | None = None
        self.M_data: FloatArray | None = None
        self.rough = False


class OSQPRunner:
    """Runs OSQP on the compiled problem; a pool of workspaces, one per concurrent solve."""

    def __init__(self, problem: CompiledProblem) -> None:
        self.problem = problem
        M = problem.M
        order = sp.csr_matrix((np.arange(M.nnz, dtype=np.float64), M.indices, M.indptr),
                              shape=M.shape).tocsc()
        self._csc_order = order.data.astype(np.int64)
        self._csc_indices, self._csc_indptr = order.indices, order.indptr
        self._pool: list[_Workspace] = []
        self._lock = threading.Lock()
        #: OSQP solves run so far.
        self.count = 0

    def __reduce__(self) -> tuple[type[OSQPRunner], tuple[CompiledProblem]]:
        return (OSQPRunner, (self.problem,))  # OSQP workspaces do not pickle

    def matrices(self, data: ProblemData) -> tuple[sp.csc_matrix, sp.csc_matrix]:
        """P's upper triangle and M, both by columns, at these data (as OSQP and
        Clarabel take them)."""
        P, n = self.problem.P, self.problem.n
        Pm = sp.csc_matrix((data.P_data, P.indices, P.indptr), shape=(n, n))
        Mm = sp.csc_matrix((data.M_data[self._csc_order], self._csc_indices, self._csc_indptr),
                           shape=self.problem.M.shape)
        return Pm, Mm

    def run(self, data: ProblemData, warm: tuple[FloatArray, FloatArray] | None = None,
            *, rough: bool = False) -> OSQPResult:
        """Solve with OSQP (warm-started from ``warm`` = (x, y) when given);
        ``rough``: to the tolerances of :data:`ROUGH_SETTINGS`, for a first
        guess of the active set.

        Raises
        ------
        SolverError
            If OSQP fails (an exception: not convex, or a numerical failure).
        """
        with self._lock:
            ws = self._pool.pop() if self._pool else _Workspace()
            self.count += 1
        try:
            result = self._run(ws, data, warm, rough)
        except (osqp.OSQPException, ValueError) as exc:
            raise SolverError(f"OSQP failed ({exc}): the objective may not be convex, or the "
                              "problem too ill-conditioned for OSQP", STATUS_ERROR) from None
        with self._lock:
            self._pool.append(ws)
        return result

    def _run(self, ws: _Workspace, data: ProblemData,
             warm: tuple[FloatArray, FloatArray] | None, rough: bool) -> OSQPResult:
        m_eq = self.problem.m_eq
        upper = np.asarray(data.c)
        lower = np.concatenate([upper[:m_eq], np.full(self.problem.m_ineq, -np.inf)])
        q = data.q
        if ws.solver is None:
            P, M = self.matrices(data)
            solver = osqp.OSQP()
            solver.setup(P, q, M, lower, upper, **OSQP_SETTINGS)
            ws.solver = solver
        elif not (ws.P_data is not None and ws.M_data is not None
                  and np.array_equal(data.P_data, ws.P_data)
                  and np.array_equal(data.M_data, ws.M_data)):
            ws.solver.update(q=q, l=lower, u=upper, Px=data.P_data,
                             Ax=data.M_data[self._csc_order])
        else:
            ws.solver.update(q=q, l=lower, u=upper)
        ws.P_data, ws.M_data = data.P_data, data.M_data
        if warm is not None:
            ws.solver.warm_start(x=warm[0], y=warm[1])
        if rough != ws.rough:
            ws.solver.update_settings(**(ROUGH_SETTINGS if rough else _TIGHT))
            ws.rough = rough
        result = ws.solver.solve(raise_error=False)
        status = STATUS_MAP.get(result.info.status_val, STATUS_ERROR)
        message = (f"OSQP did not solve the problem: {_MEANING.get(status or '', status)} "
                   f"(OSQP status '{result.info.status}')")
        empty = np.zeros(0)
        if status == STATUS_INFEASIBLE:
            return OSQPResult(status, empty, empty, int(result.info.iter),
                              np.asarray(result.prim_inf_cert, dtype=np.float64), message)
        if status == STATUS_UNBOUNDED:
            return OSQPResult(status, empty, empty, int(result.info.iter),
                              np.asarray(result.dual_inf_cert, dtype=np.float64), message)
        x = np.asarray(result.x, dtype=np.float64)
        y = np.asarray(result.y, dtype=np.float64)
        finite = x.shape[0] == self.problem.n and bool(np.all(np.isfinite(x))
                                                       and np.all(np.isfinite(y)))
        if status is not None:  # (its last iterate, if finite: it may still steer a start)
            return OSQPResult(status, x if finite else empty, y if finite else empty,
                              int(result.info.iter), empty, message)
        if not finite:
            return OSQPResult(STATUS_ERROR, empty, empty, int(result.info.iter), empty,
                              "OSQP returned a point that is not finite")
        return OSQPResult(None, x, y, int(result.info.iter), empty, "")


class OSQPBackend:
    """Equality-constrained QPs: solve with OSQP, then refine and verify on the KKT system."""

    name = "osqp"

    def __init__(self, problem: CompiledProblem, cache: KKTCache) -> None:
        self.problem = problem
        self.cache = cache
        self.rows = np.arange(problem.m_eq, dtype=np.int64)
        self.runner = OSQPRunner(problem)

    def solve(self, data: ProblemData, k_values: FloatArray, *,
              start: IntArray | None = None) -> RawSolution:
        problem, n = self.problem, self.problem.n
        fact = factor(self.cache, data, k_values, self.rows)
        rhs = data.rhs
        result = self.runner.run(data)
        if result.status in (STATUS_INFEASIBLE, STATUS_UNBOUNDED):
            # Decide on the equilibrated KKT system, with a certificate verified
            # on the data (this raises, unless OSQP was wrong).
            z, omega, iterations, estimate = fact.solve(rhs)
        elif result.status is not None:
            raise SolverError(result.message, result.status)
        else:
            iterations = result.iterations
            z, omega, _, estimate = fact.refine(np.concatenate([result.x, result.y]), rhs)
        accuracy, unique = accept(problem, data, fact, self.rows, omega, estimate)
        z.flags.writeable = False  # the point's x and y are views of it
        return RawSolution(z[:n], z[n:], self.rows, fact, omega, accuracy, unique, iterations,
                           objective(rhs, z))
