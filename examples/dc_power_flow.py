"""DC power-flow economic dispatch on the PJM 5-bus system, and its nodal prices.

The network is the PJM 5-bus test system (buses A–E, six lines with their
reactances and resistances in per unit on a 100 MVA base, five generators,
loads at B, C and D). The dispatch minimizes generation cost plus the cost of
resistive line losses:

    minimize    Σ_g (c_g p_g + ½ a_g p_g²)  +  ρ Σ_l r_l f_l² / S
    subject to  balance:  C_gen p − Aᵀ f = d      (per bus: injection = demand)
                flow:     f = S diag(1/x) A θ      (DC power flow, per line)
                slack:    θ_A = 0                  (reference angle)

with generation p (MW), bus angles θ (rad) and line flows f (MW); A is the
line–bus incidence matrix (+1 at a line's from-bus, −1 at its to-bus), C_gen
maps generators to buses, S = 100 MVA and ρ = 30 $/MWh the price at which
losses r_l f_l² / S (MW) are valued. Parameters: the linear costs ``c``
($/MWh, one per generator) and the demands ``d`` (MW, one per bus); the
quadratic cost coefficients ``a``, reactances x and resistances r are constants.

There are **no generator or line limits**: diffmodel does not support
inequality constraints yet. Without congestion, differences between nodal
prices come only from the loss term; a lossless model (ρ = 0) would give every
bus the same price.

Nodal prices (LMPs). The nodal price at bus i is the marginal cost of
serving one more MW of demand there, ∂cost*/∂d_i, and it is given by the dual
ν_i of bus i's balance row, up to sign. CVXPY stores the constraint
``injection == d`` as lhs − rhs = injection − d and the Lagrangian adds
νᵀ(injection − d), so ∂cost*/∂d = −ν: **the LMP is −ν**. This is also the
"shadow price" of diffmodel's sensitivity report, which is ∂cost*/∂(rhs).
(Written ``d == injection``, with the parameter on the left, CVXPY keeps that
order and the LMP would be +ν.) The script checks the sign against finite
differences of re-solves.

Run ``python examples/dc_power_flow.py``; the command line report is
``python -m diffmodel report examples/dc_power_flow.py``. The module defines
``model`` (with parameter values set) and ``labels`` for that command.
"""

import sys

import cvxpy as cp
import numpy as np

import diffmodel as dm

BASE_MVA = 100.0
LOSS_PRICE = 30.0  # $/MWh at which resistive losses are valued

BUSES = ["A", "B", "C", "D", "E"]
# (from, to, r [p.u.], x [p.u.]) — PJM 5-bus system.
LINES = [("A", "B", 0.00281, 0.0281), ("A", "D", 0.00304, 0.0304),
         ("A", "E", 0.00064, 0.0064), ("B", "C", 0.00108, 0.0108),
         ("C", "D", 0.00297, 0.0297), ("D", "E", 0.00297, 0.0297)]
# (name, bus, linear cost c [$/MWh], quadratic coefficient a [$/MWh per MW]).
GENERATORS = [("Alta", "A", 14.0, 0.78), ("Park City", "A", 15.0, 0.18),
              ("Solitude", "C", 30.0, 0.06), ("Sundance", "D", 35.0, 0.10),
              ("Brighton", "E", 10.0, 0.08)]
DEMAND = np.array([0.0, 300.0, 300.0, 400.0, 0.0])  # MW per bus

GEN_NAMES = [g[0] for g in GENERATORS]
LINE_NAMES = [f"{a}-{b}" for a, b, _, _ in LINES]
n_bus, n_line, n_gen = len(BUSES), len(LINES), len(GENERATORS)

incidence = np.zeros((n_line, n_bus))
for l, (fb, tb, _, _) in enumerate(LINES):
    incidence[l, BUSES.index(fb)] = 1.0
    incidence[l, BUSES.index(tb)] = -1.0
gen_bus = np.zeros((n_bus, n_gen))
for g, (_, bus, _, _) in enumerate(GENERATORS):
    gen_bus[BUSES.index(bus), g] = 1.0
r = np.array([line[2] for line in LINES])
x = np.array([line[3] for line in LINES])
a = np.array([g[3] for g in GENERATORS])

p = cp.Variable(n_gen, name="p")
theta = cp.Variable(n_bus, name="theta")
f = cp.Variable(n_line, name="f")
c = cp.Parameter(n_gen, nonneg=True, name="c")
d = cp.Parameter(n_bus, nonneg=True, name="d")

