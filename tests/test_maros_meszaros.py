"""Maros–Mészáros instances: published optima, and gradients against an independent solver.

Every equality instance in ``../shared/data/maros-meszaros`` and every one
whose other rows (bounds, inequalities) are inactive at the equality
optimum is solved as its equality QP. Checks:

- the optimal value rounds to the published 8-digit optimum, and matches an
  independent reference to 1e-10 relative: SciPy's SuperLU (or LAPACK) of
  the raw KKT matrix with iterative refinement whose residuals are formed in
  extended precision — none of diffmodel's scaling, factorization or
  refinement code;
- the rows left out really are strictly satisfied at the solution;
- gradients of a random loss for q and b match the adjoint formula solved by
  the same independent reference (dℓ/dq = −ω_x, dℓ/db = ω_ν) to 1e-8.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import diffmodel as dm
from diffmodel.testing import MAROS_MESZAROS_OPTIMA, as_model, load_maros_meszaros, \
    maros_meszaros_dir

DATA = maros_meszaros_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="Maros–Mészáros data folder not found")

UNIQUE = ["HS51", "HS52", "HS53", "GENHS28", "DPKLO1", "TAME", "AUG3DC", "DTOC3", "AUG2DC",
          "UBH1"]
#: P is singular on the null space of A: the optimal value is unique, x is not.
NOT_UNIQUE = ["AUG3D"]


def _reference(K: sp.csc_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve K z = rhs with SuperLU and refinement in extended precision."""
    lu = spla.splu(K.tocsc())
    z = lu.solve(rhs)
    K_ext = sp.csr_matrix(K, dtype=np.longdouble)
    for _ in range(4):
        residual = rhs.astype(np.longdouble) - K_ext @ z.astype(np.longdouble)
        z = z + lu.solve(np.asarray(residual, dtype=np.float64))
    return z


def _solved(name: str) -> tuple[str, object, dm.Model, dm.Solution]:
    data = load_maros_meszaros(name)
    model, _ = as_model(data)
    return name, data, model, model.solve()


@pytest.fixture(scope="module", params=UNIQUE + NOT_UNIQUE)
def instance(request: pytest.FixtureRequest) -> tuple[str, object, dm.Model, dm.Solution]:
    return _solved(request.param)


@pytest.fixture(scope="module", params=UNIQUE)
def unique_instance(request: pytest.FixtureRequest
                    ) -> tuple[str, object, dm.Model, dm.Solution]:
    return _solved(request.param)


def test_published_optimum(instance) -> None:
    name, data, _, sol = instance
    published = MAROS_MESZAROS_OPTIMA[name]
    # The published values have 8 significant digits: ours must round to them.
    digits = abs(published) * 5e-8 if published else 1e-12
    assert abs(sol.value - published) <= digits + 1e-12, (name, sol.value, published)


def test_value_matches_independent_reference(unique_instance) -> None:
    name, data, _, sol = unique_instance
    z = _reference(data.kkt(), np.concatenate([-data.q, data.b]))
    x = z[: data.n]
    value = 0.5 * x @ (data.P @ x) + data.q @ x + data.r
    assert sol.value == pytest.approx(value, rel=1e-10, abs=1e-12)
    scale = float(np.max(np.abs(z)))
    assert np.max(np.abs(sol.primal["x"] - x)) <= 1e-9 * scale
    assert np.max(np.abs(sol.dual["eq"] - z[data.n:])) <= 1e-9 * scale
    assert sol.unique and sol.accuracy <= 1e-8


def test_left_out_rows_hold_strictly(instance) -> None:
    _, data, _, sol = instance
    if data.G is None or data.G.shape[0] == 0:
        return
    gx = data.G @ sol.primal["x"]
    assert np.all(gx > data.lower) and np.all(gx < data.upper)


def test_gradients_match_independent_adjoint(unique_instance) -> None:
    name, data, model, sol = unique_instance
    g = np.random.default_rng(0).standard_normal(data.n)
    grads = sol.backward({"x": g})
    omega = _reference(data.kkt(), np.concatenate([g, np.zeros(data.m)]))
    scale = float(np.max(np.abs(omega)))
    assert np.max(np.abs(grads["q"] + omega[: data.n])) <= 1e-8 * scale
    assert np.max(np.abs(grads["b"] - omega[data.n:])) <= 1e-8 * scale


@pytest.mark.parametrize("name", NOT_UNIQUE)
def test_not_unique_solves_but_refuses_derivatives(name: str) -> None:
    _, data, _, sol = _solved(name)
    assert not sol.unique
    with pytest.raises(dm.DerivativeError, match="singular"):
        sol.backward({"x": np.ones(data.n)})
    with pytest.raises(dm.DerivativeError, match="singular"):
        sol.derivative({"b": np.ones(data.m)})


@pytest.mark.parametrize("name", ["HS51", "DPKLO1", "AUG3DC"])
def test_check_gradients(name: str) -> None:
    model, _ = as_model(load_maros_meszaros(name))
    model.solve()
    # x and ν are affine in (q, b), so a large step is exact up to rounding.
    check = dm.check_gradients(model, eps=1e-3, tol=1e-7)
    assert check.ok, str(check)


@pytest.mark.parametrize("name", ["HS51", "AUG3DC"])
def test_osqp_backend_agrees(name: str) -> None:
    model, _ = as_model(load_maros_meszaros(name))
    ref = model.solve(solver="kkt")
    g = np.random.default_rng(1).standard_normal(ref.primal["x"].shape)
    grads_ref = ref.backward({"x": g})
    sol = model.solve(solver="osqp")
    np.testing.assert_allclose(sol.primal["x"], ref.primal["x"], rtol=1e-9, atol=1e-12)
    grads = sol.backward({"x": g})
    for key in grads:
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-9, atol=1e-12)
