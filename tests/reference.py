"""An independent, exact reference for equality-constrained QPs (tests only).

Nothing here imports diffmodel. Given explicit numbers P (n×n, symmetric
positive semidefinite), q, A (m×n), b and a constant r, the reference solves

    minimize  ½ xᵀPx + qᵀx + r   subject to  A x = b

through its KKT system, with the Lagrangian ½xᵀPx + qᵀx + r + νᵀ(Ax − b)
(CVXPY's sign convention for a constraint ``lhs == rhs`` with
``lhs − rhs = Ax − b``):

    K z = (−q, b),   K = [[P, Aᵀ], [A, 0]],   z = (x, ν).

Method (mixed-precision iterative refinement, Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., ch. 12; LAPACK ``xGERFS``):

1. K is rounded to float64 and equilibrated by symmetric Ruiz scaling,
   K̃ = D K D with every row of K̃ of ∞-norm ≈ 1 (:func:`ruiz`; the better
   conditioned of two starting points, :func:`kkt_scaling`), and K̃ is
   factored once by dense LU with partial pivoting (``scipy.linalg.lu_factor``).
2. Starting from z = 0, repeat: form the residual s = rhs − K z in *extended*
   precision (``np.longdouble``, 80-bit on x86-64, unit roundoff 5.4e-20) or
   with mpmath (``MP_DPS`` = 40 decimal digits); solve the correction
   dz = D K̃⁻¹ D s in float64; accumulate z ← z + dz in the extended
   precision. Stop when the correction is negligible against z (componentwise
   below 1e-3 ulp of float64 in the equilibrated units) or stops shrinking.

The residual is formed from the *exact* data (float64 or longdouble entries
are exact in either residual precision), so the limiting forward error is
about κ·u_r (u_r the unit roundoff of the residual precision, κ the
condition number of the equilibrated K), not κ·u of float64; the float64 LU
only has to be accurate enough for the iteration to contract (κ·u ≪ 1).
``residuals="auto"`` uses longdouble when κ·u_ld ≤ 1e-15 and mpmath
(dps = 40) otherwise, and always mpmath when this platform's longdouble is not
an extended type (``np.finfo(np.longdouble).eps ≥ 1e-18``).

:func:`solve_mpmath` solves K z = rhs directly with ``mpmath.lu_solve`` at a
chosen precision, for tiny problems and to check the refinement.

The optimal value is evaluated as ½(qᵀx − bᵀν) + r (equal to ½xᵀPx + qᵀx + r
at the optimum, without that form's cancellation).

Gradients of a linear loss ℓ = gᵀx + hᵀν follow from the implicit function
theorem on F(z, θ) = K z + (q, −b) = 0: the adjoint ω = K⁻ᵀ(g, h) = K⁻¹(g, h)
(K is symmetric) is solved by the same refinement, and then
(:func:`qp_gradients`)

    dℓ/dq = −ω_x,   dℓ/db = +ω_ν,   dℓ/dA = −(ω_ν xᵀ + ν ω_xᵀ),
    dℓ/dP = −½ (ω_x xᵀ + x ω_xᵀ)     (P a free matrix in ½xᵀPx).

Examples
--------
>>> import numpy as np
>>> qp = EqualityQP(P=np.eye(2), q=np.zeros(2), A=np.array([[1.0, 1.0]]), b=np.array([2.0]))
>>> sol = solve(qp)
>>> [float(v) for v in sol.x], [float(v) for v in sol.nu]
([1.0, 1.0], [-1.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import mpmath
import numpy as np
import scipy.linalg
from numpy.typing import NDArray

__all__ = [
    "EqualityQP",
    "LinearSolve",
    "ReferenceSolution",
    "QPGradients",
    "LONGDOUBLE_EXTENDED",
    "kkt_matrix",
    "ruiz",
    "kkt_scaling",
    "equilibrated_condition",
    "refine",
    "solve",
    "solve_mpmath",
    "qp_gradients",
    "relative_error",
]

LongArray = NDArray[np.longdouble]
FloatArray = NDArray[np.float64]
Residuals = Literal["auto", "longdouble", "mpmath"]

#: True where ``np.longdouble`` is wider than float64 (80-bit x87 on x86-64,
#: binary128 on some other platforms); otherwise residuals use mpmath.
LONGDOUBLE_EXTENDED: bool = bool(np.finfo(np.longdouble).eps < 1e-18)
#: Unit roundoff of the longdouble residuals and of float64.
U_LONGDOUBLE: float = float(np.finfo(np.longdouble).eps) / 2
U_DOUBLE: float = float(np.finfo(np.float64).eps) / 2
#: Decimal digits of the mpmath residuals (unit roundoff ≈ 1e-40).
MP_DPS = 40
#: "auto" keeps longdouble residuals while κ · u_ld is below this.
AUTO_LIMIT = 1e-15
#: Maximum refinement steps.
MAX_STEPS = 60


@dataclass(frozen=True)
class EqualityQP:
    """minimize ½xᵀPx + qᵀx + r  s.t.  Ax = b, as explicit dense arrays.

    Arrays may be float64 or longdouble (for data that are themselves
    computed, such as P = 2XᵀX, forming them in longdouble keeps the
    reference exact to well below float64 rounding). P must be symmetric.

    Attributes
    ----------
    P : ndarray, shape (n, n)
    q : ndarray, shape (n,)
    A : ndarray, shape (m, n)
    b : ndarray, shape (m,)
    r : float or longdouble
        Constant term of the objective.
    """

    P: NDArray[np.floating]
    q: NDArray[np.floating]
    A: NDArray[np.floating]
    b: NDArray[np.floating]
    r: float | np.longdouble = 0.0

    def __post_init__(self) -> None:
        n = self.q.shape[0]
        if self.P.shape != (n, n) or self.A.shape[1:] != (n,) or self.b.shape != self.A.shape[:1]:
            raise ValueError(
                f"inconsistent shapes: P {self.P.shape}, q {self.q.shape}, "
                f"A {self.A.shape}, b {self.b.shape}"
            )
        if not np.array_equal(self.P, self.P.T):
            raise ValueError("P must be exactly symmetric")

    @property
    def n(self) -> int:
        """Number of variables."""
        return int(self.q.shape[0])

    @property
    def m(self) -> int:
        """Number of equality rows."""
        return int(self.b.shape[0])

    def kkt(self) -> LongArray:
        """K = [[P, Aᵀ], [A, 0]] in longdouble (exact copy of the data)."""
        return kkt_matrix(self.P, self.A)

    def rhs(self) -> LongArray:
        """The right-hand side (−q, b) in longdouble."""
        return np.concatenate([-np.asarray(self.q, np.longdouble),
                               np.asarray(self.b, np.longdouble)])

    def objective(self, x: NDArray[np.floating]) -> np.longdouble:
        """½xᵀPx + qᵀx + r evaluated in longdouble (at any x)."""
        xl = np.asarray(x, np.longdouble)
        P = np.asarray(self.P, np.longdouble)
        q = np.asarray(self.q, np.longdouble)
        return np.longdouble(0.5) * (xl @ (P @ xl)) + q @ xl + np.longdouble(self.r)

    def optimal_value(self, x: NDArray[np.floating], nu: NDArray[np.floating]) -> np.longdouble:
        """½(qᵀx − bᵀν) + r in longdouble: the objective at a KKT point.

        At Px + q + Aᵀν = 0, Ax = b, ½xᵀPx = −½(qᵀx + bᵀν), so this equals
        :meth:`objective` there, without its cancellation between ½xᵀPx and
        qᵀx (a factor 1e11 for the dense cond-1e12 cases of the tests).
        """
        xl, nl = np.asarray(x, np.longdouble), np.asarray(nu, np.longdouble)
        q, b = np.asarray(self.q, np.longdouble), np.asarray(self.b, np.longdouble)
        return np.longdouble(0.5) * (q @ xl - b @ nl) + np.longdouble(self.r)

    def value_scale(self, x: NDArray[np.floating], nu: NDArray[np.floating]) -> np.longdouble:
        """½(|q|ᵀ|x| + |b|ᵀ|ν|) + |r|: the size of the terms of :meth:`optimal_value`."""
        xl, nl = np.abs(np.asarray(x, np.longdouble)), np.abs(np.asarray(nu, np.longdouble))
        q, b = np.abs(np.asarray(self.q, np.longdouble)), np.abs(np.asarray(self.b, np.longdouble))
        return np.longdouble(0.5) * (q @ xl + b @ nl) + abs(np.longdouble(self.r))


@dataclass(frozen=True)
class LinearSolve:
    """The result of :func:`refine`.

    Attributes
    ----------
    z : ndarray of longdouble, shape (N,)
        The solution (accumulated in the residual precision, then rounded to
        longdouble).
    steps : int
        Refinement steps taken.
    correction : float
        Size of the last correction, max_i |dz_i| / |z|_i in equilibrated
        units (|z|_i = max(|z̃_i|, 1e-30 ‖z̃‖∞), z̃ = D⁻¹z).
    residuals : str
        ``"longdouble"`` or ``"mpmath"``: the precision of the residuals.
    kappa : float
        2-norm condition number of the Ruiz-equilibrated K (float64
        eigenvalues; the better of the two starts of :func:`kkt_scaling`).
    error_bound : float
        A rough bound of the remaining relative error in the equilibrated
        ∞-norm: max(correction, 10 · κ · u_r).
    """

    z: LongArray
    steps: int
    correction: float
    residuals: str
    kappa: float
    error_bound: float


@dataclass(frozen=True)
class ReferenceSolution:
    """The reference optimum of an :class:`EqualityQP`.

    Attributes
    ----------
    x, nu : ndarray of longdouble
        Primal solution and equality multipliers (CVXPY's sign convention).
    value : longdouble
        The optimal value ½xᵀPx + qᵀx + r, evaluated as ½(qᵀx − bᵀν) + r
        (see :meth:`EqualityQP.optimal_value`).
    solve : LinearSolve
        Diagnostics of the KKT solve.
    """

    x: LongArray
    nu: LongArray
    value: np.longdouble
    solve: LinearSolve


@dataclass(frozen=True)
class QPGradients:
    """dℓ/d(P, q, A, b) of a linear loss ℓ = gᵀx + hᵀν, in longdouble.

    ``P`` is the gradient with respect to P as a free (not symmetrized)
    matrix in ½xᵀPx; it is symmetric. ``omega`` is the adjoint solve.
    """

    P: LongArray
    q: LongArray
    A: LongArray
    b: LongArray
    omega: LinearSolve = field(repr=False)


# --------------------------------------------------------------- linear algebra


def kkt_matrix(P: NDArray[np.floating], A: NDArray[np.floating]) -> LongArray:
    """The KKT matrix [[P, Aᵀ], [A, 0]] in longdouble.

    Parameters
    ----------
    P : ndarray, shape (n, n)
    A : ndarray, shape (m, n)

    Returns
    -------
    ndarray of longdouble, shape (n + m, n + m)
    """
    n, m = P.shape[0], A.shape[0]
    K = np.zeros((n + m, n + m), dtype=np.longdouble)
    K[:n, :n] = P
    K[:n, n:] = np.asarray(A, np.longdouble).T
    K[n:, :n] = A
    return K


def ruiz(K: NDArray[np.floating], *, start: NDArray[np.float64] | None = None,
         max_iter: int = 200, tol: float = 1e-8) -> FloatArray:
    """Symmetric Ruiz equilibration: d with every row of diag(d) K diag(d) of ∞-norm ≈ 1.

    Iterates d ← d / sqrt(row ∞-norms of D K D) (D. Ruiz, "A scaling
    algorithm to equilibrate both rows and columns norms in matrices",
    RAL-TR-2001-034; the symmetric variant keeps the scaled matrix
    symmetric). No squares of entries are formed, so data near 1e300 do not
    overflow.

    Parameters
    ----------
    K : ndarray, shape (N, N)
        A symmetric matrix without zero rows.
    start : ndarray, shape (N,), optional
        Initial scaling (default all ones). The ∞-norm equilibrium is not
        unique for saddle-point matrices, so the start matters (see
        :func:`kkt_scaling`).
    max_iter : int
        Maximum sweeps.
    tol : float
        Stop when every row norm is within ``tol`` of 1.

    Returns
    -------
    ndarray of float64, shape (N,)
        The positive scaling d.

    Raises
    ------
    ValueError
        If K has a zero row (then it is singular).
    """
    Kabs = np.abs(np.asarray(K, np.float64))
    d = np.ones(Kabs.shape[0]) if start is None else np.array(start, dtype=np.float64)
    for _ in range(max_iter):
        rows = ((Kabs * d[:, None]) * d[None, :]).max(axis=1) if Kabs.size else d
        if np.any(rows == 0):
            raise ValueError("K has a zero row: the KKT matrix is singular")
        if np.all(np.abs(rows - 1.0) <= tol):
            break
        d = d / np.sqrt(rows)
    return d


def _block_start(K: FloatArray, n: int) -> FloatArray:
    """A start for Ruiz that balances the cost block first.

    d_x,i = 1/sqrt(max_j |P_ij|) (or 1/sqrt(max_k |A_ki|) for a variable
    without curvature), then d_ν,k = 1 / max_i |A_ki| d_x,i: the scaling that
    makes [[P, Aᵀ], [A, 0]] ≈ [[I, Ãᵀ], [Ã, 0]]. Symmetric Ruiz from all
    ones can instead settle at [[εI, Ãᵀ], [Ã, 0]], whose ∞-norms are also 1
    but whose condition number is 1/ε (e.g. P = I, A = 1e12·A₀).
    """
    Kabs = np.abs(K)
    p = Kabs[:n, :n].max(axis=1) if n else np.zeros(0)
    a = Kabs[n:, :n].max(axis=0) if K.shape[0] > n else np.zeros(n)
    scale_x = np.where(p > 0, p, np.where(a > 0, a, 1.0))
    dx = 1.0 / np.sqrt(scale_x)
    rows = (Kabs[n:, :n] * dx[None, :]).max(axis=1) if K.shape[0] > n else np.zeros(0)
    dnu = 1.0 / np.where(rows > 0, rows, 1.0)
    return np.concatenate([dx, dnu])


def _condition(S: FloatArray) -> float:
    """2-norm condition number of a symmetric matrix: max |λ| / min |λ|."""
    lam = np.abs(np.linalg.eigvalsh(S))
    return float(lam.max() / lam.min()) if lam.min() > 0 else math.inf


def kkt_scaling(K: NDArray[np.floating], n: int | None = None) -> tuple[FloatArray, float]:
    """The better of two symmetric Ruiz equilibrations of a KKT matrix.

    Parameters
    ----------
    K : ndarray, shape (N, N)
    n : int, optional
        Size of the P block; if given, Ruiz is also started from
        :func:`_block_start` and the scaling with the smaller condition
        number is returned.

    Returns
    -------
    d : ndarray, shape (N,)
    kappa : float
        2-norm condition number of diag(d) K diag(d) (float64 symmetric
        eigenvalues; K is symmetric).
    """
    K64 = np.asarray(K, np.float64)
    if K64.size == 0:
        return np.ones(0), 1.0
    best: tuple[FloatArray, float] | None = None
    starts: list[FloatArray | None] = [None]
    if n is not None:
        starts.append(_block_start(K64, n))
    for start in starts:
        d = ruiz(K64, start=start)
        kappa = _condition((K64 * d[:, None]) * d[None, :])
        if best is None or kappa < best[1]:
            best = (d, kappa)
    assert best is not None
    return best


def equilibrated_condition(K: NDArray[np.floating], n: int | None = None) -> float:
    """2-norm condition number of the Ruiz-equilibrated matrix D K D.

    Parameters
    ----------
    K : ndarray, shape (N, N)
    n : int, optional
        Size of the P block of a KKT matrix (see :func:`kkt_scaling`);
        without it, plain symmetric Ruiz from all ones.

    Returns
    -------
    float
        σ_max / σ_min = max |λ| / min |λ| of the symmetric D K D (``inf`` if
        singular).
    """
    return kkt_scaling(K, n)[1]


def _to_mp(a: NDArray[np.floating]) -> NDArray[np.object_]:
    """Exact conversion of a float64 or longdouble array to mpmath numbers.

    A longdouble has a 64-bit significand: hi = fl64(v) and lo = v − hi are
    both exact float64 numbers, and mpf(hi) + mpf(lo) is exactly v.
    """
    al = np.asarray(a, np.longdouble)
    hi = al.astype(np.float64)
    lo = (al - hi).astype(np.float64)
    out = np.empty(al.shape, dtype=object)
    flat = out.reshape(-1)
    with mpmath.workdps(max(mpmath.mp.dps, 40)):  # hi + lo needs 64 bits
        for i, (h, l) in enumerate(zip(hi.reshape(-1), lo.reshape(-1))):
            flat[i] = mpmath.mpf(float(h)) + mpmath.mpf(float(l))
    return out


def _from_mp(a: NDArray[np.object_]) -> LongArray:
    """Round mpmath numbers to longdouble (hi + lo, each a float64 rounding)."""
    hi = np.array([float(v) for v in a], dtype=np.float64)
    with mpmath.workdps(max(mpmath.mp.dps, 40)):
        lo = np.array([float(v - mpmath.mpf(float(h))) for v, h in zip(a, hi)],
                      dtype=np.float64)
    return hi.astype(np.longdouble) + lo.astype(np.longdouble)


def refine(K: NDArray[np.floating], rhs: NDArray[np.floating], *, n: int | None = None,
           residuals: Residuals = "auto") -> LinearSolve:
    """Solve K z = rhs by mixed-precision iterative refinement.

    Parameters
    ----------
    K : ndarray, shape (N, N)
        A nonsingular matrix (exact data; float64 or longdouble).
    rhs : ndarray, shape (N,)
    n : int, optional
        Size of the P block when K is a KKT matrix (improves the
        equilibration, see :func:`kkt_scaling`).
    residuals : {"auto", "longdouble", "mpmath"}
        Precision of the residuals rhs − K z and of the accumulated z. See
        the module docstring for "auto".

    Returns
    -------
    LinearSolve

    Raises
    ------
    ValueError
        If K is singular to float64 working precision after equilibration
        (κ > 1e15), so that the float64 LU cannot drive the refinement.
    """
    Kl = np.asarray(K, np.longdouble)
    rl = np.asarray(rhs, np.longdouble)
    N = Kl.shape[0]
    if N == 0:
        return LinearSolve(np.zeros(0, np.longdouble), 0, 0.0, "longdouble", 1.0, 0.0)
    d, kappa = kkt_scaling(Kl, n)
    Ks = (Kl.astype(np.float64) * d[:, None]) * d[None, :]
    if not kappa < 1e15:
        raise ValueError(f"equilibrated KKT matrix is singular to working precision "
                         f"(condition number {kappa:.1e})")
    if residuals == "auto":
        residuals = ("longdouble" if LONGDOUBLE_EXTENDED and kappa * U_LONGDOUBLE <= AUTO_LIMIT
                     else "mpmath")
    if residuals == "longdouble" and not LONGDOUBLE_EXTENDED:
        residuals = "mpmath"
    lu = scipy.linalg.lu_factor(Ks, check_finite=True)

    def correction(s: FloatArray) -> FloatArray:
        # K⁻¹ = D K̃⁻¹ D with K̃ = D K D.
        return d * scipy.linalg.lu_solve(lu, d * s)

    if residuals == "mpmath":
        u_r = 10.0 ** (-MP_DPS)
        with mpmath.workdps(MP_DPS):
            Km, rm = _to_mp(Kl), _to_mp(rl)
            z_mp: NDArray[np.object_] = _to_mp(np.zeros(N))

            def residual() -> FloatArray:
                return np.array([float(v) for v in rm - Km.dot(z_mp)])

            def add(dz: FloatArray) -> None:
                nonlocal z_mp
                z_mp = z_mp + _to_mp(dz)

            def current() -> LongArray:
                return _from_mp(z_mp)

            steps, last = _iterate(residual, add, current, correction, d)
            z = current()
    else:
        u_r = U_LONGDOUBLE
        zl = np.zeros(N, np.longdouble)

        def residual() -> FloatArray:
            return (rl - Kl @ zl).astype(np.float64)

        def add(dz: FloatArray) -> None:
            nonlocal zl
            zl = zl + dz.astype(np.longdouble)

        def current() -> LongArray:
            return zl

        steps, last = _iterate(residual, add, current, correction, d)
        z = zl
    return LinearSolve(z=np.asarray(z, np.longdouble), steps=steps, correction=last,
                       residuals=residuals, kappa=kappa,
                       error_bound=max(last, 10.0 * kappa * u_r))


def _iterate(residual: Callable[[], FloatArray], add: Callable[[FloatArray], None],
             current: Callable[[], LongArray], correction: Callable[[FloatArray], FloatArray],
             d: FloatArray) -> tuple[int, float]:
    """The refinement loop shared by both residual precisions.

    Returns the number of steps and the size of the last correction
    (componentwise, relative, in the equilibrated units z̃ = D⁻¹ z).
    """
    prev = np.inf
    last = np.inf
    steps = 0
    for steps in range(1, MAX_STEPS + 1):
        dz = correction(residual())
        add(dz)
        zt = np.abs(np.asarray(current(), np.float64) / d)
        floor = 1e-30 * max(float(zt.max()), 1e-300)
        last = float(np.max(np.abs(dz / d) / np.maximum(zt, floor)))
        if last <= 1e-3 * U_DOUBLE:
            break
        if steps > 2 and last > 0.5 * prev:  # stagnated at the residual precision
            break
        prev = last
    return steps, last


# ------------------------------------------------------------------ QP solves


def solve(qp: EqualityQP, *, residuals: Residuals = "auto") -> ReferenceSolution:
    """The reference optimum of ``qp`` by refinement on its KKT system.

    Parameters
    ----------
    qp : EqualityQP
    residuals : {"auto", "longdouble", "mpmath"}
        See :func:`refine`.

    Returns
    -------
    ReferenceSolution
    """
    lin = refine(qp.kkt(), qp.rhs(), n=qp.n, residuals=residuals)
    x, nu = lin.z[: qp.n], lin.z[qp.n:]
    return ReferenceSolution(x=x, nu=nu, value=qp.optimal_value(x, nu), solve=lin)


def solve_mpmath(qp: EqualityQP, *, dps: int = 50) -> ReferenceSolution:
    """The optimum by a direct ``mpmath.lu_solve`` at ``dps`` digits (tiny problems).

    Parameters
    ----------
    qp : EqualityQP
    dps : int
        Decimal digits of the working precision.

    Returns
    -------
    ReferenceSolution
        ``solve.residuals`` is ``"mpmath-lu"``; steps is 0.
    """
    with mpmath.workdps(dps):
        K = mpmath.matrix(_to_mp(qp.kkt()).tolist())
        rhs = mpmath.matrix(_to_mp(qp.rhs()).tolist())
        zm = mpmath.lu_solve(K, rhs)
        zo = np.empty(qp.n + qp.m, dtype=object)
        for i in range(qp.n + qp.m):
            zo[i] = zm[i]
        z = _from_mp(zo)
    lin = LinearSolve(z=z, steps=0, correction=0.0, residuals="mpmath-lu",
                      kappa=equilibrated_condition(qp.kkt(), qp.n), error_bound=10.0 ** (-dps + 5))
    x, nu = z[: qp.n], z[qp.n:]
    return ReferenceSolution(x=x, nu=nu, value=qp.optimal_value(x, nu), solve=lin)


def qp_gradients(qp: EqualityQP, sol: ReferenceSolution, g: NDArray[np.floating],
                 h: NDArray[np.floating], *, residuals: Residuals = "auto") -> QPGradients:
    """Gradients of ℓ = gᵀx + hᵀν with respect to the QP data.

    Parameters
    ----------
    qp : EqualityQP
    sol : ReferenceSolution
        The reference optimum of ``qp``.
    g : ndarray, shape (n,)
        ∂ℓ/∂x.
    h : ndarray, shape (m,)
        ∂ℓ/∂ν.
    residuals : {"auto", "longdouble", "mpmath"}
        See :func:`refine`.

    Returns
    -------
    QPGradients
        dℓ/dP (P free in ½xᵀPx), dℓ/dq, dℓ/dA, dℓ/db, computed in longdouble
        from the adjoint ω = K⁻¹(g, h).
    """
    rhs = np.concatenate([np.asarray(g, np.longdouble), np.asarray(h, np.longdouble)])
    omega = refine(qp.kkt(), rhs, n=qp.n, residuals=residuals)
    wx, wn = omega.z[: qp.n], omega.z[qp.n:]
    x, nu = sol.x, sol.nu
    dP = -np.longdouble(0.5) * (np.outer(wx, x) + np.outer(x, wx))
    dA = -(np.outer(wn, x) + np.outer(nu, wx))
    return QPGradients(P=dP, q=-wx, A=dA, b=wn.copy(), omega=omega)


def relative_error(got: NDArray[np.floating], ref: NDArray[np.floating]) -> float:
    """Normwise relative error ‖got − ref‖∞ / ‖ref‖∞ (computed in longdouble).

    Returns the absolute error ‖got‖∞ when ref is exactly zero, and 0 for
    empty arrays.
    """
    a = np.asarray(got, np.longdouble).ravel()
    r = np.asarray(ref, np.longdouble).ravel()
    if a.shape != r.shape:
        raise ValueError(f"shape mismatch: {np.shape(got)} vs {np.shape(ref)}")
    if r.size == 0:
        return 0.0
    den = np.max(np.abs(r))
    num = np.max(np.abs(a - r))
    return float(num / den) if den > 0 else float(num)
