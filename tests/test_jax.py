"""diffmodel.jax.layer: check_grads for every kind of parameter (eager and under
jit), batches against single solves, vmap in one callback, re-solves, dtypes,
errors, and agreement with diffmodel's NumPy reverse mode.

The problems are those of tests/test_torch.py (built again here so that this
module does not need PyTorch): strict complementarity with margins, so that
central differences see one active set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import diffmodel as dm

jax = pytest.importorskip("jax", reason='JAX is not installed: pip install "diffmodel[jax]" '
                                        "(CI installs it)")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
from jax.test_util import check_grads

from diffmodel.jax import layer

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# Problems (tests/layer_problems.py)
# ---------------------------------------------------------------------------

from layer_problems import M_EQ, M_INEQ, N, batch_values, qp_model, qp_values


def symmetric(P: Any) -> Any:
    return 0.5 * (P + jnp.swapaxes(P, -1, -2))


def positional(f: Any, names: list[str]) -> Any:
    """Positional arrays → the layer's outputs as a tuple (P symmetrized)."""

    def fn(*args: Any) -> tuple[Any, ...]:
        values = dict(zip(names, args))
        if "P" in values:
            values["P"] = symmetric(values["P"])
        return tuple(f(**values).values())

    return fn


BATCHINGS = {
    "unbatched": (),
    "all": ("P", "q", "A", "b", "G", "h"),
    "K varies": ("P", "A", "G"),
    "rhs varies": ("q", "b", "h"),
}


def values_for(batching: str, seed: int, size: int = 3, inequalities: bool = True
               ) -> dict[str, np.ndarray]:
    if batching == "unbatched":
        return qp_values(seed, inequalities=inequalities)
    return batch_values(seed, size, BATCHINGS[batching], inequalities=inequalities)


