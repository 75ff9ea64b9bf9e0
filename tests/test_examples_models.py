"""The example models are right: closed forms, dense KKT solves, finite differences.

- examples/portfolio.py: the weights and the budget's dual against the closed
  form of the mean–variance problem and a dense KKT solve; ∂w/∂mu and
  ∂f*/∂gamma against their closed forms.
- examples/dc_power_flow.py: the dispatch against a dense KKT solve, and the
  nodal prices (−dual of ``balance``) against central differences of the
  optimal cost with respect to each bus demand.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict[str, Any]:
    """A fresh copy of an example module's globals (a new model each time)."""
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example_under_test")


# ------------------------------------------------------------------ portfolio


@pytest.fixture
def portfolio() -> dict[str, Any]:
    return load("portfolio")


def portfolio_closed_form(mu, Sigma, gamma):
    """maximize muᵀw − (γ/2) wᵀΣw s.t. 1ᵀw = 1: w = Σ⁻¹(mu − ν1)/γ,
    ν = (1ᵀΣ⁻¹mu − γ) / (1ᵀΣ⁻¹1), with ν the dual of the budget in CVXPY's
    convention for Maximize (Lagrangian −f + ν(1ᵀw − 1))."""
    one = np.ones(mu.shape[0])
    Si_mu, Si_one = np.linalg.solve(Sigma, mu), np.linalg.solve(Sigma, one)
    nu = (one @ Si_mu - gamma) / (one @ Si_one)
    return (Si_mu - nu * Si_one) / gamma, nu


@pytest.mark.parametrize("gamma", [4.0, 1.5, 10.0])
def test_portfolio_weights_match_closed_form(portfolio, gamma: float) -> None:
    model, Sigma = portfolio["model"], portfolio["covariance"]()
    mu = portfolio["MU"]
    sol = model.solve(gamma=gamma)
    w_cf, nu_cf = portfolio_closed_form(mu, Sigma, gamma)
    np.testing.assert_allclose(sol.primal["w"], w_cf, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sol.dual["budget"], nu_cf, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sol.primal["y"], portfolio["B_VALUE"].T @ w_cf, atol=1e-10)
    assert sol.value == pytest.approx(mu @ w_cf - gamma / 2 * w_cf @ Sigma @ w_cf, rel=1e-10)


