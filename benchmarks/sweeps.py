"""Scenario sweeps with gradients: in-process, 2 local processes, a Dask LocalCluster, CVXPY.

    python benchmarks/sweeps.py            # 10,000 scenarios, 3 repeats: writes benchmarks/sweeps.{md,json}
    python benchmarks/sweeps.py --quick    # 400 scenarios, 1 repeat, 10 CVXPY solves; writes nothing

The model: a sparse banded equality QP with n = 500 variables and m = 250
rows (:func:`diffmodel.testing.banded_qp`), minimize ½xᵀPx + qᵀx subject to
(A + diag(a)) x[:m]-part = b, with parameters q, b and a (a shifts the first
250 diagonal entries of A). Two settings:

- **q, b vary**: a is shared, so every scenario has the same KKT matrix (one
  factorization per process);
- **A varies**: a varies too, so every scenario refactors its KKT matrix.

Each run is ``model.solve_batch(...)`` then ``batch.backward({"x": 1})`` (the
gradient of ℓ = Σx with respect to q, b and a) for all scenarios; its
throughput is scenarios per second over both. Each executor gets one
untimed warm-up run (workers start, import diffmodel, receive the problem),
then ``repeats`` timed runs: medians are reported. CVXPY: a loop of
``problem.solve(requires_grad=True)`` + ``problem.backward()`` (diffcp, SCS)
over the first 50 scenarios, extrapolated to all of them. Every run is
checked against the in-process results (1e-12) and CVXPY's gradients
against ours (SCS is accurate to about 1e-5).

The cost model (:func:`diffmodel.parallel.measure`) is measured on a sample
of 300 scenarios per executor and compared with the measured throughput.
BLAS runs one thread per process (OPENBLAS_NUM_THREADS=1 etc., set below
unless already set): the parallelism is across scenarios.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import Executor, ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402  (comes with dask.distributed)
import scipy  # noqa: E402

import diffmodel as dm  # noqa: E402
from diffmodel.parallel import CostModel, local_cluster, measure  # noqa: E402
from diffmodel.runner import Execution  # noqa: E402
from diffmodel.testing import QPData, banded_qp  # noqa: E402

HERE = Path(__file__).resolve().parent
N = 500
CVXPY_SCENARIOS = 50
COST_SAMPLE = 300
MACHINES = (1, 2, 4, 8, 16, 32, 64)
CORES_PER_MACHINE = 2


# ---------------------------------------------------------------- the model


def sweep_model(data: QPData) -> dm.Model:
    """minimize ½xᵀPx + qᵀx s.t. A x + a ∘ x[:m] = b, parameters q, b, a."""
    n, m = data.n, data.m
    x = cp.Variable(n, name="x")
    q = cp.Parameter(n, name="q")
    b = cp.Parameter(m, name="b")
    a = cp.Parameter(m, name="a", value=np.zeros(m))
    return dm.Model(cp.Minimize(0.5 * cp.quad_form(x, data.P, assume_PSD=True) + q @ x),
                    {"eq": data.A @ x + cp.multiply(a, x[:m]) == b})


def scenarios(data: QPData, count: int, vary_A: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = {"q": data.q + 0.1 * rng.standard_normal((count, data.n)),
              "b": data.b + 0.1 * rng.standard_normal((count, data.m))}
    if vary_A:
        values["a"] = 0.1 * rng.standard_normal((count, data.m))
    return values


# ---------------------------------------------------------------- runs


def worker_pids(executor: Executor | None) -> list[int]:
    """The processes that run the chunks (none in-process)."""
    if executor is None:
        return []
    client = getattr(executor, "_client", None)
    if client is not None:  # Dask: ask each worker
        return [int(pid) for pid in client.run(os.getpid).values()]
    return [int(pid) for pid in getattr(executor, "_processes", {})]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by these processes."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def run(model: dm.Model, values: dict[str, np.ndarray], executor: Executor | None
        ) -> tuple[dict[str, float], dm.BatchSolution, dict[str, np.ndarray]]:
    """solve_batch + backward of ℓ = Σx over all scenarios: (wall and CPU seconds, batch,
    gradients). CPU: this process (the driver: it computes in-process, and otherwise
    (de)serializes and waits) and the worker processes."""
    pids = worker_pids(executor)
    w0, c0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
    batch = model.solve_batch(**values, executor=executor, progress=False)
    grads = batch.backward({"x": np.ones(model.compiled.layout.variables["x"].shape)})
    seconds = {"wall": time.perf_counter() - t0, "driver_cpu": time.process_time() - c0,
               "workers_cpu": cpu_seconds(pids) - w0}
    return seconds, batch, grads


def max_diff(batch: dm.BatchSolution, grads: dict[str, np.ndarray],
             ref: tuple[dm.BatchSolution, dict[str, np.ndarray]]) -> float:
    """Largest difference of solutions, duals and gradients from the reference run."""
    rb, rg = ref
    diffs = [np.max(np.abs(batch.primal["x"] - rb.primal["x"])),
             np.max(np.abs(batch.dual["eq"] - rb.dual["eq"]))]
    diffs += [np.max(np.abs(grads[k] - rg[k])) for k in rg]
    return float(max(diffs))


def summarize(runs: list[tuple[dict[str, float], Execution]], size: int, warm_s: float,
              diffs: list[float], workers: int) -> dict[str, Any]:
    """Medians over the timed runs, and how the median run was chunked.

    ``idle_estimate``: the throughput the run's CPU times predict on idle cores, the
    driver's work and the workers' (spread over ``workers``) each needing its own time.
    """
    walls = [r[0]["wall"] for r in runs]
    order = sorted(range(len(runs)), key=walls.__getitem__)
    seconds, run_info = runs[order[len(order) // 2]]
    driver = statistics.median(r[0]["driver_cpu"] for r in runs)
    workers_cpu = statistics.median(r[0]["workers_cpu"] for r in runs)
    busiest = max(driver, workers_cpu / workers) if workers_cpu else driver
    compute_per_chunk = run_info.compute / max(run_info.chunks + (run_info.pilot > 0), 1)
    return {
        "seconds": seconds["wall"], "times": walls, "first_run_seconds": warm_s,
        "scenarios_per_second": size / seconds["wall"],
        "driver_cpu": driver, "workers_cpu": workers_cpu,
        "cpu_per_scenario": (driver + workers_cpu) / size,
        "idle_estimate": size / busiest,
        "max_diff_vs_in_process": max(diffs, default=0.0),
        "chunk_size": run_info.chunk_size, "chunks": run_info.chunks, "pilot": run_info.pilot,
        "pilot_seconds_per_scenario": run_info.per_scenario,
        "solve_wall": run_info.wall, "solve_compute": run_info.compute,
        "overhead_per_chunk": run_info.overhead,
        "overhead_fraction": (run_info.overhead / compute_per_chunk if run_info.chunks else 0.0),
    }


def time_executors(model: dm.Model, values: dict[str, np.ndarray],
                   executors: dict[str, Executor | None], repeats: int
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One untimed warm-up run per executor, then ``repeats`` rounds of one timed run
    on each, interleaved (a change of the machine's load hits them alike). Every
    run is compared with the in-process run of its round (the first executor).
    Returns the summaries by executor and the in-process gradients."""
    warm = {name: run(model, values, ex)[0]["wall"] for name, ex in executors.items()}
    runs: dict[str, list[tuple[dict[str, float], Execution]]] = {n: [] for n in executors}
    diffs: dict[str, list[float]] = {name: [] for name in executors}
    ref: tuple[dm.BatchSolution, dict[str, np.ndarray]] | None = None
    size = 0
    for _ in range(repeats):
        for name, ex in executors.items():
            seconds, batch, grads = run(model, values, ex)
            size = batch.batch_size
            assert batch.execution is not None
            runs[name].append((seconds, batch.execution))
            if ref is None or ex is None:
                ref = (batch, grads)
            else:
                diffs[name].append(max_diff(batch, grads, ref))
            del batch, grads
    assert ref is not None
    return ({name: summarize(runs[name], size, warm[name], diffs[name],
                             max(1, len(worker_pids(ex))))
             for name, ex in executors.items()}, ref[1])


