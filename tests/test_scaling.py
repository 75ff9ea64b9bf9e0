"""Exact at every scale: solutions and gradients of badly scaled QPs.

Issue "Exact at every scale": with data that are not of unit scale the
solver returned wrong solutions and gradients labelled "optimal", and
refused convex, feasible problems with wrong statuses. This battery pins the
contract of DESIGN.md ("No wrong number is ever labelled optimal"; "Statuses
do not depend on the units of the data") on problems whose *equilibrated*
KKT matrix is well conditioned, so that double precision can and must get
them right.

Every case is checked against :mod:`reference` (an independent dense KKT
solve with iterative refinement in extended precision, no diffmodel inside):

- x of every variable, ν of every constraint (CVXPY's sign convention) and
  the gradient of a random linear loss ℓ = Σ ⟨g_v, x_v⟩ + Σ ⟨h_c, ν_c⟩ for
  every parameter, each to ``RTOL`` = 1e-9 in the normwise relative error
  ‖got − ref‖∞ / ‖ref‖∞ per named block; the optimal value to ``RTOL``
  relative (see :func:`_value_error`);
- ``sol.accuracy`` is a finite float ≥ 0 that does not understate the actual
  error: max over the primal and dual blocks ≤ max(10 · accuracy, 1e-12).

A case may instead raise ``dm.SolverError`` only if the condition number of
its Ruiz-equilibrated KKT matrix exceeds ``KAPPA_LIMIT`` = 1e13 (beyond
double precision); every case here is designed to stay below it (see
``test_cases_are_well_conditioned_after_equilibration``).

Cases (``CASE_NAMES``; each family's function documents its model, its
explicit data and its chain rule):

- ``issue-*``: the issue's reproductions (its least-squares script, least
  squares with features of size 1, 10, 30, 100, 300, 1000, diagonal weights
  1e-6…1e6, MPC with weights
  1e4/1e-4, a portfolio in dollars, a row 1e-5·x₀ + 2e-5·x₁ == 1, a diagonal
  P with entries 1 and 1e-10), also pinned by name in
  ``test_issue_reproduction``;
- ``random-rowcol-scaled-1e{k}``: a well-conditioned random QP with rows and
  columns scaled by 10^U(−k, k), k = 1…6;
- ``ls-features-1e{2,3,4}``, ``ls-mixed-feature-sizes``,
  ``weights-{param,const}-1e-6-1e6``,
  ``mpc-ratio-1e{8,12}``, ``portfolio-dollars-target``,
  ``coefficients-1e-7`` … ``coefficients-1e12`` (A scaled, P = I),
  ``diag-cond-1e10``, ``dense-psd-cond-1e12-{constant,parameter}``;
- convex, feasible problems the issue saw refused: ``canonical-data-x1e300``
  (and x1e-100), and the twins of the status families below:
  ``feasible-rows-*``, ``bounded-flat-*``, ``convex-curvature-*``.

Status families (``test_*_at_every_scale``): inconsistent rows → "infeasible",
a flat descent direction → "unbounded", an indefinite ``symmetric=True``
quad_form → "nonconvex", each from 1e-7 (1e-6) to 1e12 (1e6).
``test_scale_invariance`` (hypothesis) checks that rescaling rows and columns
by powers of ten rescales the solution, duals and gradients accordingly.

How each case's reference is built: the explicit P, q, A, b are written out
from the mathematics of the CVXPY model (``data``); the gradients with
respect to the data come from the adjoint (``reference.qp_gradients``), and
are chained to the parameters by hand (``chain``). Two self-tests per case
guard those hand derivations: the data are compared with CVXPY's own
evaluation of the objective and of every constraint at random points, and
the chained gradients with central finite differences of the reference
solve itself along a random parameter direction.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import diffmodel as dm
import reference as ref
from reference import EqualityQP, QPGradients, ReferenceSolution, relative_error

# ----------------------------------------------------------------- settings

#: Normwise relative agreement required with the reference, per named block.
RTOL = 1e-9
#: Equilibrated KKT condition number above which a refusal is acceptable.
KAPPA_LIMIT = 1e13
#: sol.accuracy may understate the actual error by at most this factor...
ACCURACY_FACTOR = 10.0
#: ...or the actual error must be below this floor.
ACCURACY_FLOOR = 1e-12
#: The reference must itself be at least this accurate (estimated).
REFERENCE_TOL = 1e-13

Layout = list[tuple[str, tuple[int, ...]]]
Values = dict[str, NDArray[np.float64]]
Long = NDArray[np.longdouble]
LD = np.longdouble


# --------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One test problem: a CVXPY model, parameter values and its reference.

    Attributes
    ----------
    name : str
        Readable id.
    build : callable
        ``build() -> (objective, {name: constraint})`` with fresh CVXPY objects.
    values : dict
        Parameter values by name.
    variables, constraints : list of (name, shape)
        The order in which the reference stacks x and ν (each block vec'ed
        column-major, like CVXPY).
    data : callable
        ``data(values) -> EqualityQP``: the explicit QP, written by hand.
    chain : callable
        ``chain(values, grads, sol) -> {param: gradient}`` from dℓ/d(P, q, A, b)
        to dℓ/dθ, by hand.
    seed : int
        Seed of the random loss.
    """

    name: str
    build: Callable[[], tuple[cp.Minimize, dict[str, cp.Constraint]]]
    values: Values
    variables: Layout
    constraints: Layout
    data: Callable[[Values], EqualityQP]
    chain: Callable[[Values, QPGradients, ReferenceSolution], dict[str, Long]]
    seed: int = 0


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _split(vec: NDArray[np.floating], layout: Layout) -> dict[str, NDArray[np.floating]]:
    """Cut a stacked vector into named blocks (column-major, like CVXPY)."""
    out, k = {}, 0
    for name, shape in layout:
        size = _size(shape)
        out[name] = vec[k:k + size].reshape(shape, order="F")
        k += size
    assert k == vec.shape[0], f"layout covers {k} entries, vector has {vec.shape[0]}"
    return out


def _join(blocks: Mapping[str, NDArray[np.floating]], layout: Layout,
          dtype: type = np.float64) -> NDArray[np.floating]:
    """Stack named blocks into one vector (column-major)."""
    parts = [np.asarray(blocks[name], dtype).reshape(-1, order="F") for name, _ in layout]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _ld(a: object) -> Long:
    return np.asarray(a, dtype=np.longdouble)


