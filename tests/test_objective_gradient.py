"""∂f*/∂θ from the envelope theorem against central differences of the optimal value."""

from __future__ import annotations

import numpy as np
import pytest

import diffmodel as dm
from problems import GENERATORS, make


def _value(model: dm.Model, values: dict[str, np.ndarray]) -> float:
    return model.solve(**values).value


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(("n", "m", "seed"), [(5, 2, 0), (8, 3, 1)])
def test_objective_gradient_matches_finite_differences(name: str, n: int, m: int,
                                                       seed: int) -> None:
    qp = make(name, n, m, seed)
    model = dm.Model(qp.objective, qp.constraints)
    model.solve(**qp.values)
    grads = model.objective_gradient()
    rng = np.random.default_rng(seed + 100)
    for pname, value in qp.values.items():
        param = model.parameters[pname]
        v = rng.standard_normal(np.shape(value))
        if param.attributes.get("symmetric") or param.attributes.get("PSD"):
            v = 0.5 * (v + v.T)
        if param.attributes.get("nonneg"):
            v = np.abs(v)
        h = 1e-6 * max(1.0, float(np.max(np.abs(value))))
        plus = _value(model, {**qp.values, pname: value + h * v})
        minus = _value(model, {**qp.values, pname: value - h * v})
        fd = (plus - minus) / (2 * h)
        analytic = float(np.sum(grads[pname] * v))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-7), pname
        model.solve(**qp.values)


def test_objective_gradient_of_b_is_minus_the_dual() -> None:
    # minimize ½‖x‖² + qᵀx s.t. A x = b: ∂f*/∂b = −ν (CVXPY's sign: L = f + νᵀ(Ax − b)).
    qp = make("canonical", 6, 3, 4)
    model = dm.Model(qp.objective, qp.constraints)
    sol = model.solve(**qp.values)
    np.testing.assert_allclose(model.objective_gradient()["b"], -sol.dual["balance"],
                               rtol=1e-12, atol=1e-12)


def test_objective_gradient_needs_a_solution() -> None:
    qp = make("canonical", 4, 2, 0)
    model = dm.Model(qp.objective, qp.constraints)
    with pytest.raises(dm.NotSolvedError, match="objective_gradient"):
        model.objective_gradient()
