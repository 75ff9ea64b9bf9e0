"""Economic dispatch over 10,000 demand scenarios: nodal prices, congestion, in parallel.

The PJM 5-bus system (the network of ``examples/dc_power_flow.py``) with
generator limits and line limits: a DC power-flow dispatch

    minimize    Σ_g (c_g p_g + ½ a_g p_g²)
    subject to  balance:   C_gen p − Aᵀ f = d          (per bus)
                flow:      f = S diag(1/x) A θ,  θ_A = 0
                gen_max:   p ≤ p_max,   gen_min: p ≥ 0
                line_max:  f ≤ f_max,   line_min: −f_max ≤ f

solved for 10,000 scenarios of the demand d (a common level times a
noise per bus) three ways: in this process, with 2 local processes
(``ProcessPoolExecutor``) and on a Dask ``LocalCluster`` with 2 worker
processes. The three give the same numbers. Then the scenario report: the
nodal prices ∂cost*/∂d (= −dual of ``balance``) across the scenarios, the
scenarios where demand matters most, and how often each generator and line
limit binds.

Run ``python examples/dispatch_scenarios.py`` (``--html report.html`` writes
the report with its plots; ``--small`` runs 500 scenarios, as the test suite
does, which also sets ``DIFFMODEL_EXAMPLES_SMALL=1`` or runs it under pytest).
The Dask part needs ``pip install "diffmodel[dask]"`` and is left out without it.
"""

from __future__ import annotations

import os

# One BLAS thread per process: the parallelism is across scenarios, and BLAS
# threads fighting over the cores make small dense factorizations many times
# slower (see docs/scaling.md). Set before NumPy loads; worker processes inherit it.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402

import diffmodel as dm  # noqa: E402

BASE_MVA = 100.0
BUSES = ["A", "B", "C", "D", "E"]
# (from, to, x [p.u.], limit [MW]) — PJM 5-bus system; A-B and E-D are the tight lines.
LINES = [("A", "B", 0.0281, 400.0), ("A", "D", 0.0304, 9999.0), ("A", "E", 0.0064, 9999.0),
         ("B", "C", 0.0108, 9999.0), ("C", "D", 0.0297, 9999.0), ("E", "D", 0.0297, 240.0)]
# (name, bus, c [$/MWh], a [$/MWh per MW], p_max [MW]).
GENERATORS = [("Alta", "A", 14.0, 0.078, 40.0), ("Park City", "A", 15.0, 0.018, 170.0),
              ("Solitude", "C", 30.0, 0.006, 520.0), ("Sundance", "D", 35.0, 0.010, 200.0),
              ("Brighton", "E", 10.0, 0.008, 600.0)]
DEMAND = np.array([0.0, 300.0, 300.0, 400.0, 0.0])  # MW per bus
GEN_NAMES = [g[0] for g in GENERATORS]
LINE_NAMES = [f"{a}-{b}" for a, b, _, _ in LINES]


def dispatch_model() -> dm.Model:
    """The dispatch with generator and line limits; parameters ``c`` (costs) and ``d``."""
    n_bus, n_line, n_gen = len(BUSES), len(LINES), len(GENERATORS)
    incidence = np.zeros((n_line, n_bus))
    for k, (fb, tb, _, _) in enumerate(LINES):
        incidence[k, BUSES.index(fb)], incidence[k, BUSES.index(tb)] = 1.0, -1.0
    gen_bus = np.zeros((n_bus, n_gen))
    for g, (_, bus, _, _, _) in enumerate(GENERATORS):
        gen_bus[BUSES.index(bus), g] = 1.0
    x = np.array([line[2] for line in LINES])
    f_max = np.array([line[3] for line in LINES])
    a = np.array([g[3] for g in GENERATORS])
    p_max = np.array([g[4] for g in GENERATORS])

    p = cp.Variable(n_gen, name="p")
    theta = cp.Variable(n_bus, name="theta")
    f = cp.Variable(n_line, name="f")
    c = cp.Parameter(n_gen, nonneg=True, name="c", value=np.array([g[2] for g in GENERATORS]))
    d = cp.Parameter(n_bus, nonneg=True, name="d", value=DEMAND)
    cost = c @ p + 0.5 * cp.sum_squares(cp.multiply(np.sqrt(a), p))
    return dm.Model(cp.Minimize(cost), {
        "balance": gen_bus @ p - incidence.T @ f == d,
        "flow": f == (BASE_MVA / x)[:, None] * incidence @ theta,
        "slack": theta[0] == 0,
        "gen_max": p <= p_max, "gen_min": p >= 0,
        "line_max": f <= f_max, "line_min": -f_max <= f,
    })


