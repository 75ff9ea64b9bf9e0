"""DC power-flow economic dispatch on the PJM 5-bus system, with generator and
line limits, and its nodal prices.

The network is the PJM 5-bus test system (buses A–E, six lines with their
reactances and resistances in per unit on a 100 MVA base, five generators
with their capacities, loads at B, C and D, a 240 MW limit on line D–E and
400 MW on the others). The dispatch minimizes generation cost plus the cost
of resistive line losses:

    minimize    Σ_g (c_g p_g + ½ a_g p_g²)  +  ρ Σ_l r_l f_l² / S
    subject to  balance:   C_gen p − Aᵀ f = d      (per bus: injection = demand)
                flow:      f = S diag(1/x) A θ      (DC power flow, per line)
                reference: θ_A = 0                  (reference angle, bus A)
                gen_max:   p ≤ pmax                 (generator capacities)
                p.lower:   p ≥ 0                    (nonneg=True)
                line_max:  f ≤ fmax                 (line limits, both directions)
                line_min:  f ≥ −fmax

with generation p (MW), bus angles θ (rad) and line flows f (MW); A is the
line–bus incidence matrix (+1 at a line's from-bus, −1 at its to-bus), C_gen
maps generators to buses, S = 100 MVA and ρ = 30 $/MWh the price at which
losses r_l f_l² / S (MW) are valued. Parameters: the linear costs ``c``
($/MWh), the demands ``d`` (MW per bus), the capacities ``pmax`` and the
line limits ``fmax`` (MW); the small quadratic cost coefficients ``a``,
reactances x and resistances r are constants.

At these data Alta and Park City run at capacity and line D–E is congested
(240 MW from E to D): the cheap power of Brighton at E cannot all reach the
load at D, so Sundance, the most expensive generator, runs at D.

Nodal prices (LMPs). The nodal price at bus i is the marginal cost of
serving one more MW of demand there, ∂cost*/∂d_i, and it is given by the dual
ν_i of bus i's balance row, up to sign. CVXPY stores the constraint
``injection == d`` as lhs − rhs = injection − d and the Lagrangian adds
νᵀ(injection − d), so ∂cost*/∂d = −ν: **the LMP is −ν**. This is also the
"shadow price" of diffmodel's sensitivity report, which is ∂cost*/∂(rhs).
(Written ``d == injection``, with the parameter on the left, CVXPY keeps that
order and the LMP would be +ν.) The script checks the prices against finite
differences of re-solves. Congestion makes them differ by node, from about
13 $/MWh at E to 41 $/MWh at D; with the line limit relaxed they differ only
by marginal losses, well under 1 $/MWh. A generator's marginal cost
c + a·p equals the price at its bus unless it runs at a limit: then
c + a·p + λ_max − λ_lower = price, with λ the duals of its limits.

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
# (from, to, r [p.u.], x [p.u.], limit [MW]) — PJM 5-bus system.
LINES = [("A", "B", 0.00281, 0.0281, 400.0), ("A", "D", 0.00304, 0.0304, 400.0),
         ("A", "E", 0.00064, 0.0064, 400.0), ("B", "C", 0.00108, 0.0108, 400.0),
         ("C", "D", 0.00297, 0.0297, 400.0), ("D", "E", 0.00297, 0.0297, 240.0)]
# (name, bus, linear cost c [$/MWh], quadratic coefficient a [$/MWh per MW],
#  capacity [MW]) — PJM 5-bus costs and capacities, small quadratic terms.
GENERATORS = [("Alta", "A", 14.0, 0.05, 40.0), ("Park City", "A", 15.0, 0.02, 170.0),
              ("Solitude", "C", 30.0, 0.01, 520.0), ("Sundance", "D", 40.0, 0.02, 200.0),
              ("Brighton", "E", 10.0, 0.005, 600.0)]
DEMAND = np.array([0.0, 300.0, 300.0, 400.0, 0.0])  # MW per bus

GEN_NAMES = [g[0] for g in GENERATORS]
LINE_NAMES = [f"{a}-{b}" for a, b, _, _, _ in LINES]
n_bus, n_line, n_gen = len(BUSES), len(LINES), len(GENERATORS)

incidence = np.zeros((n_line, n_bus))
for l, (fb, tb, _, _, _) in enumerate(LINES):
    incidence[l, BUSES.index(fb)] = 1.0
    incidence[l, BUSES.index(tb)] = -1.0
gen_bus = np.zeros((n_bus, n_gen))
for g, (_, bus, _, _, _) in enumerate(GENERATORS):
    gen_bus[BUSES.index(bus), g] = 1.0
r = np.array([line[2] for line in LINES])
x = np.array([line[3] for line in LINES])
a = np.array([g[3] for g in GENERATORS])
COST = np.array([g[2] for g in GENERATORS])
PMAX = np.array([g[4] for g in GENERATORS])
FMAX = np.array([line[4] for line in LINES])

p = cp.Variable(n_gen, name="p", nonneg=True)
theta = cp.Variable(n_bus, name="theta")
f = cp.Variable(n_line, name="f")
c = cp.Parameter(n_gen, nonneg=True, name="c")
d = cp.Parameter(n_bus, nonneg=True, name="d")
pmax = cp.Parameter(n_gen, nonneg=True, name="pmax")
fmax = cp.Parameter(n_line, nonneg=True, name="fmax")

generation_cost = c @ p + 0.5 * cp.sum_squares(cp.multiply(np.sqrt(a), p))
loss_cost = LOSS_PRICE / BASE_MVA * cp.sum_squares(cp.multiply(np.sqrt(r), f))
model = dm.Model(
    cp.Minimize(generation_cost + loss_cost),
    {
        "balance": gen_bus @ p - incidence.T @ f == d,
        "flow": f == (BASE_MVA / x)[:, None] * incidence @ theta,
        "reference": theta[0] == 0,
        "gen_max": p <= pmax,
        "line_max": f <= fmax,
        "line_min": f >= -fmax,
    },
)
c.value = COST
d.value = DEMAND
pmax.value = PMAX
fmax.value = FMAX

# (The rows of the bound p >= 0, "p.lower", take the labels of p.)
labels = {"p": GEN_NAMES, "c": GEN_NAMES, "pmax": GEN_NAMES, "gen_max": GEN_NAMES,
          "d": BUSES, "balance": BUSES, "theta": BUSES, "f": LINE_NAMES, "flow": LINE_NAMES,
          "fmax": LINE_NAMES, "line_max": LINE_NAMES, "line_min": LINE_NAMES}


def cost_at(demand, **others):
    """Optimal cost for the given demands (other parameters as given, or as set)."""
    return model.solve(d=demand, **others).value


def price_check(h=1e-3, **others):
    """Nodal prices from the duals (−ν) and from finite differences of the optimal cost.

    While the demand stays within its range (``report.ranges["d"]``) the
    active set holds and the optimal cost is quadratic in d, so both
    difference formulas are exact up to rounding. ``others`` sets other
    parameters for the check (``fmax=...``). Returns (−duals, finite
    differences), each of shape (n_bus,); leaves the model solved, and its
    parameters, as they were.
    """
    base = np.array(d.value, dtype=float)
    before = {name: np.array(model.parameters[name].value) for name in others}
    prices = -model.solve(d=base, **others).dual["balance"]
    fd = np.empty(n_bus)
    for i in range(n_bus):
        e = np.zeros(n_bus)
        e[i] = h
        if base[i] >= h:
            fd[i] = (cost_at(base + e, **others) - cost_at(base - e, **others)) / (2 * h)
        else:  # d ≥ 0 (nonneg): a one-sided second-order formula at buses without load
            fd[i] = (-3 * cost_at(base, **others) + 4 * cost_at(base + e, **others)
                     - cost_at(base + 2 * e, **others)) / (2 * h)
    model.solve(d=base, **before)  # solve() sets the parameters' values: restore them
    return prices, fd


def limit_checks(sol, prices):
    """The optimality condition of each generator (marginal cost + λ_max − λ_lower =
    price at its bus), and the price of line capacity ∂cost*/∂fmax = −(λ_max + λ_min)
    against the report's objective sensitivity. Returns the largest gaps."""
    marginal = COST + a * sol.primal["p"]
    gen_gap = np.abs(marginal + sol.dual["gen_max"] - sol.dual["p.lower"]
                     - gen_bus.T @ prices).max()
    grad = model.objective_gradient()["fmax"]
    line_gap = np.abs(grad + sol.dual["line_max"] + sol.dual["line_min"]).max()
    return float(gen_gap), float(line_gap)


