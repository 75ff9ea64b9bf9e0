"""diffmodel.torch.Layer: gradcheck for every kind of parameter, batches against
single solves, re-solves, vmap, dtypes, and agreement with diffmodel's NumPy
reverse mode, cvxpylayers and qpth.

The problems have strict complementarity with margins (multipliers of the
binding rows and slacks of the others at least ~0.1), so that central
differences see one active set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm

torch = pytest.importorskip("torch", reason='PyTorch is not installed: pip install '
                                            '"diffmodel[torch]" (CI installs it)')

from test_peers import peer_call

from diffmodel.torch import Layer

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64

# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------

from layer_problems import M_EQ, M_INEQ, N, batch_values, qp_model, qp_values


def tensors(values: dict[str, np.ndarray], grad: bool = True) -> dict[str, Any]:
    return {k: torch.tensor(v, dtype=F64, requires_grad=grad) for k, v in values.items()}


def symmetric(P: Any) -> Any:
    """P → (P + Pᵀ)/2: finite differences of single entries then keep P symmetric."""
    return 0.5 * (P + P.transpose(-1, -2))


def as_function(layer: Any, names: list[str]) -> Callable[..., tuple[Any, ...]]:
    """Positional tensors → the layer's outputs (P symmetrized), for gradcheck."""

    def fn(*args: Any) -> tuple[Any, ...]:
        values = dict(zip(names, args))
        if "P" in values:
            values["P"] = symmetric(values["P"])
        return tuple(layer(**values).values())

    return fn


def loss_grads(model: dm.Model, values: dict[str, np.ndarray], weights: dict[str, np.ndarray],
               ) -> dict[str, np.ndarray]:
    """diffmodel's NumPy reverse mode for ℓ = Σ ⟨weights[k], output k⟩ at one item."""
    sol = model.solve(**values)
    primal = {k: w for k, w in weights.items() if k in sol.primal}
    dual = {k: w for k, w in weights.items() if k in sol.dual}
    return sol.backward(primal, dual)


KINDS = {
    "equality": {"inequalities": False},
    "inequality": {"inequalities": True},
}
#: Which parameters carry the batch axis.
BATCHINGS = {
    "unbatched": (),
    "all": ("P", "q", "A", "b", "G", "h"),
    "K varies": ("P", "A", "G"),
    "rhs varies": ("q", "b", "h"),
}


