"""The example models are right, against independent references.

- examples/portfolio.py (long-only, capped): the weights against CVXPY +
  Clarabel, a dense KKT solve on the active set, closed forms on the free
  assets; the budget's dual as the value of capital.
- examples/dc_power_flow.py (generator and line limits): the dispatch
  against a dense KKT solve on its active set, and the nodal prices against
  central differences of the optimal cost with respect to each bus demand.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example_under_test")


@pytest.fixture
def portfolio() -> dict[str, Any]:
    return load("portfolio")


@pytest.fixture
def dc() -> dict[str, Any]:
    return load("dc_power_flow")


# ------------------------------------------------------------------ portfolio


@pytest.mark.parametrize("gamma", [4.0, 1.5, 10.0])
def test_portfolio_matches_clarabel(portfolio, gamma: float) -> None:
    """The long-only capped portfolio against CVXPY + Clarabel with explicit constraints."""
    Sigma, mu, cap = portfolio["covariance"](), portfolio["MU"], portfolio["CAP"]
    sol = portfolio["model"].solve(gamma=gamma)
    w = cp.Variable(mu.shape[0])
    cons = [cp.sum(w) == 1, w <= cap, w >= 0]
    prob = cp.Problem(cp.Maximize(mu @ w - gamma / 2 * cp.quad_form(w, Sigma)), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    np.testing.assert_allclose(sol.primal["w"], w.value, atol=1e-6)
    assert sol.value == pytest.approx(prob.value, rel=1e-7)
    np.testing.assert_allclose(sol.dual["budget"], cons[0].dual_value, atol=1e-6)
    np.testing.assert_allclose(sol.dual["max_weight"], cons[1].dual_value, atol=1e-6)
    np.testing.assert_allclose(sol.dual["w.lower"], cons[2].dual_value, atol=1e-6)


def test_portfolio_matches_dense_kkt_on_its_active_set(portfolio) -> None:
    """w from the dense KKT system of the equalities and the binding limits; the
    slacks of the other limits and the multipliers of the binding ones are ≥ 0."""
    Sigma, mu, cap, gamma = (portfolio[k] for k in ("covariance", "MU", "CAP", "GAMMA"))
    Sigma = Sigma()
    sol = portfolio["model"].solve()
    n = mu.shape[0]
    at_cap, at_zero = sol.active["max_weight"], sol.active["w.lower"]
    assert at_cap.sum() == 2 and at_zero.sum() == 2
    # minimize −muᵀw + (γ/2) wᵀΣw  s.t.  1ᵀw = 1, w_i = cap_i (at cap), −w_i = 0 (at zero)
    A = np.vstack([np.ones((1, n)), np.eye(n)[at_cap], -np.eye(n)[at_zero]])
    b = np.concatenate([[1.0], cap[at_cap], np.zeros(at_zero.sum())])
    K = np.block([[gamma * Sigma, A.T], [A, np.zeros((A.shape[0], A.shape[0]))]])
    z = np.linalg.solve(K, np.concatenate([mu, b]))
    w, y = z[:n], z[n:]
    np.testing.assert_allclose(sol.primal["w"], w, atol=1e-10)
    # The dense multipliers are CVXPY's duals of the minimized −utility, which for a
    # Maximize model are the reported duals (rows stored as lhs − rhs ≤ 0).
    np.testing.assert_allclose(sol.dual["budget"], y[0], atol=1e-10)
    np.testing.assert_allclose(sol.dual["max_weight"][at_cap], y[1:1 + at_cap.sum()],
                               atol=1e-10)
    np.testing.assert_allclose(sol.dual["w.lower"][at_zero], y[1 + at_cap.sum():],
                               atol=1e-10)
    assert np.all(y[1:] > 0) and np.all(cap[~at_cap] - w[~at_cap] > 0)
    assert np.all(w[~at_zero] > 0)


def test_portfolio_sensitivities_match_closed_form(portfolio) -> None:
    """On the free assets F (strictly inside their limits), with the others fixed,
    ∂w_F/∂mu_F = (S⁻¹ − S⁻¹11ᵀS⁻¹ / 1ᵀS⁻¹1)/γ, S = Σ_FF; zero elsewhere."""
    model, Sigma, mu = portfolio["model"], portfolio["covariance"](), portfolio["MU"]
    gamma = portfolio["GAMMA"]
    sol = model.solve()
    free = ~(sol.active["max_weight"] | sol.active["w.lower"])
    Si = np.linalg.inv(Sigma[np.ix_(free, free)])
    one = np.ones(free.sum())
    expected = np.zeros((mu.shape[0], mu.shape[0]))
    expected[np.ix_(free, free)] = (Si - np.outer(Si @ one, Si @ one) / (one @ Si @ one)) / gamma
    np.testing.assert_allclose(model.jacobian("w", "mu"), expected, atol=1e-9)
    w = sol.primal["w"]
    grad = model.objective_gradient()
    assert float(grad["gamma"]) == pytest.approx(-0.5 * w @ Sigma @ w, rel=1e-9)
    np.testing.assert_allclose(grad["mu"], w, atol=1e-12)
    np.testing.assert_allclose(grad["cap"], sol.dual["max_weight"], atol=1e-12)
    _, _, gap = portfolio["kkt_check"](sol)  # mu − γΣw = ν + λ_cap − λ_lower
    assert gap < 1e-10


def test_portfolio_budget_dual_is_value_of_capital(portfolio) -> None:
    """ν = ∂(max utility)/∂budget, by central differences of re-solves of the same
    model with the budget as a parameter."""
    nu = float(portfolio["model"].solve().dual["budget"])
    mu, B, gamma, cap = (portfolio[k] for k in ("mu", "B", "gamma", "cap"))
    w, y = portfolio["w"], portfolio["y"]
    budget = cp.Parameter(name="budget_value")
    variance = cp.sum_squares(y) + cp.sum_squares(cp.multiply(portfolio["SPECIFIC_VOL"], w))
    twin = dm.Model(cp.Maximize(mu @ w - gamma / 2 * variance),
                    {"budget": cp.sum(w) == budget, "exposure": y == B.T @ w,
                     "max_weight": w <= cap})
    h = 1e-4
    fd = (twin.solve(budget_value=1 + h).value - twin.solve(budget_value=1 - h).value) / (2 * h)
    assert fd == pytest.approx(nu, rel=1e-7)


# ----------------------------------------------------------------- DC power flow


def test_dc_dispatch_matches_dense_kkt_on_its_active_set(dc) -> None:
    model = dc["model"]
    inc, gen_bus, a, r, x = (dc[k] for k in ("incidence", "gen_bus", "a", "r", "x"))
    base, rho = dc["BASE_MVA"], dc["LOSS_PRICE"]
    c, d, pmax, fmax = dc["COST"], dc["DEMAND"], dc["PMAX"], dc["FMAX"]
    n_gen, n_bus, n_line = gen_bus.shape[1], gen_bus.shape[0], inc.shape[0]
    sol = model.solve()
    at_max, congested = sol.active["gen_max"], sol.active["line_min"]
    assert at_max.tolist() == [True, True, False, False, False]
    assert congested.tolist() == [False] * 5 + [True] and not sol.active["line_max"].any()
    assert not sol.active["p.lower"].any()
    # z = (p, theta, f); equalities: balance, flow, reference; binding: p_g = pmax_g
    # (gen_max, rows e_g) and −f_l = fmax_l (line_min, rows −e_l).
    P = np.diag(np.concatenate([a, np.zeros(n_bus), 2 * rho / base * r]))
    q = np.concatenate([c, np.zeros(n_bus + n_line)])
    nv = n_gen + n_bus + n_line
    A = np.block([
        [gen_bus, np.zeros((n_bus, n_bus)), -inc.T],
        [np.zeros((n_line, n_gen)), -(base / x)[:, None] * inc, np.eye(n_line)],
        [np.zeros((1, n_gen)), np.eye(1, n_bus), np.zeros((1, n_line))],
    ])
    G = np.vstack([np.eye(nv)[:n_gen][at_max], -np.eye(nv)[n_gen + n_bus:][congested]])
    M = np.vstack([A, G])
    rhs = np.concatenate([d, np.zeros(n_line + 1), pmax[at_max], fmax[congested]])
    m = M.shape[0]
    z = np.linalg.solve(np.block([[P, M.T], [M, np.zeros((m, m))]]),
                        np.concatenate([-q, rhs]))
    np.testing.assert_allclose(sol.primal["p"], z[:n_gen], atol=1e-8)
    np.testing.assert_allclose(sol.primal["f"], z[n_gen + n_bus:nv], atol=1e-8)
    np.testing.assert_allclose(sol.dual["balance"], z[nv:nv + n_bus], atol=1e-9)
    mA = A.shape[0]
    np.testing.assert_allclose(sol.dual["gen_max"][at_max], z[nv + mA:nv + mA + at_max.sum()],
                               atol=1e-9)
    np.testing.assert_allclose(sol.dual["line_min"][congested], z[nv + mA + at_max.sum():],
                               atol=1e-9)
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
    assert np.abs(-prices - fd).max() > 1.0


def test_dc_example_price_check_and_marginal_costs(dc) -> None:
    """The example's own check at its demands (zero load at A and E), and the
    optimality condition: marginal cost + λ_max − λ_lower = price at the bus."""
    prices, fd = dc["price_check"]()
    np.testing.assert_allclose(prices, fd, rtol=0, atol=1e-6 * np.abs(prices).max())
    sol = dc["model"].solve()
    marginal = dc["COST"] + dc["a"] * sol.primal["p"]
    np.testing.assert_allclose(marginal + sol.dual["gen_max"] - sol.dual["p.lower"],
                               dc["gen_bus"].T @ prices, atol=1e-9)
    # Every extra MW of demand is served by the generators, wherever it is; those at
    # capacity do not move.
    J = dc["model"].jacobian("p", "d")
    np.testing.assert_allclose(J.sum(axis=0), 1.0, atol=1e-10)
    np.testing.assert_allclose(J[sol.active["gen_max"]], 0.0, atol=1e-12)