def _canonical_grads(values: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
    """Parameters P (in ½ quad_form(x, P), entries independent), q, A, b."""
    # ½ xᵀPx with independent entries is ½ xᵀ ½(P + Pᵀ) x, so dℓ/dP_ij = ½(G_ij + G_ji) = G_ij.
    return {"P": G.P, "q": G.q, "A": G.A, "b": G.b}


def canonical_case(name: str, P: NDArray[np.float64], q: NDArray[np.float64],
                   A: NDArray[np.float64], b: NDArray[np.float64], seed: int = 0) -> Case:
    """``½ quad_form(x, P) + q @ x`` s.t. ``A @ x == b``, all four parameters
    (P declared ``symmetric=True``: convexity is diffmodel's to check)."""
    n, m = q.shape[0], b.shape[0]

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        Pp = cp.Parameter((n, n), name="P", symmetric=True)
        qp = cp.Parameter(n, name="q")
        Ap = cp.Parameter((m, n), name="A")
        bp = cp.Parameter(m, name="b")
        return cp.Minimize(0.5 * cp.quad_form(x, Pp) + qp @ x), {"balance": Ap @ x == bp}

    def data(v: Values) -> EqualityQP:
        Pv = _ld(v["P"])
        return EqualityQP(P=(Pv + Pv.T) / 2, q=_ld(v["q"]), A=_ld(v["A"]), b=_ld(v["b"]))

    return Case(name, build, {"P": P, "q": q, "A": A, "b": b}, [("x", (n,))],
                [("balance", (m,))], data, _canonical_grads, seed)


# ------------------------------------------------------------ random helpers


def orthogonal(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """A Haar-random orthogonal matrix."""
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def spd(rng: np.random.Generator, n: int, eigs: NDArray[np.float64] | None = None
        ) -> NDArray[np.float64]:
    """U diag(eigs) Uᵀ with U Haar-random, exactly symmetric (eigs default U(1, 4))."""
    U = orthogonal(rng, n)
    lam = rng.uniform(1.0, 4.0, n) if eigs is None else np.asarray(eigs, np.float64)
    M = (U * lam) @ U.T
    return 0.5 * (M + M.T)


def full_row_rank(rng: np.random.Generator, m: int, n: int) -> NDArray[np.float64]:
    """An (m, n) matrix with singular values in [1, 2]."""
    U = orthogonal(rng, m)
    V = orthogonal(rng, n)[:m]
    return (U * rng.uniform(1.0, 2.0, m)) @ V


def scale_sym(P: NDArray[np.float64], D: NDArray[np.float64]) -> NDArray[np.float64]:
    """D P D, exactly symmetric (the rounding of (D_i P_ij) D_j depends on order)."""
    S = (D[:, None] * P) * D[None, :]
    return 0.5 * (S + S.T)


def base_problem(seed: int, n: int = 6, m: int = 3) -> dict[str, NDArray[np.float64]]:
    """A well-conditioned equality QP: eig(P) in [1, 4], sv(A) in [1, 2]."""
    rng = np.random.default_rng(seed)
    return {"P": spd(rng, n), "q": rng.standard_normal(n), "A": full_row_rank(rng, m, n),
            "b": rng.standard_normal(m)}


def scaled_base(base: Mapping[str, NDArray[np.float64]], D: NDArray[np.float64],
                E: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """P → D P D, q → D q, A → E A D, b → E b (then x = D⁻¹ x₀, ν = E⁻¹ ν₀)."""
    return {"P": scale_sym(base["P"], D), "q": D * base["q"],
            "A": (E[:, None] * base["A"]) * D[None, :], "b": E * base["b"]}


# ------------------------------------------------------------- case families


def least_squares_case(name: str, X0: NDArray[np.float64], y0: NDArray[np.float64],
                       seed: int = 0) -> Case:
    """``sum_squares(Xd @ beta - y)`` s.t. ``sum(beta) == 1`` (Xd, y parameters).

    Reference: P = 2XᵀX, q = −2Xᵀy, r = yᵀy, formed in longdouble; A = 1ᵀ,
    b = 1. Chain: dℓ/dX = 4 X G_P − 2 y G_qᵀ (G_P symmetric), dℓ/dy = −2 X G_q.
    """
    N, p = X0.shape

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        beta = cp.Variable(p, name="beta")
        X = cp.Parameter((N, p), name="Xd")
        y = cp.Parameter(N, name="y")
        return cp.Minimize(cp.sum_squares(X @ beta - y)), {"s": cp.sum(beta) == 1}

    def data(v: Values) -> EqualityQP:
        X, y = _ld(v["Xd"]), _ld(v["y"])
        P = 2 * (X.T @ X)
        return EqualityQP(P=(P + P.T) / 2, q=-2 * (X.T @ y), A=np.ones((1, p), LD),
                          b=np.ones(1, LD), r=y @ y)

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        X, y = _ld(v["Xd"]), _ld(v["y"])
        return {"Xd": 4 * (X @ G.P) - 2 * np.outer(y, G.q), "y": -2 * (X @ G.q)}

    return Case(name, build, {"Xd": X0, "y": y0}, [("beta", (p,))], [("s", ())],
                data, chain, seed)


def weights_case(name: str, w0: NDArray[np.float64], d0: float, *, linear: bool,
                 weights_parameter: bool, seed: int = 0) -> Case:
    """``sum(multiply(w, square(x))) [+ c @ x]`` s.t. ``sum(x) == d``.

    w is a parameter (declared nonneg) or a constant; d (and c) parameters.
    Reference: P = 2 diag(w), q = c, A = 1ᵀ, b = d. Chain: dℓ/dw = 2 diag(G_P),
    dℓ/dc = G_q, dℓ/dd = G_b.
    """
    n = w0.shape[0]
    rng = np.random.default_rng(seed)
    c0 = rng.standard_normal(n)

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        w = cp.Parameter(n, name="w", nonneg=True) if weights_parameter else w0
        d = cp.Parameter(name="d")
        obj = cp.sum(cp.multiply(w, cp.square(x)))
        if linear:
            obj = obj + cp.Parameter(n, name="c") @ x
        return cp.Minimize(obj), {"total": cp.sum(x) == d}

    values: Values = {"d": np.array(d0)}
    if weights_parameter:
        values["w"] = w0
    if linear:
        values["c"] = c0

    def data(v: Values) -> EqualityQP:
        w = _ld(v["w"]) if weights_parameter else _ld(w0)
        q = _ld(v["c"]) if linear else np.zeros(n, LD)
        return EqualityQP(P=np.diag(2 * w), q=q, A=np.ones((1, n), LD),
                          b=_ld(v["d"]).reshape(1))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        out = {"d": G.b.reshape(())}
        if weights_parameter:
            out["w"] = 2 * np.diag(G.P)
        if linear:
            out["c"] = G.q
        return out

    return Case(name, build, values, [("x", (n,))], [("total", ())], data, chain, seed)


def mpc_case(name: str, qw: float, rw: float, seed: int, nx: int = 4, nu: int = 2,
             T: int = 10) -> Case:
    """Linear MPC: ``qw·sum_squares(X) + rw·sum_squares(U)`` s.t.
    ``X[:, 1:] == Ad @ X[:, :-1] + B @ U`` ("dynamics") and ``X[:, 0] == x0``
    ("initial"), with Ad and x0 parameters, B constant.

    Reference: x = (vec X, vec U); P = diag(2qw, 2rw); the dynamics row
    (i, t) (column-major index i + nx·t) has +1 at X[i, t+1], −Ad[i, k] at
    X[k, t] and −B[i, j] at U[j, t], right-hand side 0; the initial rows
    have +1 at X[i, 0] and b = x0. Chain: dℓ/dAd[i, k] = −Σ_t G_A[(i, t), X(k, t)],
    dℓ/dx0 = G_b over the initial rows.
    """
    rng = np.random.default_rng(seed)
    Ad0 = 0.9 * orthogonal(rng, nx) + 0.1 * rng.standard_normal((nx, nx))
    B0 = rng.standard_normal((nx, nu))
    x00 = rng.standard_normal(nx)
    nX, nU = nx * (T + 1), nu * T

    def col_X(k: int, t: int) -> int:
        return k + nx * t

    def col_U(j: int, t: int) -> int:
        return nX + j + nu * t

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        X = cp.Variable((nx, T + 1), name="X")
        U = cp.Variable((nu, T), name="U")
        Ad = cp.Parameter((nx, nx), name="Ad")
        x0 = cp.Parameter(nx, name="x0")
        obj = qw * cp.sum_squares(X) + rw * cp.sum_squares(U)
        return cp.Minimize(obj), {"dynamics": X[:, 1:] == Ad @ X[:, :-1] + B0 @ U,
                                  "initial": X[:, 0] == x0}

    def data(v: Values) -> EqualityQP:
        Ad = _ld(v["Ad"])
        P = np.diag(np.concatenate([np.full(nX, 2 * LD(qw)), np.full(nU, 2 * LD(rw))]))
        A = np.zeros((nx * T + nx, nX + nU), LD)
        for t in range(T):
            for i in range(nx):
                row = i + nx * t
                A[row, col_X(i, t + 1)] = 1
                for k in range(nx):
                    A[row, col_X(k, t)] -= Ad[i, k]
                for j in range(nu):
                    A[row, col_U(j, t)] = -B0[i, j]
        for i in range(nx):
            A[nx * T + i, col_X(i, 0)] = 1
        b = np.concatenate([np.zeros(nx * T, LD), _ld(v["x0"])])
        return EqualityQP(P=P, q=np.zeros(nX + nU, LD), A=A, b=b)

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        dAd = np.zeros((nx, nx), LD)
        for t in range(T):
            for i in range(nx):
                for k in range(nx):
                    dAd[i, k] -= G.A[i + nx * t, col_X(k, t)]
        return {"Ad": dAd, "x0": G.b[nx * T:]}

    return Case(name, build, {"Ad": Ad0, "x0": x00}, [("X", (nx, T + 1)), ("U", (nu, T))],
                [("dynamics", (nx, T)), ("initial", (nx,))], data, chain, seed)


def portfolio_case(name: str, seed: int, *, target: bool, n: int = 8,
                   budget: float = 1e6, gamma: float = 5e-6) -> Case:
    """Markowitz in dollars: ``gamma·quad_form(x, Sigma) − mu @ x`` s.t.
    ``sum(x) == budget`` [and ``mu @ x == target``]; Sigma (volatilities
    5–15 %, so variances ~1e-2) constant, mu (~1e-2), budget [, target]
    parameters.

    Reference: P = 2γΣ, q = −μ, A = [1ᵀ; μᵀ], b = (budget, target).
    Chain: dℓ/dμ = −G_q [+ G_A[1, :]], dℓ/dbudget = G_b[0], dℓ/dtarget = G_b[1].
    """
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, 3))
    C = F @ F.T + np.diag(rng.uniform(0.5, 1.5, n))
    s = np.sqrt(np.diag(C))
    vol = rng.uniform(0.05, 0.15, n)
    Sigma = (C / np.outer(s, s)) * np.outer(vol, vol)
    Sigma = 0.5 * (Sigma + Sigma.T)
    mu0 = 1e-2 * rng.uniform(0.5, 1.5, n)

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        mu = cp.Parameter(n, name="mu")
        B = cp.Parameter(name="budget")
        cons: dict[str, cp.Constraint] = {"budget_eq": cp.sum(x) == B}
        if target:
            cons["return_eq"] = mu @ x == cp.Parameter(name="target")
        return cp.Minimize(gamma * cp.quad_form(x, Sigma) - mu @ x), cons

    values: Values = {"mu": mu0, "budget": np.array(budget)}
    if target:
        values["target"] = np.array(1.1e-2 * budget)

    def data(v: Values) -> EqualityQP:
        P = 2 * LD(gamma) * _ld(Sigma)
        mu = _ld(v["mu"])
        A = np.vstack([np.ones(n, LD), mu]) if target else np.ones((1, n), LD)
        b = np.array([_ld(v["budget"])] + ([_ld(v["target"])] if target else []), LD)
        return EqualityQP(P=(P + P.T) / 2, q=-mu, A=A, b=b)

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        out = {"mu": -G.q + (G.A[1] if target else 0), "budget": G.b[0].reshape(())}
        if target:
            out["target"] = G.b[1].reshape(())
        return out

    constraints: Layout = [("budget_eq", ())] + ([("return_eq", ())] if target else [])
    return Case(name, build, values, [("x", (n,))], constraints, data, chain, seed)


def row_case(name: str, a0: NDArray[np.float64], rhs: float, seed: int = 0) -> Case:
    """``½ sum_squares(x) + sum(x)`` s.t. ``a @ x == rhs`` (a a parameter).

    Reference: P = I, q = 1, A = aᵀ, b = rhs. Chain: dℓ/da = G_A[0].
    """
    n = a0.shape[0]

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        a = cp.Parameter(n, name="a")
        return cp.Minimize(0.5 * cp.sum_squares(x) + cp.sum(x)), {"c": a @ x == rhs}

    def data(v: Values) -> EqualityQP:
        return EqualityQP(P=np.eye(n, dtype=LD), q=np.ones(n, LD), A=_ld(v["a"])[None, :],
                          b=np.array([rhs], LD))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        return {"a": G.A[0]}

    return Case(name, build, {"a": a0}, [("x", (n,))], [("c", ())], data, chain, seed)


def diagonal_case(name: str, p0: NDArray[np.float64], q0: NDArray[np.float64],
                  a0: NDArray[np.float64] | None = None, e0: float = 0.0,
                  seed: int = 0) -> Case:
    """``½ sum(multiply(p, square(x))) + q @ x`` [s.t. ``a @ x == e``]; p (nonneg),
    q [, a, e] parameters.

    Reference: P = diag(p), q, A = aᵀ, b = e. Chain: dℓ/dp = diag(G_P),
    dℓ/dq = G_q, dℓ/da = G_A[0], dℓ/de = G_b[0].
    """
    n = p0.shape[0]
    constrained = a0 is not None

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        p = cp.Parameter(n, name="p", nonneg=True)
        q = cp.Parameter(n, name="q")
        cons: dict[str, cp.Constraint] = {}
        if constrained:
            cons["c"] = cp.Parameter(n, name="a") @ x == cp.Parameter(name="e")
        return cp.Minimize(0.5 * cp.sum(cp.multiply(p, cp.square(x))) + q @ x), cons

    values: Values = {"p": p0, "q": q0}
    if constrained:
        assert a0 is not None
        values.update(a=a0, e=np.array(e0))

    def data(v: Values) -> EqualityQP:
        if constrained:
            A, b = _ld(v["a"])[None, :], _ld(v["e"]).reshape(1)
        else:
            A, b = np.zeros((0, n), LD), np.zeros(0, LD)
        return EqualityQP(P=np.diag(_ld(v["p"])), q=_ld(v["q"]), A=A, b=b)

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        out = {"p": np.diag(G.P).copy(), "q": G.q}
        if constrained:
            out.update(a=G.A[0], e=G.b[0].reshape(()))
        return out

    return Case(name, build, values, [("x", (n,))], [("c", ())] if constrained else [],
                data, chain, seed)


def coefficient_case(name: str, scale: float, seed: int, n: int = 5, m: int = 2) -> Case:
    """``½ sum_squares(x) + q @ x`` s.t. ``A @ x == b`` with A = scale · A₀
    (A, b, q parameters; P = I constant).

    Reference: P = I, q, A, b. Chain: the data gradients themselves.
    """
    rng = np.random.default_rng(seed)
    values = {"q": rng.standard_normal(n), "A": scale * full_row_rank(rng, m, n),
              "b": rng.standard_normal(m)}

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        q = cp.Parameter(n, name="q")
        A = cp.Parameter((m, n), name="A")
        b = cp.Parameter(m, name="b")
        return cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"balance": A @ x == b}

    def data(v: Values) -> EqualityQP:
        return EqualityQP(P=np.eye(n, dtype=LD), q=_ld(v["q"]), A=_ld(v["A"]), b=_ld(v["b"]))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        return {"q": G.q, "A": G.A, "b": G.b}

    return Case(name, build, values, [("x", (n,))], [("balance", (m,))], data, chain, seed)


