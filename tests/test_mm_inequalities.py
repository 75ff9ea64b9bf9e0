"""Maros–Mészáros instances with active inequalities and bounds.

The eight instances of ``../shared/data/maros-meszaros`` that need
inequality support (see its README): HS21, HS35, HS76, HS118, QPTEST,
ZECEVIC2, CVXQP1_S, DUALC1. Each ``.mat`` file holds P, q, r, A, l, u of

    minimize ½xᵀPx + qᵀx + r  s.t.  l ≤ Ax ≤ u,

with ±1e20 for ±∞, equality rows where l = u, and one identity row per
variable appended at the end for its bounds. Here each becomes a diffmodel
model with one variable ``x`` and, as parameters, q and the finite sides:

- ``"eq"``:      A_eq x == b          (rows with l = u; parameter ``b``)
- ``"upper"``:   A_u x <= u           (other rows with finite u; parameter ``u``)
- ``"lower"``:   A_l x >= l           (other rows with finite l; parameter ``l``)
- ``"x_upper"``: x[i] <= xu, ``"x_lower"``: x[i] >= xl  (the identity rows with a
  finite side; parameters ``xu``, ``xl``)

Checks:

- the optimal value rounds to the published 8-digit optimum and matches
  CVXPY + Clarabel (tolerances 1e-12) to 1e-8 relative. The published values
  were double-checked against Clarabel and the exact active-set reference:
  all eight agree (the largest relative gap of a published value to the
  exact optimum is 1.0e-8 for HS35 = 1/9 and CVXQP1_S, within rounding to 8
  digits);
- x, duals and active rows against the exact active-set reference
  (tests/ineq_reference.py: active set read from Clarabel, strict
  complementarity asserted, KKT over the active rows refined in extended
  precision);
- gradients of a random loss of x with respect to q and every finite bound
  against the reference's adjoint formulas, to 1e-8.

CVXQP1_S is degenerate in the second sense of the contract: 39 bounds bind,
all with multipliers ≥ 12, but together with the 50 equalities they have rank
86, not 89 (three binding rows depend on the others; measured here). Its x is
unique (the reduced Hessian on the null space of the binding rows has
eigenvalues 40-235) but its multipliers are not, so a ``DegenerateWarning`` is
expected, duals are checked through the KKT conditions rather than against
one particular multiplier, and gradients are checked where they are unique:
with respect to q (x is differentiable in q: positive multipliers exist, so
the binding face stays optimal), and along directions of the bounds that
move the binding rows consistently (b, h) = E v, along which x is
differentiable too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import NoReturn

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.io import loadmat

import diffmodel as dm
from diffmodel.testing import maros_meszaros_dir
from ineq_reference import (
    ActiveSetSolution, InequalityQP, RowClasses, active_set_gradients, active_set_tangent,
    clarabel_qp, clarabel_solve, classify_rows, from_bounds, guard, solve_active_set,
)

SkipPeerFailure = Callable[[str, str], NoReturn]

DATA = maros_meszaros_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="Maros–Mészáros data folder not found "
                                "(diffmodel.testing.maros_meszaros_dir() is None)")

#: Published optimal values (Maros and Mészáros 1999, 8 significant digits,
#: constant term r included).
PUBLISHED = {
    "HS21": -9.9960000e+01, "HS35": 1.1111111e-01, "HS76": -4.6818182e+00,
    "HS118": 6.6482045e+02, "QPTEST": 4.3718750e+00, "ZECEVIC2": -4.1250000e+00,
    "CVXQP1_S": 1.1590718e+04, "DUALC1": 6.1552508e+03,
}
NAMES = list(PUBLISHED)
#: Instances whose binding rows are linearly dependent (measured, see above).
DEPENDENT = {"CVXQP1_S"}
UNIQUE = [name for name in NAMES if name not in DEPENDENT]
INFINITY = 1e20
#: diffmodel against the exact reference.
REF_RTOL = 1e-9
GRAD_RTOL = 1e-8
#: Values against Clarabel (tolerances 1e-12).
CLARABEL_RTOL = 1e-8


# -------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Instance:
    """An instance as a diffmodel model and as explicit reference data.

    The reference's inequality block stacks, in order, the rows of "upper",
    of "lower" (negated), of "x_upper" and of "x_lower" (negated):
    ``blocks[name] = (slice of G's rows, sign)``.
    """

    name: str
    objective: cp.Minimize
    constraints: dict[str, cp.Constraint]
    values: dict[str, np.ndarray]
    qp: InequalityQP
    blocks: dict[str, tuple[slice, float]]
    raw: InequalityQP

    def model(self) -> dm.Model:
        return dm.Model(self.objective, self.constraints)


#: Parameter of each inequality constraint.
PARAM_OF = {"upper": "u", "lower": "l", "x_upper": "xu", "x_lower": "xl"}


@cache
def load(name: str) -> Instance:
    assert DATA is not None
    d = loadmat(str(DATA / f"{name}.mat"))
    P = sp.csc_matrix(d["P"], dtype=float)
    q = d["q"].ravel().astype(float)
    r = float(np.asarray(d["r"]).ravel()[0])
    A = sp.csr_matrix(d["A"], dtype=float)
    lo_all, up_all = d["l"].ravel().astype(float), d["u"].ravel().astype(float)
    n, m = P.shape[0], A.shape[0]
    # The conversion appends one identity row per variable for its bounds.
    tail = A[m - n:]
    assert abs(tail - sp.identity(n)).max() == 0, f"{name}: the last n rows are not I"
    Ag = A[: m - n].toarray()
    gl, gu = lo_all[: m - n], up_all[: m - n]
    xl_all, xu_all = lo_all[m - n:], up_all[m - n:]
    assert not np.any(xl_all == xu_all), f"{name}: a fixed variable (not expected)"
    eq = gl == gu
    has_u = ~eq & (gu < INFINITY)
    has_l = ~eq & (gl > -INFINITY)
    iu = np.flatnonzero(xu_all < INFINITY)
    il = np.flatnonzero(xl_all > -INFINITY)

    x = cp.Variable(n, name="x")
    qp_ = cp.Parameter(n, name="q")
    values: dict[str, np.ndarray] = {"q": q}
    cons: dict[str, cp.Constraint] = {}
    if eq.any():
        b = cp.Parameter(int(eq.sum()), name="b")
        cons["eq"] = Ag[eq] @ x == b
        values["b"] = gl[eq]
    if has_u.any():
        u = cp.Parameter(int(has_u.sum()), name="u")
        cons["upper"] = Ag[has_u] @ x <= u
        values["u"] = gu[has_u]
    if has_l.any():
        l_ = cp.Parameter(int(has_l.sum()), name="l")
        cons["lower"] = Ag[has_l] @ x >= l_
        values["l"] = gl[has_l]
    if iu.size:
        xu = cp.Parameter(iu.size, name="xu")
        cons["x_upper"] = x[iu] <= xu
        values["xu"] = xu_all[iu]
    if il.size:
        xl = cp.Parameter(il.size, name="xl")
        cons["x_lower"] = x[il] >= xl
        values["xl"] = xl_all[il]
    objective = cp.Minimize(0.5 * cp.quad_form(x, P, assume_PSD=True) + qp_ @ x + r)

    I_n = np.eye(n)
    parts = [("upper", Ag[has_u], gu[has_u], 1.0), ("lower", Ag[has_l], gl[has_l], -1.0),
             ("x_upper", I_n[iu], xu_all[iu], 1.0), ("x_lower", I_n[il], xl_all[il], -1.0)]
    blocks: dict[str, tuple[slice, float]] = {}
    start = 0
    for cname, rows, _, sign in parts:
        if rows.shape[0]:
            blocks[cname] = (slice(start, start + rows.shape[0]), sign)
            start += rows.shape[0]
    Pd = P.toarray()
    Pd = 0.5 * (Pd + Pd.T)
    qp = InequalityQP(P=Pd, q=q, A=Ag[eq], b=gl[eq],
                      G=np.vstack([s * rows for _, rows, _, s in parts]),
                      h=np.concatenate([s * rhs for _, _, rhs, s in parts]), r=r)
    raw = from_bounds(Pd, q, A.toarray(), lo_all, up_all, r).qp
    return Instance(name, objective, cons, values, qp, blocks, raw)


@dataclass(frozen=True)
class Reference:
    sol: ActiveSetSolution
    rows: RowClasses
    #: The binding rows the KKT system keeps (all of them unless DEPENDENT).
    kept: np.ndarray


def independent_subset(A: np.ndarray, G: np.ndarray, binding: np.ndarray) -> np.ndarray:
    """A maximal subset of the binding rows of G independent of A and of each other
    (greedy, in order; rank decisions at 1e-9 relative)."""
    kept = np.zeros(G.shape[0], bool)
    basis = A.copy()
    rank = np.linalg.matrix_rank(basis, tol=1e-9 * max(1.0, np.abs(basis).max(initial=0.0)))
    for i in np.flatnonzero(binding):
        trial = np.vstack([basis, G[i]])
        r = np.linalg.matrix_rank(trial, tol=1e-9 * max(1.0, np.abs(trial).max()))
        if r > rank:
            basis, rank, kept[i] = trial, r, True
    return kept


@cache
def reference(name: str) -> Reference:
    """The exact optimum: the active set from Clarabel (strict complementarity
    asserted), the KKT system over it (over a maximal independent subset of
    the binding rows for DEPENDENT instances) solved in extended precision."""
    inst = load(name)
    qp = inst.qp
    x_c, _, lam_c, _ = clarabel_qp(qp)
    rows = classify_rows(qp, x_c, lam_c)
    assert rows.strict, f"{name}: weakly active rows {np.flatnonzero(rows.weak)}"
    kept = rows.active
    if name in DEPENDENT:
        kept = independent_subset(np.asarray(qp.A), np.asarray(qp.G), rows.active)
        assert kept.sum() < rows.active.sum(), f"{name}: expected dependent binding rows"
    sol = solve_active_set(qp, kept)
    assert sol.solve.kappa < 1e8, f"{name}: κ = {sol.solve.kappa:.1e}"
    exact = classify_rows(qp, sol.x, sol.lam) if name not in DEPENDENT else None
    if exact is not None:
        assert exact.strict and np.array_equal(exact.active, rows.active), (
            f"{name}: the exact solve does not confirm Clarabel's active set")
    else:
        slack = np.asarray(qp.slack(sol.x), float)
        scale = qp.slack_scale(np.asarray(sol.x, float))
        assert np.all(slack[rows.active] <= 1e-12 * scale[rows.active]), (
            f"{name}: a dependent binding row does not hold at the exact solution")
        assert np.all(slack[~rows.active] > 1e-7 * scale[~rows.active])
    return Reference(sol, rows, kept)




@contextmanager
def expected_warnings(name: str, required: bool = True) -> Iterator[None]:
    """A DegenerateWarning for DEPENDENT instances (``required``: at least one;
    the contract allows it at solve or at derivative time, so later derivative
    calls may or may not repeat it); no warning for the others
    (filterwarnings = error makes any warning fail the test)."""
    if name not in DEPENDENT:
        yield
        return
    if required:
        with pytest.warns(dm.DegenerateWarning) as record:
            yield
    else:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            yield
    others = [str(w.message) for w in record
              if not issubclass(w.category, dm.DegenerateWarning)]
    assert not others, f"{name}: unexpected warnings {others}"


@cache
def solved(name: str) -> tuple[dm.Model, dm.Solution, dict[str, np.ndarray]]:
    """diffmodel's solution, with the gradients of ℓ = gᵀx (g seeded per instance)."""
    inst = load(name)
    model = inst.model()
    g = np.random.default_rng(sum(map(ord, name))).standard_normal(inst.qp.n)
    with expected_warnings(name):
        sol = model.solve(**inst.values)
        grads = sol.backward({"x": g})
    return model, sol, grads


def seeded_g(name: str) -> np.ndarray:
    return np.random.default_rng(sum(map(ord, name))).standard_normal(load(name).qp.n)


def split(inst: Instance, lam: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's stacked inequality vector split into per-constraint parts
    (each ≥ 0: CVXPY's duals of <= and >= are both nonnegative)."""
    return {cname: np.asarray(lam[rows], float) for cname, (rows, _) in inst.blocks.items()}


def rounds_to(value: float, published: float) -> bool:
    """Does ``value`` round to ``published`` at 8 significant digits (within half
    a unit of the 8th digit)?"""
    half_unit = 0.5 * 10.0 ** (np.floor(np.log10(abs(published))) - 7)
    return abs(value - published) <= half_unit * (1 + 1e-9)


# ============================================ 0. the data and the references


@pytest.mark.parametrize("name", NAMES)
def test_published_optimum_matches_clarabel_and_reference(
        name: str, skip_peer_failure: SkipPeerFailure) -> None:
    """Without diffmodel: Clarabel on the raw l ≤ Ax ≤ u data and on the model's
    CVXPY objects, and the exact active-set reference, all round to the
    published optimum and agree with each other."""
    inst = load(name)
    published = PUBLISHED[name]
    _, _, _, raw_value = guard(skip_peer_failure, lambda: clarabel_qp(inst.raw))
    res = guard(skip_peer_failure,
                lambda: clarabel_solve(inst.objective, inst.constraints, inst.values))
    ref = guard(skip_peer_failure, lambda: reference(name))
    exact = float(ref.sol.value)
    assert rounds_to(exact, published), f"{name}: exact optimum {exact!r} vs published {published}"
    for label, value in (("Clarabel, raw data", raw_value), ("Clarabel, model objects", res.value)):
        assert rounds_to(value, published), f"{name}: {label} {value!r} vs published {published}"
        assert value == pytest.approx(exact, rel=CLARABEL_RTOL), (
            f"{name}: {label} {value!r} vs exact {exact!r}")
    assert float(inst.qp.objective(ref.sol.x)) == pytest.approx(exact, rel=1e-12, abs=1e-12)
    x = np.asarray(ref.sol.x, float)
    assert np.allclose(res.primal["x"], x, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(x).max()))


# ======================================================= 1. values, x, duals


@pytest.mark.parametrize("name", NAMES)
def test_value_rounds_to_published_and_matches_clarabel(
        name: str, skip_peer_failure: SkipPeerFailure) -> None:
    inst = load(name)
    res = guard(skip_peer_failure,
                lambda: clarabel_solve(inst.objective, inst.constraints, inst.values))
    _, sol, _ = solved(name)
    published = PUBLISHED[name]
    assert rounds_to(sol.value, published), (
        f"{name}: value {sol.value!r} does not round to the published {published:.7e}")
    assert sol.value == pytest.approx(res.value, rel=CLARABEL_RTOL), (
        f"{name}: value {sol.value!r} vs Clarabel {res.value!r}")
    ref = guard(skip_peer_failure, lambda: reference(name))
    assert sol.value == pytest.approx(float(ref.sol.value), rel=1e-10, abs=1e-12), (
        f"{name}: value {sol.value!r} vs exact {float(ref.sol.value)!r}")


@pytest.mark.parametrize("name", NAMES)
def test_solution_duals_and_active_rows_match_reference(
        name: str, skip_peer_failure: SkipPeerFailure) -> None:
    inst = load(name)
    ref = guard(skip_peer_failure, lambda: reference(name))
    _, sol, _ = solved(name)
    x_ref = np.asarray(ref.sol.x, float)
    xscale = max(1.0, float(np.max(np.abs(x_ref))))
    err = float(np.max(np.abs(sol.primal["x"] - x_ref)))
    assert err <= REF_RTOL * xscale, f"{name}: x error {err:.2e} (scale {xscale:.1e})"
    binding = split(inst, ref.rows.active.astype(float))
    for cname in inst.blocks:
        assert np.array_equal(sol.active[cname], binding[cname].astype(bool)), (
            f"{name}: sol.active[{cname!r}] rows "
            f"{np.flatnonzero(sol.active[cname]).tolist()}, expected "
            f"{np.flatnonzero(binding[cname]).tolist()}")
        assert np.all(sol.dual[cname] >= 0), f"{name}: negative dual in {cname}"
    lam_ref = split(inst, np.asarray(ref.sol.lam, float))
    nu_ref = np.asarray(ref.sol.nu, float)
    lam_scale = max(1.0, float(np.max(np.abs(ref.sol.lam))), float(np.max(np.abs(nu_ref),
                                                                          initial=0.0)))
    if name not in DEPENDENT:
        for cname in inst.blocks:
            assert not np.any(sol.degenerate[cname]), f"{name}: {cname} flagged degenerate"
            e = float(np.max(np.abs(sol.dual[cname] - lam_ref[cname])))
            assert e <= REF_RTOL * lam_scale, f"{name}: dual {cname} error {e:.2e}"
        if "eq" in inst.constraints:
            e = float(np.max(np.abs(sol.dual["eq"] - nu_ref)))
            assert e <= REF_RTOL * lam_scale, f"{name}: dual eq error {e:.2e}"
        return
    # Dependent binding rows: the multipliers are not unique. Check the KKT
    # conditions instead: stationarity, λ ≥ 0, λ = 0 off the binding rows.
    qp = inst.qp
    lam = np.zeros(qp.p)
    for cname, (rows, _) in inst.blocks.items():
        lam[rows] = sol.dual[cname]
    nu = sol.dual.get("eq", np.zeros(0))
    x = sol.primal["x"]
    grad = qp.P @ x + qp.q + qp.A.T @ nu + qp.G.T @ lam
    terms = (np.abs(qp.P) @ np.abs(x) + np.abs(qp.q) + np.abs(qp.A.T) @ np.abs(nu)
             + np.abs(qp.G.T) @ np.abs(lam))
    worst = float(np.max(np.abs(grad) / np.maximum(terms, 1.0)))
    assert worst <= 1e-9, f"{name}: stationarity residual {worst:.2e} (relative to its terms)"
    off = ~ref.rows.active
    assert not np.any(lam[off]), (
        f"{name}: multipliers on non-binding rows {np.flatnonzero(off & (lam != 0)).tolist()}")
    flagged = np.concatenate([np.ravel(sol.degenerate[c]) for c in inst.blocks])
    assert flagged.any(), f"{name}: no dependent row flagged in sol.degenerate"
    assert not np.any(flagged & off), f"{name}: non-binding rows flagged degenerate"


# =============================================================== 2. gradients


@pytest.mark.parametrize("name", UNIQUE)
def test_gradients_match_active_set_reference(name: str,
                                              skip_peer_failure: SkipPeerFailure) -> None:
    """dℓ/dq and dℓ/d(every finite bound) for ℓ = gᵀx, against the adjoint
    formulas: dℓ/dq = −ω_x, dℓ/db = ω_ν, dℓ/dh = ω_λ on the active rows (and
    the sign of each block: ``>=`` rows enter as −row ≤ −bound)."""
    inst = load(name)
    ref = guard(skip_peer_failure, lambda: reference(name))
    _, _, grads = solved(name)
    gr = active_set_gradients(inst.qp, ref.sol, seeded_g(name))
    expected = {"q": np.asarray(gr.q, float)}
    if "eq" in inst.constraints:
        expected["b"] = np.asarray(gr.b, float)
    for cname, (rows, sign) in inst.blocks.items():
        expected[PARAM_OF[cname]] = sign * np.asarray(gr.h[rows], float)
    assert set(grads) == set(expected), (sorted(grads), sorted(expected))
    scale = max(float(np.max(np.abs(v))) for v in expected.values())
    for pname, want in expected.items():
        err = float(np.max(np.abs(grads[pname] - want)))
        assert err <= GRAD_RTOL * scale, (
            f"{name}: dℓ/d{pname} error {err:.2e} > {GRAD_RTOL:.0e}·{scale:.2e}; "
            f"got {grads[pname][:4]}..., expected {want[:4]}...")


@pytest.mark.parametrize("name", sorted(DEPENDENT))
def test_gradients_where_unique_with_dependent_binding_rows(
        name: str, skip_peer_failure: SkipPeerFailure) -> None:
    """With dependent binding rows x is still differentiable in q and along bound
    directions that move the binding rows consistently; there the reference
    keeps a maximal independent subset of the binding rows (same null space)."""
    inst = load(name)
    qp = inst.qp
    ref = guard(skip_peer_failure, lambda: reference(name))
    _, sol, grads = solved(name)
    g = seeded_g(name)
    gr = active_set_gradients(qp, ref.sol, g)
    want_q = np.asarray(gr.q, float)
    err = float(np.max(np.abs(grads["q"] - want_q)))
    assert err <= GRAD_RTOL * float(np.max(np.abs(want_q))), f"{name}: dℓ/dq error {err:.2e}"

    rng = np.random.default_rng(7)
    for trial in range(3):
        v = rng.standard_normal(qp.n)
        db = np.asarray(qp.A) @ v
        dh = np.where(ref.rows.active, np.asarray(qp.G) @ v, 0.0)
        t = active_set_tangent(qp, ref.sol, b=db, h=dh)
        want = float(g @ np.asarray(t.x, float))
        got = float(grads["b"] @ db) if "eq" in inst.constraints else 0.0
        for cname, (rows, sign) in inst.blocks.items():
            got += float(grads[PARAM_OF[cname]] @ (sign * dh[rows]))
        assert abs(got - want) <= GRAD_RTOL * max(1.0, abs(want)), (
            f"{name}: ⟨backward, consistent bound direction {trial}⟩ = {got:.12g}, "
            f"derivative {want:.12g}")
        directions = {"b": db} if "eq" in inst.constraints else {}
        for cname, (rows, sign) in inst.blocks.items():
            directions[PARAM_OF[cname]] = sign * dh[rows]
        with expected_warnings(name, required=False):
            dz = sol.derivative(directions)
        err = float(np.max(np.abs(dz["x"] - np.asarray(t.x, float))))
        assert err <= GRAD_RTOL * max(1.0, float(np.max(np.abs(t.x)))), (
            f"{name}: forward mode along consistent bound direction {trial}: error {err:.2e}")


@pytest.mark.parametrize("name", ["HS21", "HS118", "DUALC1"])
def test_osqp_backend_agrees(name: str) -> None:
    inst = load(name)
    _, ref, grads_ref = solved(name)
    model = inst.model()
    sol = model.solve(solver="osqp", **inst.values)
    x_ref = ref.primal["x"]
    assert np.max(np.abs(sol.primal["x"] - x_ref)) <= 1e-9 * max(1.0, np.abs(x_ref).max())
    grads = sol.backward({"x": seeded_g(name)})
    scale = max(float(np.max(np.abs(v))) for v in grads_ref.values())
    for pname, want in grads_ref.items():
        err = float(np.max(np.abs(grads[pname] - want)))
        assert err <= 1e-9 * scale, f"{name}: osqp dℓ/d{pname} error {err:.2e}"