# ---------------------------------------------------------------------------
# gradcheck, by kind of parameter and batching
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batching", list(BATCHINGS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck(kind: str, batching: str) -> None:
    ineq = KINDS[kind]["inequalities"]
    model = qp_model(inequalities=ineq)
    names = list(model.parameters)
    if batching == "unbatched":
        values = qp_values(3, inequalities=ineq)
    else:
        values = batch_values(3, 3, BATCHINGS[batching], inequalities=ineq)
    layer = Layer(model, outputs=["x", "eq", *(["ineq"] if ineq else [])])
    inputs = tensors({k: values[k] for k in names})
    assert torch.autograd.gradcheck(as_function(layer, names), tuple(inputs.values()),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("subset", [("q",), ("h",), ("G",), ("A", "b"), ("P",)])
def test_gradcheck_subset_of_parameters(subset: tuple[str, ...]) -> None:
    """Parameters not given use Parameter.value and get no gradient."""
    model = qp_model()
    values = qp_values(5)
    for name, param in model.parameters.items():
        param.value = values[name]
    layer = Layer(model, outputs=["x", "ineq"])
    inputs = tensors({k: values[k] for k in subset})
    assert torch.autograd.gradcheck(as_function(layer, list(subset)), tuple(inputs.values()),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_call_never_changes_parameter_values() -> None:
    model = qp_model()
    values = qp_values(1)
    for name, param in model.parameters.items():
        param.value = values[name]
    layer = Layer(model)
    layer(q=torch.tensor(values["q"] + 1.0))
    layer(q=torch.zeros(5, N, dtype=F64), h=torch.ones(M_INEQ, dtype=F64))
    for name, param in model.parameters.items():
        np.testing.assert_array_equal(param.value, values[name])


# ---------------------------------------------------------------------------
# Exactness: the NumPy reverse mode, batches against single solves
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batching", list(BATCHINGS))
def test_batch_equals_single_solves_and_numpy_backward(batching: str) -> None:
    model = qp_model()
    size = 5
    values = batch_values(7, size, BATCHINGS[batching]) if batching != "unbatched" else \
        qp_values(7)
    layer = Layer(model, outputs=["x", "eq", "ineq"])
    inputs = tensors(values)
    out = layer(**inputs)
    rng = np.random.default_rng(0)
    lead = () if batching == "unbatched" else (size,)
    weights = {k: rng.standard_normal(lead + v.shape[len(lead):]) for k, v in
               {k: out[k].detach().numpy() for k in out}.items()}
    loss = sum((out[k] * torch.tensor(w)).sum() for k, w in weights.items())
    loss.backward()
    items = range(size) if lead else [None]
    expected: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in values.items()}
    for i in items:
        item = {k: v[i] if (i is not None and k in BATCHINGS[batching]) else v
                for k, v in values.items()}
        sol = model.solve(**item)
        for k in ("x",):
            got = out[k].detach().numpy()[i] if i is not None else out[k].detach().numpy()
            np.testing.assert_allclose(got, sol.primal[k], rtol=1e-13, atol=1e-13)
        for k in ("eq", "ineq"):
            got = out[k].detach().numpy()[i] if i is not None else out[k].detach().numpy()
            np.testing.assert_allclose(got, sol.dual[k], rtol=1e-13, atol=1e-13)
        w = {k: v[i] if i is not None else v for k, v in weights.items()}
        grads = loss_grads(model, item, w)
        for k, g in grads.items():
            if i is not None and k in BATCHINGS[batching]:
                expected[k][i] = g
            else:
                expected[k] += g  # a broadcast parameter: the sum over the items
    for k, t in inputs.items():
        np.testing.assert_allclose(t.grad.numpy(), expected[k], rtol=1e-12, atol=1e-12,
                                   err_msg=k)


def test_gradients_of_a_first_call_are_exact_after_a_second_call() -> None:
    model = qp_model()
    layer = Layer(model, outputs=["x", "ineq"])
    first_values, second_values = batch_values(11, 4, ("P", "A", "q")), \
        batch_values(12, 4, ("P", "A", "q"))
    first, second = tensors(first_values), tensors(second_values)
    out1 = layer(**first)
    out2 = layer(**second)
    (out1["x"].sum() + out1["ineq"].sum()).backward()
    (out2["x"].sum()).backward()
    for i in range(4):
        item = {k: v[i] if k in ("P", "A", "q") else v for k, v in first_values.items()}
        ref = loss_grads(model, item, {"x": np.ones(N), "ineq": np.ones(M_INEQ)})
        for k in ("P", "A", "q"):
            np.testing.assert_allclose(first[k].grad.numpy()[i], ref[k], rtol=1e-12,
                                       atol=1e-12)


def test_grads_of_unused_outputs_and_inputs_without_grad() -> None:
    model = qp_model()
    values = qp_values(2)
    layer = Layer(model, outputs=["x", "ineq"])
    inputs = tensors(values, grad=False)
    inputs["h"].requires_grad_(True)
    out = layer(**inputs)
    out["ineq"].sum().backward()  # x unused
    ref = loss_grads(model, values, {"ineq": np.ones(M_INEQ)})
    np.testing.assert_allclose(inputs["h"].grad.numpy(), ref["h"], rtol=1e-12, atol=1e-14)
    assert all(inputs[k].grad is None for k in inputs if k != "h")


def test_n_jobs_gives_the_same_numbers() -> None:
    model = qp_model()
    values = batch_values(4, 7, ("P", "A", "q", "h"))
    results = []
    for n_jobs in (1, 3):
        inputs = tensors(values)
        out = Layer(model, outputs=["x", "eq"], n_jobs=n_jobs)(**inputs)
        (out["x"] ** 2).sum().add(out["eq"].sum()).backward()
        results.append((out["x"].detach(), {k: t.grad for k, t in inputs.items()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for k in values:
        torch.testing.assert_close(results[0][1][k], results[1][1][k], rtol=1e-14, atol=1e-15)


def test_n_jobs_errors_name_the_item_of_the_whole_batch() -> None:
    model = qp_model(inequalities=False)
    values = batch_values(4, 6, ("b",), inequalities=False)
    values["b"][4] = np.nan
    with pytest.raises(dm.ModelError, match=r"parameter 'b\[4\]'"):
        Layer(model, n_jobs=2)(**tensors(values))
    # An infeasible item (a zero row of A with b ≠ 0), numbered in the whole batch.
    values = batch_values(4, 6, ("A",), inequalities=False)
    values["A"][5] = 0.0
    with pytest.raises(dm.SolverError, match=r"^scenario 5: .*infeasible"):
        Layer(model, n_jobs=2)(**tensors(values))


def test_blas_threads_are_limited_during_a_call_and_restored() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not "
                                        'installed: pip install "diffmodel[torch]"')

    def blas() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}

    model = qp_model()
    seen: list[dict[str, int]] = []
    # Batched calls solve through solve_batch, single items through a plain solve.
    for method in ("solve_batch", "_solve_detached"):
        def spy(*args: Any, _original: Any = getattr(model, method), **values: Any) -> Any:
            seen.append(blas())
            return _original(*args, **values)

        setattr(model, method, spy)
    before = blas()
    for inputs in (tensors(qp_values(0)), tensors(batch_values(0, 3, ("q",)))):
        seen.clear()
        Layer(model)(**inputs)
        assert seen and set(seen[-1].values()) == {1}
        assert blas() == before
        seen.clear()
        Layer(model, blas_threads=None)(**inputs)
        assert seen[-1] == before
    with pytest.raises(dm.ModelError, match="blas_threads must be a positive integer"):
        Layer(model, blas_threads=0)


# ---------------------------------------------------------------------------
# Batch axes: broadcasting, errors
# ---------------------------------------------------------------------------


def test_mismatched_batch_sizes_name_the_parameters_and_sizes() -> None:
    model = qp_model()
    values = qp_values(0)
    layer = Layer(model)
    inputs = tensors(values)
    inputs["q"] = torch.zeros(3, N, dtype=F64)
    inputs["h"] = torch.zeros(4, M_INEQ, dtype=F64)
    with pytest.raises(dm.ModelError, match=(
            r"^batched parameters must share one leading batch axis, but 'h' has 4, "
            r"'q' has 3; give every batched parameter the same batch size "
            r"\(unbatched ones are broadcast\)$")):
        layer(**inputs)


def test_bad_inputs_are_the_models_errors() -> None:
    layer = Layer(qp_model())
    with pytest.raises(dm.ModelError, match=r"parameter 'q': expected shape \(4,\), got \(3,\)"):
        layer(q=torch.zeros(3, dtype=F64))
    with pytest.raises(dm.ModelError, match="unknown parameter name 'nope'"):
        layer(nope=torch.zeros(3, dtype=F64))
    with pytest.raises(dm.ModelError, match=r"output 'y' is neither a variable nor a constraint"):
        Layer(qp_model(), outputs=["x", "y"])
    with pytest.raises(dm.ModelError, match="n_jobs must be a positive integer"):
        Layer(qp_model(), n_jobs=0)
    with pytest.raises(dm.ModelError, match="a layer needs a diffmodel.Model"):
        Layer("model")  # type: ignore[arg-type]


def test_an_empty_batch_is_the_models_error() -> None:
    with pytest.raises(dm.ModelError, match="the batch is empty"):
        Layer(qp_model())(q=torch.zeros(0, N, dtype=F64))


def test_unbatched_call_has_no_batch_axis_and_no_scenario_index() -> None:
    model = qp_model(inequalities=False)
    values = qp_values(0, inequalities=False)
    values["A"] = np.zeros((M_EQ, N))
    with pytest.raises(dm.SolverError, match=r"^the constraints are inconsistent"):
        Layer(model)(**tensors(values))


# ---------------------------------------------------------------------------
# torch.func
# ---------------------------------------------------------------------------


def test_vmap_equals_the_batched_call() -> None:
    model = qp_model()
    values = batch_values(8, 5, ("P", "q", "h"))
    layer = Layer(model, outputs=["x", "ineq"])
    inputs = tensors(values)
    shared = {k: v for k, v in inputs.items() if k not in ("P", "q", "h")}
    batched = layer(**inputs)
    vmapped = torch.func.vmap(lambda P, q, h: layer(P=P, q=q, h=h, **shared))(
        inputs["P"], inputs["q"], inputs["h"])
    for k in batched:
        torch.testing.assert_close(vmapped[k], batched[k], rtol=0, atol=0)
    # Gradients through vmap equal those of the batched call.
    (batched["x"].sum() + batched["ineq"].sum()).backward()
    expected = {k: t.grad.clone() for k, t in inputs.items()}
    for t in inputs.values():
        t.grad = None
    (vmapped["x"].sum() + vmapped["ineq"].sum()).backward()
    for k, t in inputs.items():
        torch.testing.assert_close(t.grad, expected[k], rtol=1e-14, atol=1e-15)


def test_vmap_over_a_batched_call_and_nested_vmap() -> None:
    model = qp_model()
    values = batch_values(9, 3, ("q",))
    layer = Layer(model)
    inputs = tensors(values, grad=False)
    rest = {k: v for k, v in inputs.items() if k != "q"}
    Q = inputs["q"] + 0.01 * torch.randn(2, 3, N, dtype=F64, generator=torch.Generator()
                                          .manual_seed(0))
    out = torch.func.vmap(lambda q: layer(q=q, **rest)["x"])(Q)
    assert out.shape == (2, 3, N)
    for i in range(2):
        torch.testing.assert_close(out[i], layer(q=Q[i], **rest)["x"], rtol=0, atol=0)
    nested = torch.func.vmap(torch.func.vmap(lambda q: layer(q=q, **rest)["x"]))(Q)
    torch.testing.assert_close(nested, out, rtol=0, atol=0)


def test_torch_func_grad_and_jacrev() -> None:
    model = qp_model()
    values = qp_values(10)
    layer = Layer(model, outputs=["x"])
    fixed = {k: torch.tensor(v, dtype=F64) for k, v in values.items() if k != "q"}
    q = torch.tensor(values["q"], dtype=F64)
    g = torch.func.grad(lambda q: layer(q=q, **fixed)["x"].sum())(q)
    ref = loss_grads(model, values, {"x": np.ones(N)})
    np.testing.assert_allclose(g.numpy(), ref["q"], rtol=1e-12, atol=1e-14)
    J = torch.func.jacrev(lambda q: layer(q=q, **fixed)["x"])(q)
    model.solve(**values)
    np.testing.assert_allclose(J.numpy(), model.jacobian("x", "q"), rtol=1e-12, atol=1e-14)


def test_no_double_backward() -> None:
    layer = Layer(qp_model())
    inputs = tensors(qp_values(0))
    x = layer(**inputs)["x"]
    (gq,) = torch.autograd.grad(x.sum(), inputs["q"], create_graph=True)
    with pytest.raises(dm.DerivativeError, match="first derivatives only"):
        gq.sum().backward()


# ---------------------------------------------------------------------------
# dtypes, devices, modules
# ---------------------------------------------------------------------------


def test_float32_in_float32_out_solved_in_float64() -> None:
    model = qp_model()
    values = qp_values(6)
    layer = Layer(model, outputs=["x", "ineq"])
    inputs32 = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True)
                for k, v in values.items()}
    out = layer(**inputs32)
    assert all(t.dtype == torch.float32 for t in out.values())
    out["x"].sum().backward()
    assert all(t.grad.dtype == torch.float32 for t in inputs32.values())
    # Solved in float64 from the float32 values: equal to float64 rounded once.
    values32 = {k: v.detach().numpy().astype(np.float64) for k, v in inputs32.items()}
    out64 = layer(**tensors(values32, grad=False))
    torch.testing.assert_close(out["x"], out64["x"].to(torch.float32), rtol=0, atol=0)
    # Mixed: float64 wins (torch's promotion).
    mixed = dict(inputs32, q=torch.tensor(values["q"], dtype=F64))
    assert layer(**mixed)["x"].dtype == F64
    # Array-likes and Python numbers are float64.
    assert layer(**{k: v.tolist() for k, v in values.items()})["x"].dtype == F64