def dense_q_case(name: str, seed: int, *, parameter: bool, n: int = 8,
                 cond: float = 1e12) -> Case:
    """``½ quad_form(x, Q) + q @ x`` s.t. ``a₀ @ x == e`` with Q = U diag(logspace(0,
    −log10 cond)) Uᵀ dense, as a constant or a ``PSD=True`` parameter; q, e
    parameters, a₀ constant.

    Reference: P = Q, q, A = a₀ᵀ, b = e. Chain: dℓ/dQ = G_P (½ quad_form,
    entries independent), dℓ/dq = G_q, dℓ/de = G_b[0].
    """
    rng = np.random.default_rng(seed)
    Q0 = spd(rng, n, np.logspace(0.0, -math.log10(cond), n))
    q0 = rng.standard_normal(n)
    a0 = rng.standard_normal(n)

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(n, name="x")
        Q = cp.Parameter((n, n), name="Q", PSD=True) if parameter else Q0
        q = cp.Parameter(n, name="q")
        e = cp.Parameter(name="e")
        return cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), {"c": a0 @ x == e}

    values: Values = {"q": q0, "e": np.array(1.0)}
    if parameter:
        values["Q"] = Q0

    def data(v: Values) -> EqualityQP:
        Q = _ld(v["Q"]) if parameter else _ld(Q0)
        return EqualityQP(P=(Q + Q.T) / 2, q=_ld(v["q"]), A=_ld(a0)[None, :],
                          b=_ld(v["e"]).reshape(1))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        out = {"q": G.q, "e": G.b[0].reshape(())}
        if parameter:
            out["Q"] = G.P
        return out

    return Case(name, build, values, [("x", (n,))], [("c", ())], data, chain, seed)


# --- status families: the refused problems and their feasible, convex twins

STATUS_SCALES = [1e-7, 1e-3, 1.0, 1e3, 1e6, 1e12]
NONCONVEX_SCALES = [1e-6, 1e-3, 1.0, 1e3, 1e6]
#: Q eigenvalues: two negative ones keep Q indefinite on the null space of any
#: single constraint row (Cauchy interlacing).
INDEFINITE_EIGS = np.array([-1.0, -0.5, 2.0, 3.0])
DEFINITE_EIGS = np.array([0.5, 1.0, 2.0, 3.0])