generation_cost = c @ p + 0.5 * cp.sum_squares(cp.multiply(np.sqrt(a), p))
loss_cost = LOSS_PRICE / BASE_MVA * cp.sum_squares(cp.multiply(np.sqrt(r), f))
model = dm.Model(
    cp.Minimize(generation_cost + loss_cost),
    {
        "balance": gen_bus @ p - incidence.T @ f == d,
        "flow": f == (BASE_MVA / x)[:, None] * incidence @ theta,
        "slack": theta[0] == 0,
    },
)
c.value = np.array([g[2] for g in GENERATORS])
d.value = DEMAND

labels = {"p": GEN_NAMES, "c": GEN_NAMES, "d": BUSES, "balance": BUSES,
          "theta": BUSES, "f": LINE_NAMES, "flow": LINE_NAMES}


def cost_at(demand):
    """Optimal cost for the given demands (the other parameters as set)."""
    return model.solve(d=demand).value


def price_check(h=1e-3):
    """Nodal prices from the duals (−ν) and from finite differences of the optimal cost.

    The optimal cost is quadratic in d, so both difference formulas are exact
    up to rounding. Returns (−duals, finite differences), each of shape
    (n_bus,); leaves the model solved at the original demands.
    """
    base = np.array(d.value, dtype=float)
    prices = -model.solve(d=base).dual["balance"]
    fd = np.empty(n_bus)
    for i in range(n_bus):
        e = np.zeros(n_bus)
        e[i] = h
        if base[i] >= h:
            fd[i] = (cost_at(base + e) - cost_at(base - e)) / (2 * h)
        else:  # d ≥ 0 (nonneg): a one-sided second-order formula at buses without load
            fd[i] = (-3 * cost_at(base) + 4 * cost_at(base + e) - cost_at(base + 2 * e)) / (2 * h)
    model.solve(d=base)
    return prices, fd


def main():
    sol = model.solve()
    print("DC power-flow economic dispatch, PJM 5-bus system "
          "(no generator or line limits: inequalities are not supported)")
    print(f"  {model}")
    print(f"  total cost {sol.value:,.2f} $/h for {DEMAND.sum():.0f} MW of demand\n")
    print(f"  {'generator':10s} {'bus':>3s} {'c':>6s} {'p [MW]':>8s} {'marginal cost':>14s}")
    mc = c.value + a * sol.primal["p"]
    for (name, bus, cg, _), pg, m in zip(GENERATORS, sol.primal["p"], mc):
        print(f"  {name:10s} {bus:>3s} {cg:6.1f} {pg:8.1f} {m:14.3f}")
    flows = sol.primal["f"]
    losses = r * flows**2 / BASE_MVA
    print(f"\n  {'line':5s} {'flow [MW]':>10s} {'loss [MW]':>10s}")
    for name, fl, lo in zip(LINE_NAMES, flows, losses):
        print(f"  {name:5s} {fl:10.1f} {lo:10.3f}")

    prices, fd = price_check()
    print("\nNodal prices (LMPs) = ∂cost*/∂d = −(dual of 'balance'), in $/MWh:")
    print(f"  {'bus':3s} {'d [MW]':>7s} {'−dual':>9s} {'finite diff.':>13s}")
    for bus, di, lmp, g in zip(BUSES, DEMAND, prices, fd):
        print(f"  {bus:3s} {di:7.0f} {lmp:9.4f} {g:13.4f}")
    err = float(np.max(np.abs(prices - fd)))
    print(f"  max |−dual − finite difference| = {err:.1e}: CVXPY stores 'injection == d' "
          "as injection − d, so the price is −dual.")
    print("  Each generator's marginal cost c + a p equals the price at its bus; "
          "the prices differ only by marginal losses.")

    dp = model.jacobian("p", "d")[:, BUSES.index("D")]
    print("\nOne more MW of demand at bus D is served by (∂p/∂d_D):")
    for name, v in zip(GEN_NAMES, dp):
        print(f"  {name:10s} {v:+.3f} MW")
    print(f"  total {dp.sum():.3f} MW (losses are priced, not supplied, so the "
          "generators cover exactly the extra MW)")

    print("\nSensitivity report:\n")
    print(model.sensitivity(labels=labels, top=8))
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
