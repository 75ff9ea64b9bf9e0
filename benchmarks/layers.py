"""Differentiable QP layers side by side on the CPU: diffmodel's PyTorch and JAX
layers against cvxpylayers, qpth, ProxSuite's QPLayer and a loop of OSQP with
its adjoint derivative.

    python benchmarks/layers.py            # full run: writes benchmarks/layers.{md,json}
    python benchmarks/layers.py --quick    # n = 10 only, small batches: a smoke run

The problems: minimize ½xᵀPx + qᵀx s.t. Ax = b [, Gx ≤ h], x ∈ ℝⁿ, m = n/2
equalities and, with inequalities, n/2 rows of G of which half bind at the
optimum (multipliers in [0.5, 1.5], the other rows slack by [0.5, 1.5], so
the active set is known and strictly complementary). P = MMᵀ/n + I, A and G
dense. Every item is built from its chosen optimum (x, ν, λ), so the exact
reference is a dense solve of the KKT system over the binding rows, and the
exact gradient of ℓ = Σᵢ ⟨wᵢ, xᵢ⟩ (random wᵢ) follows in closed form.

Cells: n = 10, 100, 500; equality-only and with inequalities; batch 1, and
batch 128 with "all data vary" (P, A, G and q, b, h per item) or "q, b, h
vary" (P, A, G shared by the batch). Each tool gets every piece of data as a
tensor that requires a gradient (shared pieces without a batch axis) and is
timed for forward + backward (inputs to gradients), the median of repeats
after a warm-up call. The gradient error is ‖g − g_ref‖ / ‖g_ref‖ over all
gradients the tool returns. cvxpylayers cannot take P as a parameter (DPP):
it gets L with P = LᵀL and its gradient is compared with 2 L ∂ℓ/∂P. qpth and
ProxSuite need an inequality block: equality-only problems get one slack row
0ᵀx ≤ 1. Peers run with their default accuracy settings, except qpth
(eps = 1e-12, 50 iterations, as in benchmarks/tools.py) and OSQP
(eps 1e-9 with polishing, as in benchmarks/tools.py).

Each (tool, n, constraints) group runs in its own subprocess with a time
limit; within it, a batch-128 cell whose time, estimated as 128 × the
batch-1 time, exceeds 60 s is skipped with a note. Timings on this shared
2-core machine vary by up to 2× between runs. OpenBLAS runs one thread per
process (OPENBLAS_NUM_THREADS=1, set below unless already set), as in the
recorded runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
CELL_LIMIT = 60.0      # seconds: a cell estimated above this is skipped
GROUP_LIMIT = 420.0    # seconds: a subprocess (one tool, one problem size) is stopped
BIG = 128
Arrays = dict[str, np.ndarray]

# --------------------------------------------------------------------------- problems


@dataclass
class Case:
    """One cell's data: arrays by name, with a leading batch axis where ``batched``."""

    n: int
    ineq: bool
    batch: int
    vary: str            # "single", "all", "rhs"
    data: Arrays
    batched: frozenset[str]
    weights: np.ndarray  # (batch, n): ℓ = Σᵢ ⟨wᵢ, xᵢ⟩
    active: np.ndarray   # (batch, p) bool

    @property
    def names(self) -> list[str]:
        return ["P", "q", "A", "b", *(["G", "h"] if self.ineq else [])]

    def item(self, i: int) -> Arrays:
        return {k: v[i] if k in self.batched else v for k, v in self.data.items()}