def _sci(s: float) -> str:
    return f"{s:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def rows_problem(scale: float, *, consistent: bool
                 ) -> tuple[Callable[[], tuple[cp.Minimize, dict[str, cp.Constraint]]], Values]:
    """``½ sum_squares(x)`` s.t. ``A @ x == b``, A and b both scaled by ``scale``:
    rows x₀ + x₁ == 1, x₀ + x₁ == 2 (inconsistent) or x₀ − x₁ == 2 (consistent)."""
    A = scale * np.array([[1.0, 1.0, 0.0], [1.0, 1.0 if not consistent else -1.0, 0.0]])
    b = scale * np.array([1.0, 2.0])

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(3, name="x")
        Ap = cp.Parameter((2, 3), name="A")
        bp = cp.Parameter(2, name="b")
        return cp.Minimize(0.5 * cp.sum_squares(x)), {"rows": Ap @ x == bp}

    return build, {"A": A, "b": b}


def rows_case(scale: float) -> Case:
    """The consistent twin of the infeasible family (P = I; chain: data gradients)."""
    build, values = rows_problem(scale, consistent=True)

    def data(v: Values) -> EqualityQP:
        return EqualityQP(P=np.eye(3, dtype=LD), q=np.zeros(3, LD), A=_ld(v["A"]), b=_ld(v["b"]))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        return {"A": G.A, "b": G.b}

    return Case(f"feasible-rows-{_sci(scale)}", build, values, [("x", (3,))], [("rows", (2,))],
                data, chain)


def flat_problem(scale: float, *, curved: bool
                 ) -> tuple[Callable[[], tuple[cp.Minimize, dict[str, cp.Constraint]]], Values]:
    """``½ sum(multiply(w, square(x))) + q @ x`` s.t. ``a @ x == c``, all scaled:
    w = s·(1, 0, 0) (flat along d = (0, 1, 1), with a·d = 0 and q·d = 2s: unbounded)
    or w = s·(1, 1, 1) (bounded)."""
    values = {"w": scale * np.array([1.0, float(curved), float(curved)]),
              "q": scale * np.array([0.0, 1.0, 1.0]), "a": scale * np.array([0.0, 1.0, -1.0]),
              "c": np.array(0.5 * scale)}

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(3, name="x")
        w = cp.Parameter(3, name="w", nonneg=True)
        q = cp.Parameter(3, name="q")
        a = cp.Parameter(3, name="a")
        c = cp.Parameter(name="c")
        return (cp.Minimize(0.5 * cp.sum(cp.multiply(w, cp.square(x))) + q @ x),
                {"flat": a @ x == c})

    return build, values


def flat_case(scale: float) -> Case:
    """The bounded twin of the unbounded family.

    Reference: P = diag(w), q, A = aᵀ, b = c. Chain: dℓ/dw = diag(G_P), q, a, c direct.
    """
    build, values = flat_problem(scale, curved=True)

    def data(v: Values) -> EqualityQP:
        return EqualityQP(P=np.diag(_ld(v["w"])), q=_ld(v["q"]), A=_ld(v["a"])[None, :],
                          b=_ld(v["c"]).reshape(1))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        return {"w": np.diag(G.P).copy(), "q": G.q, "a": G.A[0], "c": G.b[0].reshape(())}

    return Case(f"bounded-flat-{_sci(scale)}", build, values, [("x", (3,))], [("flat", ())],
                data, chain)


def curvature_problem(scale: float, *, definite: bool, seed: int = 11
                      ) -> tuple[Callable[[], tuple[cp.Minimize, dict[str, cp.Constraint]]],
                                 Values, NDArray[np.float64]]:
    """``½ quad_form(x, Q) + q @ x`` s.t. ``a₀ @ x == 1`` with Q a ``symmetric=True``
    parameter, scale · U diag(eigs) Uᵀ, indefinite or definite."""
    rng = np.random.default_rng(seed)
    Q = scale * spd(rng, 4, DEFINITE_EIGS if definite else INDEFINITE_EIGS)
    Q = 0.5 * (Q + Q.T)
    q0 = scale * rng.standard_normal(4)
    a0 = rng.standard_normal(4)

    def build() -> tuple[cp.Minimize, dict[str, cp.Constraint]]:
        x = cp.Variable(4, name="x")
        Qp = cp.Parameter((4, 4), name="Q", symmetric=True)
        qp = cp.Parameter(4, name="q")
        return cp.Minimize(0.5 * cp.quad_form(x, Qp) + qp @ x), {"c": a0 @ x == 1}

    return build, {"Q": Q, "q": q0}, a0


def curvature_case(scale: float) -> Case:
    """The convex twin of the nonconvex family.

    Reference: P = Q, q, A = a₀ᵀ, b = 1. Chain: dℓ/dQ = G_P, dℓ/dq = G_q.
    """
    build, values, a0 = curvature_problem(scale, definite=True)

    def data(v: Values) -> EqualityQP:
        Q = _ld(v["Q"])
        return EqualityQP(P=(Q + Q.T) / 2, q=_ld(v["q"]), A=_ld(a0)[None, :], b=np.ones(1, LD))

    def chain(v: Values, G: QPGradients, sol: ReferenceSolution) -> dict[str, Long]:
        return {"Q": G.P, "q": G.q}

    return Case(f"convex-curvature-{_sci(scale)}", build, values, [("x", (4,))], [("c", ())],
                data, chain)


# ------------------------------------------------------------ the case list


def _issue_ls() -> Case:
    # Verbatim from the issue.
    rng = np.random.default_rng(0)
    X0 = 1e3 * rng.standard_normal((50, 10))
    y0 = rng.standard_normal(50)
    return least_squares_case("issue-ls-1e3", X0, y0)


#: "Least squares with features of size 1, 10, 30, 100, 300, 1000 (error grew to 0.9)".
ISSUE_FEATURE_SIZES = [1, 10, 30, 100, 300, 1000]


def _issue_ls_feature_size(size: int) -> Case:
    # The issue's least squares with every feature of the given size.
    rng = np.random.default_rng(2)
    X0 = size * rng.standard_normal((50, 10))
    return least_squares_case(f"issue-ls-feature-size-{size}", X0, rng.standard_normal(50))


def _ls_mixed_features() -> Case:
    # The same sizes mixed in one design matrix (one column each).
    rng = np.random.default_rng(1)
    X0 = rng.standard_normal((50, 6)) * np.array(ISSUE_FEATURE_SIZES, dtype=np.float64)
    return least_squares_case("ls-mixed-feature-sizes", X0, rng.standard_normal(50))