def demand_scenarios(count: int, seed: int = 0) -> np.ndarray:
    """Demands (count, 5): a common level (70%–130% of the base) times ±10% per bus."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.7, 1.3, size=(count, 1))
    noise = 1.0 + 0.1 * rng.standard_normal((count, len(BUSES)))
    return np.maximum(DEMAND * level * noise, 0.0)


LABELS = {"p": GEN_NAMES, "c": GEN_NAMES, "d": BUSES, "balance": BUSES, "theta": BUSES,
          "f": LINE_NAMES, "flow": LINE_NAMES, "gen_max": GEN_NAMES, "gen_min": GEN_NAMES,
          "line_max": LINE_NAMES, "line_min": LINE_NAMES}


def run(label: str, model: dm.Model, D: np.ndarray, **options: object) -> dm.BatchSolution:
    """Solve the scenarios and take the gradient of the total cost of generation."""
    t0 = time.perf_counter()
    batch = model.solve_batch(d=D, on_error="record", **options)  # type: ignore[arg-type]
    grads = batch.backward({"p": np.ones((D.shape[0], len(GENERATORS)))})
    seconds = time.perf_counter() - t0
    run_info = batch.execution
    assert run_info is not None
    print(f"  {label:22s} {seconds:6.2f} s  {D.shape[0] / seconds:8.0f} scenarios/s  "
          f"(chunks of {run_info.chunk_size}, {len(batch.errors)} failed, "
          f"{batch.warm_starts} warm starts; ∂Σp/∂d finite: "
          f"{bool(np.isfinite(grads['d'][np.isfinite(batch.value)]).all())})")
    return batch


def same(a: dm.BatchSolution, b: dm.BatchSolution) -> float:
    """Largest difference between two batches' generation and prices."""
    return float(max(np.nanmax(np.abs(a.primal["p"] - b.primal["p"])),
                     np.nanmax(np.abs(a.dual["balance"] - b.dual["balance"]))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="500 scenarios instead of 10,000")
    parser.add_argument("--html", help="write the scenario report (with plots) to this file")
    args = parser.parse_args(argv)
    small = (args.small or os.environ.get("DIFFMODEL_EXAMPLES_SMALL") == "1"
             or "PYTEST_CURRENT_TEST" in os.environ)
    count = 500 if small else 10_000
    model = dispatch_model()
    D = demand_scenarios(count)
    print(f"Dispatch of the PJM 5-bus system with generator and line limits: {count:,} demand "
          f"scenarios, solve + backward.\n  {model}\n")

    reference = run("in-process", model, D)
    with ProcessPoolExecutor(2) as pool:
        local = run("2 local processes", model, D, executor=pool)
    print(f"  {'':22s} same as in-process: max difference {same(local, reference):.1e}")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print('  (Dask LocalCluster left out: pip install "diffmodel[dask]")')
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            dask = run("Dask LocalCluster (2)", model, D, executor=client.get_executor())
        print(f"  {'':22s} same as in-process: max difference {same(dask, reference):.1e}")

    report = reference.sensitivity(labels=LABELS, top=6)
    lmp = report.objective["d"]
    print("\nNodal prices ∂cost*/∂d ($/MWh) across the scenarios: mean and 5% / 50% / 95%")
    for j, bus in enumerate(BUSES):
        q5, q50, q95 = lmp.quantiles[[0, 2, 4], j]
        print(f"  bus {bus}: {lmp.mean[j]:7.2f}   {q5:7.2f} {q50:7.2f} {q95:7.2f}")
    print("\nHow often the limits bind:")
    for name in ("gen_max", "line_max", "line_min"):
        freq = report.binding[name].frequency
        print(f"  {name}: " + (", ".join(f"{LABELS[name][i]} {100 * v:.0f}%"
                                         for i, v in enumerate(freq) if v > 0) or "never"))
    print("\n" + str(report))
    if args.html:
        print(f"report written to {report.to_html(args.html)}")
    # The prices are the duals: −ν of each scenario's balance rows, to rounding.
    solved = np.isfinite(reference.value)
    err = float(np.max(np.abs(report.gradients["d"][solved] + reference.dual["balance"][solved])))
    print(f"max |∂cost*/∂d + dual of balance| over the scenarios: {err:.1e}")
    return 0 if err < 1e-8 and same(local, reference) < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
