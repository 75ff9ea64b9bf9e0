"""``dm.check_gradients`` must catch a wrong solver: its reference shares no code with it."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from diffmodel.engine import Engine
from diffmodel.linalg import Factorization
from diffmodel.point import Point


def _model() -> dm.Model:
    rng = np.random.default_rng(3)
    x = cp.Variable(5, name="x")
    A = cp.Parameter((2, 5), name="A", value=rng.standard_normal((2, 5)) + np.eye(2, 5))
    b = cp.Parameter(2, name="b", value=rng.standard_normal(2))
    q = cp.Parameter(5, name="q", value=rng.standard_normal(5))
    return dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"bal": A @ x == b})


def test_passes_on_the_real_solver() -> None:
    model = _model()
    model.solve()
    check = dm.check_gradients(model, tol=1e-8)
    assert check.ok, str(check)
    assert check.solution_error <= 1e-13


def test_flags_a_solver_biased_by_1e_4(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KKT solve off by 1e-4 (solution and derivatives alike)."""
    solve = Factorization.solve

    def biased(self: Factorization, rhs: np.ndarray):  # type: ignore[no-untyped-def]
        out = solve(self, rhs)
        return out._replace(z=out.z * (1 + 1e-4))

    monkeypatch.setattr(Factorization, "solve", biased)
    model = _model()
    model.solve()
    check = dm.check_gradients(model)
    assert not check.ok, str(check)
    assert check.solution_error == pytest.approx(1e-4, rel=1e-3)
    assert "FAILED" in str(check)


def test_flags_a_biased_solution_with_exact_derivatives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the returned point is off by 1e-4; derivatives of q and b do not depend on it."""
    solve = Engine.solve

    def biased(self: Engine, theta: np.ndarray, solver: str):  # type: ignore[no-untyped-def]
        point = solve(self, theta, solver)
        raw = point.raw._replace(x=point.raw.x * (1 + 1e-4))
        return Point(point.problem, point.theta, point.data, raw, point.value, point.solver)

    monkeypatch.setattr(Engine, "solve", biased)
    model = _model()
    model.solve()
    check = dm.check_gradients(model, wrt=["b", "q"])
    assert not check.ok
    assert check.solution_error >= 1e-5
