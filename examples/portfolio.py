"""Long-only mean–variance portfolio with position caps, and its sensitivities.

Eight asset classes, annual expected returns ``mu`` and a three-factor risk
model Σ = B Bᵀ + diag(s²) (factor loadings ``B`` in annual volatility units,
factors with unit variance, constant specific volatilities s):

    maximize    muᵀw − (gamma/2) (‖y‖² + ‖s ⊙ w‖²)
    subject to  budget:      sum(w) = 1
                exposure:    y = Bᵀw
                max_weight:  w ≤ cap          (position caps)
                w.lower:     w ≥ 0            (no short selling: nonneg=True)

so that ‖y‖² + ‖s ⊙ w‖² = wᵀΣw is the variance of the portfolio return.
Parameters: ``mu`` (8,), ``B`` (8, 3), the risk aversion ``gamma`` ≥ 0 and
the caps ``cap`` (8,) ≥ 0. Variables: the weights ``w`` (fractions of
wealth, declared ``nonneg=True``: diffmodel names the rows of that bound
``w.lower``) and the factor exposures ``y``. The risk model is written with
a factor ``B`` rather than a covariance parameter because gamma · Σ would
multiply two parameters, which is not affine in the parameters (DPP).

At the caps below, EM equity and Treasuries are held at their caps and
Intl equity and REITs at zero: four inequality rows bind.

Duals and prices (CVXPY's conventions; for a ``Maximize`` model the shadow
price of relaxing a constraint's right-hand side is +dual):

- the budget's dual ν is the value of one more unit of capital;
- a cap's dual λ ≥ 0 is the utility one more unit of cap would add
  (∂utility*/∂cap_i = λ_i, zero for an asset below its cap);
- the dual of ``w.lower`` (stored by CVXPY as 0 ≤ w) is what forcing a
  position of ε into an asset held at zero costs, per unit.

At the optimum every asset's marginal utility mu_i − gamma (Σw)_i equals
ν + λ_cap,i − λ_lower,i: ν for assets strictly inside their limits, more for
capped ones, less for those held at zero. The script checks this, a cap's
price against finite differences of the optimal utility, and two ranges of
the sensitivity report (how far an expected return or a cap can move before
the set of capped and zero positions changes) against re-solves.

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
# Position caps of an investment policy: 30 % per core asset class, 40 % in
# Treasuries, 10 % in each satellite (EM equity, REITs, commodities).
CAP = np.array([0.30, 0.30, 0.30, 0.10, 0.40, 0.30, 0.10, 0.10])

n, k = len(ASSETS), len(FACTORS)
w = cp.Variable(n, name="w", nonneg=True)
y = cp.Variable(k, name="y")
mu = cp.Parameter(n, name="mu")
B = cp.Parameter((n, k), name="B")
gamma = cp.Parameter(nonneg=True, name="gamma")
cap = cp.Parameter(n, nonneg=True, name="cap")

variance = cp.sum_squares(y) + cp.sum_squares(cp.multiply(SPECIFIC_VOL, w))
model = dm.Model(
    cp.Maximize(mu @ w - gamma / 2 * variance),
    {"budget": cp.sum(w) == 1, "exposure": y == B.T @ w, "max_weight": w <= cap},
)
mu.value = MU
B.value = B_VALUE
gamma.value = GAMMA
cap.value = CAP

# Display labels for reports: one per entry, or (row labels, column labels).
# (The rows of the bound w >= 0, "w.lower", take the labels of w.)
labels = {"mu": ASSETS, "w": ASSETS, "B": (ASSETS, FACTORS), "y": FACTORS,
          "exposure": FACTORS, "cap": ASSETS, "max_weight": ASSETS}


def covariance(B_value=B_VALUE):
    """Σ = B Bᵀ + diag(s²), the covariance of annual returns."""
    return B_value @ B_value.T + np.diag(SPECIFIC_VOL**2)


def status(sol):
    """"at cap", "at zero" or "" for each asset."""
    return ["at cap" if c else "at zero" if z else ""
            for c, z in zip(sol.active["max_weight"], sol.active["w.lower"])]


def kkt_check(sol):
    """Marginal utilities mu − gamma Σw against ν + λ_cap − λ_lower; the largest gap."""
    marginal = MU - GAMMA * covariance() @ sol.primal["w"]
    duals = float(sol.dual["budget"]) + sol.dual["max_weight"] - sol.dual["w.lower"]
    return marginal, duals, float(np.max(np.abs(marginal - duals)))


def cap_price_check(i, h=1e-4):
    """∂utility*/∂cap_i from the report's shadow price and by central differences."""
    base = model.solve()
    e = np.zeros(n)
    e[i] = h
    fd = (model.solve(cap=CAP + e).value - model.solve(cap=CAP - e).value) / (2 * h)
    model.solve(cap=CAP)  # solve() sets the parameters' values: restore them
    return float(base.dual["max_weight"][i]), fd


