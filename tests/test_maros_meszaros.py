"""Real problems: equality-constrained Maros–Mészáros instances.

The data live outside the repository (``../shared/data/maros-meszaros``); the
tests skip when the folder is absent.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from diffmodel.testing import as_model, load_maros_meszaros, maros_meszaros_dir

DATA = maros_meszaros_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="Maros–Mészáros data folder not found")

SMALL = ["HS51", "HS52", "GENHS28", "DPKLO1"]
LARGE = ["AUG3DC", "DTOC3", "AUG2DC"]


def _clarabel(data: dm.testing.QPData) -> tuple[float, np.ndarray]:
    x = cp.Variable(data.n)
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.quad_form(x, data.P, assume_PSD=True) + data.q @ x),
        [data.A @ x == data.b],
    )
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return float(prob.value), np.asarray(x.value)


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_solution_matches_clarabel(name: str) -> None:
    data = load_maros_meszaros(name)
    model, values = as_model(data)
    sol = model.solve()
    value, x_ref = _clarabel(data)
    assert sol.value == pytest.approx(value, rel=1e-7, abs=1e-7)
    scale = max(1.0, float(np.max(np.abs(x_ref))))
    assert np.max(np.abs(sol.primal["x"] - x_ref)) <= 1e-5 * scale
    # KKT residuals of the returned point, from the raw data.
    x, nu = sol.primal["x"], sol.dual["eq"]
    dual_res = data.P @ x + data.q + data.A.T @ nu
    assert np.max(np.abs(data.A @ x - data.b)) <= 1e-9 * (1 + np.max(np.abs(data.b)))
    assert np.max(np.abs(dual_res)) <= 1e-9 * (1 + np.max(np.abs(data.q)))


@pytest.mark.parametrize("name", SMALL)
def test_gradients_match_dense_kkt(name: str) -> None:
    data = load_maros_meszaros(name)
    model, _ = as_model(data)
    sol = model.solve()
    rng = np.random.default_rng(0)
    g = rng.standard_normal(data.n)
    grads = model.backward({"x": g})
    K = data.kkt().toarray()
    omega = np.linalg.solve(K, np.concatenate([g, np.zeros(data.m)]))
    # dℓ/dq = -ω_x and dℓ/db = ω_ν (DESIGN.md), independent of diffmodel's maps.
    np.testing.assert_allclose(grads["q"], -omega[: data.n], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["b"], omega[data.n:], rtol=1e-8, atol=1e-10)
    z = np.linalg.solve(K, np.concatenate([-data.q, data.b]))
    np.testing.assert_allclose(sol.primal["x"], z[: data.n], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_gradients_match_finite_differences(name: str) -> None:
    model, _ = as_model(load_maros_meszaros(name))
    model.solve()
    # x and ν are affine in (q, b), so a large step is exact up to rounding.
    check = dm.check_gradients(model, eps=1e-3, tol=1e-6)
    assert check.ok, str(check)


@pytest.mark.parametrize("name", ["HS51", "AUG3DC"])
def test_osqp_backend_agrees(name: str) -> None:
    model, _ = as_model(load_maros_meszaros(name))
    ref = model.solve(solver="kkt")
    g = np.random.default_rng(1).standard_normal(ref.primal["x"].shape)
    grads_ref = model.backward({"x": g})
    sol = model.solve(solver="osqp")
    np.testing.assert_allclose(sol.primal["x"], ref.primal["x"], rtol=1e-6, atol=1e-6)
    grads = model.backward({"x": g})
    for key in grads:
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-5, atol=1e-6)


def test_singular_kkt_solves_but_refuses_derivatives() -> None:
    # AUG3D: P is singular on the null space of A, so x is optimal but not unique.
    data = load_maros_meszaros("AUG3D")
    model, _ = as_model(data)
    sol = model.solve()
    value, _ = _clarabel(data)
    assert sol.value == pytest.approx(value, rel=1e-7)
    with pytest.raises(dm.DerivativeError, match="singular"):
        model.backward({"x": np.ones(data.n)})
    with pytest.raises(dm.DerivativeError, match="singular"):
        model.derivative({"b": np.ones(data.m)})
