"""The search for an active set on the Schur complement of K₀.

K₀ is the KKT matrix over the equality rows alone, factored once. With
W = (K₀⁻¹ [Gᵀ; 0])ₓ, u = (K₀⁻¹ (−q, b))ₓ and C = G W, the point over a
trial set 𝒜 of inequality rows is x = u − W_𝒜 λ with C_𝒜𝒜 λ = G_𝒜 u − h_𝒜,
and every slack is h − G u + C_𝒜 λ: a primal-dual active-set step costs a
solve of order |𝒜|, not a factorization of K. The search only guesses; the
active-set backend factors K over its guess and verifies it
(:mod:`~diffmodel.solvers.active_set`).
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .._typing import FloatArray, IntArray
from ..compiled import ProblemData
from ..linalg import Factorization
from ..tolerances import ACTIVE_TOL

__all__ = ["Schur", "search"]


class Schur:
    """K₀⁻¹ applied to inequality rows, for the search on the Schur complement.

    Columns of W = (K₀⁻¹ [Gᵀ; 0])ₓ and of C = G W are formed when a row first
    enters a set (one kernel solve for the rows entering together), and kept
    for later sets and solves with the same K₀ and G. Filled under a lock;
    a column is read only once its flag is set, after it is written.
    """

    def __init__(self, fact: Factorization, M_data: FloatArray,
                 G: FloatArray | sp.csr_matrix, G_abs: FloatArray | sp.csr_matrix,
                 m_eq: int) -> None:
        self.fact, self.M_data, self.G, self.G_abs = fact, M_data, G, G_abs
        m, n = G.shape
        self._G_dense = G.toarray() if sp.issparse(G) else G
        self.G_norm = np.max(np.abs(self._G_dense), axis=1, initial=0.0)
        self.W = np.empty((n, m))
        self.C = np.empty((m, m))
        self._have = np.zeros(m, dtype=bool)
        self.rows = n + m_eq  # (of K₀)
        self._lock = threading.Lock()

    def columns(self, idx: IntArray) -> None:
        """Make sure the columns ``idx`` of W and C are formed."""
        if self._have[idx].all():
            return
        with self._lock:
            missing = idx[~self._have[idx]]
            if not missing.shape[0]:
                return
            n = self.W.shape[0]
            rhs = np.zeros((self.rows, missing.shape[0]))
            rhs[:n] = self._G_dense[missing].T
            W = self.fact.approximate(rhs)[:n]
            self.W[:, missing] = W
            self.C[:, missing] = np.asarray(self.G @ W)
            self._have[missing] = True


def search(schur: Schur, fact0: Factorization, data: ProblemData, active: IntArray,
           steps: int) -> IntArray | None:
    """Primal-dual active-set steps from ``active`` on the Schur complement of
    K₀ (factored as ``fact0``; ``schur`` holds its W and C columns): a guess
    of the active set, or None where the steps cycle or do not settle."""
    n = schur.W.shape[0]
    m = schur.W.shape[1]
    m_eq = schur.rows - n
    h = data.rhs[n + m_eq:]
    u = fact0.approximate(data.rhs[: n + m_eq])[:n]
    s0 = h - schur.G @ u
    q_size = float(np.max(np.abs(data.rhs[:n]), initial=0.0))
    in_set = np.zeros(m, dtype=bool)
    in_set[active] = True
    seen: set[bytes] = set()
    for _ in range(steps):
        key = in_set.tobytes()
        if key in seen:  # cycling
            return None
        seen.add(key)
        idx = np.flatnonzero(in_set)
        x, slack, lam = u, s0, np.zeros(0)
        if idx.shape[0]:
            schur.columns(idx)
            C_idx = schur.C[:, idx]
            # C_𝒜𝒜 is positive semidefinite (a projection of K₀⁻¹ onto rows
            # of G); singular when the rows depend: the polish sorts them out.
            _, lam, info = lapack.dposv(C_idx[idx], -s0[idx])
            if info != 0 or not np.all(np.isfinite(lam)):
                return idx
            x = u - schur.W[:, idx] @ lam
            slack = s0 + C_idx @ lam
        size = schur.G_abs @ np.abs(x) + np.abs(h)
        violated = ~in_set & (slack < -ACTIVE_TOL * size)
        # Multipliers are compared in the units of the gradient: λᵢ‖Gᵢ‖.
        force = lam * schur.G_norm[idx]
        scale = max(float(np.max(np.abs(force), initial=0.0)), q_size)
        negative = idx[force < -ACTIVE_TOL * scale]
        if not violated.any() and negative.shape[0] == 0:
            return idx
        in_set[negative] = False
        in_set |= violated
    return None