def test_portfolio_weights_match_dense_kkt(portfolio) -> None:
    """The model as written (w, y; budget, exposure) as one dense KKT system."""
    model, mu, B, s = (portfolio[k] for k in ("model", "MU", "B_VALUE", "SPECIFIC_VOL"))
    gamma = portfolio["GAMMA"]
    n, k = B.shape
    # minimize −muᵀw + (γ/2)(‖y‖² + ‖s ⊙ w‖²)  s.t.  1ᵀw = 1,  y − Bᵀw = 0
    P = gamma * np.diag(np.concatenate([s**2, np.ones(k)]))
    q = np.concatenate([-mu, np.zeros(k)])
    A = np.block([[np.ones((1, n)), np.zeros((1, k))], [-B.T, np.eye(k)]])
    b = np.concatenate([[1.0], np.zeros(k)])
    K = np.block([[P, A.T], [A, np.zeros((1 + k, 1 + k))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    sol = model.solve()
    np.testing.assert_allclose(sol.primal["w"], z[:n], atol=1e-10)
    np.testing.assert_allclose(sol.primal["y"], z[n:n + k], atol=1e-10)
    # The dense system's multipliers are CVXPY's duals of the minimized −objective,
    # which for a Maximize model are the reported duals.
    np.testing.assert_allclose(sol.dual["budget"], z[n + k], atol=1e-10)
    np.testing.assert_allclose(sol.dual["exposure"], z[n + k + 1:], atol=1e-10)


def test_portfolio_sensitivities_match_closed_form(portfolio) -> None:
    model, Sigma, mu = portfolio["model"], portfolio["covariance"](), portfolio["MU"]
    gamma = portfolio["GAMMA"]
    sol = model.solve()
    Si = np.linalg.inv(Sigma)
    one = np.ones(mu.shape[0])
    dw_dmu = (Si - np.outer(Si @ one, Si @ one) / (one @ Si @ one)) / gamma
    np.testing.assert_allclose(model.jacobian("w", "mu"), dw_dmu, atol=1e-9)
    w = sol.primal["w"]
    grad = model.objective_gradient()
    assert float(grad["gamma"]) == pytest.approx(-0.5 * w @ Sigma @ w, rel=1e-9)
    np.testing.assert_allclose(grad["mu"], w, atol=1e-12)
    # At the optimum every asset's marginal utility equals the budget's dual.
    np.testing.assert_allclose(mu - gamma * Sigma @ w, sol.dual["budget"], atol=1e-10)


def test_portfolio_budget_dual_is_value_of_capital(portfolio) -> None:
    """ν = ∂(max utility)/∂budget: the closed-form value with budget 1 ± h."""
    Sigma, mu, gamma = portfolio["covariance"](), portfolio["MU"], portfolio["GAMMA"]
    nu = float(portfolio["model"].solve().dual["budget"])
    one = np.ones(mu.shape[0])

    def best(budget: float) -> float:  # the same problem with sum(w) = budget
        Si_mu, Si_one = np.linalg.solve(Sigma, mu), np.linalg.solve(Sigma, one)
        lam = (one @ Si_mu - gamma * budget) / (one @ Si_one)
        w = (Si_mu - lam * Si_one) / gamma
        return mu @ w - gamma / 2 * w @ Sigma @ w

    h = 1e-4
    assert (best(1 + h) - best(1 - h)) / (2 * h) == pytest.approx(nu, rel=1e-7)


# ----------------------------------------------------------------- DC power flow


@pytest.fixture
def dc() -> dict[str, Any]:
    return load("dc_power_flow")


def test_dc_dispatch_matches_dense_kkt(dc) -> None:
    model = dc["model"]
    inc, gen_bus, a, r, x = (dc[k] for k in ("incidence", "gen_bus", "a", "r", "x"))
    base, rho = dc["BASE_MVA"], dc["LOSS_PRICE"]
    c, d = dc["c"].value, dc["d"].value
    n_gen, n_bus, n_line = gen_bus.shape[1], gen_bus.shape[0], inc.shape[0]
    # z = (p, theta, f); minimize ½ zᵀPz + qᵀz  s.t.  balance, flow, slack
    P = np.diag(np.concatenate([a, np.zeros(n_bus), 2 * rho / base * r]))
    q = np.concatenate([c, np.zeros(n_bus + n_line)])
    A = np.block([
        [gen_bus, np.zeros((n_bus, n_bus)), -inc.T],
        [np.zeros((n_line, n_gen)), -(base / x)[:, None] * inc, np.eye(n_line)],
        [np.zeros((1, n_gen)), np.eye(1, n_bus), np.zeros((1, n_line))],
    ])
    b = np.concatenate([d, np.zeros(n_line + 1)])
    m = A.shape[0]
    K = np.block([[P, A.T], [A, np.zeros((m, m))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    sol = model.solve()
    nv = n_gen + n_bus + n_line
    np.testing.assert_allclose(sol.primal["p"], z[:n_gen], atol=1e-8)
    np.testing.assert_allclose(sol.primal["theta"], z[n_gen:n_gen + n_bus], atol=1e-12)
    np.testing.assert_allclose(sol.primal["f"], z[n_gen + n_bus:nv], atol=1e-8)
    np.testing.assert_allclose(sol.dual["balance"], z[nv:nv + n_bus], atol=1e-9)
    assert sol.primal["p"].sum() == pytest.approx(d.sum(), rel=1e-12)


@pytest.mark.parametrize("extra", [10.0, 100.0])
def test_dc_nodal_prices_are_finite_differences_of_cost(dc, extra: float) -> None:
    """LMP_i = ∂cost*/∂d_i = −ν_i, by central differences d ± h e_i (all d_i > 0)."""
    model = dc["model"]
    demand = dc["DEMAND"] + extra
    prices = -model.solve(d=demand).dual["balance"]
    h = 1e-3
    fd = np.empty_like(prices)
    for i in range(demand.shape[0]):
        e = np.zeros_like(demand)
        e[i] = h
        fd[i] = (model.solve(d=demand + e).value - model.solve(d=demand - e).value) / (2 * h)
    np.testing.assert_allclose(prices, fd, rtol=0, atol=1e-6 * np.abs(prices).max())
    # With ν's sign instead, the check fails: the sign is not a matter of taste.
    assert np.abs(-prices - fd).max() > 1.0


def test_dc_example_price_check_and_marginal_costs(dc) -> None:
    """The example's own check at its demands (zero load at A and E), and the
    optimality condition: each generator's marginal cost is its bus's price."""
    prices, fd = dc["price_check"]()
    np.testing.assert_allclose(prices, fd, rtol=0, atol=1e-6 * np.abs(prices).max())
    sol = dc["model"].solve()
    marginal = dc["c"].value + dc["a"] * sol.primal["p"]
    np.testing.assert_allclose(marginal, dc["gen_bus"].T @ prices, atol=1e-9)
    # Every extra MW of demand is served by the generators, wherever it is.
    np.testing.assert_allclose(dc["model"].jacobian("p", "d").sum(axis=0), 1.0, atol=1e-10)