def test_outputs_on_the_device_of_the_inputs() -> None:
    # No GPU here: the device logic runs with the CPU (outputs and gradients take
    # the inputs' device and dtype); docs/layers.md says what happens on a GPU.
    layer = Layer(qp_model())
    inputs = tensors(qp_values(0))
    out = layer(**inputs)
    assert out["x"].device == inputs["q"].device == torch.device("cpu")
    out["x"].sum().backward()
    assert inputs["P"].grad.device == torch.device("cpu")


def test_module_behaviour() -> None:
    import copy
    import pickle

    model = qp_model()
    values = qp_values(0)
    layer = Layer(model, outputs="x")
    assert isinstance(layer, torch.nn.Module)
    assert repr(layer) == "Layer(outputs=['x'], n_jobs=1)"
    assert layer.model is model and layer.outputs == ("x",)
    assert list(layer.parameters()) == []
    expected = layer(**tensors(values))["x"]
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(clone(**tensors(values))["x"], expected, rtol=0, atol=0)
    seq = torch.nn.Sequential()  # composes like any module
    assert isinstance(seq, torch.nn.Module)


def test_a_call_without_inputs_uses_the_parameter_values() -> None:
    model = qp_model()
    values = qp_values(0)
    for name, param in model.parameters.items():
        param.value = values[name]
    out = Layer(model)()
    assert out["x"].dtype == F64 and out["x"].shape == (N,)
    np.testing.assert_allclose(out["x"].numpy(), model.solve().primal["x"], rtol=1e-14)
    with pytest.raises(dm.ModelError, match="have no values"):
        Layer(qp_model())()