def _ls(scale: float, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    X0 = scale * rng.standard_normal((40, 8))
    return least_squares_case(f"ls-features-{_sci(scale)}", X0, rng.standard_normal(40))


def _scaled_random(k: int) -> Case:
    base = base_problem(100 + k)
    rng = np.random.default_rng(200 + k)
    D = 10.0 ** rng.uniform(-k, k, 6)
    E = 10.0 ** rng.uniform(-k, k, 3)
    v = scaled_base(base, D, E)
    return canonical_case(f"random-rowcol-scaled-1e{k}", v["P"], v["q"], v["A"], v["b"], seed=k)


def _data_scaled(scale: float) -> Case:
    v = base_problem(300)
    return canonical_case(f"canonical-data-x{_sci(scale)}", scale * v["P"], scale * v["q"],
                          scale * v["A"], scale * v["b"], seed=3)


def _case_factories() -> dict[str, Callable[[], Case]]:
    f: dict[str, Callable[[], Case]] = {
        # The issue's reproductions.
        "issue-ls-1e3": _issue_ls,
        **{f"issue-ls-feature-size-{k}": functools.partial(_issue_ls_feature_size, k)
           for k in ISSUE_FEATURE_SIZES},
        "issue-weights-logspace": lambda: weights_case(
            "issue-weights-logspace", np.logspace(-6, 6, 6), 1.0, linear=False,
            weights_parameter=True),
        "issue-mpc-1e4-1e-4": lambda: mpc_case("issue-mpc-1e4-1e-4", 1e4, 1e-4, seed=4),
        "issue-portfolio-dollars": lambda: portfolio_case(
            "issue-portfolio-dollars", seed=5, target=False),
        "issue-tiny-coefficients": lambda: row_case(
            "issue-tiny-coefficients", np.array([1e-5, 2e-5]), 1.0),
        "issue-diag-1e-10": lambda: diagonal_case(
            "issue-diag-1e-10", np.array([1.0, 1e-10]), np.array([1.0, 1.0])),
    }
    for k in range(1, 7):
        f[f"random-rowcol-scaled-1e{k}"] = functools.partial(_scaled_random, k)
    f["ls-mixed-feature-sizes"] = _ls_mixed_features
    for i, s in enumerate([1e2, 1e3, 1e4]):
        f[f"ls-features-{_sci(s)}"] = functools.partial(_ls, s, 10 + i)
    f["weights-param-1e-6-1e6"] = lambda: weights_case(
        "weights-param-1e-6-1e6", np.logspace(-6, 6, 8), 3.0, linear=True,
        weights_parameter=True, seed=21)
    f["weights-const-1e-6-1e6"] = lambda: weights_case(
        "weights-const-1e-6-1e6", np.logspace(6, -6, 8), -2.0, linear=True,
        weights_parameter=False, seed=22)
    f["mpc-ratio-1e8"] = lambda: mpc_case("mpc-ratio-1e8", 1.0, 1e-8, seed=31)
    f["mpc-ratio-1e12"] = lambda: mpc_case("mpc-ratio-1e12", 1e6, 1e-6, seed=32)
    f["portfolio-dollars-target"] = lambda: portfolio_case(
        "portfolio-dollars-target", seed=41, target=True)
    for i, s in enumerate([1e-7, 1e-4, 1e-1, 1e3, 1e6, 1e9, 1e12]):
        f[f"coefficients-{_sci(s)}"] = functools.partial(
            coefficient_case, f"coefficients-{_sci(s)}", s, 50 + i)
    f["diag-cond-1e10"] = lambda: diagonal_case(
        "diag-cond-1e10", np.logspace(0, -10, 6), np.random.default_rng(61).standard_normal(6),
        np.random.default_rng(62).standard_normal(6), 2.0, seed=6)
    f["dense-psd-cond-1e12-constant"] = lambda: dense_q_case(
        "dense-psd-cond-1e12-constant", seed=71, parameter=False)
    f["dense-psd-cond-1e12-parameter"] = lambda: dense_q_case(
        "dense-psd-cond-1e12-parameter", seed=72, parameter=True)
    # Convex problems the issue saw refused.
    f["canonical-data-x1e300"] = functools.partial(_data_scaled, 1e300)
    f["canonical-data-x1e-100"] = functools.partial(_data_scaled, 1e-100)
    for s in STATUS_SCALES:
        f[f"feasible-rows-{_sci(s)}"] = functools.partial(rows_case, s)
        f[f"bounded-flat-{_sci(s)}"] = functools.partial(flat_case, s)
    for s in NONCONVEX_SCALES:
        f[f"convex-curvature-{_sci(s)}"] = functools.partial(curvature_case, s)
    return f


CASE_FACTORIES = _case_factories()
CASE_NAMES = list(CASE_FACTORIES)
ISSUE_CASES = [name for name in CASE_NAMES if name.startswith("issue-")]


# ------------------------------------------------------------ the reference


@dataclass(frozen=True)
class Expected:
    """A case's reference: solution, value, loss and parameter gradients."""

    case: Case
    qp: EqualityQP
    sol: ReferenceSolution
    primal: dict[str, Long]
    dual: dict[str, Long]
    g: dict[str, NDArray[np.float64]]
    h: dict[str, NDArray[np.float64]]
    grads: dict[str, Long]
    kappa: float


@functools.cache
def case(name: str) -> Case:
    """The case ``name`` (built once)."""
    c = CASE_FACTORIES[name]()
    assert c.name == name, f"factory for {name!r} built {c.name!r}"
    return c


def random_loss(c: Case) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    """Seeded ∂ℓ/∂x (g) and ∂ℓ/∂ν (h) blocks, standard normal."""
    rng = np.random.default_rng(10_000 + c.seed)
    g = {name: np.asarray(rng.standard_normal(shape)) for name, shape in c.variables}
    h = {name: np.asarray(rng.standard_normal(shape)) for name, shape in c.constraints}
    return g, h


def reference_of(c: Case, values: Values | None = None, *,
                 residuals: ref.Residuals = "auto") -> tuple[EqualityQP, ReferenceSolution]:
    """The reference solve of case ``c`` (at ``values``, default its own)."""
    qp = c.data(c.values if values is None else values)
    return qp, ref.solve(qp, residuals=residuals)


@functools.cache
def expected(name: str) -> Expected:
    """The reference of case ``name``, with the gradients of its random loss."""
    c = case(name)
    qp, sol = reference_of(c)
    g, h = random_loss(c)
    G = ref.qp_gradients(qp, sol, _join(g, c.variables), _join(h, c.constraints))
    grads = c.chain(c.values, G, sol)
    return Expected(
        case=c, qp=qp, sol=sol, primal=_split(sol.x, c.variables),
        dual=_split(sol.nu, c.constraints), g=g, h=h, grads=grads,
        kappa=sol.solve.kappa,
    )


# ------------------------------------------------------------------ helpers


def _mismatch(what: str, got: NDArray[np.floating], want: NDArray[np.floating],
              err: float, tol: float) -> str:
    """A message naming the block and showing both numbers at the worst entry."""
    a = np.asarray(got, np.longdouble).reshape(-1)
    r = np.asarray(want, np.longdouble).reshape(-1)
    i = int(np.argmax(np.abs(a - r))) if r.size else 0
    worst = (f"worst entry [{i}]: got {float(a[i]):.17g}, reference {float(r[i]):.17g}"
             if r.size else "empty")
    return (f"{what}: normwise relative error {err:.3e} > {tol:.0e} "
            f"(‖ref‖∞ = {float(np.max(np.abs(r))) if r.size else 0.0:.6g}); {worst}")


def _check_block(what: str, got: object, want: NDArray[np.floating], tol: float = RTOL,
                 problems: list[str] | None = None) -> float:
    """Compare one named block; record a message in ``problems`` (or fail) if off."""
    arr = np.asarray(got, dtype=np.float64)
    msg = None
    if arr.shape != want.shape:
        msg = f"{what}: shape {arr.shape}, expected {want.shape}"
        err = math.inf
    elif not np.all(np.isfinite(arr)):
        msg = f"{what}: not finite: {arr!r}"
        err = math.inf
    else:
        err = relative_error(arr, want)
        if not err <= tol:
            msg = _mismatch(what, arr, want, err, tol)
    if msg is not None:
        if problems is None:
            pytest.fail(msg)
        problems.append(msg)
    return err


def _value_error(got: float, exp: Expected) -> tuple[float, float]:
    """(|got − v| / |v|, v) for the reference optimal value v.

    Should the terms of v = ½(qᵀx − bᵀν) + r cancel (|v| much below their
    size σ = ½(|q|ᵀ|x| + |b|ᵀ|ν|) + |r|), the denominator is max(|v|, 1e-3 σ);
    no case here comes near that (σ/|v| ≤ 15 for all of them).
    """
    v = exp.sol.value
    den = max(abs(v), np.longdouble(1e-3) * exp.qp.value_scale(exp.sol.x, exp.sol.nu))
    return float(abs(np.longdouble(got) - v) / den) if den > 0 else abs(float(got)), float(v)


def solve_quietly(model: dm.Model, values: Mapping[str, object]) -> dm.Solution:
    """``model.solve(**values)``, tolerating only diffmodel's accuracy warning.

    A warning that the estimated error is large is information, not a
    failure: these tests judge the numbers themselves (and ``sol.accuracy``).
    Any other warning is re-issued (and so fails under ``filterwarnings =
    error``).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = model.solve(**values)
    for w in caught:
        if w.category.__name__ != "AccuracyWarning":
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return sol


def solve_case(name: str) -> tuple[Expected, dm.Solution | None]:
    """Solve case ``name`` with diffmodel: (reference, solution), or (reference,
    None) for an acceptable refusal (equilibrated κ above KAPPA_LIMIT).

    Any other refusal fails the test, naming the status and κ.
    """
    exp = expected(name)
    objective, constraints = exp.case.build()
    model = dm.Model(objective, constraints)
    try:
        sol = solve_quietly(model, exp.case.values)
    except dm.SolverError as e:
        if exp.kappa > KAPPA_LIMIT:
            assert e.status in {"inaccurate", "solver_error"}, (
                f"{name}: refused as {e.status!r}, but the problem is convex and feasible "
                f"(equilibrated κ = {exp.kappa:.2e})")
            return exp, None
        pytest.fail(f"{name}: convex, feasible problem with equilibrated KKT condition number "
                    f"{exp.kappa:.2e} ≤ {KAPPA_LIMIT:.0e} was refused: SolverError(status="
                    f"{e.status!r}): {e}")
    assert sol.status == "optimal", f"{name}: status {sol.status!r}, expected 'optimal'"
    return exp, sol


def solution_errors(exp: Expected, sol: dm.Solution) -> dict[str, float]:
    """Normwise relative errors of every primal and dual block (no assertion)."""
    errs = {}
    for name, want in exp.primal.items():
        errs[f"x[{name}]"] = relative_error(np.asarray(sol.primal[name], np.float64), want)
    for name, want in exp.dual.items():
        errs[f"nu[{name}]"] = relative_error(np.asarray(sol.dual[name], np.float64), want)
    return errs


# ================================================================== the battery


@pytest.mark.parametrize("name", CASE_NAMES)
def test_solution_matches_reference(name: str) -> None:
    """x, ν per named block and the optimal value, to 1e-9 relative."""
    exp, sol = solve_case(name)
    if sol is None:
        return
    problems: list[str] = []
    assert set(sol.primal) == set(exp.primal), f"variables {sorted(sol.primal)}"
    assert set(sol.dual) == set(exp.dual), f"constraints {sorted(sol.dual)}"
    for vname, want in exp.primal.items():
        _check_block(f"{name}: primal {vname!r}", sol.primal[vname], want, problems=problems)
    for cname, want in exp.dual.items():
        _check_block(f"{name}: dual {cname!r}", sol.dual[cname], want, problems=problems)
    err, v = _value_error(sol.value, exp)
    if not err <= RTOL:
        problems.append(f"{name}: value {sol.value:.17g}, reference {v:.17g} "
                        f"(relative error {err:.3e} > {RTOL:.0e})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_accuracy_estimate_is_honest(name: str) -> None:
    """sol.accuracy is a finite float ≥ 0 and does not understate the error."""
    exp, sol = solve_case(name)
    if sol is None:
        return
    assert hasattr(sol, "accuracy"), (
        f"{name}: Solution has no 'accuracy' attribute (estimated relative forward error)")
    acc = sol.accuracy
    assert isinstance(acc, float) and math.isfinite(acc) and acc >= 0.0, (
        f"{name}: sol.accuracy must be a finite float >= 0, got {acc!r}")
    errs = solution_errors(exp, sol)
    worst = max(errs, key=lambda k: errs[k]) if errs else "none"
    actual = errs.get(worst, 0.0)
    bound = max(ACCURACY_FACTOR * acc, ACCURACY_FLOOR)
    assert actual <= bound, (
        f"{name}: sol.accuracy = {acc:.3e} understates the actual error {actual:.3e} of "
        f"{worst} (allowed: max(10·accuracy, 1e-12) = {bound:.3e}); all errors: "
        + ", ".join(f"{k} {e:.2e}" for k, e in errs.items()))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradients_match_reference(name: str) -> None:
    """sol.backward of a random loss: every parameter's gradient to 1e-9 relative."""
    exp, sol = solve_case(name)
    if sol is None:
        return
    assert hasattr(sol, "backward"), f"{name}: Solution has no 'backward' method (reverse mode)"
    grads = sol.backward(exp.g, dual=exp.h)
    assert set(grads) == set(exp.case.values), (
        f"{name}: gradients for {sorted(grads)}, parameters are {sorted(exp.case.values)}")
    problems: list[str] = []
    for pname, want in exp.grads.items():
        _check_block(f"{name}: d loss / d {pname}", grads[pname], want, problems=problems)
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------- statuses


def _refusal(build: Callable[[], tuple[cp.Minimize, dict[str, cp.Constraint]]],
             values: Values, status: str, what: str) -> None:
    objective, constraints = build()
    model = dm.Model(objective, constraints)
    try:
        sol = solve_quietly(model, values)
    except dm.SolverError as e:
        assert e.status == status, f"{what}: status {e.status!r}, expected {status!r}: {e}"
        return
    pytest.fail(f"{what}: expected SolverError(status={status!r}), got status "
                f"{sol.status!r} with value {sol.value!r} and x = {sol.primal}")


@pytest.mark.parametrize("scale", STATUS_SCALES, ids=_sci)
def test_inconsistent_rows_are_infeasible_at_every_scale(scale: float) -> None:
    """x₀ + x₁ == 1 and x₀ + x₁ == 2, scaled: "infeasible"."""
    build, values = rows_problem(scale, consistent=False)
    _refusal(build, values, "infeasible", f"inconsistent rows scaled by {scale:g}")


@pytest.mark.parametrize("scale", STATUS_SCALES, ids=_sci)
def test_flat_descent_direction_is_unbounded_at_every_scale(scale: float) -> None:
    """No curvature along a feasible direction where the linear term decreases: "unbounded"."""
    build, values = flat_problem(scale, curved=False)
    _refusal(build, values, "unbounded", f"flat direction scaled by {scale:g}")


@pytest.mark.parametrize("scale", NONCONVEX_SCALES, ids=_sci)
def test_indefinite_quad_form_is_nonconvex_at_every_scale(scale: float) -> None:
    """quad_form with a symmetric parameter given an indefinite value: "nonconvex"."""
    build, values, _ = curvature_problem(scale, definite=False)
    _refusal(build, values, "nonconvex", f"indefinite Q scaled by {scale:g}")


# ------------------------------------------------------ the issue, by name


@pytest.mark.parametrize("name", ISSUE_CASES)
def test_issue_reproduction(name: str) -> None:
    """The issue's reproductions: "optimal" and right, with the numbers it quotes."""
    exp, sol = solve_case(name)
    assert sol is not None, f"{name}: refused"
    errs = solution_errors(exp, sol)
    value_err, v = _value_error(sol.value, exp)
    assert max(errs.values()) <= RTOL and value_err <= RTOL, (
        f"{name}: value {sol.value:.10g} (reference {v:.10g}); relative errors "
        + ", ".join(f"{k} {e:.2e}" for k, e in errs.items()))
    if name == "issue-ls-1e3":
        # "value 480662 -- true value 4893931"
        assert math.floor(sol.value) == 4893931 == math.floor(v), (
            f"value {sol.value!r}, reference {v!r}")
    if name == "issue-diag-1e-10":
        # "x₂ should be −1e10 for q = 1"
        x2 = float(sol.primal["x"][1])
        assert abs(x2 + 1e10) <= 1e-9 * 1e10, f"x[1] = {x2!r}, expected -1e10"


# ------------------------------------------------- scale invariance property

INVARIANCE_N, INVARIANCE_M = 4, 2


@functools.cache
def _invariance_base() -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    """The unit-scale base problem and its diffmodel solution/gradients (checked
    against the reference once), with a fixed unit-scale loss (g₀, h₀)."""
    base = base_problem(400, INVARIANCE_N, INVARIANCE_M)
    rng = np.random.default_rng(401)
    g0, h0 = rng.standard_normal(INVARIANCE_N), rng.standard_normal(INVARIANCE_M)
    c = canonical_case("invariance-base", base["P"], base["q"], base["A"], base["b"])
    objective, constraints = c.build()
    sol = solve_quietly(dm.Model(objective, constraints), base)
    grads = sol.backward({"x": g0}, dual={"balance": h0})
    qp, rsol = reference_of(c)
    G = ref.qp_gradients(qp, rsol, g0, h0)
    for what, got, want in [("x", sol.primal["x"], rsol.x), ("nu", sol.dual["balance"], rsol.nu),
                            ("dP", grads["P"], G.P), ("dq", grads["q"], G.q),
                            ("dA", grads["A"], G.A), ("db", grads["b"], G.b)]:
        _check_block(f"invariance base {what}", got, want)
    out = {"x": sol.primal["x"], "nu": sol.dual["balance"], **{f"d{k}": v for k, v in grads.items()}}
    return base, {**out, "g0": g0, "h0": h0}


_exponents = st.lists(st.integers(-6, 6), min_size=INVARIANCE_N + INVARIANCE_M,
                      max_size=INVARIANCE_N + INVARIANCE_M)


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(exponents=_exponents)
def test_scale_invariance(exponents: list[int]) -> None:
    """Rows and columns rescaled by powers of ten (up to 1e±6): the solution,
    duals and gradients are the correspondingly rescaled ones, to 1e-9.

    With x = D⁻¹x₀, ν = E⁻¹ν₀ and the loss g = D g₀, h = E h₀ (the same loss
    in the base units), dℓ/dP = D⁻¹ dℓ/dP₀ D⁻¹, dℓ/dq = D⁻¹ dℓ/dq₀,
    dℓ/dA = E⁻¹ dℓ/dA₀ D⁻¹, dℓ/db = E⁻¹ dℓ/db₀.
    """
    base, b0 = _invariance_base()
    D = 10.0 ** np.array(exponents[:INVARIANCE_N], dtype=np.float64)
    E = 10.0 ** np.array(exponents[INVARIANCE_N:], dtype=np.float64)
    c = canonical_case("invariance", **scaled_base(base, D, E))
    objective, constraints = c.build()
    try:
        sol = solve_quietly(dm.Model(objective, constraints), c.values)
    except dm.SolverError as e:
        pytest.fail(f"D = {D}, E = {E}: refused with status {e.status!r}: {e}")
    grads = sol.backward({"x": D * b0["g0"]}, dual={"balance": E * b0["h0"]})
    Di, Ei = 1 / _ld(D), 1 / _ld(E)
    want = {
        "x": Di * b0["x"], "nu": Ei * b0["nu"],
        "dP": (Di[:, None] * b0["dP"]) * Di[None, :], "dq": Di * b0["dq"],
        "dA": (Ei[:, None] * b0["dA"]) * Di[None, :], "db": Ei * b0["db"],
    }
    got = {"x": sol.primal["x"], "nu": sol.dual["balance"], "dP": grads["P"], "dq": grads["q"],
           "dA": grads["A"], "db": grads["b"]}
    problems: list[str] = []
    for k in want:
        _check_block(f"D = {D}, E = {E}: {k}", got[k], np.asarray(want[k]), problems=problems)
    assert not problems, "\n".join(problems)


# ============================================= self-tests of the reference


def test_longdouble_is_extended_or_mpmath_is_used() -> None:
    """The refinement's residual precision is really beyond float64."""
    if ref.LONGDOUBLE_EXTENDED:
        assert np.finfo(np.longdouble).eps < 1e-18
    qp = EqualityQP(P=np.eye(2), q=np.ones(2), A=np.array([[1e-5, 2e-5]]), b=np.ones(1))
    lin = ref.solve(qp, residuals="longdouble").solve
    assert lin.residuals == ("longdouble" if ref.LONGDOUBLE_EXTENDED else "mpmath")


def test_reference_matches_scipy_dense_solve() -> None:
    """A well-conditioned problem: the reference equals scipy's dense solve."""
    v = base_problem(500, 7, 3)
    qp = EqualityQP(**v)
    sol = ref.solve(qp)
    K = np.block([[v["P"], v["A"].T], [v["A"], np.zeros((3, 3))]])
    z = scipy.linalg.solve(K, np.concatenate([-v["q"], v["b"]]), assume_a="sym")
    assert relative_error(sol.x, z[:7]) < 1e-13, (sol.x, z[:7])
    assert relative_error(sol.nu, z[7:]) < 1e-13, (sol.nu, z[7:])
    # Stationarity and feasibility, in longdouble.
    P, A = _ld(v["P"]), _ld(v["A"])
    assert np.max(np.abs(P @ sol.x + _ld(v["q"]) + A.T @ sol.nu)) < 1e-17
    assert np.max(np.abs(A @ sol.x - _ld(v["b"]))) < 1e-17


@pytest.mark.parametrize("name", ["issue-tiny-coefficients", "issue-diag-1e-10",
                                  "issue-weights-logspace", "coefficients-1e12",
                                  "random-rowcol-scaled-1e6", "dense-psd-cond-1e12-constant"])
def test_reference_matches_mpmath_lu(name: str) -> None:
    """Small, badly scaled cases: refinement equals a 50-digit mpmath LU solve to 1e-15."""
    exp = expected(name)
    direct = ref.solve_mpmath(exp.qp, dps=50)
    for what, got, want in [("x", exp.sol.x, direct.x), ("nu", exp.sol.nu, direct.nu)]:
        err = relative_error(got, want)
        assert err < 1e-15, f"{name}: refined {what} vs mpmath LU: {err:.2e}"


def test_reference_scaling_identity() -> None:
    """Reference of the row/column-scaled problem = rescaled reference of the base."""
    base = base_problem(600)
    rng = np.random.default_rng(601)
    D, E = 10.0 ** rng.uniform(-6, 6, 6), 10.0 ** rng.uniform(-6, 6, 3)
    s0 = ref.solve(EqualityQP(**base))
    s1 = ref.solve(EqualityQP(**scaled_base(base, D, E)))
    assert relative_error(s1.x, s0.x / _ld(D)) < 1e-13
    assert relative_error(s1.nu, s0.nu / _ld(E)) < 1e-13


def test_reference_adjoint_matches_finite_differences() -> None:
    """dℓ/d(P, q, A, b) from the adjoint against central differences of the
    reference solve, per entry, on a small well-conditioned problem."""
    v = base_problem(700, 4, 2)
    rng = np.random.default_rng(701)
    g, h = rng.standard_normal(4), rng.standard_normal(2)

    def loss(w: Mapping[str, NDArray[np.float64]]) -> np.longdouble:
        P = _ld(w["P"])
        s = ref.solve(EqualityQP(P=(P + P.T) / 2, q=_ld(w["q"]), A=_ld(w["A"]), b=_ld(w["b"])))
        return _ld(g) @ s.x + _ld(h) @ s.nu

    sol = ref.solve(EqualityQP(**v))
    G = ref.qp_gradients(EqualityQP(**v), sol, g, h)
    step = 1e-5
    for key, grad in [("P", G.P), ("q", G.q), ("A", G.A), ("b", G.b)]:
        fd = np.zeros(v[key].shape, np.longdouble)
        for idx in np.ndindex(*v[key].shape):
            hi = {k: a.astype(np.longdouble) for k, a in v.items()}
            lo = {k: a.astype(np.longdouble) for k, a in v.items()}
            hi[key][idx] += step
            lo[key][idx] -= step
            fd[idx] = (loss(hi) - loss(lo)) / (2 * step)
        # P enters as ½xᵀPx with entries independent: data() symmetrizes, so
        # a perturbation of P_ij moves ½(P_ij + P_ji), matching G.P (symmetric).
        err = relative_error(fd, grad)
        assert err < 1e-8, f"d loss/d{key}: adjoint {grad} vs finite differences {fd} ({err:.1e})"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_data_match_cvxpy(name: str) -> None:
    """The hand-written P, q, r, A, b of each case reproduce CVXPY's own
    evaluation of the objective and of every constraint (lhs − rhs) at random
    points, so the reference solves the same problem with the same dual signs."""
    c = case(name)
    qp = expected(name).qp
    objective, constraints = c.build()
    prob = cp.Problem(objective, list(constraints.values()))
    params = {p.name(): p for p in prob.parameters()}
    assert set(params) == set(c.values), f"parameters {sorted(params)} vs {sorted(c.values)}"
    for pname, p in params.items():
        p.value = c.values[pname]
    variables = {v.name(): v for v in prob.variables()}
    assert set(variables) == {n for n, _ in c.variables}, f"variables {sorted(variables)}"
    rng = np.random.default_rng(0)
    sol = expected(name).sol
    for trial in range(3):
        # Points at the scale of the solution, and one at the solution itself.
        xs = (np.asarray(sol.x, np.float64) if trial == 0 else
              np.asarray(sol.x, np.float64) * (1 + rng.standard_normal(qp.n))
              + rng.standard_normal(qp.n))
        for vname, block in _split(xs, c.variables).items():
            variables[vname].value = np.asarray(block)
        f_cvx = objective.args[0].value
        f_ref = float(qp.objective(xs))
        scale = float(np.longdouble(0.5) * (np.abs(xs) @ (np.abs(_ld(qp.P)) @ np.abs(xs)))
                      + np.abs(_ld(qp.q)) @ np.abs(xs) + abs(np.longdouble(qp.r)))
        assert abs(f_cvx - f_ref) <= 1e-12 * scale, (
            f"{name}: objective at a random point: CVXPY {f_cvx!r}, reference data {f_ref!r}")
        res_ref = _split((_ld(qp.A) @ _ld(xs) - _ld(qp.b)).astype(np.float64), c.constraints)
        row_scale = _split((np.abs(_ld(qp.A)) @ np.abs(_ld(xs)) + np.abs(_ld(qp.b)))
                           .astype(np.float64), c.constraints)
        for cname, con in constraints.items():
            res_cvx = np.asarray((con.args[0] - con.args[1]).value, np.float64)
            diff = np.abs(res_cvx - res_ref[cname])
            assert np.all(diff <= 1e-12 * row_scale[cname] + 1e-300), (
                f"{name}: constraint {cname!r} residual: CVXPY {res_cvx!r}, "
                f"reference data {res_ref[cname]!r}")


def _direction(c: Case, seed: int = 1) -> Values:
    """A random parameter direction, entrywise at the scale of each parameter
    (zero entries at the scale of the parameter's largest entry)."""
    rng = np.random.default_rng(seed)
    direction: Values = {}
    for pname, val in c.values.items():
        mag = np.abs(np.asarray(val, np.float64))
        top = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
        d = rng.standard_normal(mag.shape) * np.where(mag > 0, mag, top)
        if d.ndim == 2 and d.shape[0] == d.shape[1] and np.array_equal(val, val.T):
            d = 0.5 * (d + d.T)  # keep symmetric parameters symmetric
        direction[pname] = np.asarray(d)
    return direction


def _along(c: Case, direction: Values, t: float) -> Values:
    return {k: np.asarray(_ld(v) + np.longdouble(t) * _ld(direction[k]))  # type: ignore[misc]
            for k, v in c.values.items()}


def _chained(exp: Expected, direction: Values) -> tuple[float, float]:
    """⟨chained gradient, direction⟩ and Σ |gradient · direction| (its scale)."""
    c = exp.case
    terms = [_ld(exp.grads[k]) * _ld(direction[k]) for k in c.values]
    return (float(sum(np.sum(t) for t in terms)), float(sum(np.sum(np.abs(t)) for t in terms)))


#: Central differences of the full reference solve are used where the
#: solution is smooth enough for a relative step of 1e-6 (equilibrated κ below
#: this); the data-derivative check below covers every case.
FD_KAPPA = 1e6


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_chain_rule_matches_finite_differences(name: str) -> None:
    """Each case's hand-chained parameter gradients against central differences
    of the reference solve (θ → data → reference → loss) along a random
    direction scaled entrywise to the parameter values (cases with
    equilibrated κ ≤ 1e6; the others are nonlinear at any step longdouble
    data can resolve, see the next test)."""
    exp = expected(name)
    if exp.kappa > FD_KAPPA:
        return
    c = exp.case
    direction = _direction(c)
    gh = (_ld(_join(exp.g, c.variables)), _ld(_join(exp.h, c.constraints)))

    def loss(t: float) -> np.longdouble:
        _, s = reference_of(c, _along(c, direction, t))
        return gh[0] @ s.x + gh[1] @ s.nu

    step = 1e-6
    fd = float((loss(step) - loss(-step)) / (2 * step))
    ad, scale = _chained(exp, direction)
    assert abs(fd - ad) <= 1e-6 * scale, (
        f"{name}: ⟨chained gradient, direction⟩ = {ad!r}, central difference {fd!r}")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_chain_rule_matches_data_derivative(name: str) -> None:
    """Each case's hand-chained gradients against forward mode with the data
    derivative taken numerically: dD = (data(θ + d) − data(θ − d)) / 2, exact
    for the affine or quadratic maps θ → (P, q, A, b) here, then
    dz = −K⁻¹ (dP x + dq + dAᵀν, dA x − db) by the refinement and
    dℓ = gᵀdx + hᵀdν. Independent of the hand chain and of the adjoint
    formulas, and valid at any conditioning (no nonlinearity of the solve)."""
    exp = expected(name)
    c = exp.case
    direction = _direction(c)
    hi, lo = c.data(_along(c, direction, 1.0)), c.data(_along(c, direction, -1.0))
    half = np.longdouble(0.5)
    dP, dq = half * (_ld(hi.P) - _ld(lo.P)), half * (_ld(hi.q) - _ld(lo.q))
    dA, db = half * (_ld(hi.A) - _ld(lo.A)), half * (_ld(hi.b) - _ld(lo.b))
    x, nu = exp.sol.x, exp.sol.nu
    dF = np.concatenate([dP @ x + dq + dA.T @ nu, dA @ x - db])
    dz = ref.refine(exp.qp.kkt(), -dF, n=exp.qp.n).z
    gh = np.concatenate([_ld(_join(exp.g, c.variables)), _ld(_join(exp.h, c.constraints))])
    fwd = float(gh @ dz)
    ad, scale = _chained(exp, direction)
    assert abs(fwd - ad) <= 1e-10 * max(scale, abs(fwd)), (
        f"{name}: ⟨chained gradient, direction⟩ = {ad!r}, forward mode {fwd!r}")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reference_is_accurate(name: str) -> None:
    """The reference's own estimated error is far below the tolerance, and the
    auto residual precision agrees with mpmath residuals (40 digits)."""
    exp = expected(name)
    lin = exp.sol.solve
    assert lin.error_bound <= REFERENCE_TOL, (
        f"{name}: reference error bound {lin.error_bound:.2e} (κ = {lin.kappa:.2e}, "
        f"residuals {lin.residuals}, {lin.steps} steps, last correction {lin.correction:.2e})")
    if lin.residuals != "mpmath":
        _, mp_sol = reference_of(exp.case, residuals="mpmath")
        c = exp.case
        for vname, want in _split(mp_sol.x, c.variables).items():
            assert relative_error(exp.primal[vname], want) < 1e-15, vname
        for cname, want in _split(mp_sol.nu, c.constraints).items():
            assert relative_error(exp.dual[cname], want) < 1e-15, cname


def test_cases_are_well_conditioned_after_equilibration() -> None:
    """Every case must be solvable in double precision: equilibrated κ ≤ 1e13."""
    bad = {name: expected(name).kappa for name in CASE_NAMES
           if not expected(name).kappa <= KAPPA_LIMIT}
    assert not bad, f"cases beyond double precision after equilibration: {bad}"


# ------------------------------------------- reference cross-check (Clarabel)

CLARABEL_CASES = ["issue-ls-1e3", "ls-mixed-feature-sizes", "issue-weights-logspace",
                  "issue-mpc-1e4-1e-4", "issue-portfolio-dollars", "portfolio-dollars-target",
                  "mpc-ratio-1e8", "coefficients-1e-1", "coefficients-1e3",
                  "weights-param-1e-6-1e6", "bounded-flat-1e3", "feasible-rows-1e-3"]


class TestReferenceCrossCheck:
    """Reference cross-check: CVXPY + Clarabel on the same model (DCP cases),
    at a loose 1e-5, to catch a wrong formulation or dual sign in a case."""

    @pytest.mark.parametrize("name", CLARABEL_CASES)
    def test_reference_agrees_with_clarabel(self, name: str) -> None:
        exp = expected(name)
        objective, constraints = exp.case.build()
        prob = cp.Problem(objective, list(constraints.values()))
        for p in prob.parameters():
            p.value = exp.case.values[p.name()]
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                   tol_feas=1e-12, max_iter=500)
        assert prob.status == cp.OPTIMAL, f"{name}: Clarabel status {prob.status}"
        variables = {v.name(): v for v in prob.variables()}
        for vname, want in exp.primal.items():
            err = relative_error(np.asarray(variables[vname].value), want)
            assert err < 1e-5, _mismatch(f"{name}: Clarabel primal {vname!r}",
                                         np.asarray(variables[vname].value), want, err, 1e-5)
        for cname, want in exp.dual.items():
            got = np.asarray(constraints[cname].dual_value, np.float64).reshape(want.shape)
            err = relative_error(got, want)
            assert err < 1e-5, _mismatch(f"{name}: Clarabel dual {cname!r}", got, want, err, 1e-5)
        rel = abs(prob.value - float(exp.sol.value)) / abs(float(exp.sol.value))
        assert rel < 1e-5, f"{name}: Clarabel value {prob.value!r}, reference {exp.sol.value!r}"
