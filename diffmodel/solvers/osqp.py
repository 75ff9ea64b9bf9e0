"""OSQP backend: ADMM with tight tolerances and solution polishing.

The equality constraints A x = b are passed to OSQP as l = u = b. OSQP's dual
y satisfies P x + q + Aᵀ y = 0, the same convention as the KKT backend.
Derivatives are taken through the KKT system at OSQP's solution (the model
factors K lazily, on the first derivative request after a solve). When P
depends on parameters, K is factored before OSQP runs, to check convexity.
"""

from __future__ import annotations

import numpy as np
import osqp
import scipy.sparse as sp
from numpy.typing import NDArray

from ..errors import SolverError
from ..kkt import KKTFactorization, KKTMaps
from .direct import factorize
from .base import (
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_NONCONVEX,
    STATUS_UNBOUNDED,
    RawSolution,
)

__all__ = ["OSQPBackend", "OSQP_SETTINGS"]

#: Settings used for every OSQP solve (tight, since derivatives assume an exact optimum).
OSQP_SETTINGS = {
    "eps_abs": 1e-10,
    "eps_rel": 1e-10,
    "eps_prim_inf": 1e-12,
    "eps_dual_inf": 1e-12,
    "polishing": True,
    "polish_refine_iter": 10,
    "max_iter": 200_000,
    "verbose": False,
}

#: Largest relative KKT residual accepted from OSQP (after polishing).
KKT_TOL = 1e-7

_MEANING = {
    STATUS_INFEASIBLE: "the equality constraints are inconsistent (infeasible)",
    STATUS_UNBOUNDED: "the problem is unbounded below",
    STATUS_NONCONVEX: "the objective is not convex",
    STATUS_ERROR: "no accurate solution",
}

_S = osqp.SolverStatus
#: OSQP's statuses mapped to diffmodel's closed vocabulary (None: success).
STATUS_MAP: dict[object, str | None] = {
    _S.OSQP_SOLVED: None,
    _S.OSQP_SOLVED_INACCURATE: STATUS_ERROR,
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


class OSQPBackend:
    """Solve with OSQP; set up once, then update the numbers."""

    name = "osqp"

    def __init__(self, maps: KKTMaps) -> None:
        self.maps = maps
        n = maps.n
        rows, cols = maps.rows, maps.cols
        # P: the K pattern's columns < n hold exactly the upper triangle of P,
        # already in CSC order.
        self._p_pos = np.flatnonzero(cols < n)
        self._P_indptr = maps.indptr[: n + 1].copy()
        self._P_indices = rows[self._p_pos]
        # A: entries (row < n, col >= n) of K are Aᵀ, i.e. A[col - n, row]; K's
        # order is A's row-major order, so sort by (column of A, row of A).
        a_pos = np.flatnonzero(cols >= n)
        a_pos = a_pos[rows[a_pos] < n]
        a_i, a_j = cols[a_pos] - n, rows[a_pos]
        order = np.lexsort((a_i, a_j))
        self._a_pos = a_pos[order]
        self._A_indices = a_i[order]
        self._A_indptr = np.searchsorted(a_j[order], np.arange(n + 1)).astype(np.int64)
        self._solver: osqp.OSQP | None = None
        self._last_k: NDArray[np.float64] | None = None

    def solve(self, kdata: NDArray[np.float64], f: NDArray[np.float64],
              fact: KKTFactorization, k_changed: bool) -> RawSolution:
        n, m = self.maps.n, self.maps.m
        q = f[:n]
        b = -f[n:]
        Px = kdata[self._p_pos]
        Ax = kdata[self._a_pos]
        factored = False
        if k_changed and self.maps.P_theta.size:
            # P depends on θ: check convexity with the KKT factorization (which
            # derivatives need anyway) before OSQP sees a nonconvex problem.
            factorize(fact, kdata, need_inertia=True)
            factored = True
        try:
            if self._solver is None:
                P = sp.csc_matrix((Px, self._P_indices, self._P_indptr), shape=(n, n))
                A = sp.csc_matrix((Ax, self._A_indices, self._A_indptr), shape=(m, n))
                solver = osqp.OSQP()
                # Without constraints there is nothing to polish (and OSQP would say so).
                solver.setup(P, q, A, b, b, **{**OSQP_SETTINGS, "polishing": m > 0})
                self._solver = solver
            elif self._last_k is None or not np.array_equal(kdata, self._last_k):
                self._solver.update(q=q, l=b, u=b, Px=Px, Ax=Ax)
            else:
                self._solver.update(q=q, l=b, u=b)
            self._last_k = kdata
            result = self._solver.solve(raise_error=False)
        except (osqp.OSQPException, ValueError) as exc:
            self._reset()
            raise SolverError(
                f"OSQP could not factor its KKT matrix ({exc!r}): the quadratic objective "
                "is not positive semidefinite for these parameter values (not convex)",
                STATUS_NONCONVEX,
            ) from None
        status = STATUS_MAP.get(result.info.status_val, STATUS_ERROR)
        if status is not None:
            self._reset()
            raise SolverError(
                f"OSQP did not solve the problem: {_MEANING.get(status, status)} "
                f"(OSQP status '{result.info.status}')",
                status,
            )
        x = np.asarray(result.x, dtype=np.float64)
        nu = np.asarray(result.y, dtype=np.float64)
        # An independent check of the returned point on the exact KKT system
        # (OSQP keeps its old data if an update fails, and says nothing).
        z = np.concatenate([x, nu])
        res = self.maps.times(kdata, z) + f
        scale = float(np.abs(kdata).max(initial=0.0)) * float(np.abs(z).max(initial=0.0)) \
            + float(np.abs(f).max(initial=0.0))
        residual = float(np.abs(res).max(initial=0.0)) / scale if scale > 0 else 0.0
        if not residual <= KKT_TOL:
            self._reset()
            raise SolverError(
                f"OSQP returned a point that does not satisfy the KKT conditions "
                f"(relative residual {residual:.1e}); the problem may be nonconvex or "
                "too ill-conditioned for OSQP: try solver='kkt'",
                STATUS_ERROR,
            )
        return RawSolution(z, int(result.info.iter), residual, factored)

    def _reset(self) -> None:
        """Forget OSQP's state: after a failure its data may be stale."""
        self._solver = None
        self._last_k = None