# ---------------------------------------------------------------------------
# Imports: lazy, and a clear error without the extra
# ---------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "error"})


def test_importing_diffmodel_imports_neither_torch_nor_jax() -> None:
    # CVXPY itself may import JAX when it is installed: count what diffmodel adds.
    result = _python("import sys, cvxpy\n"
                     "before = set(sys.modules)\n"
                     "import diffmodel, diffmodel.torch, diffmodel.jax\n"
                     "new = sorted(m for m in set(sys.modules) - before\n"
                     "             if m.split('.')[0] in ('torch', 'jax', 'jaxlib'))\n"
                     "assert not new, new\n")
    assert result.returncode == 0, result.stderr


def test_without_torch_the_error_names_the_extra() -> None:
    result = _python("import sys, diffmodel.torch\n"
                     "sys.modules['torch'] = None  # as if not installed\n"
                     "try:\n    diffmodel.torch.Layer\n"
                     "except ImportError as exc:\n    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert 'pip install "diffmodel[torch]"' in result.stdout
    result = _python("import diffmodel.torch as t\ntry:\n    t.nothing\n"
                     "except AttributeError as exc:\n    print(exc)\n")
    assert "has no attribute 'nothing'" in result.stdout


# ---------------------------------------------------------------------------
# Peers: cvxpylayers (DPP problems), qpth (strictly convex problems)
# ---------------------------------------------------------------------------

CVXPYLAYERS = "cvxpylayers (diffcp)"
#: SCS (through diffcp) to tight tolerances: its default eps (1e-4) is not
#: enough for a comparison at 1e-4.
PEER_ARGS = {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 100_000}


# cvxpylayers' DIFFCP interface calls np.array on torch tensors, which NumPy 2
# answers with this DeprecationWarning (inside the peer, not about our use of it).
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"
                            ":DeprecationWarning")
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ineq", [False, True], ids=["equality", "inequality"])
def test_agrees_with_cvxpylayers(seed: int, ineq: bool, skip_peer_failure: Any) -> None:
    cvxpylayers_torch = pytest.importorskip(
        "cvxpylayers.torch", reason='cvxpylayers is not installed: pip install -e ".[bench]"')
    P0 = qp_values(seed, inequalities=ineq)["P"]
    model = qp_model(inequalities=ineq, p_parameter=False, P0=P0)
    values = {k: v for k, v in batch_values(seed, 3, ("q", "b", "h"), inequalities=ineq)
              .items() if k != "P"}
    names = list(model.parameters)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(model.variables["x"], P0)
                                     + model.parameters["q"] @ model.variables["x"]),
                         [c for c in model.constraints.values() if c is not None])
    assert problem.is_dpp()
    ours = tensors({k: values[k] for k in names})
    theirs = tensors({k: values[k] for k in names})
    weights = torch.tensor(np.random.default_rng(seed).standard_normal((3, N)))
    x_ours = Layer(model)(**ours)["x"]
    (x_ours * weights).sum().backward()
    x_ours = x_ours.detach()
    with peer_call(skip_peer_failure, CVXPYLAYERS, (cp.error.SolverError,)):
        peer = cvxpylayers_torch.CvxpyLayer(problem, parameters=[model.parameters[k] for k in
                                                                 names],
                                            variables=[model.variables["x"]])
        (x_theirs,) = peer(*theirs.values(), solver_args=PEER_ARGS)
        (x_theirs * weights).sum().backward()
    x_theirs = x_theirs.detach()
    err_x = float((x_ours - x_theirs).norm() / x_ours.norm())
    errs = {k: float((ours[k].grad - theirs[k].grad).norm() / ours[k].grad.norm())
            for k in names}
    if err_x > 1e-4 or max(errs.values()) > 1e-4:
        # Whose error? The exact reference is diffmodel's NumPy solve (itself
        # checked against Clarabel and finite differences elsewhere).
        skip_peer_failure(CVXPYLAYERS, f"relative errors x {err_x:.1e}, gradients {errs}")
    assert err_x <= 1e-4 and max(errs.values()) <= 1e-4


