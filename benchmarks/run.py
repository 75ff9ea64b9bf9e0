"""Benchmark diffmodel against its peers and the bare-factorization limit.

    python benchmarks/run.py            # full run: writes benchmarks/results.{md,json}
    python benchmarks/run.py --quick    # small sizes, for CI: checks agreement only

Every (tool, problem) cell runs in its own subprocess, so peak memory is the
process's own high-water mark (``VmHWM`` minus the resident size before the
problem is built) and a tool that hangs or runs out of memory loses only its
cell. Before any timing counts, each tool's solution and gradients are
compared with an exact reference (a dense solve for small problems, SciPy's
LU with iterative refinement for large ones); the table reports those errors.
Times are medians over repeats after one warm-up call. No timing is ever
asserted: ``--quick`` fails only if a tool disagrees with the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from diffmodel.testing import QPData, banded_qp, random_qp  # noqa: E402

# --------------------------------------------------------------------------- problems


def matrix_parameter_qp(m: int, n: int, seed: int = 0) -> QPData:
    """minimize ½‖x‖² + qᵀx s.t. A x = b with a dense A that is a parameter."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) / np.sqrt(n)
    return QPData(f"matparam_{m}x{n}", sp.identity(n, format="csc"), rng.standard_normal(n),
                  sp.csc_matrix(A), rng.standard_normal(m))


@dataclass(frozen=True)
class Family:
    label: str
    make: Callable[[], QPData]
    params: tuple[str, ...] = ("q", "b")
    # Tools left out because they cannot run at this size on this machine.
    skip: tuple[str, ...] = ()


FULL = [
    Family("dense n=10", lambda: random_qp(10, 5, seed=1)),
    Family("dense n=50", lambda: random_qp(50, 25, seed=2)),
    Family("banded n=1000", lambda: banded_qp(1000)),
    Family("banded n=5000", lambda: banded_qp(5000), skip=("qpth",)),
    Family("banded n=20000", lambda: banded_qp(20000), skip=("qpth",)),
    Family("sparse random n=1000", lambda: random_qp(1000, 500, seed=3, density=0.003)),
    Family("matrix parameter A 200x1000", lambda: matrix_parameter_qp(200, 1000),
           params=("q", "b", "A")),
]
QUICK = [
    Family("dense n=10", lambda: random_qp(10, 5, seed=1)),
    Family("dense n=50", lambda: random_qp(50, 25, seed=2)),
    Family("banded n=1000", lambda: banded_qp(1000), skip=("qpth",)),
    Family("sparse random n=300", lambda: random_qp(300, 150, seed=3, density=0.01),
           skip=("qpth",)),
    Family("matrix parameter A 40x200", lambda: matrix_parameter_qp(40, 200),
           params=("q", "b", "A")),
]

#: The Jacobian dx/db (n × m, dense) is timed only up to this m.
JACOBIAN_MAX_M = 2500

#: Exit code of a worker whose tool is not installed (its import failed): the
#: cell becomes a "not installed" row, not an error.
NOT_INSTALLED = 3

#: Largest relative errors accepted before timing, per tool (see the module docstring).
TOLERANCE = {
    "diffmodel": 1e-9, "diffmodel (osqp)": 1e-5, "limit: qdldl": 1e-9, "limit: splu": 1e-9,
    "OSQP + adjoint": 1e-4, "qpth": 1e-4,
    # diffcp's solution and adjoint are computed to SCS's default tolerance.
    "CVXPY backward()": 0.2, "cvxpylayers": 0.2,
}


def variants(data: QPData, params: tuple[str, ...], count: int = 3) -> list[dict[str, np.ndarray]]:
    """Parameter values: variant 0 is the problem's data; others move q and b."""
    rng = np.random.default_rng(7)
    base = {"q": data.q, "b": data.b, "A": data.A.toarray() if "A" in params else None}
    out = []
    for i in range(count):
        vals = {k: base[k] for k in params}
        if i:
            vals["q"] = data.q + 0.1 * rng.standard_normal(data.n)
            vals["b"] = data.b + 0.1 * rng.standard_normal(data.m)
        out.append(vals)
    return out