def make_case(n: int, ineq: bool, batch: int, vary: str, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    m, p = n // 2, (n // 2 if ineq else 0)

    def matrices() -> Arrays:
        M = rng.standard_normal((n, n))
        out = {"P": M @ M.T / n + np.eye(n),
               "A": rng.standard_normal((m, n)) / np.sqrt(n) + 2 * np.eye(m, n)}
        if ineq:
            out["G"] = rng.standard_normal((p, n)) / np.sqrt(n)
        return out

    shared = matrices() if vary != "all" else None
    items: list[Arrays] = []
    active = np.zeros((batch, p), dtype=bool)
    for i in range(batch):
        mats = shared if shared is not None else matrices()
        x, nu = rng.standard_normal(n), rng.standard_normal(m)
        item = dict(mats, b=mats["A"] @ x)
        grad = mats["P"] @ x + mats["A"].T @ nu
        if ineq:
            on = np.zeros(p, dtype=bool)
            on[rng.permutation(p)[: p // 2]] = True
            lam = np.where(on, rng.uniform(0.5, 1.5, p), 0.0)
            item["h"] = mats["G"] @ x + np.where(on, 0.0, rng.uniform(0.5, 1.5, p))
            grad = grad + mats["G"].T @ lam
            active[i] = on
        item["q"] = -grad
        items.append(item)
    batched = {"q", "b", "h"} if vary == "rhs" else set(items[0])
    if batch == 1:
        batched = set()
    data = {k: (np.stack([it[k] for it in items]) if k in batched else items[0][k])
            for k in items[0]}
    weights = rng.standard_normal((batch, n))
    return Case(n, ineq, batch, vary, data, frozenset(batched) if batch > 1 else frozenset(),
                weights, active)


def reference(case: Case) -> tuple[np.ndarray, Arrays]:
    """Exact solutions and gradients: dense KKT solves over the binding rows.

    With F = (Px + q + Aᵀν + G_Sᵀλ_S, Ax − b, G_S x − h_S) and ω = K⁻¹(w, 0, 0):
    dℓ/dq = −ω_x, dℓ/db = ω_ν, dℓ/dh_S = ω_λ, dℓ/dP = −½(ω_x xᵀ + x ω_xᵀ),
    dℓ/dA = −(ν ω_xᵀ + ω_ν xᵀ), dℓ/dG_S = −(λ ω_xᵀ + ω_λ xᵀ).
    """
    n = case.n
    X = np.zeros((case.batch, n))
    grads = {k: np.zeros((case.batch, *np.shape(v)[1 if k in case.batched else 0:]))
             for k, v in case.data.items()}
    for i in range(case.batch):
        d = case.item(i)
        rows = [d["A"]]
        rhs = [d["b"]]
        if case.ineq:
            S = case.active[i]
            rows.append(d["G"][S])
            rhs.append(d["h"][S])
        C = np.vstack(rows)
        k = C.shape[0]
        K = np.block([[d["P"], C.T], [C, np.zeros((k, k))]])
        z = np.linalg.solve(K, np.concatenate([-d["q"], *rhs]))
        x, y = z[:n], z[n:]
        omega = np.linalg.solve(K, np.concatenate([case.weights[i], np.zeros(k)]))
        wx, wy = omega[:n], omega[n:]
        m = d["A"].shape[0]
        X[i] = x
        g = {"q": -wx, "b": wy[:m], "P": -0.5 * (np.outer(wx, x) + np.outer(x, wx)),
             "A": -(np.outer(y[:m], wx) + np.outer(wy[:m], x))}
        if case.ineq:
            S = case.active[i]
            gh = np.zeros(len(S))
            gh[S] = wy[m:]
            gG = np.zeros_like(d["G"])
            gG[S] = -(np.outer(y[m:], wx) + np.outer(wy[m:], x))
            g |= {"h": gh, "G": gG}
        for key, value in g.items():
            grads[key][i] = value
    return X, {k: (v if k in case.batched else v.sum(axis=0)) for k, v in grads.items()}


# --------------------------------------------------------------------------- tools


class Tool:
    name = "tool"
    note = ""
    #: Imported before construction is timed (import time is not construction).
    imports: tuple[str, ...] = ("torch",)

    def setup(self, n: int, ineq: bool) -> None:
        """Build the layer for this size (timed separately, as construction)."""

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        """Forward + backward: (X of shape (batch, n), gradients by name)."""
        raise NotImplementedError


def _torch_inputs(case: Case, names: list[str]) -> dict[str, Any]:
    import torch

    return {k: torch.tensor(case.data[k], dtype=torch.float64, requires_grad=True)
            for k in names}


def _torch_grads(inputs: dict[str, Any], X: Any, case: Case) -> tuple[np.ndarray, Arrays]:
    import torch

    X = X.reshape(case.batch, case.n)
    (X * torch.from_numpy(case.weights)).sum().backward()
    return X.detach().numpy(), {k: t.grad.numpy() for k, t in inputs.items()}


def _diffmodel_model(n: int, ineq: bool) -> Any:
    import cvxpy as cp

    import diffmodel as dm

    m = n // 2
    x = cp.Variable(n, name="x")
    P = cp.Parameter((n, n), name="P", PSD=True)
    q = cp.Parameter(n, name="q")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    cons = {"eq": A @ x == b}
    if ineq:
        G = cp.Parameter((m, n), name="G")
        h = cp.Parameter(m, name="h")
        cons["ineq"] = G @ x <= h
    return dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), cons)


class DiffmodelTorch(Tool):
    name = "diffmodel (torch)"
    imports = ("torch", "diffmodel.torch")

    def __init__(self, n_jobs: int = 1, blas_threads: int | None = 1) -> None:
        self.n_jobs, self.blas_threads = n_jobs, blas_threads

    def setup(self, n: int, ineq: bool) -> None:
        from diffmodel.torch import Layer

        self.layer = Layer(_diffmodel_model(n, ineq), n_jobs=self.n_jobs,
                           blas_threads=self.blas_threads)

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        inputs = _torch_inputs(case, case.names)
        return _torch_grads(inputs, self.layer(**inputs)["x"], case)


class DiffmodelJax(Tool):
    name = "diffmodel (JAX, jit)"
    imports = ("jax", "diffmodel.jax")

    def setup(self, n: int, ineq: bool) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        from diffmodel.jax import layer

        f = layer(_diffmodel_model(n, ineq))

        def loss(values: dict[str, Any], w: Any) -> Any:
            x = f(**values)["x"]
            return jnp.sum(x.reshape(w.shape) * w), x

        self.fn = jax.jit(jax.grad(loss, has_aux=True))

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        grads, X = self.fn({k: case.data[k] for k in case.names}, case.weights)
        return np.asarray(X).reshape(case.batch, case.n), {k: np.asarray(v) for k, v in
                                                           grads.items()}


class CvxpyLayers(Tool):
    imports = ("torch", "cvxpylayers.torch")
    name = "cvxpylayers"
    note = "P = LᵀL with L a parameter (DPP); default settings (diffcp + SCS)"

    def setup(self, n: int, ineq: bool) -> None:
        import cvxpy as cp
        from cvxpylayers.torch import CvxpyLayer

        m = n // 2
        x = cp.Variable(n)
        self.params = {"L": cp.Parameter((n, n)), "q": cp.Parameter(n),
                       "A": cp.Parameter((m, n)), "b": cp.Parameter(m)}
        cons = [self.params["A"] @ x == self.params["b"]]
        if ineq:
            self.params |= {"G": cp.Parameter((m, n)), "h": cp.Parameter(m)}
            cons.append(self.params["G"] @ x <= self.params["h"])
        objective = 0.5 * cp.sum_squares(self.params["L"] @ x) + self.params["q"] @ x
        self.layer = CvxpyLayer(cp.Problem(cp.Minimize(objective), cons),
                                parameters=list(self.params.values()), variables=[x])

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        import torch

        L = np.linalg.cholesky(case.data["P"]).swapaxes(-1, -2)  # P = LᵀL
        inputs = {k: torch.tensor(L if k == "L" else case.data[k], dtype=torch.float64,
                                  requires_grad=True) for k in self.params}
        (X,) = self.layer(*inputs.values())
        return _torch_grads(inputs, X, case)


def _slack_row(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """An inactive row 0ᵀx ≤ 1 for tools that need an inequality block."""
    return np.zeros((1, case.n)), np.ones(1)


class Qpth(Tool):
    name = "qpth"
    note = ("eps 1e-12, 50 iterations; shared data expanded to the batch with torch's "
            "expand (qpth averages, rather than sums, the gradients of data it broadcasts "
            "itself)")

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        import torch
        from qpth.qp import QPFunction

        names = case.names
        inputs = _torch_inputs(case, names)
        if case.ineq:
            G, h = inputs["G"], inputs["h"]
        else:
            G, h = (torch.tensor(a) for a in _slack_row(case))
        data = dict(inputs, G=G, h=h)
        if case.batch > 1:
            shape = {"P": 2, "q": 1, "A": 2, "b": 1, "G": 2, "h": 1}
            data = {k: v if v.dim() > shape[k] else v.expand(case.batch, *v.shape)
                    for k, v in data.items()}
        X = QPFunction(verbose=-1, eps=1e-12, maxIter=50)(
            data["P"], data["q"], data["G"], data["h"], data["A"], data["b"])
        return _torch_grads(inputs, X, case)


class ProxSuite(Tool):
    imports = ("torch", "proxsuite.torch.qplayer")
    name = "ProxSuite QPLayer"
    note = "proxsuite.torch.qplayer.QPFunction, default settings"

    def __init__(self) -> None:
        import proxsuite.torch.qplayer  # noqa: F401

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        import torch
        from proxsuite.torch.qplayer import QPFunction

        inputs = _torch_inputs(case, case.names)
        if case.ineq:
            G, u = inputs["G"], inputs["h"]
        else:
            G, u = (torch.tensor(a) for a in _slack_row(case))
        lower = torch.full(u.shape, -1e20, dtype=torch.float64)
        X, _, _ = QPFunction()(inputs["P"], inputs["q"], inputs["A"], inputs["b"], G, lower, u)
        return _torch_grads(inputs, X, case)


class OSQPLoop(Tool):
    imports = ("osqp",)
    name = "OSQP + adjoint (loop)"
    note = "osqp 1.x, eps 1e-9 with polishing; one solve and adjoint per item"

    def step(self, case: Case) -> tuple[np.ndarray, Arrays]:
        import osqp
        import scipy.sparse as sp

        n, m = case.n, case.data["A"].shape[-2]
        X = np.zeros((case.batch, n))
        grads = {k: np.zeros_like(v) for k, v in case.data.items()}
        solver = None
        for i in range(case.batch):
            d = case.item(i)
            C = np.vstack([d["A"], d["G"]]) if case.ineq else d["A"]
            lo = np.concatenate([d["b"], np.full(len(d.get("h", [])), -np.inf)])
            up = np.concatenate([d["b"], d.get("h", np.zeros(0))])
            Pu, Cs = sp.triu(sp.csc_matrix(d["P"]), format="csc"), sp.csc_matrix(C)
            if solver is None:
                solver = osqp.OSQP()
                solver.setup(Pu, d["q"], Cs, lo, up, verbose=False, eps_abs=1e-9, eps_rel=1e-9,
                             polishing=True, max_iter=100_000)
            elif "P" in case.batched:
                solver.update(Px=Pu.data, Ax=Cs.data, q=d["q"], l=lo, u=up)
            else:
                solver.update(q=d["q"], l=lo, u=up)
            result = solver.solve(raise_error=False)
            if result.info.status != "solved":
                raise RuntimeError(f"OSQP: {result.info.status}")
            X[i] = result.x
            solver.adjoint_derivative_compute(dx=case.weights[i])
            dq, dl, du = solver.adjoint_derivative_get_vec()
            dP, dC = solver.adjoint_derivative_get_mat(as_dense=True, dP_as_triu=False)
            g = {"q": dq, "b": dl[:m] + du[:m], "P": dP, "A": dC[:m]}
            if case.ineq:
                g |= {"G": dC[m:], "h": du[m:]}
            for k, v in g.items():
                if k in case.batched:
                    grads[k][i] = v
                else:
                    grads[k] += v
        return X, grads


TOOLS: dict[str, Callable[[], Tool]] = {
    "diffmodel (torch)": DiffmodelTorch,
    "diffmodel (torch, n_jobs=2)": lambda: DiffmodelTorch(n_jobs=2),
    "diffmodel (torch, blas_threads=None)": lambda: DiffmodelTorch(blas_threads=None),
    "diffmodel (JAX, jit)": DiffmodelJax,
    "cvxpylayers": CvxpyLayers,
    "qpth": Qpth,
    "ProxSuite QPLayer": ProxSuite,
    "OSQP + adjoint (loop)": OSQPLoop,
}
#: Tools measured at batch 128 only (the n_jobs experiment).
BATCH_ONLY = {"diffmodel (torch, n_jobs=2)", "diffmodel (torch, blas_threads=None)"}
#: Environment of a tool's subprocess (none needed so far).
TOOL_ENV: dict[str, dict[str, str]] = {}


# --------------------------------------------------------------------------- measuring


def _error(case: Case, X: np.ndarray, grads: Arrays, ref: tuple[np.ndarray, Arrays],
           tool: str) -> tuple[float, float]:
    X_ref, g_ref = ref
    if tool == "cvxpylayers":  # its gradient is with respect to L, P = LᵀL
        L = np.linalg.cholesky(case.data["P"]).swapaxes(-1, -2)
        g_ref = dict(g_ref, L=2 * L @ g_ref["P"])  # dP = dLᵀL + LᵀdL, ∂ℓ/∂P symmetric
        g_ref.pop("P")
    keys = sorted(g_ref)
    got = np.concatenate([np.ravel(grads[k]) for k in keys])
    want = np.concatenate([np.ravel(g_ref[k]) for k in keys])
    err_g = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    err_x = float(np.linalg.norm(X - X_ref) / np.linalg.norm(X_ref))
    return err_x, err_g


def _timed(tool: Tool, case: Case, repeats: int) -> tuple[list[float], tuple[np.ndarray, Arrays]]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = tool.step(case)
        times.append(time.perf_counter() - t0)
    assert out is not None
    return times, out


def run_group(tool_name: str, n: int, ineq: bool, batches: list[int]) -> list[dict[str, Any]]:
    """One tool on one problem size: construction, then every cell."""
    import warnings

    warnings.simplefilter("ignore")  # peers' deprecation and accuracy chatter
    rows: list[dict[str, Any]] = []
    base = {"tool": tool_name, "n": n, "ineq": ineq}
    try:
        tool = TOOLS[tool_name]()
        for module in tool.imports:
            __import__(module)
        t0 = time.perf_counter()
        tool.setup(n, ineq)
        construction = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        return [dict(base, status="not available", note=f"{type(exc).__name__}: {exc}")]
    per_item: float | None = None
    cells = [(1, "single")] + [(b, v) for b in batches if b > 1 for v in ("all", "rhs")]
    for batch, vary in cells:
        row = dict(base, batch=batch, vary=vary, construction=construction)
        if batch == 1 and tool_name in BATCH_ONLY:
            continue
        if per_item is not None and per_item * batch > CELL_LIMIT:
            rows.append(dict(row, status="skipped",
                             note=f"estimated {per_item * batch:.0f} s > {CELL_LIMIT:.0f} s"))
            continue
        case = make_case(n, ineq, batch, vary, seed=n + batch + (vary == "rhs"))
        try:
            ref = reference(case)
            warm, out = _timed(tool, case, 1)  # warm-up (and the answer checked)
            repeats = (5 if warm[0] < 0.5 else 3 if warm[0] < 5.0 else 1 if warm[0] < 20.0
                       else 0)
            times = _timed(tool, case, repeats)[0] if repeats else warm
        except Exception as exc:  # noqa: BLE001 - a tool's failure is recorded
            rows.append(dict(row, status="failed", note=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        err_x, err_g = _error(case, *out, ref, tool_name)
        seconds = statistics.median(times)
        if batch == 1:
            per_item = seconds
        rows.append(dict(row, status="ok", seconds=seconds, repeats=len(times),
                         error_x=err_x, error_grad=err_g, load=os.getloadavg()[0],
                         note="single run" if not repeats else ""))
    return rows


def _group_in_subprocess(tool: str, n: int, ineq: bool, batches: list[int]) -> list[dict]:
    cmd = [sys.executable, __file__, "--group", json.dumps([tool, n, ineq, batches])]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=GROUP_LIMIT,
                                check=False,
                                env={**os.environ, **TOOL_ENV.get(tool, {})})
    except subprocess.TimeoutExpired:
        return [{"tool": tool, "n": n, "ineq": ineq, "status": "timeout",
                 "note": f"not finished in {GROUP_LIMIT:.0f} s (construction and cells)"}]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        return [{"tool": tool, "n": n, "ineq": ineq, "status": "failed",
                 "note": (result.stderr.strip().splitlines() or ["no output"])[-1][:300]}]
    return [json.loads(ln) for ln in lines]


# --------------------------------------------------------------------------- report


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    if row["status"] == "ok":
        return f"{_fmt_time(row['seconds'])} ({row['error_grad']:.0e})"
    return {"skipped": "skipped", "timeout": "timeout", "failed": "failed",
            "not available": "n/a"}[row["status"]]


VARY = {"single": "one item", "all": "all data vary", "rhs": "q, b, h vary"}


def report(rows: list[dict[str, Any]], env: dict[str, Any]) -> tuple[str, list[dict]]:
    tools = [t for t in TOOLS if any(r["tool"] == t for r in rows)]
    cells = sorted({(r["n"], r["ineq"], r["batch"], r["vary"]) for r in rows if "batch" in r},
                   key=lambda c: (c[0], c[1], c[2], c[3] != "all"))
    index = {(r["tool"], r["n"], r["ineq"], r.get("batch"), r.get("vary")): r for r in rows}
    head = "| n | constraints | batch | data | " + " | ".join(tools) + " |"
    lines = [f"Machine: {env['machine']}. Date: {env['date']}. {env['threads']}", "",
             ("Forward + backward (inputs to gradients), median time, and the gradient's "
              "relative error against an exact dense KKT solve:"), "", head,
             "|" + "---|" * (4 + len(tools))]
    for n, ineq, batch, vary in cells:
        entries = []
        for tool in tools:
            row = index.get((tool, n, ineq, batch, vary))
            if row is None:  # a group that did not produce cells
                row = index.get((tool, n, ineq, None, None))
                if row is not None and tool in BATCH_ONLY and batch == 1:
                    row = None
            entries.append(_cell(row))
        lines.append(f"| {n} | {'eq + ineq' if ineq else 'eq'} | {batch} | {VARY[vary]} | "
                     + " | ".join(entries) + " |")
    notes = sorted({f"{r['tool']}, n={r['n']}, {'eq + ineq' if r['ineq'] else 'eq'}"
                    f"{', batch ' + str(r['batch']) + ' ' + VARY[r['vary']] if 'batch' in r else ''}"
                    f": {r['status']}: {r['note']}" for r in rows
                    if r["status"] != "ok" and r.get("note")})
    construction = sorted({(r["tool"], r["n"], r["ineq"], r["construction"]) for r in rows
                           if "construction" in r and r["tool"].startswith("diffmodel (torch)")
                           and r["tool"] == "diffmodel (torch)"})
    lines += ["", "Layer construction (model compile + layer), diffmodel (torch): "
              + ", ".join(f"n={n} {'eq + ineq' if i else 'eq'}: {_fmt_time(s)}"
                          for _, n, i, s in construction)]
    targets = _targets(index)
    lines += ["", "Targets (batch 128, n = 100):", "", "| target | measured | met |",
              "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in targets]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += ["", "Peer settings: " + "; ".join(f"{name}: {note}"
                                                 for name, note in _tool_notes().items()) + "."]
    return "\n".join(lines) + "\n", targets


def _tool_notes() -> dict[str, str]:
    return {"cvxpylayers": CvxpyLayers.note, "qpth": Qpth.note,
            "ProxSuite QPLayer": ProxSuite.note, "OSQP + adjoint (loop)": OSQPLoop.note}


def _targets(index: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, str]]:
    out = []

    def ratio(peer: str, factor: float) -> None:
        for ineq in (False, True):
            for vary in ("all", "rhs"):
                ours = index.get(("diffmodel (torch)", 100, ineq, BIG, vary))
                theirs = index.get((peer, 100, ineq, BIG, vary))
                label = (f"{'eq + ineq' if ineq else 'eq'}, {VARY[vary]}: ≥ {factor:.0f}× "
                         f"faster than {peer}")
                if not ours or ours["status"] != "ok" or not theirs or theirs["status"] != "ok":
                    out.append({"target": label, "measured": "not measured", "met": "—"})
                    continue
                r = theirs["seconds"] / ours["seconds"]
                out.append({"target": label, "measured": f"{r:.1f}×",
                            "met": "yes" if r >= factor else "no"})

    ratio("cvxpylayers", 10)
    ratio("qpth", 3)
    errs = [r["error_grad"] for k, r in index.items()
            if k[0] == "diffmodel (torch)" and r["status"] == "ok"]
    if errs:
        worst = max(errs)
        out.append({"target": "gradient error ≤ 1e-9 (diffmodel, every cell)",
                    "measured": f"{worst:.0e}", "met": "yes" if worst <= 1e-9 else "no"})
    cons = [r["construction"] for k, r in index.items()
            if k[0] == "diffmodel (torch)" and k[1] == 100 and "construction" in r]
    if cons:
        out.append({"target": "layer construction, n = 100 dense matrix parameters < 1 s",
                    "measured": _fmt_time(max(cons)), "met": "yes" if max(cons) < 1 else "no"})
    return out


def environment() -> dict[str, Any]:
    import numpy
    import scipy

    versions = [f"Python {platform.python_version()}", f"NumPy {numpy.__version__}",
                f"SciPy {scipy.__version__}"]
    for module in ("torch", "jax", "cvxpylayers", "qpth", "proxsuite", "osqp"):
        try:
            mod = __import__(module)
            versions.append(f"{module} {getattr(mod, '__version__', '?')}")
        except ImportError:
            versions.append(f"{module} not installed")
    from machine import cpu_name

    cpu = cpu_name()
    try:
        import torch

        torch_threads = f"; torch's own threads (the PyTorch peers): {torch.get_num_threads()}"
    except ImportError:
        torch_threads = ""
    threads = ("BLAS threads: OPENBLAS_NUM_THREADS="
               f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}{torch_threads}, load "
               f"average before the run {os.getloadavg()[0]:.2f}.")
    return {"machine": f"{cpu}, {os.cpu_count()} cores, " + ", ".join(versions),
            "date": time.strftime("%Y-%m-%d"), "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 10, batch 8: a smoke run")
    parser.add_argument("--tools", nargs="*", default=list(TOOLS), help="tools to run")
    parser.add_argument("--sizes", nargs="*", type=int, default=None, help="values of n")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows of these tools and sizes in the existing "
                             "benchmarks/layers.json, keep the others, and rewrite layers.md")
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.group:
        tool, n, ineq, batches = json.loads(args.group)
        for row in run_group(tool, n, ineq, batches):
            print(json.dumps(row), flush=True)
        return
    sizes = args.sizes or ([10] if args.quick else [10, 100, 500])
    batches = [1, 8] if args.quick else [1, BIG]
    env = environment()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for ineq in (False, True):
            for tool in args.tools:
                t0 = time.perf_counter()
                got = _group_in_subprocess(tool, n, ineq, batches)
                rows += got
                print(f"{tool:28s} n={n:<4d} {'eq+ineq' if ineq else 'eq     '} "
                      f"{time.perf_counter() - t0:6.1f} s  "
                      + "  ".join(_cell(r) for r in got), file=sys.stderr, flush=True)
    env["threads"] += f" Load average after the run {os.getloadavg()[0]:.2f}."
    if args.merge:  # the other tools' and sizes' rows from the previous run
        previous = json.loads((HERE / "layers.json").read_text(encoding="utf-8"))
        kept = [r for r in previous["rows"]
                if not (r["tool"] in args.tools and r["n"] in sizes)]
        rows = kept + rows
        note = (f" Rows of {', '.join(args.tools)} at n = "
                f"{', '.join(map(str, sizes))} rerun on {env['date']}.")
        earlier = previous["environment"]["threads"].partition(" Rows of ")
        if earlier[1]:  # the notes of earlier merges still describe rows kept
            env["threads"] += (earlier[1] + earlier[2]).replace(note, "")
        env["threads"] += note
    table, targets = report(rows, env)
    print(table)
    if not args.quick:
        (HERE / "layers.md").write_text("# Layers benchmark\n\nWritten by "
                                        "`python benchmarks/layers.py`.\n\n" + table,
                                        encoding="utf-8")
        (HERE / "layers.json").write_text(json.dumps({"environment": env, "rows": rows,
                                                      "targets": targets}, indent=1) + "\n",
                                          encoding="utf-8")


if __name__ == "__main__":
    main()
