"""OSQP backend: the ADMM solver, then polishing and verification on our KKT system.

The constraints are passed to OSQP as l ≤ M x ≤ u with l = u = b on the
equality rows. OSQP's dual y satisfies P x + q + Mᵀ y = 0, the same
convention as the KKT backend. OSQP is set up once per model and only its
numbers are updated between solves; each thread takes its own OSQP workspace
from a small pool, so no two solves share one.

OSQP's answer is never returned as it is: its point is refined with the
equilibrated KKT factorization (the polish of OSQP's paper, done with our
factorization) and must pass the same componentwise acceptance test as the
direct backend, or the solve raises.
"""

from __future__ import annotations

import threading

import numpy as np
import osqp
import scipy.sparse as sp

from .._typing import FloatArray
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

__all__ = ["OSQPBackend", "OSQP_SETTINGS", "STATUS_MAP"]


#: Settings for every OSQP solve (tight: the answer is refined and verified after).
OSQP_SETTINGS: dict[str, object] = {
    "eps_abs": 1e-9,
    "eps_rel": 1e-9,
    "eps_prim_inf": 1e-12,
    "eps_dual_inf": 1e-12,
    "polishing": True,
    "polish_refine_iter": 10,
    "max_iter": 200_000,
    "verbose": False,
}

_MEANING = {
    STATUS_INFEASIBLE: "the constraints are inconsistent (infeasible)",
    STATUS_UNBOUNDED: "the problem is unbounded below",
    STATUS_NONCONVEX: "the objective is not convex",
    STATUS_ERROR: "no accurate solution",
}

_S = osqp.SolverStatus
#: OSQP's statuses mapped to diffmodel's closed vocabulary (None: success).
STATUS_MAP: dict[object, str | None] = {
    _S.OSQP_SOLVED: None,
    _S.OSQP_SOLVED_INACCURATE: None,  # refined and verified below
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


class _Workspace:
    """One OSQP solver object and the K data it was last given."""

    def __init__(self) -> None:
        self.solver: osqp.OSQP | None = None
        self.P_data: FloatArray | None = None
        self.M_data: FloatArray | None = None


class OSQPBackend:
    """Solve with OSQP, then refine and verify on the KKT system."""

    name = "osqp"

    def __init__(self, problem: CompiledProblem, cache: KKTCache) -> None:
        self.problem = problem
        self.cache = cache
        self.rows = np.arange(problem.m_eq, dtype=np.int64)
        M = problem.M
        order = sp.csr_matrix((np.arange(M.nnz, dtype=np.float64), M.indices, M.indptr),
                              shape=M.shape).tocsc()
        self._csc_order = order.data.astype(np.int64)
        self._csc_indices, self._csc_indptr = order.indices, order.indptr
        self._pool: list[_Workspace] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_pool"] = []
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _matrices(self, data: ProblemData) -> tuple[sp.csc_matrix, sp.csc_matrix]:
        P = self.problem.P
        n = self.problem.n
        Pm = sp.csc_matrix((data.P_data, P.indices, P.indptr), shape=(n, n))
        Mm = sp.csc_matrix((data.M_data[self._csc_order], self._csc_indices, self._csc_indptr),
                           shape=self.problem.M.shape)
        return Pm, Mm

    def _run(self, ws: _Workspace, data: ProblemData) -> tuple[FloatArray, FloatArray, int]:
        m_eq = self.problem.m_eq
        upper = data.c
        lower = np.concatenate([upper[:m_eq], np.full(self.problem.m_ineq, -np.inf)])
        q = data.q
        if ws.solver is None:
            P, M = self._matrices(data)
            solver = osqp.OSQP()
            settings = {**OSQP_SETTINGS, "polishing": self.problem.layout.rows > 0}
            solver.setup(P, q, M, lower, upper, **settings)
            ws.solver = solver
        elif not (ws.P_data is not None and ws.M_data is not None
                  and np.array_equal(data.P_data, ws.P_data)
                  and np.array_equal(data.M_data, ws.M_data)):
            ws.solver.update(q=q, l=lower, u=upper, Px=data.P_data,
                             Ax=data.M_data[self._csc_order])
        else:
            ws.solver.update(q=q, l=lower, u=upper)
        ws.P_data, ws.M_data = data.P_data, data.M_data
        result = ws.solver.solve(raise_error=False)
        status = STATUS_MAP.get(result.info.status_val, STATUS_ERROR)
        if status is not None:
            raise SolverError(f"OSQP did not solve the problem: {_MEANING.get(status, status)} "
                              f"(OSQP status '{result.info.status}')", status)
        x = np.asarray(result.x, dtype=np.float64)
        y = np.asarray(result.y, dtype=np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise SolverError("OSQP returned a point that is not finite", STATUS_ERROR)
        return x, y, int(result.info.iter)

    def solve(self, data: ProblemData, k_values: FloatArray) -> RawSolution:
        problem, n = self.problem, self.problem.n
        fact = factor(self.cache, data, k_values, self.rows)
        with self._lock:
            ws = self._pool.pop() if self._pool else _Workspace()
        rhs = data.rhs
        try:
            x, y, iterations = self._run(ws, data)
        except (osqp.OSQPException, ValueError) as exc:
            raise SolverError(f"OSQP failed ({exc}); the problem may be nonconvex or too "
                              "ill-conditioned for OSQP: try solver='kkt'", STATUS_ERROR) from None
        except SolverError as exc:
            if exc.status not in (STATUS_INFEASIBLE, STATUS_UNBOUNDED):
                raise
            # Decide on the equilibrated KKT system, with a certificate verified
            # on the data (this raises, unless OSQP was wrong).
            z, omega, iterations, estimate = fact.solve(rhs)
        else:
            with self._lock:
                self._pool.append(ws)
            z, omega, _, estimate = fact.refine(np.concatenate([x, y]), rhs)
        accuracy, unique = accept(problem, data, fact, self.rows, omega, estimate)
        z.flags.writeable = False  # the point's x and y are views of it
        return RawSolution(z[:n], z[n:], self.rows, fact, omega, accuracy, unique, iterations,
                           objective(rhs, z))