def time_cvxpy(data: QPData, values: dict[str, np.ndarray], count: int
               ) -> dict[str, Any]:
    """CVXPY solve(requires_grad=True) + backward() per scenario, for the first ``count``."""
    n, m = data.n, data.m
    x = cp.Variable(n)
    q, b, a = cp.Parameter(n), cp.Parameter(m), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, data.P, assume_PSD=True) + q @ x),
                         [data.A @ x + cp.multiply(a, x[:m]) == b])
    times: list[float] = []
    cpus: list[float] = []
    grads = []
    for i in range(count + 1):  # the first solve (canonicalization) is not timed
        j = max(i - 1, 0)
        q.value, b.value = values["q"][j], values["b"][j]
        a.value = values["a"][j] if "a" in values else np.zeros(m)
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem.solve(requires_grad=True)
            x.gradient = np.ones(n)
            problem.backward()
        if i:
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            grads.append({"q": np.array(q.gradient), "b": np.array(b.gradient),
                          "a": np.array(a.gradient)})
    return {"seconds_per_scenario": statistics.median(times),
            "cpu_per_scenario": statistics.median(cpus), "count": count,
            "solver": problem.solver_stats.solver_name, "_grads": grads}


def cvxpy_error(cv: dict[str, Any], grads: dict[str, np.ndarray], vary_A: bool) -> float:
    """Largest relative error of CVXPY's gradients against ours, over its scenarios."""
    worst = 0.0
    for i, g in enumerate(cv["_grads"]):
        for k in ("q", "b", "a") if vary_A else ("q", "b"):
            ours = grads[k][i]
            worst = max(worst, float(np.max(np.abs(g[k] - ours)) / np.max(np.abs(ours))))
    return worst


