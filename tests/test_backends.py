"""One conformance suite, run on every backend ("kkt" and "osqp").

For each backend, with its own tolerances: the same answers as the other
backend and as CVXPY + Clarabel, a KKT residual ≈ 0 computed here from the
problem data, inputs left unchanged, repeat solves identical, an updated model
equal to a freshly built one, canonicalization exactly once per model, the
factorization reused while only q and b change ("kkt"), and switching backend
per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from problems import full_row_rank, spd
import diffmodel.canon
import diffmodel.model

SOLVERS = ("kkt", "osqp")


@dataclass(frozen=True)
class Tol:
    solution: float  # x, ν, value vs Clarabel and vs the other backend
    residual: float  # KKT residual, relative to the data's scale
    repeat: float  # a repeat solve at the same values
    fresh: float  # an updated model vs a freshly built one


TOL = {
    # Direct factorization with iterative refinement: machine precision, and a
    # repeat solve reuses the factorization, so it is bit-for-bit identical.
    "kkt": Tol(solution=1e-9, residual=1e-12, repeat=0.0, fresh=1e-12),
    # ADMM to eps 1e-10 plus polishing; OSQP warm starts from its previous
    # iterate, so a repeat or an updated solve may differ in the last digits.
    "osqp": Tol(solution=1e-7, residual=1e-9, repeat=1e-12, fresh=1e-9),
}


def rel_close(actual, expected, tol: float, what: str = "") -> None:
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


# ---------------------------------------------------------------------------
# Seeded families of well-posed QPs, each with its KKT residual written out
# ---------------------------------------------------------------------------


@dataclass
class Family:
    """A model family: build() makes fresh CVXPY objects; values(rng) draws
    parameter values; residual(values, primal, dual) returns the stationarity
    and primal-feasibility residual vectors from the problem data."""

    build: Callable[[], tuple[cp.Minimize | cp.Maximize, dict[str, cp.Constraint]]]
    values: Callable[[np.random.Generator], dict[str, np.ndarray]]
    residual: Callable[..., tuple[np.ndarray, np.ndarray]]


# -- qp: minimize ½ xᵀP₀x + qᵀx  s.t.  A x = b ("bal")

QP_N, QP_M = 8, 3
QP_P0 = spd(np.random.default_rng(42), QP_N)


def _qp_build():
    x = cp.Variable(QP_N, name="x")
    A = cp.Parameter((QP_M, QP_N), name="A")
    b = cp.Parameter(QP_M, name="b")
    q = cp.Parameter(QP_N, name="q")
    return cp.Minimize(0.5 * cp.quad_form(x, QP_P0) + q @ x), {"bal": A @ x == b}


def _qp_values(rng):
    return {"A": full_row_rank(rng, QP_M, QP_N), "b": rng.standard_normal(QP_M),
            "q": rng.standard_normal(QP_N)}


def _qp_residual(v, primal, dual):
    x, nu = primal["x"], dual["bal"]
    return QP_P0 @ x + v["q"] + v["A"].T @ nu, v["A"] @ x - v["b"]


# -- least_squares: minimize ‖F x − g‖² + ½‖x‖²
#    s.t. C x = d ("rows"), x0 + x1 = 1 ("pair")

LS_N, LS_K, LS_M = 6, 10, 2
LS_C = full_row_rank(np.random.default_rng(43), LS_M, LS_N)


def _ls_build():
    x = cp.Variable(LS_N, name="x")
    F = cp.Parameter((LS_K, LS_N), name="F")
    g = cp.Parameter(LS_K, name="g")
    d = cp.Parameter(LS_M, name="d")
    return (cp.Minimize(cp.sum_squares(F @ x - g) + 0.5 * cp.sum_squares(x)),
            {"rows": LS_C @ x == d, "pair": x[0] + x[1] == 1})


def _ls_values(rng):
    return {"F": rng.standard_normal((LS_K, LS_N)) / np.sqrt(LS_K),
            "g": rng.standard_normal(LS_K), "d": rng.standard_normal(LS_M)}


def _ls_residual(v, primal, dual):
    x = primal["x"]
    e01 = np.zeros(LS_N)
    e01[:2] = 1.0
    stat = (2 * v["F"].T @ (v["F"] @ x - v["g"]) + x + LS_C.T @ dual["rows"]
            + dual["pair"] * e01)
    feas = np.concatenate([LS_C @ x - v["d"], [x[0] + x[1] - 1.0]])
    return stat, feas


# -- matrix: maximize −‖X − Y‖² + ⟨W, X⟩ − ‖u‖²
#    s.t. column sums of X = s ("colsum"), u0 − X00 = c ("link"), u1 = 2c ("u1")
#    CVXPY's duals for Maximize f belong to Minimize −f:
#    L = −f + Σ νᵀ(lhs − rhs).

MX_W = np.random.default_rng(44).standard_normal((4, 3))


def _mx_build():
    X = cp.Variable((4, 3), name="X")
    u = cp.Variable(2, name="u")
    Y = cp.Parameter((4, 3), name="Y")
    s = cp.Parameter(3, name="s")
    c = cp.Parameter(name="c")
    return (cp.Maximize(-cp.sum_squares(X - Y) + cp.sum(cp.multiply(MX_W, X)) - cp.sum_squares(u)),
            {"colsum": cp.sum(X, axis=0) == s, "link": u[0] - X[0, 0] == c, "u1": u[1] == 2 * c})


def _mx_values(rng):
    return {"Y": rng.standard_normal((4, 3)), "s": rng.standard_normal(3),
            "c": np.array(rng.uniform(-1.0, 1.0))}


def _mx_residual(v, primal, dual):
    X, u = primal["X"], primal["u"]
    n_col, n_link, n_u1 = dual["colsum"], float(dual["link"]), float(dual["u1"])
    dX = 2 * (X - v["Y"]) - MX_W + np.ones((4, 1)) * n_col[None, :]
    dX[0, 0] -= n_link
    du = 2 * u + np.array([n_link, n_u1])
    c = float(v["c"])
    feas = np.concatenate([X.sum(axis=0) - v["s"], [u[0] - X[0, 0] - c, u[1] - 2 * c]])
    return np.concatenate([dX.ravel(), du]), feas


FAMILIES = {
    "qp": Family(_qp_build, _qp_values, _qp_residual),
    "least_squares": Family(_ls_build, _ls_values, _ls_residual),
    "matrix": Family(_mx_build, _mx_values, _mx_residual),
}
SEEDS = (0, 1)


def draw(family: str, seed: int) -> dict[str, np.ndarray]:
    return FAMILIES[family].values(np.random.default_rng(10 * seed + 5))


def build(family: str, **kwargs: object) -> dm.Model:
    objective, constraints = FAMILIES[family].build()
    return dm.Model(objective, constraints, **kwargs)


def clarabel(family: str, values: dict[str, np.ndarray]):
    objective, constraints = FAMILIES[family].build()
    prob = cp.Problem(objective, list(constraints.values()))
    for par in prob.parameters():
        par.value = values[par.name()]
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL
    primal = {v.name(): np.array(v.value) for v in prob.variables()}
    dual = {name: np.array(con.dual_value) for name, con in constraints.items()}
    return primal, dual, prob.value


def loss_weights(model: dm.Model, seed: int):
    """Random ∂ℓ/∂x, ∂ℓ/∂ν and dθ for every variable, constraint and parameter."""
    rng = np.random.default_rng(1000 + seed)
    g = {k: rng.standard_normal(v.shape) for k, v in model.variables.items()}
    h = {k: rng.standard_normal(c.shape) for k, c in model.constraints.items()}
    d = {k: rng.standard_normal(p.shape) for k, p in model.parameters.items()}
    return g, h, d


def snapshot(model: dm.Model, sol: dm.Solution, seed: int) -> dict[str, np.ndarray]:
    """Everything a user reads off a solved model, flattened into one dict."""
    g, h, d = loss_weights(model, seed)
    out: dict[str, np.ndarray] = {"value": np.array(sol.value)}
    out.update({f"x:{k}": np.array(v) for k, v in sol.primal.items()})
    out.update({f"nu:{k}": np.array(v) for k, v in sol.dual.items()})
    out.update({f"grad:{k}": v for k, v in model.backward(g, dual=h).items()})
    out.update({f"dz:{k}": v for k, v in model.derivative(d).items()})
    first_var, first_par = next(iter(model.variables)), next(iter(model.parameters))
    out["jac"] = model.jacobian(first_var, first_par)
    return out


def assert_snapshots_close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert np.shape(a[key]) == np.shape(b[key]), key
        if tol == 0.0:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            rel_close(a[key], b[key], tol, key)


CASES = [pytest.param(f, s, id=f"{f}-{s}") for f in FAMILIES for s in SEEDS]


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("family", "seed"), CASES)
def test_matches_clarabel(family: str, seed: int, solver: str) -> None:
    values = draw(family, seed)
    primal, dual, value = clarabel(family, values)
    sol = build(family).solve(solver=solver, **values)
    assert sol.status == "optimal"
    assert sol.solver == solver
    tol = TOL[solver].solution
    for k, ref in primal.items():
        assert sol.primal[k].shape == ref.shape, k
        rel_close(sol.primal[k], ref, tol, k)
    for k, ref in dual.items():
        assert sol.dual[k].shape == ref.shape, k
        rel_close(sol.dual[k], ref, tol, k)
    rel_close(sol.value, value, tol, "value")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("family", "seed"), CASES)
def test_kkt_residual(family: str, seed: int, solver: str) -> None:
    values = draw(family, seed)
    sol = build(family).solve(solver=solver, **values)
    stat, feas = FAMILIES[family].residual(values, sol.primal, sol.dual)
    scale = 1.0 + max(float(np.max(np.abs(v))) for v in values.values())
    outputs = (*sol.primal.values(), *sol.dual.values())
    scale *= 1.0 + max(float(np.max(np.abs(v))) for v in outputs)
    assert np.max(np.abs(stat)) / scale < TOL[solver].residual
    assert np.max(np.abs(feas)) / scale < TOL[solver].residual
    assert 0.0 <= sol.residual < 1e-8  # the backend's own report agrees


@pytest.mark.parametrize(("family", "seed"), CASES)
def test_backends_agree(family: str, seed: int) -> None:
    values = draw(family, seed)
    model = build(family)
    snaps = {s: snapshot(model, model.solve(solver=s, **values), seed) for s in SOLVERS}
    assert_snapshots_close(snaps["osqp"], snaps["kkt"], TOL["osqp"].solution)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("family", "seed"), CASES)
def test_inputs_unchanged(family: str, seed: int, solver: str) -> None:
    """Read-only inputs work (nothing writes into them) and keep their values."""
    values = draw(family, seed)
    model = build(family)

    def frozen(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in d.items():
            arr = np.array(v, dtype=float)
            arr.setflags(write=False)
            out[k] = arr
        return out

    vals = frozen(values)
    g, h, d = (frozen(w) for w in loss_weights(model, seed))
    copies = [{k: v.copy() for k, v in w.items()} for w in (vals, g, h, d)]
    model.solve(solver=solver, **vals)
    model.backward(g, dual=h)
    model.derivative(d)
    for name in model.parameters:
        model.jacobian(next(iter(model.variables)), name)
    for given, copy in zip((vals, g, h, d), copies):
        for k in copy:
            np.testing.assert_array_equal(given[k], copy[k], err_msg=k)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("family", "seed"), CASES)
def test_repeat_solves_identical(family: str, seed: int, solver: str) -> None:
    values = draw(family, seed)
    model = build(family)
    first = snapshot(model, model.solve(solver=solver, **values), seed)
    for _ in range(3):
        again = snapshot(model, model.solve(solver=solver, **values), seed)
        assert_snapshots_close(again, first, TOL[solver].repeat)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("family", "seed"), CASES)
def test_updated_model_equals_fresh_model(family: str, seed: int, solver: str) -> None:
    """Solve and differentiate at θ₁, then at θ₂; compare with a model built
    and solved at θ₂ only. Then move one parameter at a time."""
    v1, v2 = draw(family, seed), draw(family, seed + 100)
    updated = build(family)
    snapshot(updated, updated.solve(solver=solver, **v1), seed)
    got = snapshot(updated, updated.solve(solver=solver, **v2), seed)
    fresh = build(family)
    want = snapshot(fresh, fresh.solve(solver=solver, **v2), seed)
    assert_snapshots_close(got, want, TOL[solver].fresh)
    for name in v1:
        mixed = {**v2, name: v1[name]}
        got = snapshot(updated, updated.solve(solver=solver, **mixed), seed)
        fresh = build(family)
        want = snapshot(fresh, fresh.solve(solver=solver, **mixed), seed)
        assert_snapshots_close(got, want, TOL[solver].fresh)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_canonicalize_runs_once(monkeypatch: pytest.MonkeyPatch, family: str, solver: str) -> None:
    calls = []
    original = diffmodel.model.canonicalize

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    # Model.__init__ calls diffmodel.model.canonicalize; patch the defining
    # module too, so that no other route to it goes uncounted.
    monkeypatch.setattr(diffmodel.model, "canonicalize", counting)
    monkeypatch.setattr(diffmodel.canon, "canonicalize", counting)
    model = build(family, solver=solver)
    assert len(calls) == 1
    for seed in range(6):
        values = draw(family, seed)
        sol = model.solve(**values)
        snapshot(model, sol, seed)
        model.solve(solver="kkt" if solver == "osqp" else "osqp", **values)
    dm.check_gradients(model)
    assert len(calls) == 1


def test_factorizations_reused_while_only_q_and_b_change() -> None:
    values = draw("qp", 0)
    model = build("qp")
    assert model.factorizations == 0
    model.solve(solver="kkt", **values)
    count = model.factorizations
    assert count >= 1
    rng = np.random.default_rng(7)
    for _ in range(5):
        values = {**values, "q": rng.standard_normal(QP_N), "b": rng.standard_normal(QP_M)}
        sol = model.solve(solver="kkt", **values)
        snapshot(model, sol, 0)  # backward, derivative, jacobian: no refactoring either
        stat, feas = _qp_residual(values, sol.primal, sol.dual)
        assert max(np.max(np.abs(stat)), np.max(np.abs(feas))) < 1e-10
    assert model.factorizations == count
    # Re-solving at the same A (even with q, b unchanged) does not refactor.
    model.solve(solver="kkt", **values)
    assert model.factorizations == count
    # A new A changes K: exactly one new factorization per new A.
    for k in range(1, 4):
        values = {**values, "A": full_row_rank(rng, QP_M, QP_N)}
        sol = model.solve(solver="kkt", **values)
        assert model.factorizations == count + k
        snapshot(model, sol, 0)
        assert model.factorizations == count + k
        stat, feas = _qp_residual(values, sol.primal, sol.dual)
        assert max(np.max(np.abs(stat)), np.max(np.abs(feas))) < 1e-10


def test_factorization_after_osqp_solve_is_made_once_for_derivatives() -> None:
    """OSQP's answer is refined and verified on one factorization of K, which
    every derivative reuses, and so does a "kkt" solve at the same K."""
    values = draw("qp", 1)
    model = build("qp")
    model.solve(solver="osqp", **values)
    assert model.factorizations == 1
    model.backward({"x": np.ones(QP_N)})
    assert model.factorizations == 1
    model.derivative({"b": np.ones(QP_M)})
    model.jacobian("x", "A")
    assert model.factorizations == 1
    model.solve(solver="kkt", **{**values, "q": values["q"] + 1.0})
    assert model.factorizations == 1


@pytest.mark.parametrize("default", SOLVERS)
def test_switch_solver_per_call(default: str) -> None:
    values = draw("least_squares", 0)
    model = build("least_squares", solver=default)
    other = "osqp" if default == "kkt" else "kkt"
    ref = {}
    for solver in (None, other, default, other, None):
        sol = model.solve(solver=solver, **values)
        used = default if solver is None else solver
        assert sol.solver == used
        snap = snapshot(model, sol, 0)
        if used in ref:
            assert_snapshots_close(snap, ref[used], TOL[used].repeat)
        else:
            ref[used] = snap
    assert_snapshots_close(ref["osqp"], ref["kkt"], TOL["osqp"].solution)


@pytest.mark.parametrize("solver", SOLVERS)
def test_results_are_named_shaped_and_mirrored(solver: str) -> None:
    """Returned arrays are shaped like their CVXPY objects, and the CVXPY
    objects' value / dual_value / gradient / delta mirror them."""
    values = draw("matrix", 0)
    model = build("matrix")
    sol = model.solve(solver=solver, **values)
    assert list(sol.primal) == list(model.variables)
    assert list(sol.dual) == list(model.constraints)
    for k, var in model.variables.items():
        assert sol.primal[k].shape == var.shape
        np.testing.assert_array_equal(var.value, sol.primal[k])
    for k, con in model.constraints.items():
        assert sol.dual[k].shape == con.shape
        np.testing.assert_array_equal(con.dual_value, sol.dual[k])
    g, h, d = loss_weights(model, 0)
    grads = model.backward(g, dual=h)
    assert list(grads) == list(model.parameters)
    for k, par in model.parameters.items():
        assert grads[k].shape == par.shape
        np.testing.assert_array_equal(par.gradient, grads[k])
    dz = model.derivative(d)
    assert set(dz) == set(model.variables) | set(model.constraints)
    for k, var in model.variables.items():
        assert dz[k].shape == var.shape
        np.testing.assert_array_equal(var.delta, dz[k])
    for k, con in model.constraints.items():
        assert dz[k].shape == con.shape
    J = model.jacobian("X", "Y")
    assert J.shape == (12, 12)
    # Column j of the Jacobian is the JVP along the j-th column-major unit vector.
    for j in (0, 5, 11):
        e = np.zeros(12)
        e[j] = 1.0
        col = model.derivative({"Y": e.reshape((4, 3), order="F")})["X"]
        np.testing.assert_allclose(J[:, j], col.ravel(order="F"), rtol=1e-10, atol=1e-12)