# ---------------------------------------------------------------------------
# check_grads, eager and under jit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("batching", list(BATCHINGS))
@pytest.mark.parametrize("ineq", [False, True], ids=["equality", "inequality"])
def test_check_grads(ineq: bool, batching: str, jit: bool) -> None:
    model = qp_model(inequalities=ineq)
    names = list(model.parameters)
    values = values_for(batching, 3, inequalities=ineq)
    f = layer(model, outputs=["x", "eq", *(["ineq"] if ineq else [])])
    fn = positional(f, names)
    check_grads(jax.jit(fn) if jit else fn, tuple(values[k] for k in names), order=1,
                modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_check_grads_under_vmap() -> None:
    model = qp_model()
    values = batch_values(4, 3, ("P", "q", "h"))
    f = layer(model, outputs=["x", "ineq"])
    rest = {k: v for k, v in values.items() if k not in ("P", "q", "h")}
    fn = jax.vmap(lambda P, q, h: tuple(f(P=symmetric(P), q=q, h=h, **rest).values()))
    check_grads(fn, (values["P"], values["q"], values["h"]), order=1, modes=["rev"],
                eps=1e-6, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------
# Exactness: batches against single solves and the NumPy reverse mode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batching", list(BATCHINGS))
def test_batch_equals_single_solves_and_numpy_backward(batching: str) -> None:
    model = qp_model()
    size = 4
    values = values_for(batching, 7, size)
    f = layer(model, outputs=["x", "eq", "ineq"])
    lead = () if batching == "unbatched" else (size,)
    rng = np.random.default_rng(0)
    shapes = {"x": (N,), "eq": (M_EQ,), "ineq": (M_INEQ,)}
    weights = {k: rng.standard_normal(lead + s) for k, s in shapes.items()}

    def loss(vals: dict[str, Any]) -> Any:
        out = f(**vals)
        return sum(jnp.sum(out[k] * w) for k, w in weights.items())

    out = f(**values)
    grads = jax.grad(loss)(values)
    expected = {k: np.zeros_like(v) for k, v in values.items()}
    for i in (range(size) if lead else [None]):
        item = {k: v[i] if (i is not None and k in BATCHINGS[batching]) else v
                for k, v in values.items()}
        sol = model.solve(**item)
        def pick(a: Any, i: int | None = i) -> Any:
            return a[i] if i is not None else a

        np.testing.assert_allclose(pick(out["x"]), sol.primal["x"], rtol=1e-13, atol=1e-13)
        for k in ("eq", "ineq"):
            np.testing.assert_allclose(pick(out[k]), sol.dual[k], rtol=1e-13, atol=1e-13)
        ref = sol.backward({"x": pick(weights["x"])},
                           {k: pick(weights[k]) for k in ("eq", "ineq")})
        for k, g in ref.items():
            if i is not None and k in BATCHINGS[batching]:
                expected[k][i] = g
            else:
                expected[k] += g
    for k in values:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_vjp_of_a_first_call_is_exact_after_a_second_call() -> None:
    model = qp_model()
    f = layer(model, outputs=["x"])
    first = batch_values(11, 3, ("P", "A", "q"))
    second = batch_values(12, 3, ("P", "A", "q"))
    _, vjp1 = jax.vjp(lambda v: f(**v), first)
    _, vjp2 = jax.vjp(lambda v: f(**v), second)
    (g1,) = vjp1({"x": jnp.ones((3, N))})
    vjp2({"x": jnp.ones((3, N))})
    for i in range(3):
        item = {k: v[i] if k in ("P", "A", "q") else v for k, v in first.items()}
        ref = model.solve(**item).backward({"x": np.ones(N)})
        for k in ("P", "A", "q"):
            np.testing.assert_allclose(g1[k][i], ref[k], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# vmap: one callback, equal to the batched call
# ---------------------------------------------------------------------------


def _count_batch_solves(model: dm.Model) -> list[int]:
    calls = [0]
    solve_batch = model.solve_batch

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return solve_batch(*args, **kwargs)

    model.solve_batch = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_vmap_is_one_batched_solve_equal_to_the_batched_call(jit: bool) -> None:
    model = qp_model()
    values = batch_values(8, 6, ("P", "q", "h"))
    f = layer(model, outputs=["x", "ineq"])
    rest = {k: v for k, v in values.items() if k not in ("P", "q", "h")}
    batched = f(**values)
    calls = _count_batch_solves(model)
    fn = jax.vmap(lambda P, q, h: f(P=P, q=q, h=h, **rest))
    vmapped = (jax.jit(fn) if jit else fn)(values["P"], values["q"], values["h"])
    assert calls[0] == 1
    for k in batched:
        np.testing.assert_array_equal(vmapped[k], batched[k])


def test_vmap_over_a_batched_call_nested_vmap_and_in_axes() -> None:
    model = qp_model()
    values = batch_values(9, 3, ("q",))
    f = layer(model)
    rest = {k: v for k, v in values.items() if k != "q"}
    Q = values["q"] + 0.01 * np.random.default_rng(0).standard_normal((2, 3, N))
    out = jax.vmap(lambda q: f(q=q, **rest)["x"])(Q)
    assert out.shape == (2, 3, N)
    for i in range(2):
        np.testing.assert_array_equal(out[i], f(q=Q[i], **rest)["x"])
    nested = jax.vmap(jax.vmap(lambda q: f(q=q, **rest)["x"]))(Q)
    np.testing.assert_array_equal(nested, out)
    moved = jax.vmap(lambda q: f(q=q, **rest)["x"], in_axes=1, out_axes=1)(
        np.moveaxis(Q, 0, 1))
    np.testing.assert_array_equal(moved, np.moveaxis(np.asarray(out), 0, 1))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_reverse_mode_reuses_the_solution_of_the_forward_pass(jit: bool) -> None:
    model = qp_model()
    f = layer(model)
    values = batch_values(2, 3, ("A", "q"))
    grad = jax.grad(lambda v: jnp.sum(f(**v)["x"]))
    expected = grad(values)
    calls = _count_batch_solves(model)
    got = (jax.jit(grad) if jit else grad)(values)
    assert calls[0] == 1  # the forward pass's; the backward pass kept it
    for k in values:
        np.testing.assert_array_equal(got[k], expected[k])
    # A vjp called twice: the second call solves again, with the same result.
    _, vjp = jax.vjp(lambda v: f(**v)["x"], values)
    first, second = vjp(jnp.ones((3, N)))[0], vjp(jnp.ones((3, N)))[0]
    assert calls[0] == 3
    for k in values:
        np.testing.assert_array_equal(first[k], second[k])


def test_grad_of_vmap_and_vmap_of_grad() -> None:
    model = qp_model()
    values = batch_values(10, 4, ("A", "q"))
    f = layer(model)
    b, rest = values["b"], {k: v for k, v in values.items() if k not in ("A", "q")}

    def one(A: Any, q: Any) -> Any:
        return jnp.sum(f(A=A, q=q, **rest)["x"] ** 2)

    per_item = jax.vmap(jax.grad(one, argnums=(0, 1)))(values["A"], values["q"])
    summed = jax.grad(lambda A, q: jnp.sum(jax.vmap(one)(A, q)), argnums=(0, 1))(
        values["A"], values["q"])
    batched = jax.grad(lambda A, q: jnp.sum(f(A=A, q=q, **rest)["x"] ** 2), argnums=(0, 1))(
        values["A"], values["q"])
    for got in (per_item, summed):
        for g, e in zip(got, batched):
            np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-14)
    assert b is not None


def test_jacrev_equals_the_jacobian_and_jvp_is_refused() -> None:
    model = qp_model()
    values = qp_values(10)
    f = layer(model, outputs="x")
    rest = {k: v for k, v in values.items() if k != "q"}
    J = jax.jacrev(lambda q: f(q=q, **rest)["x"])(values["q"])
    model.solve(**values)
    np.testing.assert_allclose(J, model.jacobian("x", "q"), rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda q: f(q=q, **rest)["x"], (values["q"],), (values["q"],))


# ---------------------------------------------------------------------------
# Errors, dtypes, imports
# ---------------------------------------------------------------------------


def test_mismatched_batch_sizes_name_the_parameters_and_sizes() -> None:
    f = layer(qp_model())
    values = qp_values(0)
    values["h"] = np.zeros((4, M_INEQ))
    values["q"] = np.zeros((3, N))
    with pytest.raises(dm.ModelError, match=(
            r"^batched parameters must share one leading batch axis, but 'h' has 4, "
            r"'q' has 3; give every batched parameter the same batch size "
            r"\(unbatched ones are broadcast\)$")):
        f(**values)
    with pytest.raises(dm.ModelError, match="leading batch axis"):
        jax.jit(lambda q, h: f(q=q, h=h))(values["q"], values["h"])


def test_errors_of_the_solve_reach_the_caller() -> None:
    model = qp_model(inequalities=False)
    values = qp_values(0, inequalities=False)
    values["A"] = np.zeros((M_EQ, N))
    f = layer(model)
    with pytest.raises(dm.SolverError, match=r"^the constraints are inconsistent"):
        f(**values)
    # Under jit JAX wraps the error raised in the callback; its text is kept.
    with pytest.raises(Exception, match="SolverError: the constraints are inconsistent"):
        jax.jit(lambda A: f(A=A, **{k: v for k, v in values.items() if k != "A"}))(
            values["A"])
    with pytest.raises(dm.ModelError, match=r"parameter 'q': expected shape \(4,\), got \(3,\)"):
        f(q=np.zeros(3))
    with pytest.raises(dm.ModelError, match="output 'y' is neither"):
        layer(model, outputs="y")


def test_float32_inputs_give_float32_outputs() -> None:
    model = qp_model()
    values = qp_values(6)
    f = layer(model, outputs=["x", "ineq"])
    out = f(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in values.items()})
    assert all(v.dtype == jnp.float32 for v in out.values())
    grads = jax.grad(lambda v: jnp.sum(f(**v)["x"]))(
        {k: jnp.asarray(v, dtype=jnp.float32) for k, v in values.items()})
    assert all(g.dtype == jnp.float32 for g in grads.values())
    assert f(**values)["x"].dtype == jnp.float64


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "error"})


def test_without_x64_inputs_and_outputs_are_float32() -> None:
    code = """
import cvxpy as cp, numpy as np, jax, jax.numpy as jnp, diffmodel as dm
from diffmodel.jax import layer
assert not jax.config.jax_enable_x64
x = cp.Variable(2, name="x"); b = cp.Parameter(name="b")
f = layer(dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b}))
out = f(b=1.0)["x"]
g = jax.grad(lambda b: jnp.sum(f(b=b)["x"] * jnp.array([1.0, 3.0])))(1.0)
print(out.dtype, np.asarray(out).tolist(), g.dtype, float(g))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["float32", "[0.5,", "0.5]", "float32", "2.0"]


def test_without_jax_the_error_names_the_extra() -> None:
    code = ("import sys, cvxpy as cp, diffmodel as dm, diffmodel.jax\n"
            "sys.modules['jax'] = None  # as if not installed\n"
            "x = cp.Variable(2, name='x')\n"
            "model = dm.Model(cp.Minimize(cp.sum_squares(x)))\n"
            "try:\n    diffmodel.jax.layer(model)\n"
            "except ImportError as exc:\n    print(exc)\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert 'pip install "diffmodel[jax]"' in result.stdout
