"""Independent references for QPs with affine inequalities (tests only).

Nothing here imports diffmodel. Two references:

1. **CVXPY + Clarabel at tight tolerances** (:func:`clarabel_solve`,
   :func:`clarabel_qp`): an interior-point solution of the whole problem,
   accurate to about 1e-9 relative on well-scaled problems. It gives the
   optimal value, the primal point and ``constraint.dual_value`` with
   CVXPY's sign conventions, and from them the active set
   (:func:`classify_rows`). A status other than optimal, or a warning
   Clarabel or CVXPY raises on the way ("Solution may be inaccurate"),
   raises :class:`PeerFailure` naming the peer.

2. **The exact active-set KKT solve** (:func:`solve_active_set`,
   :func:`active_set_gradients`). For

       minimize ½xᵀPx + qᵀx + r  s.t.  Ax = b,  Gx ≤ h

   with the Lagrangian ½xᵀPx + qᵀx + r + νᵀ(Ax − b) + λᵀ(Gx − h), λ ≥ 0
   (CVXPY's convention: ``A @ x == b`` has dual ν, ``G @ x <= h`` has dual
   λ ≥ 0, and ``F @ x >= f`` is the row −Fx ≤ −f with the same λ ≥ 0), a
   given active set 𝒜 turns the optimality conditions into the equality KKT
   system over the equalities and the active rows,

       [[P, Aᵀ, G_𝒜ᵀ], [A, 0, 0], [G_𝒜, 0, 0]] (x, ν, λ_𝒜) = (−q, b, h_𝒜),

   with λ = 0 off 𝒜. It is solved by :func:`reference.refine` (tests/
   reference.py): Ruiz equilibration, one float64 LU, iterative refinement
   with residuals in extended precision (``np.longdouble`` or mpmath), so
   the result is exact to about κ·1e-19, far below float64 rounding.

   At a point with strict complementarity (every active row has λ > 0,
   every inactive row has slack > 0) and linearly independent active rows,
   the active set is locally constant, the solution is a smooth function of
   the data, and a linear loss ℓ = g_xᵀx + g_νᵀν + g_λᵀλ has, with the
   adjoint ω = K⁻¹(g_x, g_ν, g_λ,𝒜) (K is symmetric),

       dℓ/dq = −ω_x,   dℓ/db = ω_ν,   dℓ/dh = ω_λ (0 off 𝒜),
       dℓ/dA = −(ω_ν xᵀ + ν ω_xᵀ),   dℓ/dG = −(ω_λ xᵀ + λ ω_xᵀ) (0 off 𝒜),
       dℓ/dP = −½(ω_x xᵀ + x ω_xᵀ)    (P a free matrix in ½xᵀPx).

   (g_λ on inactive rows contributes nothing: λ ≡ 0 there nearby.) These
   follow from the implicit function theorem on F(z, θ) = K z − (−q, b, h_𝒜);
   tests/test_inequalities.py checks them against central differences of
   this very reference with the active set held fixed.

Examples
--------
minimize ½‖x − (1, −1)‖² s.t. x ≥ 0, written as −x ≤ 0: the second bound
binds with λ = 1.

>>> import numpy as np
>>> qp = InequalityQP(P=np.eye(2), q=np.array([-1.0, 1.0]), G=-np.eye(2), h=np.zeros(2))
>>> sol = solve_active_set(qp, np.array([False, True]))
>>> [float(v) for v in sol.x], [float(v) for v in sol.lam]
([1.0, 0.0], [0.0, 1.0])
>>> rows = classify_rows(qp, sol.x, sol.lam)
>>> rows.active.tolist(), rows.weak.tolist()
([False, True], [False, False])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray
from reference import LinearSolve, Residuals, refine

__all__ = [
    "CLARABEL",
    "CLARABEL_SETTINGS",
    "ActiveSetSolution",
    "ActiveSetTangent",
    "BoundsQP",
    "ClarabelResult",
    "InequalityGradients",
    "InequalityQP",
    "PeerFailure",
    "RowClasses",
    "active_set_gradients",
    "active_set_tangent",
    "clarabel_qp",
    "clarabel_solve",
    "classify_rows",
    "from_bounds",
    "guard",
    "reference_at",
    "solve_active_set",
]

LongArray = NDArray[np.longdouble]
FloatArray = NDArray[np.float64]

#: The peer's name in failure messages.
CLARABEL = "CVXPY + Clarabel"
#: Clarabel at (near) its tightest useful tolerances. Clarabel accepts any
#: positive tolerances through CVXPY's keyword arguments (checked against
#: ``clarabel.DefaultSettings()``: tol_gap_abs, tol_gap_rel, tol_feas,
#: tol_ktratio, max_iter are its fields). Measured on the problems of the
#: tests: optimal in 10-30 iterations, primal and dual within 1e-9 of the
#: active-set reference.
CLARABEL_SETTINGS: dict[str, Any] = {
    "tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12,
    "tol_ktratio": 1e-10, "max_iter": 400,
}
#: Rows whose slack and multiplier are both at most this (relative, see
#: :func:`classify_rows`) are weakly active: binding with a zero multiplier.
ROW_TOL = 1e-7


# ------------------------------------------------------------------ Clarabel


class PeerFailure(Exception):
    """A peer (here Clarabel through CVXPY) failed on its own: a status other
    than optimal, a solver error or a warning it raised."""

    def __init__(self, peer: str, reported: str) -> None:
        super().__init__(f"{peer} reported {reported}")
        self.peer = peer
        self.reported = reported


def guard(skip: Callable[[str, str], NoReturn], fn: Callable[[], Any]) -> Any:
    """``fn()``; a :class:`PeerFailure` in it becomes ``skip(peer, reported)``.

    ``skip`` is the ``skip_peer_failure`` fixture of tests/conftest.py: a peer's
    own failure skips the test (allowed even in CI's no-skip mode), while any
    other exception (a bad call, a failed construction check) fails it.
    """
    try:
        return fn()
    except PeerFailure as exc:
        skip(exc.peer, exc.reported)


@dataclass(frozen=True)
class ClarabelResult:
    """A tight-tolerance Clarabel solve through CVXPY.

    Attributes
    ----------
    value : float
        ``problem.value`` (the maximized value for ``cp.Maximize``).
    primal : dict of str to ndarray
        ``Variable.value`` by variable name.
    dual : dict of str to ndarray
        ``Constraint.dual_value`` by constraint name (CVXPY's convention).
    iterations : int
    """

    value: float
    primal: dict[str, FloatArray]
    dual: dict[str, FloatArray]
    iterations: int


def clarabel_solve(objective: cp.Minimize | cp.Maximize,
                   constraints: Mapping[str, cp.Constraint],
                   values: Mapping[str, object], *,
                   settings: Mapping[str, Any] | None = None) -> ClarabelResult:
    """Solve ``objective`` subject to the named constraints with Clarabel.

    Parameters
    ----------
    objective : cp.Minimize or cp.Maximize
    constraints : dict of str to cp.Constraint
    values : dict of str to array_like
        A value for every parameter of the problem, by parameter name (also
        stored in ``Parameter.value``).
    settings : dict, optional
        Clarabel settings; default :data:`CLARABEL_SETTINGS`.

    Returns
    -------
    ClarabelResult

    Raises
    ------
    PeerFailure
        On a status other than ``optimal``, a CVXPY solver error, or a
        ``UserWarning``/``RuntimeWarning`` raised while solving.
    KeyError
        If a parameter has no value in ``values`` (our bug, not the peer's).
    """
    prob = cp.Problem(objective, list(constraints.values()))
    for par in prob.parameters():
        if par.name() not in values:
            raise KeyError(f"clarabel_solve(): no value for parameter {par.name()!r}")
        par.value = values[par.name()]
    opts = dict(CLARABEL_SETTINGS if settings is None else settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            warnings.simplefilter("error", RuntimeWarning)
            prob.solve(solver=cp.CLARABEL, **opts)
    except (UserWarning, RuntimeWarning, cp.error.SolverError) as exc:
        raise PeerFailure(CLARABEL, f"{type(exc).__name__}: {exc}") from None
    if prob.status != cp.OPTIMAL:
        raise PeerFailure(CLARABEL, f"status {prob.status!r}")
    stats = prob.solver_stats
    return ClarabelResult(
        value=float(prob.value),
        primal={v.name(): np.array(v.value, dtype=float) for v in prob.variables()},
        dual={name: np.array(con.dual_value, dtype=float) for name, con in constraints.items()},
        iterations=int(stats.num_iters or 0) if stats is not None else 0,
    )


# -------------------------------------------------------------- the QP data


@dataclass(frozen=True)
class InequalityQP:
    """minimize ½xᵀPx + qᵀx + r  s.t.  Ax = b,  Gx ≤ h, as explicit dense arrays.

    Arrays may be float64 or longdouble (a perturbed copy formed in
    longdouble keeps finite differences of the reference exact). P must be
    exactly symmetric (positive semidefinite). ``None`` for A, b (or G, h)
    means no equality (or inequality) rows.
    """

    P: NDArray[np.floating]
    q: NDArray[np.floating]
    A: NDArray[np.floating] = None  # type: ignore[assignment]
    b: NDArray[np.floating] = None  # type: ignore[assignment]
    G: NDArray[np.floating] = None  # type: ignore[assignment]
    h: NDArray[np.floating] = None  # type: ignore[assignment]
    r: float = 0.0

    def __post_init__(self) -> None:
        n = int(np.shape(self.q)[0])
        for mat, vec in (("A", "b"), ("G", "h")):
            if getattr(self, mat) is None:
                object.__setattr__(self, mat, np.zeros((0, n)))
            if getattr(self, vec) is None:
                object.__setattr__(self, vec, np.zeros(getattr(self, mat).shape[0]))
        if (self.P.shape != (n, n) or self.A.shape[1] != n or self.G.shape[1] != n
                or self.b.shape != self.A.shape[:1] or self.h.shape != self.G.shape[:1]):
            raise ValueError(f"inconsistent shapes: P {self.P.shape}, q {np.shape(self.q)}, "
                             f"A {self.A.shape}, b {self.b.shape}, G {self.G.shape}, "
                             f"h {self.h.shape}")
        if not np.array_equal(self.P, self.P.T):
            raise ValueError("P must be exactly symmetric")

    @property
    def n(self) -> int:
        """Variables."""
        return int(np.shape(self.q)[0])

    @property
    def m(self) -> int:
        """Equality rows."""
        return int(self.A.shape[0])

    @property
    def p(self) -> int:
        """Inequality rows."""
        return int(self.G.shape[0])

    def objective(self, x: NDArray[np.floating]) -> np.longdouble:
        """½xᵀPx + qᵀx + r in longdouble."""
        xl = np.asarray(x, np.longdouble)
        P = np.asarray(self.P, np.longdouble)
        return (np.longdouble(0.5) * (xl @ (P @ xl)) + np.asarray(self.q, np.longdouble) @ xl
                + np.longdouble(self.r))

    def slack(self, x: NDArray[np.floating]) -> LongArray:
        """h − Gx in longdouble."""
        return (np.asarray(self.h, np.longdouble)
                - np.asarray(self.G, np.longdouble) @ np.asarray(x, np.longdouble))

    def slack_scale(self, x: NDArray[np.floating]) -> FloatArray:
        """max(1, |h_i| + |G_i|·|x|): the size of the terms of each slack."""
        return np.maximum(1.0, np.abs(np.asarray(self.h, float))
                          + np.abs(np.asarray(self.G, float)) @ np.abs(np.asarray(x, float)))

    def perturbed(self, step: float, **directions: NDArray[np.floating]) -> InequalityQP:
        """A copy with data + step · direction, formed in longdouble (P's direction
        is symmetrized)."""
        out: dict[str, Any] = {}
        for key in ("P", "q", "A", "b", "G", "h"):
            value = np.asarray(getattr(self, key), np.longdouble)
            if key in directions:
                d = np.asarray(directions[key], np.longdouble)
                if key == "P":
                    d = np.longdouble(0.5) * (d + d.T)
                value = value + np.longdouble(step) * d
            out[key] = value
        return InequalityQP(r=self.r, **out)


@dataclass(frozen=True)
class BoundsQP:
    """A QP given as l ≤ Ax ≤ u (OSQP's and the Maros–Mészáros form), split into
    the :class:`InequalityQP` form.

    Attributes
    ----------
    qp : InequalityQP
        Equalities are the rows with l = u; the inequality block stacks the
        rows with a finite upper side (``A_i x ≤ u_i``) and then the rows with
        a finite lower side (``−A_i x ≤ −l_i``).
    eq_rows, upper_rows, lower_rows : ndarray of int
        Which rows of the original A each block comes from.
    """

    qp: InequalityQP
    eq_rows: NDArray[np.intp]
    upper_rows: NDArray[np.intp]
    lower_rows: NDArray[np.intp]

    @property
    def n_upper(self) -> int:
        return int(self.upper_rows.size)


def from_bounds(P: NDArray[np.floating], q: NDArray[np.floating], A: NDArray[np.floating],
                l: NDArray[np.floating], u: NDArray[np.floating], r: float = 0.0,
                *, infinity: float = 1e20) -> BoundsQP:
    """Split l ≤ Ax ≤ u (±``infinity`` or ±inf: no bound) into Ax = b, Gx ≤ h."""
    A = np.asarray(A, float)
    l, u = np.asarray(l, float), np.asarray(u, float)
    eq = l == u
    has_u = ~eq & (u < infinity)
    has_l = ~eq & (l > -infinity)
    eq_rows, up_rows, lo_rows = (np.flatnonzero(eq), np.flatnonzero(has_u),
                                 np.flatnonzero(has_l))
    G = np.vstack([A[up_rows], -A[lo_rows]])
    h = np.concatenate([u[up_rows], -l[lo_rows]])
    qp = InequalityQP(P=np.asarray(P, float), q=np.asarray(q, float), A=A[eq_rows], b=l[eq_rows],
                      G=G, h=h, r=float(r))
    return BoundsQP(qp, eq_rows, up_rows, lo_rows)


def clarabel_qp(qp: InequalityQP, *, settings: Mapping[str, Any] | None = None
                ) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Clarabel's (x, ν, λ, value) for the explicit data (no parameters).

    Raises
    ------
    PeerFailure
        As :func:`clarabel_solve`.
    """
    x = cp.Variable(qp.n, name="x")
    P = np.asarray(qp.P, float)
    objective = cp.Minimize(0.5 * cp.quad_form(x, P, assume_PSD=True)
                            + np.asarray(qp.q, float) @ x + qp.r)
    cons: dict[str, cp.Constraint] = {}
    if qp.m:
        cons["eq"] = np.asarray(qp.A, float) @ x == np.asarray(qp.b, float)
    if qp.p:
        cons["ineq"] = np.asarray(qp.G, float) @ x <= np.asarray(qp.h, float)
    res = clarabel_solve(objective, cons, {}, settings=settings)
    nu = np.atleast_1d(res.dual["eq"]) if qp.m else np.zeros(0)
    lam = np.atleast_1d(res.dual["ineq"]) if qp.p else np.zeros(0)
    return res.primal["x"], nu, lam, res.value


# ---------------------------------------------------------- the active set


@dataclass(frozen=True)
class RowClasses:
    """The inequality rows of a (nearly) optimal point, by slack and multiplier.

    Attributes
    ----------
    active : ndarray of bool
        Binding with a positive multiplier (strictly active).
    weak : ndarray of bool
        Binding with a multiplier ≈ 0 (weakly active: a degenerate row).
    inactive : ndarray of bool
        Slack > 0, multiplier ≈ 0.
    slack, lam : ndarray
        h − Gx and λ, as given.
    """

    active: NDArray[np.bool_]
    weak: NDArray[np.bool_]
    inactive: NDArray[np.bool_]
    slack: FloatArray
    lam: FloatArray

    @property
    def strict(self) -> bool:
        """Strict complementarity: no weakly active row."""
        return not bool(self.weak.any())

    def min_margin(self, slack_scale: FloatArray, lam_scale: float) -> float:
        """min over rows of max(slack/scale, λ/scale): how far from degenerate."""
        if self.slack.size == 0:
            return np.inf
        return float(np.min(np.maximum(self.slack / slack_scale, self.lam / lam_scale)))


def classify_rows(qp: InequalityQP, x: NDArray[np.floating], lam: NDArray[np.floating],
                  *, tol: float = ROW_TOL) -> RowClasses:
    """Sort the inequality rows of a (nearly) optimal point.

    A row binds when its slack h_i − G_i x is at most ``tol`` times
    max(1, |h_i| + |G_i|·|x|), and its multiplier counts as positive when
    λ_i > ``tol`` · max(1, ‖λ‖∞).

    Raises
    ------
    ValueError
        If a row has both a clear slack and a clear multiplier (the point is
        not complementary: not a solution), or a negative slack or multiplier
        beyond the tolerance.
    """
    xf = np.asarray(x, float)
    slack = np.asarray(qp.slack(xf), float)
    lamf = np.asarray(lam, float)
    s_tol = tol * qp.slack_scale(xf)
    l_tol = tol * max(1.0, float(np.max(np.abs(lamf), initial=0.0)))
    binding = slack <= s_tol
    positive = lamf > l_tol
    bad = ~binding & positive
    if bad.any() or np.any(slack < -s_tol) or np.any(lamf < -l_tol):
        rows = np.flatnonzero(bad | (slack < -s_tol) | (lamf < -l_tol)).tolist()
        raise ValueError(f"not a complementary solution at rows {rows}: slack "
                         f"{slack[rows]}, multiplier {lamf[rows]}")
    return RowClasses(active=binding & positive, weak=binding & ~positive,
                      inactive=~binding & ~positive, slack=slack, lam=lamf)


@dataclass(frozen=True)
class ActiveSetSolution:
    """The exact optimum of an :class:`InequalityQP` for a given active set.

    Attributes
    ----------
    x, nu, lam : ndarray of longdouble
        Primal point, equality multipliers and inequality multipliers (full
        length, zero off the active set), CVXPY's sign conventions.
    active : ndarray of bool
        The active set used.
    value : longdouble
        ½(qᵀx − bᵀν − h_𝒜ᵀλ_𝒜) + r, the objective at a KKT point without the
        cancellation of ½xᵀPx + qᵀx.
    solve : LinearSolve
        Diagnostics of the refined KKT solve.
    """

    x: LongArray
    nu: LongArray
    lam: LongArray
    active: NDArray[np.bool_]
    value: np.longdouble
    solve: LinearSolve = field(repr=False)


def _refine(K: LongArray, rhs: LongArray, n: int, residuals: Residuals) -> LinearSolve:
    """:func:`reference.refine`, and the exact zero for a zero right-hand side
    (which the refinement's relative stopping test cannot handle)."""
    if not np.any(rhs):
        return LinearSolve(z=np.zeros(rhs.shape, np.longdouble), steps=0, correction=0.0,
                           residuals="exact", kappa=float("nan"), error_bound=0.0)
    return refine(K, rhs, n=n, residuals=residuals)


def _kkt(qp: InequalityQP, active: NDArray[np.bool_]) -> tuple[LongArray, LongArray]:
    """K = [[P, Eᵀ], [E, 0]] with E = [A; G_𝒜], and the right-hand side (−q, b, h_𝒜)."""
    E = np.vstack([np.asarray(qp.A, np.longdouble), np.asarray(qp.G, np.longdouble)[active]])
    n, k = qp.n, E.shape[0]
    K = np.zeros((n + k, n + k), dtype=np.longdouble)
    K[:n, :n] = qp.P
    K[:n, n:] = E.T
    K[n:, :n] = E
    rhs = np.concatenate([-np.asarray(qp.q, np.longdouble), np.asarray(qp.b, np.longdouble),
                          np.asarray(qp.h, np.longdouble)[active]])
    return K, rhs


def solve_active_set(qp: InequalityQP, active: NDArray[np.bool_], *,
                     residuals: Residuals = "auto") -> ActiveSetSolution:
    """Solve the equality KKT system over the equalities and the rows in ``active``.

    Parameters
    ----------
    qp : InequalityQP
    active : ndarray of bool, shape (p,)
    residuals : {"auto", "longdouble", "mpmath"}
        See :func:`reference.refine`.

    Returns
    -------
    ActiveSetSolution
        Not checked for optimality: see :func:`classify_rows` (λ ≥ 0 on the
        active rows and slack ≥ 0 on the others make it the optimum).
    """
    active = np.asarray(active, dtype=bool)
    if active.shape != (qp.p,):
        raise ValueError(f"active set of shape {active.shape}, expected ({qp.p},)")
    K, rhs = _kkt(qp, active)
    lin = _refine(K, rhs, qp.n, residuals)
    n, m = qp.n, qp.m
    x, nu, lam_a = lin.z[:n], lin.z[n:n + m], lin.z[n + m:]
    lam = np.zeros(qp.p, dtype=np.longdouble)
    lam[active] = lam_a
    value = (np.longdouble(0.5) * (np.asarray(qp.q, np.longdouble) @ x
                                   - np.asarray(qp.b, np.longdouble) @ nu
                                   - np.asarray(qp.h, np.longdouble)[active] @ lam_a)
             + np.longdouble(qp.r))
    return ActiveSetSolution(x=x, nu=nu, lam=lam, active=active.copy(), value=value, solve=lin)


@dataclass(frozen=True)
class InequalityGradients:
    """dℓ/d(P, q, A, b, G, h) of ℓ = g_xᵀx + g_νᵀν + g_λᵀλ, in longdouble."""

    P: LongArray
    q: LongArray
    A: LongArray
    b: LongArray
    G: LongArray
    h: LongArray
    omega: LinearSolve = field(repr=False)


def active_set_gradients(qp: InequalityQP, sol: ActiveSetSolution, gx: NDArray[np.floating],
                         gnu: NDArray[np.floating] | None = None,
                         glam: NDArray[np.floating] | None = None, *,
                         residuals: Residuals = "auto") -> InequalityGradients:
    """Gradients of a linear loss at a non-degenerate optimum (active set fixed).

    Parameters
    ----------
    qp : InequalityQP
    sol : ActiveSetSolution
        From :func:`solve_active_set` with the true (strictly complementary)
        active set.
    gx, gnu, glam : ndarray
        ∂ℓ/∂x (n), ∂ℓ/∂ν (m), ∂ℓ/∂λ (p); the latter two default to zero.

    Returns
    -------
    InequalityGradients
        See the module docstring for the formulas.
    """
    active = sol.active
    gnu = np.zeros(qp.m) if gnu is None else np.asarray(gnu)
    glam = np.zeros(qp.p) if glam is None else np.asarray(glam)
    K, _ = _kkt(qp, active)
    rhs = np.concatenate([np.asarray(gx, np.longdouble), np.asarray(gnu, np.longdouble),
                          np.asarray(glam, np.longdouble)[active]])
    omega = _refine(K, rhs, qp.n, residuals)
    n, m = qp.n, qp.m
    wx, wn = omega.z[:n], omega.z[n:n + m]
    wl = np.zeros(qp.p, dtype=np.longdouble)
    wl[active] = omega.z[n + m:]
    x, nu, lam = sol.x, sol.nu, sol.lam
    half = np.longdouble(0.5)
    return InequalityGradients(
        P=-half * (np.outer(wx, x) + np.outer(x, wx)),
        q=-wx,
        A=-(np.outer(wn, x) + np.outer(nu, wx)),
        b=wn.copy(),
        G=-(np.outer(wl, x) + np.outer(lam, wx)),
        h=wl,
        omega=omega,
    )


@dataclass(frozen=True)
class ActiveSetTangent:
    """dx, dν, dλ along a direction of the data (λ's change is 0 off the active set)."""

    x: LongArray
    nu: LongArray
    lam: LongArray


def active_set_tangent(qp: InequalityQP, sol: ActiveSetSolution, *,
                       residuals: Residuals = "auto",
                       **directions: NDArray[np.floating]) -> ActiveSetTangent:
    """Forward mode at a non-degenerate optimum: the derivative along (dP, dq, dA, db, dG, dh).

    Differentiating F(z, θ) = (Px + q + Aᵀν + G_𝒜ᵀλ_𝒜, Ax − b, G_𝒜x − h_𝒜) = 0 gives
    K dz = −(sym(dP) x + dq + dAᵀν + dG_𝒜ᵀλ_𝒜, dA x − db, dG_𝒜 x − dh_𝒜), with
    sym(dP) = ½(dP + dPᵀ) (P a free matrix in ½xᵀPx).

    Parameters
    ----------
    qp, sol
        As for :func:`active_set_gradients`.
    **directions : ndarray
        Any of P, q, A, b, G, h; absent ones are zero.
    """
    unknown = set(directions) - {"P", "q", "A", "b", "G", "h"}
    if unknown:
        raise ValueError(f"unknown data {sorted(unknown)}")
    L = np.longdouble

    def d(key: str) -> LongArray:
        if key in directions:
            return np.asarray(directions[key], L)
        return np.zeros(np.shape(getattr(qp, key)), L)

    active = sol.active
    x, nu, lam = sol.x, sol.nu, sol.lam
    dP = d("P")
    dP = L(0.5) * (dP + dP.T)
    top = dP @ x + d("q") + d("A").T @ nu + d("G").T @ lam
    mid = d("A") @ x - d("b")
    bot = (d("G") @ x - d("h"))[active]
    K, _ = _kkt(qp, active)
    lin = _refine(K, -np.concatenate([top, mid, bot]), qp.n, residuals)
    n, m = qp.n, qp.m
    dlam = np.zeros(qp.p, dtype=L)
    dlam[active] = lin.z[n + m:]
    return ActiveSetTangent(x=lin.z[:n], nu=lin.z[n:n + m], lam=dlam)


def reference_at(qp: InequalityQP, *, settings: Mapping[str, Any] | None = None,
                 strict: bool = True) -> tuple[ActiveSetSolution, RowClasses]:
    """The exact optimum: Clarabel finds the active set, the KKT solve makes it exact.

    The active set is read from Clarabel's solution (:func:`classify_rows`)
    and then confirmed on the exact solution: λ_𝒜 > 0 and slack > 0 off 𝒜,
    each by a relative margin of 1e-7.

    Parameters
    ----------
    strict : bool
        Require strict complementarity (no weakly active row), as every
        derivative check of a non-degenerate point does.

    Raises
    ------
    PeerFailure
        If Clarabel fails.
    ValueError
        If the point is degenerate (with ``strict``) or the active set read
        from Clarabel is not confirmed by the exact solve.
    """
    x_c, _, lam_c, _ = clarabel_qp(qp, settings=settings)
    rows = classify_rows(qp, x_c, lam_c)
    if strict and not rows.strict:
        raise ValueError(f"degenerate point: weakly active rows {np.flatnonzero(rows.weak)}")
    sol = solve_active_set(qp, rows.active)
    exact = classify_rows(qp, sol.x, sol.lam)
    if not np.array_equal(exact.active, rows.active) or (strict and not exact.strict):
        raise ValueError("the active set read from Clarabel is not confirmed by the exact "
                         f"solve: rows {np.flatnonzero(exact.active != rows.active)}")
    return sol, rows