def line_value_check(l, h=1e-3):
    """∂cost*/∂fmax_l by central differences of re-solves."""
    e = np.zeros(n_line)
    e[l] = h
    fd = (model.solve(fmax=FMAX + e).value - model.solve(fmax=FMAX - e).value) / (2 * h)
    model.solve(fmax=FMAX)
    return fd


def print_dispatch(sol):
    print(f"  {'generator':10s} {'bus':>3s} {'c':>5s} {'pmax':>5s} {'p [MW]':>7s} "
          f"{'c + a p':>8s}")
    mc = COST + a * sol.primal["p"]
    for (name, bus, cg, _, cap), pg, m, at_max in zip(GENERATORS, sol.primal["p"], mc,
                                                       sol.active["gen_max"]):
        print(f"  {name:10s} {bus:>3s} {cg:5.0f} {cap:5.0f} {pg:7.1f} {m:8.3f}"
              f"{'  at capacity' if at_max else ''}")
    flows = sol.primal["f"]
    print(f"\n  {'line':5s} {'flow [MW]':>10s} {'limit':>6s} {'loss [MW]':>10s}")
    congested = sol.active["line_max"] | sol.active["line_min"]
    for name, fl, lim, lo, cong in zip(LINE_NAMES, flows, FMAX, r * flows**2 / BASE_MVA,
                                       congested):
        print(f"  {name:5s} {fl:10.1f} {lim:6.0f} {lo:10.3f}{'  congested' if cong else ''}")


