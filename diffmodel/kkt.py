"""The KKT system: parametric assembly and one reusable factorization.

For the canonical QP (see :mod:`diffmodel.canon`) the optimality conditions are

    K z = −f,   K = [[P, Aᵀ], [A, 0]],   f = (q, −b),   z = (x, ν),

with the Lagrangian L = ½ xᵀPx + qᵀx + r + νᵀ(Ax − b). This module stores the
upper triangle of K in a fixed compressed-column pattern, with the data of
that pattern and of f as sparse linear maps of θ̃ = (1, θ):

    k = Kmap θ̃,   f = Fmap θ̃,   r = rᵀθ̃,

each stored as a :class:`LinearMap` with its adjoint beside it.

:class:`KKTFactorization` factors K once per solve and is then reused by the
solve itself and by every forward and reverse derivative until the next solve.

Factorization. QDLDL (the LDLᵀ code inside OSQP) factors the quasi-definite
matrix K_δ = K + δ·diag(I, −I), which exists for any symmetric ordering when
P is positive semidefinite. Its solutions are corrected to solutions of the
exact K by iterative refinement, z ← z + K_δ⁻¹(rhs − K z) (the "polishing"
step of OSQP: Stellato et al., Math. Prog. Comp. 12, 2020, §4.2). The AMD
ordering and elimination tree are computed once; later factorizations with the
same pattern only redo the numeric phase. The signs of D give the inertia of
K_δ; it is (n, m) when P is positive semidefinite on the null space of A (up
to δ), i.e. when the QP is convex on its feasible set, and has more negative
entries when P has negative curvature there. Singularity of K itself (a
solution that is not unique) is detected separately, by :meth:`sigma_min`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import qdldl
import scipy.sparse as sp
from numpy.typing import NDArray

from .canon import ParametricQP

__all__ = ["KKTMaps", "KKTFactorization", "LinearMap", "build_maps"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Relative static regularization δ of the quasi-definite factorization.
REGULARIZATION = 1e-9
#: Maximum iterative refinement steps per solve.
MAX_REFINE = 8
#: Refinement stops when the residual is below this, relative to ‖K‖‖z‖ + ‖rhs‖.
REFINE_TOL = 1e-14


#: Maps with at most this many entries (rows × columns) are stored dense:
#: for small models a dense product is several times faster than a sparse one.
DENSE_LIMIT = 40_000


class LinearMap:
    """A constant linear map y = M x with its adjoint x̄ = Mᵀ ȳ beside it.

    Stored sparse (CSR for M and, built on first use, for Mᵀ), or dense when
    small, so that applying it costs as little as possible either way.
    """

    def __init__(self, M: sp.spmatrix) -> None:
        self.matrix = sp.csr_matrix(M)
        self.shape = self.matrix.shape
        self._dense = self.shape[0] * self.shape[1] <= DENSE_LIMIT
        self._fwd: FloatArray | sp.csr_matrix = (
            self.matrix.toarray() if self._dense else self.matrix
        )
        self._adj: FloatArray | sp.csr_matrix | None = None

    def apply(self, x: FloatArray) -> FloatArray:
        """M x."""
        return self._fwd @ x

    def apply_adjoint(self, y: FloatArray) -> FloatArray:
        """Mᵀ y."""
        if self._adj is None:
            self._adj = (np.ascontiguousarray(self._fwd.T) if self._dense
                         else self.matrix.T.tocsr())
        return self._adj @ y


@dataclass(frozen=True)
class KKTMaps:
    """Sparse maps θ̃ → data of K (upper-triangular CSC pattern), f and r.

    Attributes
    ----------
    n, m : int
        Primal and dual dimensions; K is (n + m) × (n + m).
    indptr, indices : ndarray
        Compressed-column pattern of the upper triangle of K, diagonal
        included for every row.
    K : LinearMap
        θ̃ → k, the data of that pattern (nnz(K) × (n_theta + 1)).
    F : LinearMap
        θ̃ → f = (q, −b) ((n + m) × (n_theta + 1)).
    r_index, r_value : ndarray
        The objective's constant term r = r_value · θ̃[r_index] (sparse).
    rows, cols : ndarray
        Row and column of each pattern entry.
    diag_pos : ndarray
        Position of the diagonal entry of each row in the pattern.
    dep : LinearMap
        θ̃ → the entries of k that depend on θ (the others are constant).
    dep_rows, dep_cols : ndarray
        Row and column of those entries; ``dep_diag`` lists the diagonal ones.
    K_theta : ndarray
        Indices of θ̃ that K depends on (never 0): if none of them change,
        the previous factorization is still valid.
    P_theta : ndarray
        Indices of θ̃ that the P block depends on.
    reg_sign : ndarray
        +1 on the primal and −1 on the dual diagonal (the regularization).
    """

    n: int
    m: int
    indptr: IntArray
    indices: IntArray
    K: LinearMap
    F: LinearMap
    r_index: IntArray
    r_value: FloatArray
    rows: IntArray
    cols: IntArray
    diag_pos: IntArray
    dep: LinearMap
    dep_rows: IntArray
    dep_cols: IntArray
    dep_diag: IntArray
    K_theta: IntArray
    P_theta: IntArray
    reg_sign: FloatArray

    @property
    def dim(self) -> int:
        return self.n + self.m

    def r(self, theta: FloatArray) -> FloatArray:
        """The objective's constant term r(θ̃) (a float, or one per column of θ̃)."""
        return self.r_value @ theta[self.r_index]

    def times(self, kdata: FloatArray, z: FloatArray) -> FloatArray:
        """K z for the symmetric K whose upper-triangular data is ``kdata``."""
        w = kdata.copy()
        w[self.diag_pos] *= 0.5  # the diagonal is counted twice below
        out = np.bincount(self.rows, w * z[self.cols], minlength=self.dim)
        out += np.bincount(self.cols, w * z[self.rows], minlength=self.dim)
        return out

    def dK_times(self, ddep: FloatArray, z: FloatArray) -> FloatArray:
        """(dK) z for a change ``ddep`` of the θ-dependent entries of K."""
        w = ddep.copy()
        w[self.dep_diag] *= 0.5
        out = np.bincount(self.dep_rows, w * z[self.dep_cols], minlength=self.dim)
        out += np.bincount(self.dep_cols, w * z[self.dep_rows], minlength=self.dim)
        return out

    def dK_adjoint(self, omega: FloatArray, z: FloatArray) -> FloatArray:
        """∂(ωᵀ K z)/∂k for the θ-dependent entries of K.

        For an upper-pattern entry (r, c): ω_r z_c + ω_c z_r if r ≠ c, else ω_r z_r.
        Works column by column for blocks ω, z of shape (n + m, B).
        """
        rows, cols = self.dep_rows, self.dep_cols
        h = omega[rows] * z[cols]
        h += omega[cols] * z[rows]
        h[self.dep_diag] *= 0.5
        return h


