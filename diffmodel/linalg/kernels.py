"""Kernels: the factorizations that apply (an approximation of) K̂⁻¹.

Each kernel factors the equilibrated K̂ once; :class:`~.factor.Factorization`
refines their solutions against the exact K̂. ``exact`` kernels solve K̂
itself (up to rounding); the regularized LDLᵀ solves K̂ + δ·diag(I, −I), and
its ``delta`` says by how much it differs.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Protocol

import numpy as np
import qdldl
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from .._typing import FloatArray
from ..tolerances import SINGULAR_COND
from .kkt import KKTPattern

__all__ = ["DenseEigen", "DenseLDL", "Kernel", "RegularizedLDL", "SolverPool", "SparseLU"]



class Kernel(Protocol):
    """Something that applies (an approximation of) K̂⁻¹."""

    exact: bool
    delta: float

    def solve(self, rhs: FloatArray) -> FloatArray: ...


class SolverPool:
    """Spare QDLDL solvers of one pattern, to reuse their symbolic analysis.

    A QDLDL solver holds the AMD ordering and elimination tree of its
    pattern; refactoring it (``update``) redoes only the numeric phase. A
    solver belongs to one :class:`Factorization` at a time: when that
    factorization is garbage collected, its solver comes back here, so that
    solutions never share mutable numeric state.
    """

    def __init__(self, limit: int = 4) -> None:
        self._spare: list[qdldl.Solver] = []
        self._lock = threading.Lock()
        self._limit = limit

    def take(self) -> qdldl.Solver | None:
        with self._lock:
            return self._spare.pop() if self._spare else None

    def give(self, solver: qdldl.Solver) -> None:
        with self._lock:
            if len(self._spare) < self._limit:
                self._spare.append(solver)


class RegularizedLDL:
    """QDLDL on the regularized K̂ + δ·diag(I, −I)."""

    exact = False

    def __init__(self, pattern: KKTPattern, upper: FloatArray, delta: float,
                 pool: SolverPool | None, *, overwrite: bool = False) -> None:
        self.delta = delta
        reg = upper if overwrite else upper.copy()
        diag = pattern.indptr[1:] - 1
        reg[diag[: pattern.n]] += delta
        reg[diag[pattern.n:]] -= delta
        matrix = pattern.upper(reg)
        solver = pool.take() if pool is not None else None
        try:
            if solver is not None:
                solver.update(matrix, upper=True)
            else:
                solver = qdldl.Solver(matrix, upper=True)
        except (RuntimeError, ValueError) as exc:
            raise ArithmeticError(str(exc)) from exc
        self.solver = solver
        self.solve = solver.solve
        self._matrix_nnz = int(matrix.nnz)
        if pool is not None:
            weakref.finalize(self, pool.give, solver)

    def c_bytes(self) -> int:
        """About the bytes QDLDL holds for this factorization: the permuted
        copy of K̂'s upper triangle and L (values and row indices, column
        pointers), D, D⁻¹, the permutation and workspaces of the dimension."""
        L = self.solver.factors()[0]
        return 12 * (int(L.nnz) + self._matrix_nnz) + 64 * int(L.shape[0])

    def inertia(self) -> tuple[int, int] | None:
        """(positive, negative) pivots of D, or None if a pivot is zero or not finite."""
        _, d, _ = self.solver.factors()
        if not np.all(np.isfinite(d)) or np.any(d == 0):
            return None
        return int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))


class SparseLU:
    """Exact sparse LU of K̂ with threshold partial pivoting (the fallback)."""

    exact = True
    delta = 0.0

    def __init__(self, matrix: sp.csc_matrix) -> None:
        self._lu = spla.splu(matrix, permc_spec="MMD_AT_PLUS_A",
                             options={"SymmetricMode": True})
        self._lock = threading.Lock()

    def solve(self, rhs: FloatArray) -> FloatArray:
        with self._lock:  # SuperLU's solve is not documented as re-entrant
            return self._lu.solve(rhs)


@functools.lru_cache(maxsize=64)
def _sytrf_workspace(size: int) -> int:
    """LAPACK's optimal workspace for ``dsytrf`` of order ``size``.

    SciPy's wrapper defaults to the minimal workspace, with which LAPACK falls
    back to its unblocked algorithm: 2–2.5× slower from order 300 on.
    """
    lwork, info = lapack.dsytrf_lwork(size, lower=0)
    return max(int(lwork), 1) if info == 0 else max(size, 1)


class DenseLDL:
    """LAPACK's Bunch–Kaufman LDLᵀ of a dense K̂ (blocked, with the optimal workspace)."""

    exact = True
    delta = 0.0

    def __init__(self, dense: FloatArray) -> None:
        ldu, ipiv, info = lapack.dsytrf(dense, lower=0,
                                        lwork=_sytrf_workspace(dense.shape[0]))
        self.ldu, self.ipiv = ldu, ipiv
        self.singular = info > 0

    def solve(self, rhs: FloatArray) -> FloatArray:
        x, _ = lapack.dsytrs(self.ldu, self.ipiv, rhs, lower=0)
        return np.asarray(x, dtype=np.float64)

    def inertia(self) -> tuple[int, int]:
        """Signs of D: 1×1 pivots by their sign, each 2×2 block one of each."""
        # A 2×2 block occupies two entries of ipiv, both negative; its
        # determinant is negative, so it adds one eigenvalue of each sign.
        one = self.ipiv > 0
        d = np.diag(self.ldu)[one]
        blocks = (self.ipiv.shape[0] - int(np.count_nonzero(one))) // 2
        return int(np.count_nonzero(d > 0)) + blocks, int(np.count_nonzero(d < 0)) + blocks

    def inverse_norm(self, anorm: float) -> float:
        rcond, _ = lapack.dsycon(self.ldu, self.ipiv, anorm, lower=0)
        return np.inf if rcond == 0 else 1.0 / (rcond * anorm)


class DenseEigen:
    """Eigendecomposition of a dense K̂ singular to working precision.

    Solves in the least-squares sense on the range of K̂ (minimum norm); the
    eigenvectors of the negligible eigenvalues span its null space.
    """

    exact = True
    delta = 0.0

    def __init__(self, dense: FloatArray) -> None:
        lam, V = np.linalg.eigh(dense)
        top = float(np.abs(lam).max(initial=0.0))
        keep = np.abs(lam) > top / SINGULAR_COND
        self.V = V
        self.inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
        self.null = V[:, ~keep]
        self.lam = lam
        self.keep = keep

    def solve(self, rhs: FloatArray) -> FloatArray:
        inv = self.inv if rhs.ndim == 1 else self.inv[:, None]
        return np.asarray(self.V @ (inv * (self.V.T @ rhs)), dtype=np.float64)

    def inertia(self) -> tuple[int, int]:
        return (int(np.count_nonzero(self.keep & (self.lam > 0))),
                int(np.count_nonzero(self.keep & (self.lam < 0))))