def main():
    sol = model.solve()
    print("DC power-flow economic dispatch, PJM 5-bus system, with generator and line "
          "limits")
    print(f"  {model}")
    print(f"  total cost {sol.value:,.2f} $/h for {DEMAND.sum():.0f} MW of demand\n")
    print_dispatch(sol)

    prices, fd = price_check()
    relaxed = FMAX.copy()
    relaxed[LINE_NAMES.index("D-E")] = 1e4
    uncongested, fd_relaxed = price_check(fmax=relaxed)
    print("\nNodal prices (LMPs) = ∂cost*/∂d = −(dual of 'balance'), in $/MWh, with line "
          "D-E at its limit and with the limit relaxed:")
    print(f"  {'bus':3s} {'d [MW]':>7s} {'−dual':>9s} {'finite diff.':>13s} "
          f"{'relaxed':>9s} {'finite diff.':>13s}")
    for row in zip(BUSES, DEMAND, prices, fd, uncongested, fd_relaxed):
        print("  {:3s} {:7.0f} {:9.4f} {:13.4f} {:9.4f} {:13.4f}".format(*row))
    err = float(max(np.abs(prices - fd).max(), np.abs(uncongested - fd_relaxed).max()))
    print(f"  max |−dual − finite difference| = {err:.1e}: CVXPY stores 'injection == d' "
          "as injection − d, so the price is −dual.")
    print(f"  Congestion spreads the prices over {np.ptp(prices):.2f} $/MWh; without it they "
          f"differ by {np.ptp(uncongested):.2f} $/MWh (marginal losses only).")

    gen_gap, line_gap = limit_checks(sol, prices)
    l = LINE_NAMES.index("D-E")
    value = float(model.objective_gradient()["fmax"][l])
    fd_line = line_value_check(l)
    print(f"\nEach generator: c + a p + λ_max − λ_lower = price at its bus (largest gap "
          f"{gen_gap:.1e}); Alta and Park City earn a capacity rent λ_max > 0.")
    print(f"One more MW of capacity on line D-E saves {-value:.4f} $/h "
          f"(∂cost*/∂fmax = −(λ_max + λ_min), gap {line_gap:.1e}; finite differences "
          f"{-fd_line:.4f}).")

    report = model.sensitivity(labels=labels, top=8)
    low, high = report.ranges["d"]
    detail = report.ranges_detail["d"]
    i = BUSES.index("D")
    print(f"\nThe demand at D can move from {low[i]:.1f} to {high[i]:.1f} MW with the same "
          f"limits binding ({detail.at_low[i]} / {detail.at_high[i]}); in between the "
          "prices are exact derivatives of the cost.")
    dp = model.jacobian("p", "d")[:, i]
    print("One more MW of demand at bus D is served by (∂p/∂d_D):")
    for name, v in zip(GEN_NAMES, dp):
        print(f"  {name:10s} {v:+.3f} MW")
    print(f"  total {dp.sum():.3f} MW (losses are priced, not supplied; generators at "
          "capacity do not move)")

    print("\nSensitivity report:\n")
    print(report)
    ok = (err < 1e-4 and gen_gap < 1e-8 and line_gap < 1e-8
          and abs(value - fd_line) < 1e-4 * max(1.0, abs(value)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
