"""One verified factorization of the equilibrated KKT matrix.

:class:`Factorization` equilibrates K (:mod:`.scaling`), factors K̂ = S K S
once, and then solves K z = r for any number of right-hand sides — the
solve itself, every forward and every reverse derivative — to a verified
componentwise backward error (:mod:`.accuracy`). It is never modified in a
way a caller can see after construction, and its solves may run from
several threads at once.

How K̂ is solved (:mod:`.kernels`):

- **dense** (small systems): LAPACK's Bunch–Kaufman LDLᵀ, exact and stable
  for symmetric indefinite matrices, with the inertia read off D and the
  condition number from ``dsycon``; if K̂ is singular to working precision,
  its eigendecomposition (a minimum-norm solve, and the null space);
- **sparse**: a ladder of kernels, each tried only when the one before it
  cannot reach working accuracy. First QDLDL's LDLᵀ of the quasi-definite
  K̂ + δ·diag(I, −I) with the AMD ordering (the factorization inside OSQP),
  with iterative refinement against the exact K̂ (Stellato et al., Math.
  Prog. Comp. 12, 2020, §4.2); refinement contracts by about δ‖K̂⁻¹‖, so when
  it stalls the same LDLᵀ is redone with a δ 10⁴ times smaller, and last
  SciPy's SuperLU of K̂ itself. Equilibration makes δ meaningful: it is
  relative to a matrix whose rows have largest entry ≈ 1.

The refinement result, not an iteration count, decides: a solve reports its
backward error ω and an estimate of its forward error; the caller accepts
or refuses it. For ill-conditioned K̂ the refinement continues with exact
residuals (:class:`~.accuracy.ExactResidual`) and the error estimate comes
from the size of the last correction (LAPACK's ``xGERFSX``).
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray
from ..tolerances import (
    DENSE_LARGE_MAX_DIM,
    DENSE_LARGE_MIN_DENSITY,
    DENSE_MAX_DIM,
    DENSE_MIN_DENSITY,
    EPS,
    EXTRA_TRIGGER,
    MAX_REFINE,
    NULL_ITERATIONS,
    REFINE_GOAL,
    REFINE_STALL,
    REFINE_TARGET,
    REGULARIZATION,
    SINGULAR_COND,
)
from .accuracy import (
    EXTENDED,
    ExactResidual,
    ExtendedResidual,
    backward_error,
    backward_errors,
    inverse_norm_estimate,
)
from .kernels import DenseEigen, DenseLDL, Kernel, RegularizedLDL, SolverPool, SparseLU
from .kkt import KKTPattern
from .memory import held_bytes
from .scaling import ruiz, ruiz_dense

__all__ = ["Factorization", "Refined", "SolverPool"]


#: Each rung of the sparse ladder divides δ by this.
_DELTA_STEP = 1e-4
#: Regularized rungs before the exact LU.
_LDL_RUNGS = 2
#: Largest dimension for which the fast path keeps K⁻¹ explicitly.
_FAST_MAX_DIM = 200
#: Up to this dimension K⁻¹ is formed with every fast-path factorization;
#: above it, only with those expected to be reused (``reused``).
_FAST_EAGER_DIM = 32
_MAX = np.maximum.reduce
#: Backward error at which the fast path accepts a solve without refining.
_FAST_TARGET = 16 * EPS
#: Refinement measures the componentwise backward error once the normwise
#: residual (relative to ‖K̂‖‖ẑ‖ + ‖r̂‖) is below this.
_NORMWISE_GATE = 16 * EPS
#: Extra-precise refinement stops at this estimated forward error (it
#: starts above :data:`~diffmodel.tolerances.EXTRA_TRIGGER`).
_EXTRA_GOAL = 1e-14


class Refined(NamedTuple):
    """A refined solve: the solution, its componentwise backward error, the
    refinement steps taken, and its estimated relative forward error."""

    z: FloatArray
    omega: float
    steps: int
    accuracy: float


def use_dense(dim: int, nnz: int) -> bool:
    """Whether a KKT matrix of order ``dim`` with ``nnz`` stored upper entries
    is factored densely (small, or dense enough)."""
    if dim <= 64:
        return True
    filled = 2 * nnz  # (both triangles, roughly)
    return ((dim <= DENSE_MAX_DIM and filled >= DENSE_MIN_DENSITY * dim * dim)
            or (dim <= DENSE_LARGE_MAX_DIM and filled >= DENSE_LARGE_MIN_DENSITY * dim * dim))


def same_columns(block: FloatArray) -> bool:
    """Whether every column of a 2-D block equals the first (e.g. a loss
    gradient shared by a batch); the last column is compared first."""
    return block.shape[1] <= 1 or (np.array_equal(block[:, -1], block[:, 0])
                                   and bool(np.all(block == block[:, :1])))


class Factorization:
    """A factorization of the equilibrated KKT matrix, verified on every solve.

    Parameters
    ----------
    pattern : KKTPattern
        The structure of K.
    data : ndarray
        K's upper-triangular data in the user's units (``pattern.assemble``).
    need_inertia : bool
        Compute the inertia of K̂ (a convexity check) even on the sparse path,
        where it costs a copy of the factor.
    pool : SolverPool, optional
        Spare solvers of this pattern whose symbolic analysis can be reused.
    reused : bool, default True
        Whether this K is expected to serve many solves (K does not depend on
        the parameters): only then does a dense K of more than a few dozen
        rows get its explicit inverse for the fast path.

    Raises
    ------
    ArithmeticError
        If the regularized LDLᵀ has a zero pivot twice (P is then far from
        positive semidefinite).

    Notes
    -----
    Attributes ``scale`` (S), ``inertia`` ((positive, negative) eigenvalues of
    K̂, up to δ on the sparse path; None if not computed), ``kind``
    (``"dense"``, ``"eigen"``, ``"ldl"``, ``"lu"``: how K̂ is solved now) and
    ``norm`` (‖K̂‖∞). The condition estimate :attr:`cond` and the further
    rungs of the ladder are computed on first use, under locks.
    """

    pattern: KKTPattern | None  # (None when built from a dense K)
    inertia: tuple[int, int] | None
    _K: FloatArray | sp.csr_matrix
    _K_abs: FloatArray | sp.csr_matrix
    _ladder: list[Kernel]

    def __init__(self, pattern: KKTPattern, data: FloatArray, *, need_inertia: bool,
                 pool: SolverPool | None = None, reused: bool = True) -> None:
        self.pattern = pattern
        self.n, self.rows, self.dim = pattern.n, pattern.rows, pattern.dim
        if use_dense(pattern.dim, pattern.nnz):  # K̂ straight into a dense array
            self._setup_dense(pattern.dense(data), reused)
            return
        # K̂ = S K S row-wise, scaled in place (one temporary at a time: this
        # sets the solve's peak memory on large problems).
        src, indptr = pattern.full_src, pattern.full_indptr
        abs_full = np.abs(data)[src]  # |K| row-wise, in the user's units
        s = ruiz(indptr, pattern.full_indices, abs_full)
        # K̂'s upper data (kᵢⱼ sᵢ) sⱼ, then both triangles from it: K̂ is
        # exactly symmetric, and its upper data is the LDLᵀ's input.
        upper = data * s[pattern.indices]
        upper *= np.repeat(s, np.diff(pattern.indptr))
        kfull = upper[src]
        np.abs(kfull, out=abs_full)
        # Row maxima and ‖K̂‖∞ by segments (every row holds its diagonal, and
        # this path has more than a few dozen rows: none is empty).
        self.row_norm = np.maximum.reduceat(abs_full, indptr[:-1])
        self.norm = float(np.max(np.add.reduceat(abs_full, indptr[:-1])))
        shape = (self.dim, self.dim)
        K = sp.csr_matrix((kfull, pattern.full_indices, indptr), shape=shape)
        K_abs = sp.csr_matrix((abs_full, pattern.full_indices, indptr), shape=shape)
        self._setup_common(s)
        self._fast = False
        self._K, self._K_abs = K, K_abs
        self._sparse = True
        self._pool = pool
        try:
            ldl_sparse = RegularizedLDL(pattern, upper, REGULARIZATION, pool, overwrite=True)
        except ArithmeticError:
            ldl_sparse = RegularizedLDL(pattern, self._upper(), 1e3 * REGULARIZATION, None,
                                        overwrite=True)
        self._ladder = [ldl_sparse]
        self.kind = "ldl"
        if need_inertia:
            self.inertia = ldl_sparse.inertia()
            if self.inertia is None:
                raise ArithmeticError("zero or non-finite pivot in the LDL factorization")

    @classmethod
    def from_dense(cls, n: int, rows: int, K: FloatArray, *, reused: bool = True
                   ) -> Factorization:
        """The factorization of a dense K (n primal rows, then ``rows`` constraint
        rows; overwritten), as the dense path of the constructor makes it from a
        pattern and its data: for callers that hold K densely already."""
        self = cls.__new__(cls)
        self.pattern = None
        self.n, self.rows, self.dim = n, rows, n + rows
        self._setup_dense(K, reused)
        return self

    def _setup_common(self, s: FloatArray) -> None:
        self.scale = s
        self._lock = threading.Lock()  # the kernel ladder and the exact residual
        self._cond_lock = threading.Lock()  # the condition estimate (which may need both)
        self._cond: float | None = None
        self._null: FloatArray | None = None
        self._residuals: list[ExactResidual | ExtendedResidual] | None = None
        self._sparse = False
        self.inertia = None

    def _setup_dense(self, dense: FloatArray, reused: bool) -> None:
        """Equilibrate and factor a dense K (in place), choosing the kernel."""
        s = ruiz_dense(np.abs(dense))
        dense *= s[:, None]  # (kᵢⱼ sᵢ) sⱼ, as on the sparse path
        dense *= s[None, :]
        dense_abs = np.abs(dense)
        self.row_norm = dense_abs.max(axis=1)
        self.norm = float(np.max(dense_abs.sum(axis=1), initial=0.0))
        self._setup_common(s)
        self._K = dense
        self._K_abs = dense_abs
        ldl = DenseLDL(dense)
        cond = np.inf if ldl.singular else self.norm * ldl.inverse_norm(self.norm)
        kernel: DenseLDL | DenseEigen = ldl
        if cond <= SINGULAR_COND:
            self._cond, self.kind = cond, "dense"
        else:
            kernel, self.kind = DenseEigen(dense), "eigen"
        self.inertia = kernel.inertia()
        self._ladder = [kernel]
        self._fast = (self.kind == "dense" and 2 * cond * EPS <= EXTRA_TRIGGER
                      and self.dim <= _FAST_MAX_DIM
                      and bool(np.all((s >= 2.0**-100) & (s <= 2.0**100))))
        # K⁻¹ costs more than a solve or two above a few dozen rows: it is
        # formed only where this K is expected to serve many solves. (Fixed
        # per problem, never by history: a repeated solve repeats its bits.)
        self._fast = self._fast and (reused or self.dim <= _FAST_EAGER_DIM)
        self._fast_cond = cond
        self._fast_parts: tuple[FloatArray, FloatArray, FloatArray] | None = (
            self._fast_arrays() if self._fast else None)

    @property
    def nbytes(self) -> int:
        """About the memory this factorization holds: its arrays (K̂, |K̂|,
        the scaling, K⁻¹ where formed) and its kernels' factors. Patterns are
        shared by every factorization over the same rows and not counted."""
        return held_bytes(self._K, self._K_abs, self.scale, self.row_norm, self._null,
                          self._fast_parts if self._fast else None, self._ladder,
                          self._residuals)

    @property
    def delta(self) -> float:
        """The regularization of the kernel in use (0 for an exact one)."""
        return self._ladder[-1].delta

    # ------------------------------------------------------------ products

    def times(self, z: FloatArray) -> FloatArray:
        """K z in the user's units (K = S⁻¹ K̂ S⁻¹), for vectors or blocks."""
        s = self.scale if z.ndim == 1 else self.scale[:, None]
        return np.asarray(self._K @ (z / s)) / s

    # -------------------------------------------------------------- solves

    def solve(self, rhs: FloatArray) -> Refined:
        """Solve K z = rhs (user's units) to a verified accuracy.

        Refinement in working precision first; for an ill-conditioned K̂
        (estimated error above :data:`~diffmodel.tolerances.EXTRA_TRIGGER`),
        refinement with exact residuals after it.
        """
        fast = self._fast_parts if self._fast else None
        if fast is not None:
            inv, K_user, K_user_abs = fast
            # Small, well-conditioned, dense: one product with K⁻¹ is usually
            # at the roundoff already. Its backward error is still measured,
            # never assumed: the ratio below is ω₁ over all rows, never smaller
            # than ω₁ + ω₂ (rows with negligible terms only get a larger
            # denominator there); a zero or overflowing denominator fails the
            # test (NaN, or a denominator beyond 1e300) and takes the general path.
            # (ndarray.dot: the same BLAS call as @, with less dispatch.)
            z = inv.dot(rhs)
            den = K_user_abs.dot(np.abs(z))
            den += np.abs(rhs)
            ratio = K_user.dot(z)
            np.subtract(rhs, ratio, out=ratio)
            np.abs(ratio, out=ratio)
            ratio /= den
            omega = float(_MAX(ratio))
            if omega <= _FAST_TARGET and math.isfinite(den.dot(den)):
                return Refined(z, omega, 0, 2.0 * self._fast_cond * max(omega, EPS))
        z, omega, steps, accuracy = self._solve_scaled(rhs * self.scale, None)
        return Refined(z * self.scale, omega, steps, accuracy)

    def approximate(self, rhs: FloatArray) -> FloatArray:
        """K⁻¹ rhs (a vector or a block, user's units) by one solve with the
        kernel, neither refined nor verified: for heuristics that only steer
        (guessing an active set), never for a result."""
        s = self.scale if rhs.ndim == 1 else self.scale[:, None]
        fast = self._fast_parts if self._fast else None
        if fast is not None:
            return np.asarray(fast[0] @ rhs)
        kernel = self._ladder[-1]
        scaled = rhs * s
        z = kernel.solve(scaled) if rhs.ndim == 1 else self._kernel_block(kernel, scaled)
        return np.asarray(z * s)

    def _fast_arrays(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """K⁻¹, K and |K| in the user's units, for the fast path of :meth:`solve`
        (the scaling is moderate there, so nothing over- or underflows)."""
        dense, s = self._K, self.scale
        assert isinstance(dense, np.ndarray)  # (the dense path's invariant)
        K_user = (dense / s[:, None]) / s[None, :]
        return (np.linalg.inv(dense) * s[:, None]) * s[None, :], K_user, np.abs(K_user)

    def refine(self, z0: FloatArray, rhs: FloatArray) -> Refined:
        """Refine a given solution ``z0`` of K z = rhs (user's units), e.g. a
        first-order solver's answer, as :meth:`solve` does."""
        result = self._solve_scaled(rhs * self.scale, z0 / self.scale)
        return result._replace(z=result.z * self.scale)

    def _solve_scaled(self, r_hat: FloatArray, z0: FloatArray | None) -> Refined:
        z, omega, steps = self._refined(r_hat, z0)
        accuracy = self.forward_error(omega)
        if accuracy > EXTRA_TRIGGER and not self.singular and np.all(np.isfinite(z)):
            exact = self._refine_exact(r_hat, z)
            if exact is not None and exact.accuracy < accuracy:
                return exact._replace(steps=steps + exact.steps)
        return Refined(z, omega, steps, accuracy)

    def solve_many(self, rhs: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Solve K Z = RHS for a block (N, k); return Z, ω and the accuracy per column.

        Columns are refined together in working precision; any column that
        does not reach the target, or whose estimated error stays above the
        trigger of :meth:`solve`, is finished alone, as :meth:`solve` would.
        A block whose columns are all equal (a loss gradient broadcast over a
        batch) is solved once: the same system, the same answer, the same ω.
        """
        k = rhs.shape[1]
        if k > 1 and same_columns(rhs):
            z, omega, accuracy = self.solve_many(rhs[:, :1])
            return (np.repeat(z, k, axis=1), np.repeat(omega, k),
                    np.repeat(accuracy, k))
        s = self.scale[:, None]
        R = rhs * s
        kernel = self._ladder[-1]
        Z = self._kernel_block(kernel, R)
        omegas = np.full(R.shape[1], np.inf)
        for step in range(MAX_REFINE + 1):
            res = R - self._K @ Z
            omegas = backward_errors(res, self._K_abs @ np.abs(Z), R, self.row_norm,
                                     np.max(np.abs(Z), axis=0, initial=0.0))
            done = (omegas <= REFINE_TARGET) | (self.forward_error_many(omegas) <= REFINE_GOAL)
            bad = np.flatnonzero(~done)
            if bad.size == 0 or step == 3:
                break
            Z[:, bad] += self._kernel_block(kernel, res[:, bad])
        accuracy = self.forward_error_many(omegas)
        done = (omegas <= REFINE_TARGET) | (accuracy <= REFINE_GOAL)
        for j in np.flatnonzero(~done | ~(accuracy <= EXTRA_TRIGGER)):
            Z[:, j], omegas[j], _, accuracy[j] = self._solve_scaled(R[:, j], None)
        return Z * s, omegas, accuracy

    def forward_error(self, omega: float) -> float:
        """Estimated relative forward error 2·cond∞(K̂)·max(ω, ε) of a solve."""
        return float(2.0 * self.cond * max(omega, EPS))

    def forward_error_many(self, omegas: FloatArray) -> FloatArray:
        """:meth:`forward_error` for an array of backward errors."""
        return 2.0 * self.cond * np.maximum(omegas, EPS)

    @staticmethod
    def _kernel_block(kernel: Kernel, R: FloatArray) -> FloatArray:
        if isinstance(kernel, (DenseLDL, DenseEigen)):
            return np.asarray(kernel.solve(R))
        out = np.empty_like(R)
        cols = np.ascontiguousarray(R.T)
        for j in range(R.shape[1]):
            out[:, j] = kernel.solve(cols[j])
        return out

    def _refined(self, rhs: FloatArray, z0: FloatArray | None = None
                 ) -> tuple[FloatArray, float, int]:
        """Solve K̂ ẑ = r̂ by refinement, climbing the kernel ladder on a stall.

        A more exact kernel is built only when refinement stalled before the
        normwise residual reached the roundoff, i.e. when the kernel's
        contraction is the limit. A componentwise backward error that stays
        above the target once the residual is at the roundoff is the floor of
        the residual's own rounding, which no kernel lowers; the
        extra-precise refinement of :meth:`_solve_scaled` treats that case
        when the estimated error warrants it.
        """
        kernel = self._ladder[-1]
        z, omega, steps, floor = self._refine_with(kernel, rhs, z0)
        while not self._refined_enough(omega) and not floor and not kernel.exact:
            nxt = self._next_kernel(kernel)
            if nxt is None:
                break
            start = z if np.all(np.isfinite(z)) else None
            z2, omega2, steps2, floor = self._refine_with(nxt, rhs, start)
            if omega2 < omega:
                z, omega = z2, omega2
            steps += steps2
            kernel = nxt
        return z, omega, steps

    def _refined_enough(self, omega: float) -> bool:
        """ω at the roundoff, or an estimated forward error below REFINE_GOAL."""
        return omega <= REFINE_TARGET or self.forward_error(omega) <= REFINE_GOAL

    def _refine_with(self, kernel: Kernel, rhs: FloatArray, z0: FloatArray | None = None
                     ) -> tuple[FloatArray, float, int, bool]:
        """Refine with ``kernel``: ẑ, its backward error ω, the steps taken and
        whether the normwise residual reached the roundoff.

        Steps are steered first by the normwise residual η (one product with
        K̂ each) until it is at the roundoff, then by the componentwise
        backward error ω (one more product, with |K̂|), which refinement in
        working precision keeps lowering for a few steps (Skeel, 1980).
        """
        K = self._K
        z = kernel.solve(rhs) if z0 is None else z0
        scale_rhs = float(np.max(np.abs(rhs), initial=0.0))
        best_z, best_res, best_eta, best_omega = z, rhs, np.inf, np.inf
        floor = False
        for steps in range(MAX_REFINE + 1):
            if not np.all(np.isfinite(z)):
                break
            res = rhs - K @ z
            z_max = float(np.max(np.abs(z), initial=0.0))
            eta = float(np.max(np.abs(res), initial=0.0)) / (self.norm * z_max + scale_rhs or 1.0)
            if not floor:
                stalled = not eta < REFINE_STALL * best_eta
                if eta < best_eta:
                    best_z, best_eta, best_res = z, eta, res
                floor = best_eta <= _NORMWISE_GATE
                if floor or stalled or steps == MAX_REFINE:
                    best_omega = backward_error(best_res, self._K_abs @ np.abs(best_z), rhs,
                                                self.row_norm,
                                                float(np.max(np.abs(best_z), initial=0.0)))
                    if self._refined_enough(best_omega) or stalled or steps == MAX_REFINE:
                        return best_z, best_omega, steps, floor
            else:
                omega = backward_error(res, self._K_abs @ np.abs(z), rhs, self.row_norm, z_max)
                stalled = not omega < REFINE_STALL * best_omega
                if omega < best_omega:
                    best_z, best_omega, best_res = z, omega, res
                if self._refined_enough(best_omega) or stalled or steps == MAX_REFINE:
                    return best_z, best_omega, steps, floor
            z = best_z + kernel.solve(best_res)
        if best_eta < np.inf and best_omega == np.inf:  # the iterates broke down
            best_omega = backward_error(best_res, self._K_abs @ np.abs(best_z), rhs,
                                        self.row_norm, float(np.max(np.abs(best_z), initial=0.0)))
        return best_z, best_omega, MAX_REFINE, floor

    def _upper(self) -> FloatArray:
        """K̂'s upper-triangular data (sparse path), read from the full K̂ when a
        kernel needs it rather than kept."""
        assert isinstance(self._K, sp.csr_matrix) and self.pattern is not None  # (sparse path)
        src = self.pattern.full_src
        position = np.empty(self.pattern.nnz, dtype=src.dtype)
        position[src] = np.arange(src.shape[0], dtype=src.dtype)  # either copy of a pair
        return np.asarray(self._K.data[position])

    def _next_kernel(self, kernel: Kernel) -> Kernel | None:
        """The rung after ``kernel`` (built once, under the lock), or None."""
        with self._lock:
            ladder = self._ladder
            index = next(i for i, k in enumerate(ladder) if k is kernel)
            if index + 1 < len(ladder):
                return ladder[index + 1]
            if not self._sparse or kernel.exact or self.pattern is None:
                return None
            try:
                if len(ladder) < _LDL_RUNGS:
                    nxt: Kernel = RegularizedLDL(self.pattern, self._upper(),
                                                 kernel.delta * _DELTA_STEP, None,
                                                 overwrite=True)
                else:
                    nxt = SparseLU(sp.csc_matrix(self._K))
            except (ArithmeticError, RuntimeError):  # a zero pivot; K̂ exactly singular
                return None
            ladder.append(nxt)
            self.kind = "lu" if nxt.exact else "ldl"
            return nxt

    def _refine_exact(self, r_hat: FloatArray, z: FloatArray) -> Refined | None:
        """Refinement with residuals in extra precision; None if it does not help.

        Residuals in 80-bit extended precision first
        (:class:`~.accuracy.ExtendedResidual`, where the platform has it),
        then, if the estimated error is still above
        :data:`_EXTRA_GOAL`, residuals computed exactly
        (:class:`~.accuracy.ExactResidual`), which make the iterates converge
        to the correctly rounded solution whenever the iteration contracts.
        """
        best: Refined | None = None
        steps = 0
        for residual in self._precise_residuals():
            result = self._refine_precise(residual, r_hat, z if best is None else best.z)
            if result is None:
                continue
            steps += result.steps
            if best is None or result.accuracy < best.accuracy:
                best = result._replace(steps=steps)
            if best.accuracy <= _EXTRA_GOAL:
                break
        return best

    def _refine_precise(self, residual: ExactResidual | ExtendedResidual, r_hat: FloatArray,
                        z: FloatArray) -> Refined | None:
        """Refine ``z`` with ``residual``: each correction is solved with the
        best kernel (its own error only slows the contraction), and the error
        is estimated by the size of the last correction, as LAPACK's
        extra-precise refinement does (``xGERFSX``). When the corrections stop
        shrinking, their size is the error left. None if the residual
        overflows or the iteration does not contract at all.
        """
        kernel = self._ladder[-1]
        z_norm = float(np.max(np.abs(z), initial=0.0)) or 1.0
        error, last, steps = np.inf, np.inf, 0
        res = residual(z, r_hat)
        while res is not None and steps < MAX_REFINE:
            dz = kernel.solve(res)
            size = float(np.max(np.abs(dz), initial=0.0))
            if not np.isfinite(size):
                break
            if size > REFINE_STALL * last:  # the corrections are now noise of that size
                error = size
                break
            z, last, error, steps = z + dz, size, size, steps + 1
            z_norm = float(np.max(np.abs(z), initial=0.0)) or 1.0
            res = residual(z, r_hat)
            if size <= EPS * z_norm:
                break
        if res is None or steps == 0:
            return None
        omega = backward_error(res, self._K_abs @ np.abs(z), r_hat, self.row_norm, z_norm)
        return Refined(z, omega, steps, max(2.0 * EPS, error / z_norm))

    def _precise_residuals(self) -> list[ExactResidual | ExtendedResidual]:
        """The extra-precise residuals, cheapest first (built once, under the lock)."""
        with self._lock:
            if self._residuals is None:
                K = sp.csr_matrix(self._K)
                parts = (K.indptr, K.indices, K.data)
                self._residuals = [ExactResidual(*parts)]
                if EXTENDED:
                    self._residuals.insert(0, ExtendedResidual(*parts))
            return self._residuals

    # --------------------------------------------------------- conditioning

    @property
    def cond(self) -> float:
        """Estimated cond∞(K̂) = ‖K̂‖∞‖K̂⁻¹‖∞ (inf if K̂ is singular)."""
        if self._cond is None:
            with self._cond_lock:
                if self._cond is None:
                    self._cond = self._estimate_cond()
        return self._cond

    @property
    def singular(self) -> bool:
        """Whether K̂ is singular to working precision (cond above SINGULAR_COND)."""
        return not self.cond <= SINGULAR_COND

    def _estimate_cond(self) -> float:
        if self.norm == 0:
            return np.inf if self.dim else 1.0
        kernel = self._ladder[0]
        if isinstance(kernel, DenseEigen):
            self._null = kernel.null
            if not kernel.keep.all():
                return np.inf
            inverse = (kernel.V * kernel.inv) @ kernel.V.T
            return self.norm * float(np.abs(inverse).sum(axis=1).max(initial=0.0))
        if isinstance(kernel, DenseLDL):
            return self.norm * kernel.inverse_norm(self.norm)
        est, v = inverse_norm_estimate(kernel.solve, self.dim)
        if kernel.delta * est <= 1e-2 and np.isfinite(est):
            return self.norm * est  # nonsingular: no null vector to keep
        # ‖K̂_δ⁻¹‖ is near its ceiling 1/δ: K̂ is singular or nearly so. Inverse
        # iteration with K̂_δ amplifies a null direction by 1/δ per step, and
        # ‖K̂ v‖ bounds σ_min(K̂) from above.
        for _ in range(NULL_ITERATIONS):
            w = kernel.solve(v)
            norm = float(np.linalg.norm(w))
            if not np.isfinite(norm) or norm == 0:
                break
            v = w / norm
        self._null = v[:, None]
        if float(np.linalg.norm(self._K @ v)) <= self.norm / SINGULAR_COND:
            return np.inf
        for rung in range(1, _LDL_RUNGS + 1):
            finer = self._next_kernel(self._ladder[rung - 1])
            if finer is None:
                return np.inf
            est, _ = inverse_norm_estimate(finer.solve, self.dim)
            if finer.delta * est <= 1e-2 and np.isfinite(est):
                return self.norm * est
        return np.inf

    def null_vectors(self) -> FloatArray:
        """Approximate null vectors of K (user's units, unit columns), for certificates."""
        _ = self.cond
        null = self._null if self._null is not None else np.zeros((self.dim, 0))
        out = null * self.scale[:, None]
        norms = np.linalg.norm(out, axis=0)
        norms[norms == 0] = 1.0
        return np.asarray(out / norms, dtype=np.float64)