def range_check(report, name, i):
    """Re-solve just inside and just outside each finite end of entry i's range
    (outside only where the parameter may go): the set of binding rows must
    hold inside and change outside."""
    rng = report.ranges_detail[name]
    value = {"mu": MU, "cap": CAP}[name]
    base = {c: m.copy() for c, m in model.solve(**{name: value}).active.items()}
    ok = True
    for end in (rng.low[i], rng.high[i]):
        if not np.isfinite(end) or end == value[i]:
            continue
        for frac, same in ((0.99, True), (1.01, False)):
            moved = value.copy()
            moved[i] = value[i] + frac * (end - value[i])
            if moved[i] < 0 and name == "cap":  # caps are nonnegative
                continue
            active = model.solve(**{name: moved}).active
            held = all(np.array_equal(active[c], base[c]) for c in base)
            ok &= held == same
    model.solve(**{name: value})
    return ok


def main():
    sol = model.solve()
    weights = sol.primal["w"]
    Sigma = covariance()
    print("Long-only mean–variance portfolio with position caps")
    print(f"  {model}")
    print(f"  risk aversion gamma = {GAMMA:g}; expected return {MU @ weights:.2%}, "
          f"volatility {np.sqrt(weights @ Sigma @ weights):.2%}\n")
    print(f"  {'asset':14s} {'mu':>6s} {'cap':>6s} {'weight':>8s}")
    for name, m_i, c_i, w_i, s in zip(ASSETS, MU, CAP, weights, status(sol)):
        print(f"  {name:14s} {m_i:6.1%} {c_i:6.0%} {w_i:8.2%}  {s}".rstrip())

    nu = float(sol.dual["budget"])
    marginal, duals, gap = kkt_check(sol)
    print(f"\nShadow price of the budget: nu = {nu:.4f} (utility per unit of capital). "
          "Marginal utilities mu_i − gamma (Σw)_i equal nu inside the limits, "
          "nu + λ_cap at a cap and nu − λ_lower at zero:")
    print(f"  {'asset':14s} {'marginal':>9s} {'nu + λcap − λlow':>17s}")
    for name, m_i, d_i in zip(ASSETS, marginal, duals):
        print(f"  {name:14s} {m_i:9.5f} {d_i:17.5f}")
    print(f"  largest gap {gap:.1e}")

    i = ASSETS.index("EM equity")
    price, fd = cap_price_check(i)
    print(f"\nThe cap on {ASSETS[i]} binds: raising it by ε raises the optimal utility by "
          f"λ·ε, λ = {price:.6f} (finite differences: {fd:.6f}).")

    report = model.sensitivity(labels=labels, top=8)
    j = ASSETS.index("Intl equity")
    mu_range = report.ranges_detail["mu"]
    print(f"{ASSETS[j]} is held at zero until its expected return reaches "
          f"{mu_range.high[j]:.4%} (now {MU[j]:.2%}): there {mu_range.at_high[j]}.")
    cap_range = report.ranges_detail["cap"]
    print(f"The cap on {ASSETS[i]} keeps binding from {cap_range.low[i]:.2%} to "
          f"{cap_range.high[i]:.2%} (then {cap_range.at_low[i]} / {cap_range.at_high[i]}).")
    ranges_ok = range_check(report, "mu", j) and range_check(report, "cap", i)
    print(f"  re-solves just inside and just outside those ends agree: {ranges_ok}")

    grad = model.objective_gradient()
    print(f"\n∂(optimal utility)/∂gamma = {float(grad['gamma']):.5f} "
          f"(= −½ wᵀΣw = {-0.5 * weights @ Sigma @ weights:.5f})")
    print(f"∂(optimal utility)/∂mu = w (envelope theorem): "
          f"{np.allclose(grad['mu'], weights)}")

    print("\nSensitivity report:\n")
    print(report)
    ok = gap < 1e-10 and abs(price - fd) < 1e-6 * max(1.0, abs(price)) and ranges_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