# ---------------------------------------------------------------- the report


def cost_row(cm: CostModel) -> dict[str, Any]:
    return {"executor": cm.executor, "workers": cm.workers,
            "per_scenario": cm.per_scenario, "per_chunk": cm.per_chunk,
            "per_scenario_transfer": cm.per_scenario_transfer,
            "bytes_per_scenario": cm.bytes_per_scenario, "problem_bytes": cm.problem_bytes,
            "chunk_size": cm.chunk_size(), "overhead": cm.overhead(),
            "throughput": cm.throughput(),
            "machines": {str(k): cm.throughput(workers=k * CORES_PER_MACHINE)
                         for k in MACHINES}}


def bench(quick: bool) -> dict[str, Any]:
    """Both settings on every executor; the load average of the machine before and after."""
    count = 400 if quick else 10_000
    repeats = 1 if quick else 3
    cv_count = 10 if quick else CVXPY_SCENARIOS
    data = banded_qp(N)
    model = sweep_model(data)
    out: dict[str, Any] = {"scenarios": count, "repeats": repeats, "n": data.n, "m": data.m,
                           "settings": {}, "load_before": os.getloadavg()}
    for label, vary_A in (("q, b vary", False), ("A varies", True)):
        values = scenarios(data, count, vary_A)
        sample = {k: v[:COST_SAMPLE] for k, v in values.items()}
        print(f"[{label}] in-process, 2 processes, Dask LocalCluster ...", flush=True)
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        with ProcessPoolExecutor(2, mp_context=spawn) as pool, local_cluster(2) as dask:
            row, ref_grads = time_executors(
                model, values, {"in-process": None, "2 processes": pool,
                                "Dask LocalCluster (2)": dask}, repeats)
            row["cost model, 2 processes"] = cost_row(measure(model, pool, **sample))
            row["cost model, Dask"] = cost_row(measure(model, dask, **sample))
        print(f"[{label}] CVXPY ...", flush=True)
        cv = time_cvxpy(data, values, cv_count)
        cv["gradient_rel_error"] = cvxpy_error(cv, ref_grads, vary_A)
        cv.pop("_grads")
        cv["scenarios_per_second"] = 1.0 / cv["seconds_per_scenario"]
        cv["extrapolated_seconds"] = count * cv["seconds_per_scenario"]
        row["CVXPY loop"] = cv
        out["settings"][label] = row
    out["load_after"] = os.getloadavg()
    return out