def loss_weights(data: QPData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    return rng.standard_normal(data.n), {"q": rng.standard_normal(data.n),
                                         "b": rng.standard_normal(data.m)}


# --------------------------------------------------------------------------- reference


def reference(data: QPData, params: tuple[str, ...]) -> dict[str, Any]:
    """x, gradients of gᵀx and the forward derivative at variant 0, exactly."""
    g, direction = loss_weights(data)
    n, m = data.n, data.m
    K = data.kkt()
    if n + m <= 3000:
        dense = K.toarray()

        def solve(rhs: np.ndarray) -> np.ndarray:
            return np.linalg.solve(dense, rhs)
    else:
        from scipy.sparse.linalg import splu

        lu = splu(K)

        def solve(rhs: np.ndarray) -> np.ndarray:
            z = lu.solve(rhs)
            for _ in range(3):
                z = z + lu.solve(rhs - K @ z)
            return z

    z = solve(np.concatenate([-data.q, data.b]))
    omega = solve(np.concatenate([g, np.zeros(m)]))
    grads = {"q": -omega[:n], "b": omega[n:]}
    if "A" in params:
        grads["A"] = -(np.outer(z[n:], omega[:n]) + np.outer(omega[n:], z[:n]))
    dz = solve(np.concatenate([-direction["q"], direction["b"]]))
    return {"x": z[:n], "grads": grads, "forward": dz[:n]}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(b)), 1e-300))


