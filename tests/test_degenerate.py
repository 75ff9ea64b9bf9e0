"""Degenerate points, built on purpose: one-sided derivatives and generalized gradients.

Three tiny problems whose parameters enter only q, b and h, so that the
solution z(θ) = (x, duals) is piecewise affine in θ and has a closed form
near the given point:

- ``weak_bound``: minimize ½‖x − c‖² s.t. x ≥ 0 at c = (0, 1): x₀ ≥ 0 binds
  with multiplier 0 (weakly active). Written three ways: a constraint
  ``x >= 0``, ``nonneg=True`` and ``bounds=[0, 5]`` (rows "x.lower", "x.upper").
  x = max(c, 0), λ = max(−c, 0).
- ``duplicate_row``: minimize ½‖x − c‖² s.t. 1ᵀx = s, x₀ ≤ h, x₀ ≤ h_copy
  (the same row twice, h = h_copy, binding with total multiplier 0.75), x ≥ 0
  (inactive). x₀ = min(h, h_copy); the split of the multiplier between the
  copies is not unique, their sum is.
- ``shared_parameter``: minimize ½‖x − c‖² s.t. x ≤ h (one scalar h for both
  rows) at c = (2, 1), h = 1: row 0 strictly active, row 1 weakly active.
  x = min(c, h), λ = max(c − h, 0).

Contract checked: a ``dm.DegenerateWarning`` (at solve or derivative time)
naming the rows; ``sol.degenerate`` flags them (and ``sol.active``, the
binding rows, includes them); forward mode is the exact one-sided directional
derivative, equal to (z(θ + εd) − z(θ))/ε for small ε > 0 — from the closed
form (ε = 1e-6, exact up to rounding on a piece), from Clarabel re-solves
(ε = 1e-3, at points that are not degenerate, where Clarabel is accurate to
1e-10) and from diffmodel's own re-solves there; reverse mode gives a
gradient with ⟨∇ℓ, d⟩ between the one-sided quotients (ℓ(θ+εd) − ℓ(θ))/ε and
(ℓ(θ) − ℓ(θ−εd))/ε; nothing is NaN; along directions where z is
differentiable, forward mode is linear (two-sided) and exact.

At the degenerate point itself Clarabel (an interior-point method) is only
accurate to about √μ ≈ 1e-6 (measured: x₀ = 8.7e-7 for x₀* = 0), so base
values always come from the closed form, which is checked against Clarabel
at nearby non-degenerate points to 1e-8 and at the point itself to 1e-5.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from ineq_reference import clarabel_solve, guard

SkipPeerFailure = Callable[[str, str], NoReturn]
Values = dict[str, np.ndarray]

#: Step of the one-sided quotients of the closed form (exact on a piece of an
#: affine function, up to rounding ≈ 1e-16/ε).
EPS_CLOSED = 1e-6
#: Step of the one-sided quotients of Clarabel and diffmodel re-solves: every
#: kink of these problems is at least 0.25 away along the test directions.
EPS_SOLVE = 1e-3
#: diffmodel against the closed forms.
EXACT_TOL = 1e-8
#: Quotients of Clarabel re-solves (errors ≈ 1e-10 / EPS_SOLVE).
CLARABEL_QUOTIENT_TOL = 1e-6
#: Tolerance of the "between the one-sided quotients" check.
BETWEEN_TOL = 1e-8


# ------------------------------------------------------------------ problems


@dataclass
class Direction:
    """A parameter direction and what it does to the degenerate point."""

    label: str
    dirs: Values
    #: The points θ ± εd are not degenerate (so re-solves there are clean).
    leaves: bool
    #: z is differentiable along ±d (the one-sided derivatives are opposite).
    smooth: bool


@dataclass
class Degenerate:
    """A degenerate test problem with its closed-form solution near ``values``.

    ``closed(values)`` returns x and the duals that are unique, by name
    (for ``duplicate_row`` the two copies' duals only as their sum, under the
    key ``"cap+cap_copy"``). ``weak`` lists, per constraint, the rows that
    must be flagged; ``either`` lists groups of (constraint, row) of which at
    least one must be flagged (dependent rows: which copy is dropped is the
    implementation's choice)."""

    name: str
    objective: cp.Minimize
    constraints: dict[str, cp.Constraint]
    values: Values
    closed: Callable[[Values], dict[str, np.ndarray]]
    binding: dict[str, np.ndarray]
    weak: dict[str, np.ndarray]
    directions: list[Direction]
    either: list[list[tuple[str, int]]] = field(default_factory=list)
    #: Names the warning must mention (a regular expression matches any).
    warn_names: str = ""
    #: Dual losses allowed in backward() (duals that are unique), by name.
    dual_loss: tuple[str, ...] = ()
    #: Groups of constraints whose duals enter the loss with one shared weight.
    dual_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: For variable attributes (whose rows CVXPY reports no dual for): the same
    #: problem with explicit constraints under the names "x.lower"/"x.upper".
    twin: tuple[cp.Minimize, dict[str, cp.Constraint]] | None = None

    def model(self) -> dm.Model:
        return dm.Model(self.objective, self.constraints)

    def shifted(self, d: Values, t: float) -> Values:
        return {k: self.values[k] + t * d.get(k, 0.0) for k in self.values}


def outputs(sol: Any, deg: Degenerate) -> dict[str, np.ndarray]:
    """The comparable outputs of a diffmodel solution (or derivative dict)."""
    primal = sol.primal if hasattr(sol, "primal") else sol
    dual = sol.dual if hasattr(sol, "dual") else sol
    out = {"x": np.asarray(primal["x"], float)}
    for key in deg.closed(deg.values):
        if key == "x":
            continue
        parts = key.split("+")
        out[key] = sum(np.asarray(dual[p], float) for p in parts)
    return out


def clarabel_outputs(deg: Degenerate, values: Values) -> dict[str, np.ndarray]:
    objective, constraints = deg.twin or (deg.objective, deg.constraints)
    res = clarabel_solve(objective, constraints, values)
    out = {"x": res.primal["x"]}
    for key in deg.closed(values):
        if key != "x":
            out[key] = sum(np.asarray(res.dual[p], float) for p in key.split("+"))
    return out


def weak_bound(form: str) -> Degenerate:
    c = cp.Parameter(2, name="c")
    xt = cp.Variable(2, name="x")
    twin = None
    if form == "constraint":
        x = cp.Variable(2, name="x")
        cons = {"floor": x >= 0}
        lower = "floor"
    elif form == "nonneg":
        x = cp.Variable(2, name="x", nonneg=True)
        cons = {}
        lower = "x.lower"
        twin = (cp.Minimize(0.5 * cp.sum_squares(xt - c)), {"x.lower": xt >= 0})
    else:
        x = cp.Variable(2, name="x", bounds=[np.zeros(2), np.full(2, 5.0)])
        cons = {}
        lower = "x.lower"
        twin = (cp.Minimize(0.5 * cp.sum_squares(xt - c)), {"x.lower": xt >= 0,
                                                           "x.upper": xt <= 5.0})

    def closed(v: Values) -> dict[str, np.ndarray]:
        cv = v["c"]
        out = {"x": np.clip(cv, 0.0, 5.0 if form == "bounds" else np.inf),
               lower: np.maximum(-cv, 0.0)}
        if form == "bounds":
            out["x.upper"] = np.maximum(cv - 5.0, 0.0)
        return out

    binding = {lower: np.array([True, False])}
    weak = {lower: np.array([True, False])}
    if form == "bounds":
        binding["x.upper"] = weak["x.upper"] = np.array([False, False])
    dirs = [
        Direction("+c0", {"c": np.array([1.0, 0.0])}, leaves=True, smooth=False),
        Direction("-c0", {"c": np.array([-1.0, 0.0])}, leaves=True, smooth=False),
        Direction("+c1", {"c": np.array([0.0, 1.0])}, leaves=False, smooth=True),
        Direction("-c1", {"c": np.array([0.0, -1.0])}, leaves=False, smooth=True),
        Direction("+c0+c1", {"c": np.array([1.0, 1.0])}, leaves=True, smooth=False),
        Direction("-c0+c1/2", {"c": np.array([-1.0, 0.5])}, leaves=True, smooth=False),
        Direction("random", {"c": np.array([-0.6, -0.8])}, leaves=True, smooth=False),
    ]
    dual_loss = (lower, "x.upper") if form == "bounds" else (lower,)
    return Degenerate(f"weak_bound-{form}", cp.Minimize(0.5 * cp.sum_squares(x - c)), cons,
                      {"c": np.array([0.0, 1.0])}, closed, binding, weak, dirs,
                      warn_names=re.escape(lower), dual_loss=dual_loss, twin=twin)


def duplicate_row() -> Degenerate:
    x = cp.Variable(3, name="x")
    c = cp.Parameter(3, name="c")
    s = cp.Parameter(name="s")
    h = cp.Parameter(name="h")
    h_copy = cp.Parameter(name="h_copy")
    cons = {"total": cp.sum(x) == s, "cap": x[0] <= h, "cap_copy": x[0] <= h_copy,
            "floor": x >= 0}

    def closed(v: Values) -> dict[str, np.ndarray]:
        cv, sv = v["c"], float(v["s"])
        m = min(float(v["h"]), float(v["h_copy"]))  # x₀ = the tighter cap (it stays binding)
        r = (sv - m - cv[1] - cv[2]) / 2
        nu = -r
        return {"x": np.array([m, cv[1] + r, cv[2] + r]), "total": np.array(nu),
                "cap+cap_copy": np.array(cv[0] - m - nu), "floor": np.zeros(3)}

    values = {"c": np.array([2.0, 0.5, 1.0]), "s": np.array(2.0), "h": np.array(1.0),
              "h_copy": np.array(1.0)}
    one = np.array(1.0)
    dirs = [
        Direction("+h", {"h": one}, leaves=True, smooth=False),
        Direction("-h", {"h": -one}, leaves=True, smooth=False),
        Direction("+h_copy", {"h_copy": one}, leaves=True, smooth=False),
        Direction("+h-h_copy", {"h": one, "h_copy": -one}, leaves=True, smooth=False),
        Direction("+both", {"h": one, "h_copy": one}, leaves=False, smooth=True),
        Direction("-both", {"h": -one, "h_copy": -one}, leaves=False, smooth=True),
        Direction("+c0", {"c": np.array([1.0, 0.0, 0.0])}, leaves=False, smooth=True),
        Direction("+s", {"s": one}, leaves=False, smooth=True),
        Direction("mixed", {"h": -0.5 * one, "h_copy": 0.3 * one,
                            "c": np.array([0.2, -0.4, 0.1]), "s": 0.7 * one},
                  leaves=True, smooth=False),
    ]
    return Degenerate("duplicate_row", cp.Minimize(0.5 * cp.sum_squares(x - c)), cons, values,
                      closed, binding={"cap": np.array(True), "cap_copy": np.array(True),
                                       "floor": np.zeros(3, bool)},
                      weak={"floor": np.zeros(3, bool)}, directions=dirs,
                      either=[[("cap", 0), ("cap_copy", 0)]], warn_names="cap",
                      dual_loss=("total", "floor"),
                      dual_groups={"cap+cap_copy": ("cap", "cap_copy")})


def shared_parameter() -> Degenerate:
    x = cp.Variable(2, name="x")
    c = cp.Parameter(2, name="c")
    h = cp.Parameter(name="h")
    cons = {"cap": x <= h}

    def closed(v: Values) -> dict[str, np.ndarray]:
        return {"x": np.minimum(v["c"], v["h"]), "cap": np.maximum(v["c"] - v["h"], 0.0)}

    one = np.array(1.0)
    dirs = [
        Direction("+h", {"h": one}, leaves=True, smooth=False),
        Direction("-h", {"h": -one}, leaves=True, smooth=False),
        Direction("+c1", {"c": np.array([0.0, 1.0])}, leaves=True, smooth=False),
        Direction("-c1", {"c": np.array([0.0, -1.0])}, leaves=True, smooth=False),
        Direction("+c0", {"c": np.array([1.0, 0.0])}, leaves=False, smooth=True),
        Direction("+h+c1", {"h": one, "c": np.array([0.0, 1.0])}, leaves=False, smooth=True),
        Direction("mixed", {"h": 0.4 * one, "c": np.array([-0.3, 0.9])}, leaves=True,
                  smooth=False),
    ]
    return Degenerate("shared_parameter", cp.Minimize(0.5 * cp.sum_squares(x - c)), cons,
                      {"c": np.array([2.0, 1.0]), "h": np.array(1.0)}, closed,
                      binding={"cap": np.array([True, True])},
                      weak={"cap": np.array([False, True])}, directions=dirs,
                      warn_names="cap", dual_loss=("cap",))


PROBLEMS: dict[str, Callable[[], Degenerate]] = {
    "weak_bound-constraint": lambda: weak_bound("constraint"),
    "weak_bound-nonneg": lambda: weak_bound("nonneg"),
    "weak_bound-bounds": lambda: weak_bound("bounds"),
    "duplicate_row": duplicate_row,
    "shared_parameter": shared_parameter,
}
NAMES = list(PROBLEMS)


def make(name: str) -> Degenerate:
    return PROBLEMS[name]()


# ------------------------------------------------------------------- helpers


def quotient(deg: Degenerate, d: Values, t: float) -> dict[str, np.ndarray]:
    """(z(θ + t d) − z(θ)) / t from the closed form (t < 0: the left quotient, as
    (z(θ) − z(θ − |t| d)) / |t|)."""
    base, moved = deg.closed(deg.values), deg.closed(deg.shifted(d, t))
    return {k: (moved[k] - base[k]) / t for k in base}




def assert_close(actual: Any, expected: Any, tol: float, what: str) -> None:
    a, e = np.asarray(actual, float), np.asarray(expected, float)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    assert np.all(np.isfinite(a)), f"{what}: not finite: {a}"
    err = float(np.max(np.abs(a - e), initial=0.0))
    assert err <= tol * max(1.0, float(np.max(np.abs(e), initial=0.0))), (
        f"{what}: got {a.tolist()}, expected {e.tolist()} (error {err:.2e} > {tol:.0e})")


def flagged(sol: dm.Solution, name: str, row: int) -> bool:
    return bool(np.ravel(sol.degenerate[name])[row])


@contextmanager
def degenerate_point(deg: Degenerate) -> Iterator[None]:
    """Calls at the degenerate point: a DegenerateWarning naming the rows is
    expected (at solve or at derivative time), and no other warning."""
    with pytest.warns(dm.DegenerateWarning, match=deg.warn_names) as record:
        yield
    others = [w for w in record if not issubclass(w.category, dm.DegenerateWarning)]
    assert not others, f"unexpected warnings: {[str(w.message) for w in others]}"


def random_loss(deg: Degenerate, seed: int = 0) -> tuple[Values, Values, dict[str, np.ndarray]]:
    """A loss of x and of the unique duals: (primal grads, dual grads for
    backward(), and weights by closed-form key)."""
    rng = np.random.default_rng(seed)
    base = deg.closed(deg.values)
    weights = {k: rng.standard_normal(np.shape(v)) for k, v in base.items()
               if k == "x" or k in deg.dual_loss or k in deg.dual_groups}
    dual = {k: weights[k] for k in deg.dual_loss}
    for key, members in deg.dual_groups.items():
        for member in members:
            dual[member] = weights[key]
    return {"x": weights["x"]}, dual, weights


def loss_of(weights: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> float:
    return float(sum(np.sum(w * z[k]) for k, w in weights.items()))


# ========================================================= 0. the closed forms


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_matches_clarabel(name: str, skip_peer_failure: SkipPeerFailure) -> None:
    """Without diffmodel: the closed form against Clarabel at θ ± 1e-3·d for every
    test direction (not degenerate there: 1e-8) and at θ itself (1e-5: an
    interior-point method is only accurate to √μ at a degenerate point)."""
    deg = make(name)
    ref = deg.closed(deg.values)
    got = guard(skip_peer_failure, lambda: clarabel_outputs(deg, deg.values))
    for key in ref:
        assert_close(got[key], ref[key], 1e-5, f"{name}: {key} at θ vs Clarabel")
    for d in deg.directions:
        if not d.leaves:
            continue
        for t in (EPS_SOLVE, -EPS_SOLVE):
            v = deg.shifted(d.dirs, t)
            got = guard(skip_peer_failure, lambda v=v: clarabel_outputs(deg, v))
            want = deg.closed(v)
            for key in want:
                assert_close(got[key], want[key], 1e-8,
                             f"{name}: {key} at θ {t:+g}·({d.label}) vs Clarabel")


# ============================================== 1. warning, flags, the solution


@pytest.mark.parametrize("name", NAMES)
def test_warning_names_the_rows_and_flags_them(name: str) -> None:
    deg = make(name)
    model = deg.model()
    with degenerate_point(deg):
        sol = model.solve(**deg.values)
        sol.backward({"x": np.ones(np.shape(sol.primal["x"]))})
    ref = deg.closed(deg.values)
    got = outputs(sol, deg)
    for key in ref:
        assert_close(got[key], ref[key], EXACT_TOL, f"{name}: {key} at the degenerate point")
    for cname, rows in deg.weak.items():
        assert np.asarray(sol.degenerate[cname]).dtype == bool, cname
        assert np.array_equal(sol.degenerate[cname], rows), (
            f"{name}: sol.degenerate[{cname!r}] = {np.asarray(sol.degenerate[cname]).tolist()}, "
            f"expected {rows.tolist()}")
    for group in deg.either:
        assert any(flagged(sol, c, r) for c, r in group), (
            f"{name}: none of the dependent rows {group} is flagged: "
            f"{ {c: np.asarray(sol.degenerate[c]).tolist() for c, _ in group} }")
    for cname, rows in deg.binding.items():
        assert np.array_equal(sol.active[cname], rows), (
            f"{name}: sol.active[{cname!r}] = {np.asarray(sol.active[cname]).tolist()}, "
            f"expected the binding rows {rows.tolist()} (weakly active rows bind)")
    for cname in deg.binding:
        assert np.all(np.asarray(sol.dual[cname]) >= 0), f"{name}: dual {cname} negative"
        assert np.all(np.isfinite(sol.dual[cname])), f"{name}: dual {cname} not finite"


# ================================================================ 2. forward


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_the_one_sided_directional_derivative(
        name: str, skip_peer_failure: SkipPeerFailure) -> None:
    """derivative(d) = lim_{ε↓0} (z(θ + εd) − z(θ))/ε along every test direction,
    against the closed form, Clarabel re-solves and diffmodel re-solves."""
    deg = make(name)
    model = deg.model()
    with degenerate_point(deg):
        sol = model.solve(**deg.values)
        forward = {d.label: outputs(sol.derivative(d.dirs), deg) for d in deg.directions}
    base = deg.closed(deg.values)
    for d in deg.directions:
        got = forward[d.label]
        exact = quotient(deg, d.dirs, EPS_CLOSED)
        for key in exact:
            assert_close(got[key], exact[key], EXACT_TOL,
                         f"{name}: d{key} along {d.label} vs closed form")
        if not d.leaves:
            continue
        moved = deg.shifted(d.dirs, EPS_SOLVE)
        clar = guard(skip_peer_failure, lambda moved=moved: clarabel_outputs(deg, moved))
        mine = outputs(model.solve(**moved), deg)
        for key in exact:
            assert_close(got[key], (clar[key] - base[key]) / EPS_SOLVE, CLARABEL_QUOTIENT_TOL,
                         f"{name}: d{key} along {d.label} vs Clarabel's one-sided quotient")
            assert_close(got[key], (mine[key] - base[key]) / EPS_SOLVE, 1e-7,
                         f"{name}: d{key} along {d.label} vs diffmodel's one-sided quotient")


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_linear_where_the_solution_is_differentiable(name: str) -> None:
    """Along directions that keep the point on one piece on both sides, forward
    mode is the ordinary derivative: derivative(−d) = −derivative(d) = the
    central difference of the closed form."""
    deg = make(name)
    model = deg.model()
    smooth = [d for d in deg.directions if d.smooth]
    assert smooth, "construction: every problem has a smooth direction"
    with degenerate_point(deg):
        sol = model.solve(**deg.values)
        plus = {d.label: outputs(sol.derivative(d.dirs), deg) for d in smooth}
        minus = {d.label: outputs(sol.derivative({k: -v for k, v in d.dirs.items()}), deg)
                 for d in smooth}
    for d in smooth:
        central = {k: (a - b) / (2 * EPS_CLOSED) for (k, a), b in zip(
            deg.closed(deg.shifted(d.dirs, EPS_CLOSED)).items(),
            deg.closed(deg.shifted(d.dirs, -EPS_CLOSED)).values())}
        for key, value in central.items():
            assert_close(plus[d.label][key], value, EXACT_TOL, f"{name}: d{key} along {d.label}")
            assert_close(minus[d.label][key], -value, EXACT_TOL,
                         f"{name}: d{key} along −({d.label})")


# ================================================================ 3. reverse


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_reverse_lies_between_the_one_sided_quotients(name: str, seed: int) -> None:
    """For a random linear loss ℓ of x and the unique duals, and every test
    direction d: (ℓ(θ) − ℓ(θ − εd))/ε ≤ ⟨backward, d⟩ ≤ (ℓ(θ + εd) − ℓ(θ))/ε
    (or the reverse order), from the closed form; no NaN anywhere."""
    deg = make(name)
    model = deg.model()
    gx, gdual, weights = random_loss(deg, seed)
    with degenerate_point(deg):
        sol = model.solve(**deg.values)
        grads = sol.backward(gx, dual=gdual)
    assert set(grads) == set(model.parameters)
    for pname, grad in grads.items():
        assert grad.shape == model.parameters[pname].shape, pname
        assert np.all(np.isfinite(grad)), f"{name}: dℓ/d{pname} = {grad}"
    for d in deg.directions:
        right = loss_of(weights, quotient(deg, d.dirs, EPS_CLOSED))
        left = loss_of(weights, quotient(deg, d.dirs, -EPS_CLOSED))
        got = float(sum(np.sum(grads[k] * v) for k, v in d.dirs.items()))
        lo, hi = min(left, right), max(left, right)
        assert lo - BETWEEN_TOL <= got <= hi + BETWEEN_TOL, (
            f"{name}: ⟨backward, {d.label}⟩ = {got:.12g} is not between the one-sided "
            f"quotients {left:.12g} (left) and {right:.12g} (right)")
        if d.smooth:
            assert abs(got - right) <= BETWEEN_TOL * max(1.0, abs(right)), (
                f"{name}: along the smooth direction {d.label}, ⟨backward, d⟩ = {got:.12g} "
                f"but the derivative is {right:.12g}")


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_nan_at_the_degenerate_point(name: str) -> None:
    """Jacobians, forward and reverse mode for every output and parameter are finite."""
    deg = make(name)
    model = deg.model()
    with degenerate_point(deg):
        sol = model.solve(**deg.values)
        _assert_finite_derivatives(deg, model, sol)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_nan_at_the_degenerate_point_after_warm_starts(name: str) -> None:
    """As above, with the degenerate point reached from each nearby point the
    test directions lead to (the solver starts from the active set there).
    For ``duplicate_row`` from h_copy < h, the copy alone was active and the
    cap joined it as a weakly binding row: K then held the same row twice,
    was singular, and every Jacobian failed."""
    deg = make(name)
    for d in deg.directions:
        for t in (EPS_SOLVE, -EPS_SOLVE):
            model = deg.model()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dm.DegenerateWarning)
                model.solve(**deg.shifted(d.dirs, t))
            with degenerate_point(deg):
                sol = model.solve(**deg.values)
                _assert_finite_derivatives(deg, model, sol)


def _assert_finite_derivatives(deg: Degenerate, model: dm.Model, sol: dm.Solution) -> None:
    outs = ["x", *sol.dual]
    for of in outs:
        for wrt, par in model.parameters.items():
            J = sol.jacobian(of, wrt)
            size = int(np.size(sol.primal[of] if of == "x" else sol.dual[of]))
            assert J.shape == (size, par.size), (of, wrt, J.shape)
            assert np.all(np.isfinite(J)), f"{deg.name}: jacobian({of!r}, {wrt!r}) = {J}"
    dz = sol.derivative({k: np.ones(np.shape(v)) for k, v in deg.values.items()})
    grads = sol.backward({"x": np.ones(np.shape(sol.primal["x"]))},
                         dual={k: np.ones(np.shape(v)) for k, v in sol.dual.items()})
    for key, val in {**dz, **grads}.items():
        assert np.all(np.isfinite(val)), f"{deg.name}: {key} = {val}"
    assert np.isfinite(sol.value) and np.isfinite(sol.accuracy)


def test_leaving_the_degenerate_point_silences_the_warning() -> None:
    """After a degenerate solve, a solve at a nearby non-degenerate point of the
    same model gives no warning, flags nothing and has exact two-sided
    derivatives (filterwarnings = error turns any warning into a failure)."""
    deg = make("weak_bound-constraint")
    model = deg.model()
    with degenerate_point(deg):
        model.solve(**deg.values)
    sol = model.solve(c=np.array([-0.5, 1.0]))
    assert not np.any(sol.degenerate["floor"]), sol.degenerate["floor"]
    assert np.array_equal(sol.active["floor"], [True, False])
    d = {"c": np.array([1.0, 1.0])}
    dz = sol.derivative(d)
    assert_close(dz["x"], [0.0, 1.0], EXACT_TOL, "dx along (1, 1) with x₀ strictly at 0")
    assert_close(dz["floor"], [-1.0, 0.0], EXACT_TOL, "dλ along (1, 1)")
    assert_close(sol.backward({"x": np.array([3.0, 2.0])})["c"], [0.0, 2.0], EXACT_TOL,
                 "dℓ/dc away from the kink")


@pytest.mark.parametrize("name", NAMES)
def test_resolves_around_the_degenerate_point_in_one_model(name: str) -> None:
    """One model solved in turn at θ ± 1e-3·d for every test direction and at θ
    itself, in an order that moves across the kinks: every solution (x and the
    unique duals) is the closed form's, and the warning comes exactly at the
    degenerate points. A solver that warm-starts from the previous active set
    must not keep rows that no longer bind (nor drop rows that do)."""
    deg = make(name)
    model = deg.model()
    points: list[tuple[str, Values, bool]] = [("θ", deg.values, True)]
    for d in deg.directions:
        for t in (EPS_SOLVE, -EPS_SOLVE):
            points.append((f"θ {t:+g}·({d.label})", deg.shifted(d.dirs, t), not d.leaves))
            points.append(("θ", deg.values, True))
    for label, values, degenerate in points:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            sol = model.solve(**values)
            sol.derivative({k: np.ones(np.shape(v)) for k, v in values.items()})
        want = deg.closed(values)
        got = outputs(sol, deg)
        for key in want:
            assert_close(got[key], want[key], EXACT_TOL, f"{name}: {key} at {label}")
        allowed = {dm.DegenerateWarning} if degenerate else set()
        assert {w.category for w in record} <= allowed, (
            f"{name} at {label}: unexpected warnings {[str(w.message) for w in record]}")