def machine() -> str:
    from machine import cpu_name

    return (f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, SciPy {scipy.__version__}, diffmodel {dm.__version__}")


def _t(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured wall-clock, from CPU times, met on the wall clock)."""
    out = []
    for label, row in res["settings"].items():
        inproc, cv = row["in-process"], row["CVXPY loop"]
        ratio = inproc["scenarios_per_second"] / cv["scenarios_per_second"]
        cpu_ratio = cv["cpu_per_scenario"] / inproc["cpu_per_scenario"]
        out.append((f"{label}: in-process ≥ 100× the CVXPY loop", f"{ratio:.1f}×",
                    f"{cpu_ratio:.1f}×", ratio >= 100))
    row = res["settings"]["A varies"]
    inproc, two = row["in-process"], row["2 processes"]
    speed = two["scenarios_per_second"] / inproc["scenarios_per_second"]
    idle = two["idle_estimate"] / inproc["idle_estimate"]
    out.append(("A varies: 2 processes ≥ 1.6× in-process", f"{speed:.2f}×",
                f"{idle:.2f}× on idle cores", speed >= 1.6))
    for label, row in res["settings"].items():
        for ex in ("2 processes", "Dask LocalCluster (2)"):
            cost = row["cost model, 2 processes" if ex == "2 processes" else "cost model, Dask"]
            frac = row[ex]["overhead_fraction"]
            out.append((f"{label}, {ex}: overhead per chunk ≤ 10% of its compute",
                        f"{100 * frac:.1f}%", f"{100 * cost['overhead']:.1f}% (cost model)",
                        frac <= 0.10))
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Scenario sweeps: measured", "",
             f"Machine: {res['machine']}. Date: {res['date']}. Load average (1, 5, 15 min) "
             f"before: {', '.join(f'{v:.1f}' for v in res['load_before'])}; after: "
             f"{', '.join(f'{v:.1f}' for v in res['load_after'])}: other jobs shared the "
             "2 cores, so wall-clock times understate what 2 workers do on idle cores; "
             "the CPU times (user + system, of this process and of the workers) do not "
             "depend on the load.", "",
             f"{res['scenarios']:,} scenarios of a banded QP with n = {res['n']}, "
             f"m = {res['m']}; each run is solve_batch + backward (the gradient of Σx with "
             f"respect to every parameter, for every scenario). Medians of "
             f"{res['repeats']} rounds (one run per executor each, interleaved) after one "
             "warm-up run; the CVXPY loop is timed on "
             f"{res['settings']['q, b vary']['CVXPY loop']['count']} scenarios and "
             "extrapolated. \"on idle cores\": the throughput the CPU times allow when the "
             "driver and each worker have a core of their own (the busiest of the driver's "
             "CPU time and the workers' CPU time over 2). Command: "
             "`python benchmarks/sweeps.py`.", ""]
    for label, row in res["settings"].items():
        lines += [f"## {label}", "",
                  "| executor | scenarios/s | time for all | CPU per scenario | on idle cores | "
                  "first run (cold) | chunk size | chunks | overhead per chunk | "
                  "max diff vs in-process |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for ex in ("in-process", "2 processes", "Dask LocalCluster (2)"):
            r = row[ex]
            lines.append(
                f"| {ex} | {r['scenarios_per_second']:,.0f} | {_t(r['seconds'])} | "
                f"{_t(r['cpu_per_scenario'])} | {r['idle_estimate']:,.0f}/s | "
                f"{_t(r['first_run_seconds'])} | {r['chunk_size']} | {r['chunks']} | "
                f"{_t(r['overhead_per_chunk'])} ({100 * r['overhead_fraction']:.1f}%) | "
                f"{r['max_diff_vs_in_process']:.1e} |")
        cv = row["CVXPY loop"]
        lines.append(f"| CVXPY loop ({cv['solver']}, {cv['count']} scenarios, extrapolated) | "
                     f"{cv['scenarios_per_second']:,.1f} | {_t(cv['extrapolated_seconds'])} | "
                     f"{_t(cv['cpu_per_scenario'])} | | | | | | gradient rel. error "
                     f"{cv['gradient_rel_error']:.1e} |")
        lines += ["", "Cost model (`diffmodel.parallel.measure`, sample of "
                  f"{COST_SAMPLE} scenarios): per scenario, per chunk (a solve and a backward "
                  "task: serialization, transfer, scheduling), per scenario transferred, and "
                  "the throughput predicted for the executor's 2 workers and for N machines "
                  f"of {CORES_PER_MACHINE} cores:", "",
                  "| executor | per scenario | per chunk | transfer per scenario | bytes per "
                  "scenario | chunk size (rule) | overhead | predicted | "
                  + " | ".join(f"{k} × {CORES_PER_MACHINE}" for k in MACHINES) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(MACHINES)]
        for key in ("cost model, 2 processes", "cost model, Dask"):
            c = row[key]
            lines.append(
                f"| {c['executor']} | {_t(c['per_scenario'])} | {_t(c['per_chunk'])} | "
                f"{_t(c['per_scenario_transfer'])} | {c['bytes_per_scenario']:,} | "
                f"{c['chunk_size']} | {100 * c['overhead']:.1f}% | {c['throughput']:,.0f}/s | "
                + " | ".join(f"{c['machines'][str(k)]:,.0f}" for k in MACHINES) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | measured (wall clock) | from CPU times | met |",
              "|---|---:|---:|---|"]
    for text, wall, cpu, ok in targets(res):
        lines.append(f"| {text} | {wall} | {cpu} | {'yes' if ok else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run; no files")
    args = parser.parse_args(argv)
    res = bench(args.quick)
    res["machine"] = machine()
    res["date"] = time.strftime("%Y-%m-%d")
    text = markdown(res)
    print(text)
    if not args.quick:
        (HERE / "sweeps.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
        (HERE / "sweeps.md").write_text(text)
    worst = max(row[ex]["max_diff_vs_in_process"] for row in res["settings"].values()
                for ex in ("2 processes", "Dask LocalCluster (2)"))
    return 0 if worst <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