# --------------------------------------------------------------------------- worker


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _median_time(fn: Callable[[], object], budget: float, max_reps: int) -> float:
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def worker(tool_name: str, family: Family, out: Path, budget: float) -> int:
    """Run one cell; return 0, or ``NOT_INSTALLED`` if the tool cannot be imported."""
    from tools import TOOLS

    data = family.make()
    vals = variants(data, family.params)
    g, direction = loss_weights(data)
    try:
        tool = TOOLS[tool_name](data, family.params)
    except ImportError as exc:  # the peer, or the framework it runs on, is missing
        print(exc, file=sys.stderr)
        return NOT_INSTALLED
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident size to the current one
    except OSError:
        pass
    base_rss = _rss_kib("VmRSS")
    result: dict[str, Any] = {"tool": tool_name}

    t = time.perf_counter()
    tool.first(vals[0])
    result["first"] = time.perf_counter() - t
    peak_first = _rss_kib("VmHWM")
    # Agreement data at variant 0 (the timed calls below alternate variants).
    x0 = tool.resolve(vals[0])
    grads0 = tool.backward(g)
    arrays: dict[str, np.ndarray] = {"x": np.asarray(x0)}
    arrays.update({f"grad_{k}": np.asarray(v) for k, v in grads0.items()})
    if tool.has_forward:
        arrays["forward"] = np.asarray(tool.forward({k: direction[k] for k in ("q", "b")}))

    counter = [0]
    reps = (10_000 if data.n <= 100 else 200) if budget > 0.1 else 20

    def resolve() -> None:
        counter[0] += 1
        tool.resolve(vals[1 + counter[0] % 2])

    def resolve_backward() -> None:
        resolve()
        tool.backward(g)

    result["resolve"] = _median_time(resolve, budget, reps)
    result["resolve_backward"] = _median_time(resolve_backward, budget, reps)
    result["backward"] = _median_time(lambda: tool.backward(g), budget, reps)
    if tool.has_forward:
        result["forward"] = _median_time(
            lambda: tool.forward({k: direction[k] for k in ("q", "b")}), budget, reps)
    result["peak_mib"] = (max(_rss_kib("VmHWM"), peak_first) - base_rss) / 1024
    if tool.has_jacobian and data.m <= JACOBIAN_MAX_M:
        result["jacobian"] = _median_time(tool.jacobian, budget, max(3, reps // 10))
    model = getattr(tool, "model", None)
    if model is not None:
        result["factorizations"] = model.factorizations
        if tool_name == "diffmodel" and family.params == ("q", "b"):
            result.update(_batch(model, data, g, budget))
    np.savez(out.with_suffix(".npz"), **arrays)
    out.write_text(json.dumps(result))
    return 0


def _batch(model: Any, data: QPData, g: np.ndarray, budget: float) -> dict[str, float]:
    """solve_batch/backward_batch over 1,000 (q, b) pairs, and the bare cost of one solve."""
    rng = np.random.default_rng(5)
    size = 1000 if data.n <= 5000 else 100
    Q = data.q + 0.1 * rng.standard_normal((size, data.n))
    B = data.b + 0.1 * rng.standard_normal((size, data.m))
    before = model.factorizations
    t = time.perf_counter()
    model.solve_batch(q=Q, b=B)
    solve_t = time.perf_counter() - t
    t = time.perf_counter()
    model.backward_batch({"x": np.broadcast_to(g, (size, data.n))})
    back_t = time.perf_counter() - t
    return {"batch_size": size, "batch_solve": solve_t, "batch_backward": back_t,
            "batch_factorizations": model.factorizations - before}


# --------------------------------------------------------------------------- runner


def run_cell(tool: str, family: Family, quick: bool, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cell.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, family.label,
               str(out)] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "status": f"did not finish in {timeout:.0f} s"}
        if proc.returncode != 0 or not out.exists():
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if proc.returncode == NOT_INSTALLED:
                return {"tool": tool, "status": f"not installed ({err})"[:120]}
            return {"tool": tool, "status": err[:120]}
        result = json.loads(out.read_text())
        with np.load(out.with_suffix(".npz")) as arrays:
            result["arrays"] = {k: arrays[k] for k in arrays.files}
        result["status"] = "ok"
        return result


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def machine() -> str:

    from machine import cpu_name

    return (f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, SciPy {__import__('scipy').__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; for CI")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.md/json (default: benchmarks/ for a full "
                             "run, a temporary folder for --quick)")
    parser.add_argument("--tools", nargs="*", default=None, help="subset of tools")
    parser.add_argument("--families", nargs="*", default=None, help="subset of families")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    parser.add_argument("--merge", action="store_true",
                        help="update the cells of an existing results.json instead of "
                             "replacing it (to rerun some tools or families)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite results.md from an existing results.json")
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "FAMILY", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    families = QUICK if args.quick else FULL
    budget = 0.05 if args.quick else 2.0
    if args.worker:
        tool, label, out = args.worker
        return worker(tool, next(f for f in families if f.label == label), Path(out), budget)

    if args.render:
        out = args.out or HERE
        saved = json.loads((out / "results.json").read_text())
        (out / "results.md").write_text(markdown(saved["families"], saved["machine"],
                                                 saved["quick"], saved.get("date")))
        print(f"wrote {out / 'results.md'}")
        return 0

    from tools import TOOLS

    tools = args.tools or list(TOOLS)
    timeout = args.timeout or (120.0 if args.quick else 300.0)
    selected = [f for f in families if not args.families or f.label in args.families]
    report: list[dict[str, Any]] = []
    failures: list[str] = []
    for family in selected:
        data = family.make()
        ref = reference(data, family.params)
        print(f"\n## {family.label}  (n={data.n}, m={data.m}, parameters {', '.join(family.params)})",
              flush=True)
        rows = []
        for tool in tools:
            if tool in family.skip:
                rows.append({"tool": tool, "status": "not run at this size (dense / too slow)"})
                continue
            cell = run_cell(tool, family, args.quick, timeout)
            if cell["status"] == "ok":
                arrays = cell.pop("arrays")
                cell["x_err"] = rel_err(arrays["x"], ref["x"])
                cell["grad_err"] = max(rel_err(arrays[f"grad_{k}"], ref["grads"][k])
                                       for k in family.params)
                if "forward" in arrays:
                    cell["forward_err"] = rel_err(arrays["forward"], ref["forward"])
                tol = TOLERANCE.get(tool, 1e-6)
                worst = max(cell["x_err"], cell["grad_err"], cell.get("forward_err", 0.0))
                # Recorded per cell so that a test can tell a peer's disagreement
                # (the peer's failure) from one of diffmodel's or the limits'.
                cell["tolerance"] = tol
                cell["agrees"] = bool(worst <= tol)
                if not cell["agrees"]:
                    failures.append(f"{family.label} / {tool}: error {worst:.1e} > {tol:.0e}")
            print(f"  {tool:20s} {_summary(cell)}", flush=True)
            rows.append(cell)
        report.append({"family": family.label, "n": data.n, "m": data.m,
                       "params": list(family.params), "rows": rows})

    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge and (out / "results.json").exists():
        report = _merge(json.loads((out / "results.json").read_text())["families"], report)
    (out / "results.json").write_text(json.dumps(
        {"machine": machine(), "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
         "families": report}, indent=1, default=float))
    (out / "results.md").write_text(markdown(report, machine(), args.quick))
    print(f"\nwrote {out / 'results.md'} and results.json")
    if failures:
        print("\nDISAGREEMENT with the exact reference:\n  " + "\n  ".join(failures))
        return 1
    print("\nall tools agree with the exact reference (within each tool's tolerance)")
    return 0


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Old families and cells, with the new ones replacing those they rerun."""
    by_family = {fam["family"]: fam for fam in old}
    for fam in new:
        if fam["family"] not in by_family:
            by_family[fam["family"]] = fam
            continue
        rows = {row["tool"]: row for row in by_family[fam["family"]]["rows"]}
        rows.update({row["tool"]: row for row in fam["rows"]})
        by_family[fam["family"]]["rows"] = list(rows.values())
    order = [f.label for f in FULL] + [f.label for f in QUICK]
    tools_order = list(__import__("tools").TOOLS)
    merged = sorted(by_family.values(),
                    key=lambda f: order.index(f["family"]) if f["family"] in order else 99)
    for fam in merged:
        fam["rows"].sort(key=lambda r: tools_order.index(r["tool"])
                         if r["tool"] in tools_order else 99)
    return merged


def _summary(cell: dict[str, Any]) -> str:
    if cell["status"] != "ok":
        return cell["status"]
    return (f"first {_fmt_time(cell['first'])}, re-solve {_fmt_time(cell['resolve'])}, "
            f"backward {_fmt_time(cell['backward'])}, x err {cell['x_err']:.0e}, "
            f"grad err {cell['grad_err']:.0e}")


def _cell(report: list[dict[str, Any]], family: str, tool: str) -> dict[str, Any] | None:
    for fam in report:
        if fam["family"] == family:
            for row in fam["rows"]:
                if row["tool"] == tool and row.get("status") == "ok":
                    return row
    return None


def summary(report: list[dict[str, Any]]) -> list[str]:
    """Re-solve + backward per family and tool, with gradient errors: one table."""
    tools: list[str] = []
    for fam in report:
        for row in fam["rows"]:
            if row["tool"] not in tools and row["tool"] != "diffmodel (osqp)":
                tools.append(row["tool"])
    head = "| problem | " + " | ".join(tools) + " |"
    lines = [head, "|---" * (len(tools) + 1) + "|"]
    for fam in report:
        cells = []
        for tool in tools:
            cell = _cell(report, fam["family"], tool)
            if cell is None:
                row = next((r for r in fam["rows"] if r["tool"] == tool), None)
                status = row["status"] if row else "—"
                cells.append("—" if status.startswith("not run") or row is None
                             else "not installed" if status.startswith("not installed")
                             else "did not finish" if "did not finish" in status else "failed")
            else:
                cells.append(f"{_fmt_time(cell['resolve_backward'])} ({cell['grad_err']:.0e})")
        lines.append(f"| {fam['family']} | " + " | ".join(cells) + " |")
    return lines


def targets(report: list[dict[str, Any]]) -> list[str]:
    """The performance targets, each with the measured ratio and a verdict."""
    rows: list[tuple[str, str, bool | None]] = []

    def ratio(family: str, tool: str, phase: str, other: str, other_phase: str | None = None,
              inverse: bool = False) -> float | None:
        a, b = _cell(report, family, tool), _cell(report, family, other)
        if a is None or b is None or phase not in a or (other_phase or phase) not in b:
            return None
        r = a[phase] / b[other_phase or phase]
        return 1 / r if inverse else r

    def add(text: str, value: float | None, ok: Callable[[float], bool], unit: str = "×") -> None:
        if value is None:
            rows.append((text, "not measured", None))
        else:
            rows.append((text, f"{value:.2f}{unit}", ok(value)))

    for peer in ("CVXPY backward()", "cvxpylayers"):
        add(f"n = 10: re-solve + backward ≥ 25× faster than {peer}",
            ratio("dense n=10", "diffmodel", "resolve_backward", peer, inverse=True),
            lambda v: v >= 25)
    add("n = 10: re-solve + backward ≤ 2× OSQP + adjoint",
        ratio("dense n=10", "diffmodel", "resolve_backward", "OSQP + adjoint"), lambda v: v <= 2)
    add("n = 20000: re-solve + backward ≤ 1.3× the limit (QDLDL)",
        ratio("banded n=20000", "diffmodel", "resolve_backward", "limit: qdldl"),
        lambda v: v <= 1.3)
    add("n = 20000: re-solve + backward vs SciPy splu (reference)",
        ratio("banded n=20000", "diffmodel", "resolve_backward", "limit: splu"),
        lambda v: v <= 1.3)
    add("n = 20000: first solve (compile included) ≤ 3× the limit's first solve",
        ratio("banded n=20000", "diffmodel", "first", "limit: qdldl"), lambda v: v <= 3)
    add("n = 20000: peak memory ≤ 2× the limit's",
        ratio("banded n=20000", "diffmodel", "peak_mib", "limit: qdldl"), lambda v: v <= 2)
    fam = next((f["family"] for f in report if f["family"].startswith("matrix parameter")), "")
    cell = _cell(report, fam, "diffmodel")
    add(f"{fam}: first solve (compile included) ≤ 1 s",
        cell["first"] if cell else None, lambda v: v <= 1.0, " s")
    add(f"{fam}: first solve ≥ 10× faster than CVXPY",
        ratio(fam, "diffmodel", "first", "CVXPY backward()", inverse=True), lambda v: v >= 10)
    worst = max((r["grad_err"] for f in report for r in f["rows"]
                 if r["tool"] == "diffmodel" and r.get("status") == "ok"), default=None)
    rows.append(("gradient error ≤ 1e-10 relative (all families)",
                 "not measured" if worst is None else f"{worst:.0e}",
                 None if worst is None else worst <= 1e-10))
    lines = ["| target | measured | met |", "|---|---|---|"]
    for text, value, ok in rows:
        verdict = "—" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {text} | {value} | {verdict} |")
    return lines


def markdown(report: list[dict[str, Any]], machine_text: str, quick: bool,
             date: str | None = None) -> str:
    lines = [
        "# Benchmark results" + (" (quick)" if quick else ""),
        "",
        f"Machine: {machine_text}. Date: {date or time.strftime('%Y-%m-%d')}.",
        "Command: `python benchmarks/run.py" + (" --quick" if quick else "") + "`.",
        "",
        "Times are medians after one warm-up. *first* = from problem data to the first",
        "solution (compile, set up, factor, solve); *re-solve* = new q and b; *backward* =",
        "gradient of gᵀx for all parameters; *forward* = dx along (dq, db); *Jacobian* = dx/db",
        f"(dense n × m; timed for m ≤ {JACOBIAN_MAX_M}). Errors are relative (2-norm) against an",
        "exact solve. Peak memory is the cell's resident high-water mark above its size before",
        "the problem was built, over the first solve, re-solves, backward and forward passes.",
        "",
        "## Summary: re-solve + backward (gradient error in parentheses)",
        "",
        *summary(report),
        "",
        "## Targets",
        "",
        "Ratios are diffmodel's time over the other tool's (below 1: diffmodel is faster), or",
        "the other tool's over diffmodel's where the target says \"faster than\".",
        "",
        *targets(report),
    ]
    for fam in report:
        rows = fam["rows"]
        ref = next((r for r in rows if r["tool"] == "diffmodel" and r["status"] == "ok"), None)
        lines += ["", f"## {fam['family']} (n = {fam['n']}, m = {fam['m']}; parameters "
                  f"{', '.join(fam['params'])})", "",
                  "| tool | first | re-solve | backward | re-solve + backward | forward | "
                  "Jacobian | peak MiB | x error | gradient error | re-solve + backward vs diffmodel |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"| {r['tool']} | {r['status']} |  |  |  |  |  |  |  |  |  |")
                continue
            ratio = (f"{r['resolve_backward'] / ref['resolve_backward']:.2f}×"
                     if ref else "—")
            lines.append(
                f"| {r['tool']} | {_fmt_time(r['first'])} | {_fmt_time(r['resolve'])} | "
                f"{_fmt_time(r['backward'])} | {_fmt_time(r['resolve_backward'])} | "
                f"{_fmt_time(r.get('forward'))} | {_fmt_time(r.get('jacobian'))} | "
                f"{r['peak_mib']:.0f} | {r['x_err']:.0e} | {r['grad_err']:.0e} | {ratio} |")
        if ref and "batch_solve" in ref:
            lines += ["", f"diffmodel `solve_batch` of {ref['batch_size']} (q, b) pairs: "
                      f"{_fmt_time(ref['batch_solve'])} "
                      f"({ref['batch_factorizations']} new factorizations: the model's was "
                      "reused); `backward_batch`: "
                      f"{_fmt_time(ref['batch_backward'])}. Factorizations over all "
                      f"re-solves: {ref['factorizations']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