def _index_dtype(size: int) -> type:
    """The smallest integer type for indices below ``size`` (halves memory when it fits)."""
    return np.int32 if size < 2**31 - 1 else np.int64


def _unique_inverse(keys: IntArray) -> tuple[IntArray, IntArray]:
    """``np.unique(keys, return_inverse=True)`` with a 32-bit inverse when it fits.

    Written out to keep fewer 64-bit temporaries alive: this runs on every
    entry of K at compile time, where it sets the peak memory.
    """
    perm = np.argsort(keys, kind="stable")
    ordered = keys[perm]
    first = np.empty(ordered.shape[0], dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    unique = ordered[first]
    del ordered
    rank = np.cumsum(first, dtype=_index_dtype(unique.shape[0] + 1))
    rank -= 1
    del first
    inverse = np.empty(keys.shape[0], dtype=rank.dtype)
    inverse[perm] = rank
    return unique, inverse


def build_maps(qp: ParametricQP) -> KKTMaps:
    """Assemble the parametric KKT maps of a canonical QP."""
    n, m, N = qp.n, qp.m, qp.n + qp.m
    nt = qp.n_theta + 1
    diag = np.arange(N, dtype=np.int64)
    # Upper triangle of K: P (i <= j), Aᵀ at (j, n + i), explicit diagonal.
    # Keys in column-major (CSC) order, built in place in 64 bits.
    keys = np.concatenate([qp.P.j, n + qp.A.i, diag]).astype(np.int64)
    keys *= N
    keys += np.concatenate([qp.P.i, qp.A.j, diag])
    ps = np.concatenate([qp.P.p, qp.A.p, np.zeros(N, dtype=qp.P.p.dtype)])
    vals = np.concatenate([qp.P.val, qp.A.val, np.zeros(N)])
    ukeys, inverse = _unique_inverse(keys)
    del keys  # large inputs are freed as soon as they are used (peak memory)
    idx = _index_dtype(N)
    u_rows = (ukeys % N).astype(idx)
    u_cols = (ukeys // N).astype(idx)
    nnz = ukeys.shape[0]
    diag_pos = np.searchsorted(ukeys, diag * N + diag)
    del ukeys
    Kmap = sp.csr_matrix((vals, (inverse, ps)), shape=(nnz, nt))
    Kmap.sum_duplicates()
    Kmap.eliminate_zeros()
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.add.at(indptr, u_cols + 1, 1)
    indptr = np.cumsum(indptr)

    # Parameters K depends on, and the entries of K that depend on θ: only
    # these enter derivatives through dK.
    has_p = ps > 0
    K_theta = np.unique(ps[has_p])
    entry_P = np.zeros(ps.shape[0], dtype=bool)
    entry_P[: qp.P.p.shape[0]] = True
    P_theta = np.unique(ps[has_p & entry_P])
    del entry_P
    dep_pos = np.unique(inverse[has_p])
    Kdep = sp.csr_matrix(
        (vals[has_p], (np.searchsorted(dep_pos, inverse[has_p]), ps[has_p])),
        shape=(dep_pos.shape[0], nt),
    )
    Kdep.sum_duplicates()
    del vals, ps, inverse, has_p

    Fmap = sp.csr_matrix(
        (np.concatenate([qp.q.val, -qp.b.val]),
         (np.concatenate([qp.q.i, n + qp.b.i]), np.concatenate([qp.q.p, qp.b.p]))),
        shape=(N, nt),
    )
    Fmap.sum_duplicates()
    r_index, r_inverse = np.unique(qp.r.p, return_inverse=True)
    r_value = np.bincount(r_inverse, qp.r.val, minlength=r_index.shape[0])

    reg_sign = np.concatenate([np.ones(n), -np.ones(m)])
    return KKTMaps(
        n=n, m=m, indptr=indptr, indices=u_rows, K=LinearMap(Kmap), F=LinearMap(Fmap),
        r_index=r_index.astype(np.int64), r_value=r_value, rows=u_rows, cols=u_cols,
        diag_pos=diag_pos.astype(np.int64),
        dep=LinearMap(Kdep), dep_rows=u_rows[dep_pos], dep_cols=u_cols[dep_pos],
        dep_diag=np.flatnonzero(u_rows[dep_pos] == u_cols[dep_pos]),
        K_theta=K_theta.astype(np.int64), P_theta=P_theta.astype(np.int64),
        reg_sign=reg_sign,
    )


def _full_pattern(maps: KKTMaps) -> tuple[IntArray, IntArray, IntArray]:
    """CSR pattern of the full symmetric K and, per entry, its upper-pattern position.

    Built on the first factorization rather than with the maps, so that it
    does not add to the peak memory of compiling the model.
    """
    rows, cols = maps.rows, maps.cols
    nnz = rows.shape[0]
    src_dtype = _index_dtype(nnz)
    off = np.flatnonzero(rows != cols).astype(src_dtype)
    position = np.concatenate([np.arange(1, nnz + 1, dtype=src_dtype), off + 1])
    full = sp.csr_matrix(
        (position.astype(np.float32 if nnz < 2**24 else np.float64),
         (np.concatenate([rows, cols[off]]), np.concatenate([cols, rows[off]]))),
        shape=(maps.dim, maps.dim),
    )
    full.sort_indices()
    return full.indptr, full.indices, full.data.astype(src_dtype) - 1


class KKTFactorization:
    """One factorization of K, reused for the solve and every derivative.

    Parameters
    ----------
    maps : KKTMaps
        The pattern of K.

    Notes
    -----
    Call :meth:`factor` with new data k; then :meth:`solve` solves K z = rhs
    to working precision (quasi-definite LDLᵀ plus iterative refinement).
    Since K is symmetric, the same factorization serves the adjoint systems
    Kᵀ ω = g of reverse mode.
    """

    def __init__(self, maps: KKTMaps) -> None:
        self.maps = maps
        self._solver: qdldl.Solver | None = None
        self._K: sp.csr_matrix | FloatArray | None = None
        self._full: tuple[IntArray, IntArray, IntArray] | None = None
        self.inertia: tuple[int, int] | None = None
        self.refine_steps = 0
        self._sigma_min: float | None = None
        self._null: FloatArray = np.zeros(0)
        self.norm: float = 1.0
        self.delta: float = 0.0
        #: Number of numeric factorizations so far (the symbolic one happens once).
        self.count = 0

    @property
    def K(self) -> sp.csr_matrix | FloatArray:
        """The exact (unregularized) symmetric K of the last factorization
        (dense for small systems)."""
        if self._K is None:
            raise RuntimeError("KKT matrix not factored")
        return self._K

    def factor(self, kdata: FloatArray, *, need_inertia: bool) -> None:
        """Factor K for the data vector ``kdata`` (pattern of :class:`KKTMaps`).

        Raises
        ------
        ArithmeticError
            If the regularized matrix cannot be factored (a zero pivot: P is
            not positive semidefinite).
        """
        mp = self.maps
        self.norm = float(np.max(np.abs(kdata), initial=0.0)) or 1.0
        self.delta = REGULARIZATION * self.norm
        reg = kdata.copy()
        reg[mp.diag_pos] += self.delta * mp.reg_sign
        # The pattern arrays are shared, not copied; reg is freed after factoring.
        upper = sp.csc_matrix((reg, mp.indices, mp.indptr), shape=(mp.dim, mp.dim))
        try:
            if self._solver is None:
                self._solver = qdldl.Solver(upper, upper=True)
            else:
                self._solver.update(upper, upper=True)
        except (RuntimeError, ValueError) as exc:
            self._solver = None
            raise ArithmeticError(str(exc)) from exc
        self.count += 1
        if self._full is None:
            self._full = _full_pattern(mp)
        indptr, indices, src = self._full
        K = sp.csr_matrix((kdata[src], indices, indptr), shape=(mp.dim, mp.dim))
        self._K = K.toarray() if mp.dim * mp.dim <= DENSE_LIMIT else K
        self._sigma_min = None
        self.inertia = None
        if need_inertia:
            _, d, _ = self._solver.factors()
            self.inertia = (int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0)))

    def solve(self, rhs: FloatArray) -> tuple[FloatArray, float]:
        """Solve K z = rhs; return z and the final relative residual.

        One triangular solve pair with the regularized factor, then iterative
        refinement against the exact K until the residual stops decreasing.
        """
        solver = self._solver
        if solver is None or self._K is None:
            raise RuntimeError("KKT matrix not factored")
        K = self._K
        z = solver.solve(rhs)
        if z.shape[0] == 0:
            return z, 0.0
        scale = float(self.norm * np.abs(z).max() + np.abs(rhs).max())
        if scale == 0.0:
            return z, 0.0
        res = rhs - K @ z
        err = float(np.abs(res).max()) / scale
        steps = 0
        while err > REFINE_TOL and steps < MAX_REFINE:
            z_new = z + solver.solve(res)
            res_new = rhs - K @ z_new
            err_new = float(np.abs(res_new).max()) / scale
            steps += 1
            if not err_new < err:
                break
            z, res, err = z_new, res_new, err_new
            if err_new > 0.5 * err and steps > 2:
                break
        self.refine_steps = steps
        return z, err

    def solve_many(self, rhs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Solve K Z = RHS for a block of right-hand sides (shape (n + m, k)).

        Each column is one refined solve (:meth:`solve`) with the same
        factorization. (Blocked residual products were measured slower than
        this on the benchmark problems: strided column access costs more
        than the sparse products save.)

        Returns
        -------
        Z : ndarray of shape (n + m, k)
        residuals : ndarray of shape (k,)
            Final relative residual of each column.
        """
        k = rhs.shape[1]
        Zt = np.empty((k, rhs.shape[0]))
        residuals = np.empty(k)
        columns = np.ascontiguousarray(rhs.T)  # one transposition, then contiguous rows
        for j in range(k):
            Zt[j], residuals[j] = self.solve(columns[j])
        return Zt.T, residuals

    def sigma_min(self) -> float:
        """Estimate of the smallest singular value of K, relative to max |K_ij|.

        Two steps of inverse iteration with the regularized factor, from a
        fixed pseudo-random vector, then the Rayleigh-type ratio ‖K v‖ / ‖v‖.
        For a singular K the regularized inverse amplifies a null direction
        by about 1/δ per step, so the estimate falls far below δ; for a
        nonsingular K it is an upper bound on σ_min that is tight for a
        generic start vector. Costs two solves, once per factorization.
        """
        if self._sigma_min is None:
            solver = self._solver
            if solver is None or self._K is None:
                raise RuntimeError("KKT matrix not factored")
            w = np.random.default_rng(12345).standard_normal(self.maps.dim)
            v = solver.solve(w)
            v2 = solver.solve(v / np.linalg.norm(v))
            nv = float(np.linalg.norm(v2))
            est = float(np.linalg.norm(self._K @ v2)) / nv if nv > 0 else 0.0
            self._sigma_min = est / self.norm
            self._null = v2 / nv if nv > 0 else v2
        return self._sigma_min

    def null_vector(self) -> FloatArray:
        """The unit vector of the last :meth:`sigma_min` estimate.

        When K is singular it approximates a (random) vector of null(K).
        """
        self.sigma_min()
        return self._null
