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
    with pytest.raises(dm.ModelError, match=r"objective: Pnorm\(x, 2\) is not a quadratic term"):
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