QPTH = "qpth"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("batching", ["unbatched", "all"])
def test_agrees_with_qpth(seed: int, batching: str, skip_peer_failure: Any) -> None:
    qpth_qp = pytest.importorskip("qpth.qp", reason="qpth is not installed: pip install "
                                                    "--no-deps qpth")
    model = qp_model()
    values = qp_values(seed) if batching == "unbatched" else \
        batch_values(seed, 4, BATCHINGS["all"])
    ours, theirs = tensors(values), tensors(values)
    rng = np.random.default_rng(seed)
    weights = torch.tensor(rng.standard_normal(values["q"].shape))
    x_ours = Layer(model)(**ours)["x"]
    (x_ours * weights).sum().backward()
    x_ours = x_ours.detach()
    with peer_call(skip_peer_failure, QPTH):
        fn = qpth_qp.QPFunction(verbose=-1, eps=1e-14, maxIter=100)
        x_theirs = fn(symmetric(theirs["P"]), theirs["q"], theirs["G"], theirs["h"],
                      theirs["A"], theirs["b"])
        if batching == "unbatched":
            x_theirs = x_theirs[0]
        (x_theirs * weights).sum().backward()
    x_theirs = x_theirs.detach()
    err_x = float((x_ours - x_theirs).norm() / x_ours.norm())
    errs = {k: float((ours[k].grad - theirs[k].grad).norm() / ours[k].grad.norm())
            for k in values}
    if err_x > 1e-6 or max(errs.values()) > 1e-5:
        skip_peer_failure(QPTH, f"relative errors x {err_x:.1e}, gradients {errs}")
    assert err_x <= 1e-6 and max(errs.values()) <= 1e-5
