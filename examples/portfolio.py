"""Mean–variance portfolio with a budget constraint, and its sensitivities.

Eight asset classes, annual expected returns ``mu`` and a three-factor risk
model Σ = B Bᵀ + diag(s²) (factor loadings ``B`` in annual volatility units,
factors with unit variance, constant specific volatilities s):

    maximize    muᵀw − (gamma/2) (‖y‖² + ‖s ⊙ w‖²)
    subject to  budget:    sum(w) = 1
                exposure:  y = Bᵀw

so that ‖y‖² + ‖s ⊙ w‖² = wᵀΣw is the variance of the portfolio return.
Parameters: ``mu`` (8,), ``B`` (8, 3) and the risk aversion ``gamma`` ≥ 0.
Variables: the weights ``w`` (fractions of wealth) and the factor exposures
``y``. The risk model is written with a factor ``B`` rather than a
covariance parameter because gamma · Σ would multiply two parameters, which
is not affine in the parameters (DPP).

There are no inequality constraints (diffmodel does not support them yet):
**short positions are allowed** (a negative weight is a short sale) and
there is no leverage limit.

The budget's dual ν is the shadow price of capital: with CVXPY's sign
convention for a ``Maximize`` model, raising the budget from 1 to 1 + ε
raises the optimal utility by ν ε. At the optimum, every asset's marginal
utility mu_i − gamma (Σw)_i equals ν, so ν is the risk-adjusted return that
one more unit of wealth earns.

Run ``python examples/portfolio.py``; the command line report is
``python -m diffmodel report examples/portfolio.py``. The module defines
``model`` (with parameter values set) and ``labels`` for that command.
"""

import sys

import cvxpy as cp
import numpy as np

import diffmodel as dm

ASSETS = ["US large cap", "US small cap", "Intl equity", "EM equity",
          "Treasuries", "Corp bonds", "REITs", "Commodities"]
FACTORS = ["equity", "rates", "real assets"]

# Annual expected returns (long-run capital-market assumptions, in fractions).
MU = np.array([0.065, 0.075, 0.062, 0.080, 0.032, 0.042, 0.060, 0.045])
# Factor loadings: annual volatility each asset takes from each factor, with a
# little seeded noise so that the numbers are not round.
B0 = np.array([
    [0.145, -0.005, 0.020],   # US large cap
    [0.180, -0.010, 0.030],   # US small cap
    [0.140, 0.000, 0.040],    # Intl equity
    [0.170, 0.000, 0.070],    # EM equity
    [-0.010, 0.050, -0.010],  # Treasuries
    [0.025, 0.055, 0.000],    # Corp bonds
    [0.120, 0.040, 0.030],    # REITs
    [0.050, -0.020, 0.180],   # Commodities
])
B_VALUE = B0 + 0.005 * np.random.default_rng(7).standard_normal(B0.shape)
# Specific (idiosyncratic) volatilities, constants of the model.
SPECIFIC_VOL = np.array([0.03, 0.07, 0.08, 0.12, 0.01, 0.025, 0.10, 0.09])
GAMMA = 4.0

n, k = len(ASSETS), len(FACTORS)
w = cp.Variable(n, name="w")
y = cp.Variable(k, name="y")
mu = cp.Parameter(n, name="mu")
B = cp.Parameter((n, k), name="B")
gamma = cp.Parameter(nonneg=True, name="gamma")

variance = cp.sum_squares(y) + cp.sum_squares(cp.multiply(SPECIFIC_VOL, w))
model = dm.Model(
    cp.Maximize(mu @ w - gamma / 2 * variance),
    {"budget": cp.sum(w) == 1, "exposure": y == B.T @ w},
)
mu.value = MU
B.value = B_VALUE
gamma.value = GAMMA

# Display labels for reports: one per entry, or (row labels, column labels).
labels = {"mu": ASSETS, "w": ASSETS, "B": (ASSETS, FACTORS), "y": FACTORS,
          "exposure": FACTORS}


def covariance(B_value=B_VALUE):
    """Σ = B Bᵀ + diag(s²), the covariance of annual returns."""
    return B_value @ B_value.T + np.diag(SPECIFIC_VOL**2)


def main():
    sol = model.solve()
    weights = sol.primal["w"]
    Sigma = covariance()
    print("Mean–variance portfolio (shorting allowed, no inequality constraints)")
    print(f"  {model}")
    print(f"  risk aversion gamma = {GAMMA:g}; expected return {MU @ weights:.2%}, "
          f"volatility {np.sqrt(weights @ Sigma @ weights):.2%}\n")
    print(f"  {'asset':14s} {'mu':>6s} {'weight':>8s}")
    for name, m_i, w_i in zip(ASSETS, MU, weights):
        print(f"  {name:14s} {m_i:6.1%} {w_i:8.2%}")

    # ∂w/∂mu_i: how the portfolio moves if one asset's expected return rises.
    i = ASSETS.index("EM equity")
    dw = model.jacobian("w", "mu")[:, i] * 0.01
    print(f"\nIf the expected return of {ASSETS[i]} rises by 1 percentage point "
          f"(first order, ∂w/∂mu[{i}] × 0.01):")
    for name, d in zip(ASSETS, dw):
        print(f"  {name:14s} {d:+8.2%}")
    print(f"  the changes sum to {dw.sum():+.1e}: the budget still holds.")

    nu = float(sol.dual["budget"])
    print(f"\nShadow price of the budget: nu = {nu:.4f}. One more unit of capital "
          f"(budget 1 → 1 + ε) raises the optimal utility by {nu:.4f} ε; at the optimum "
          "every asset's marginal utility mu_i − gamma (Σw)_i equals nu:")
    marginal = MU - GAMMA * Sigma @ weights
    print(f"  mu − gamma Σw = {np.array2string(marginal, precision=4)}")

    grad = model.objective_gradient()
    print(f"\n∂(optimal utility)/∂gamma = {float(grad['gamma']):.5f} "
          f"(= −½ wᵀΣw = {-0.5 * weights @ Sigma @ weights:.5f})")
    print(f"∂(optimal utility)/∂mu = w (envelope theorem): "
          f"{np.allclose(grad['mu'], weights)}")

    print("\nSensitivity report:\n")
    print(model.sensitivity(labels=labels, top=8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
