"""Modeling conveniences and guarantees not covered by the gradient matrix."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm


def test_norm_squared_is_a_sum_of_squares() -> None:
    x = cp.Variable(3, name="x")
    X = cp.Variable((2, 2), name="X")
    t = cp.Parameter(3, name="t", value=np.arange(3.0))
    objective = cp.Minimize(cp.norm(x - t) ** 2 + cp.norm(X, "fro") ** 2 + cp.sum(X))
    constraints = {"sum": cp.sum(x) == 1, "corner": X[0, 0] == 1}
    model = dm.Model(objective, constraints)
    sol = model.solve()
    problem = cp.Problem(objective, list(constraints.values()))
    problem.solve(solver="CLARABEL")
    assert sol.value == pytest.approx(problem.value, rel=1e-7)
    np.testing.assert_allclose(sol.primal["x"], x.value, atol=1e-7)
    # x = t + (1 - sum t)/3: dx/dt = I - 11ᵀ/3.
    np.testing.assert_allclose(model.jacobian("x", "t"), np.eye(3) - 1 / 3, atol=1e-12)
    assert dm.check_gradients(model).ok


def test_norm_without_square_is_refused_by_name() -> None:
    x = cp.Variable(3, name="x")
    with pytest.raises(dm.ModelError, match=r"objective: norm\(x\) is not a quadratic term"):
        dm.Model(cp.Minimize(cp.norm(x)))


def test_parameter_named_solver_is_refused() -> None:
    x = cp.Variable(2, name="x")
    s = cp.Parameter(2, name="solver")
    with pytest.raises(dm.ModelError, match="named 'solver'"):
        dm.Model(cp.Minimize(cp.sum_squares(x - s)))


@pytest.mark.parametrize(
    ("attrs", "value"),
    [({"diag": True}, np.diag([1.0, 2.0, 3.0])),
     ({"PSD": True}, np.diag([1.0, 2.0, 0.0])),
     ({"symmetric": True}, np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 1.0]]))],
    ids=["diag", "psd-singular", "symmetric"],
)
def test_check_gradients_respects_parameter_attributes(attrs, value) -> None:
    x = cp.Variable(3, name="x")
    Q = cp.Parameter((3, 3), name="Q", **attrs)
    model = dm.Model(cp.Minimize(cp.quad_form(x, Q) + cp.sum_squares(x) + x[0]),
                     {"total": cp.sum(x) == 1})
    model.solve(Q=value)
    check = dm.check_gradients(model, wrt="Q")
    assert [row.parameter for row in check.rows] == ["Q"]
    assert check.ok, str(check)


def test_solution_arrays_are_not_the_variables_values() -> None:
    x = cp.Variable(2, name="x")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == 2})
    sol = model.solve()
    x.value[0] = 100.0
    np.testing.assert_array_equal(sol.primal["x"], [1.0, 1.0])


def test_batch_solve_keeps_the_last_solution_differentiable() -> None:
    x = cp.Variable(3, name="x")
    A = cp.Parameter((1, 3), name="A")
    b = cp.Parameter(1, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"row": A @ x == b})
    A0, b0 = np.array([[1.0, 2.0, 3.0]]), np.array([1.0])
    model.solve(A=A0, b=b0)
    reference = model.backward({"x": np.ones(3)})
    model.solve_batch(A=np.stack([A0 * 2, A0 * 3]))  # refactors K twice
    assert model.solution is not None
    again = model.backward({"x": np.ones(3)})  # refactors at the last solve's K
    for key in reference:
        np.testing.assert_allclose(again[key], reference[key], rtol=1e-12)


def test_weights_times_squares_is_a_weighted_sum_of_squares() -> None:
    w = cp.Variable(4, name="w")
    q = cp.Parameter(4, name="q", value=np.ones(4))
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    objective = cp.Minimize(weights @ cp.square(w) + q @ w)
    model = dm.Model(objective, {"budget": cp.sum(w) == 1})
    sol = model.solve()
    # Dense KKT of minimize Σ c_i w_i² + qᵀw s.t. 1ᵀw = 1.
    K = np.block([[2 * np.diag(weights), np.ones((4, 1))], [np.ones((1, 4)), np.zeros((1, 1))]])
    z = np.linalg.solve(K, np.r_[-np.ones(4), 1.0])
    np.testing.assert_allclose(sol.primal["w"], z[:4], rtol=1e-12, atol=1e-14)
    assert dm.check_gradients(model).ok


def test_unbounded_maximization_says_above() -> None:
    w = cp.Variable(4, name="w")
    q = cp.Parameter(4, name="q", value=np.arange(4.0))
    g = cp.Parameter(name="g", nonneg=True)
    model = dm.Model(cp.Maximize(q @ w - g * cp.sum_squares(w)), {"budget": cp.sum(w) == 1})
    with pytest.raises(dm.SolverError, match="unbounded above") as info:
        model.solve(g=0.0)
    assert info.value.status == "unbounded"
    assert model.solve(g=1.0).value == pytest.approx(2.5)


@pytest.mark.parametrize(("n", "m", "of", "wrt"), [(400, 300, "x", "b"), (300, 10, "x", "A")],
                         ids=["forward-chunks", "reverse-chunks"])
def test_jacobian_in_chunks_matches_dense_kkt(n: int, m: int, of: str, wrt: str) -> None:
    """Jacobians larger than one block of right-hand sides (JACOBIAN_CHUNK = 256)."""
    rng = np.random.default_rng(9)
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A", value=rng.standard_normal((m, n)) / np.sqrt(n)
                     + np.eye(m, n))
    b = cp.Parameter(m, name="b", value=rng.standard_normal(m))
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + cp.sum(x)), {"row": A @ x == b})
    sol = model.solve()
    J = model.jacobian(of, wrt)
    Av = A.value
    K = np.block([[np.eye(n), Av.T], [Av, np.zeros((m, m))]])
    if wrt == "b":  # dz/db = K⁻¹ [0; I]
        ref = np.linalg.solve(K, np.vstack([np.zeros((n, m)), np.eye(m)]))[:n]
    else:  # dz/dA = −K⁻¹ [I ⊗ νᵀ; xᵀ ⊗ I], columns in column-major vec(A)
        nu, xv = sol.dual["row"], sol.primal["x"]
        rhs = np.vstack([np.kron(np.eye(n), nu[None, :]), np.kron(xv[None, :], np.eye(m))])
        ref = -np.linalg.solve(K, rhs)[:n]
    np.testing.assert_allclose(J, ref, rtol=1e-9, atol=1e-11)
