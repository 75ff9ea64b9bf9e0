"""Scenario sweeps on executors: the same numbers as in-process, in order, with
failures recorded or named, chunks sized by a pilot, progress bars, small
shipments, and the scenario sensitivity summary.

Executors: a ``ProcessPoolExecutor`` with 2 processes, and a real Dask
``LocalCluster`` with 2 worker processes (the Dask tests need the ``dask``
extra: ``pip install -e ".[dask]"``; without it they skip, naming it).
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
import diffmodel.chunks as chunks_module
import diffmodel.runner as runner_module
from diffmodel.chunks import problem_bytes
from diffmodel.parallel import NO_DASHBOARD
from diffmodel.runner import TASK_SECONDS
from diffmodel.testing import as_model, random_qp

S = 40  # scenarios per batch
CHUNK = 7  # 6 chunks: 5 of 7 and one of 5
TOL = 1e-12

Values = dict[str, np.ndarray]


# ------------------------------------------------------------------ models


def _equality(vary_A: bool) -> tuple[dm.Model, Values]:
    """minimize ½xᵀPx + qᵀx s.t. A x = b; q and b vary (one shared K) or A too."""
    data = random_qp(12, 5, seed=7)
    params = ("q", "b", "A") if vary_A else ("q", "b")
    model, _ = as_model(data, parameters=params)
    rng = np.random.default_rng(11)
    values = {"q": data.q + rng.standard_normal((S, 12)),
              "b": data.b + rng.standard_normal((S, 5))}
    if vary_A:
        values["A"] = data.A.toarray() + 0.1 * rng.standard_normal((S, 5, 12))
    return model, values


def _inequality(vary_G: bool) -> tuple[dm.Model, Values]:
    """A budget with capped, bounded holdings; the caps' rows vary with a when vary_G."""
    n = 8
    x = cp.Variable(n, name="x")
    q = cp.Parameter(n, name="q")
    u = cp.Parameter(n, name="u")
    a = cp.Parameter(n, name="a")
    lhs = cp.multiply(a, x) if vary_G else x
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                     {"cap": lhs <= u, "floor": x >= -0.2, "total": cp.sum(x) == 1})
    rng = np.random.default_rng(5)
    # Related scenarios (a sweep): the active set carries from one to the next.
    values = {"q": rng.standard_normal(n) + 0.05 * rng.standard_normal((S, n)),
              "u": 0.35 + 0.02 * rng.random((S, n))}
    if vary_G:
        values["a"] = 1.0 + 0.2 * rng.random((S, n))
    else:
        a.value = np.ones(n)
    return model, values


MODELS: dict[str, Callable[[], tuple[dm.Model, Values]]] = {
    "eq-qb": lambda: _equality(False), "eq-A": lambda: _equality(True),
    "ineq-qu": lambda: _inequality(False), "ineq-G": lambda: _inequality(True),
}


def _infeasible_at(values: Values, i: int) -> Values:
    """The inequality model's values with scenario i made infeasible (x <= -1, x >= -0.2)."""
    out = {k: v.copy() for k, v in values.items()}
    out["u"][i] = -1.0
    return out


# ------------------------------------------------------------------ executors


@pytest.fixture(scope="module")
def pool() -> Iterator[Executor]:
    """Two worker processes, started clean (spawn: no state inherited)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Executor]:
    """A real Dask LocalCluster: 2 worker processes on 127.0.0.1, no dashboard,
    every step bounded in time, closed at the end."""
    distributed = pytest.importorskip(
        "distributed", reason='Dask tests need the dask extra: pip install -e ".[dask]"')
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       scheduler_kwargs=NO_DASHBOARD, death_timeout=60)
    client = distributed.Client(cluster, timeout="60s")
    try:
        client.wait_for_workers(2, timeout=120)
        yield client.get_executor()
    finally:
        client.close(timeout=30)
        cluster.close(timeout=30)


@pytest.fixture(params=["processes", "dask"])
def executor(request: pytest.FixtureRequest) -> Executor:
    name = "pool" if request.param == "processes" else "dask_executor"
    ex: Executor = request.getfixturevalue(name)
    return ex


# ------------------------------------------------------------------ helpers


def _close(got: Any, ref: Any, what: str) -> None:
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    assert got.shape == ref.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(ref)), what
    scale = max(1.0, float(np.nanmax(np.abs(ref), initial=0.0)))
    err = float(np.nanmax(np.abs(got - ref), initial=0.0))
    assert err <= TOL * scale, f"{what}: max difference {err:.1e}"


def _same_batch(got: dm.BatchSolution, ref: dm.BatchSolution) -> None:
    assert got.status == ref.status
    # The same failures; the rows an infeasibility certificate names may differ
    # (it comes from OSQP, warm-started from whatever that process solved before).
    assert {i: m.split(":")[0] for i, m in got.errors.items()} == {
        i: m.split(":")[0] for i, m in ref.errors.items()}
    _close(got.value, ref.value, "value")
    for name in ref.primal:
        _close(got.primal[name], ref.primal[name], f"primal {name}")
    for name in ref.dual:
        _close(got.dual[name], ref.dual[name], f"dual {name}")
    for name in ref.active:
        assert np.array_equal(got.active[name], ref.active[name]), name


def _same_derivatives(got: dm.BatchSolution, ref: dm.BatchSolution, model: dm.Model) -> None:
    rng = np.random.default_rng(3)
    x = next(iter(model.variables))
    con = next(iter(model.constraints))
    GX = rng.standard_normal(ref.primal[x].shape)
    GY = rng.standard_normal(ref.dual[con].shape)
    g_ref = ref.backward({x: GX}, dual={con: GY})
    g_got = got.backward({x: GX}, dual={con: GY})
    for name in g_ref:
        _close(g_got[name], g_ref[name], f"backward {name}")
    direction = {name: rng.standard_normal(p.shape) for name, p in model.parameters.items()}
    d_ref = ref.derivative(direction)
    d_got = got.derivative(direction)
    for name in d_ref:
        _close(d_got[name], d_ref[name], f"derivative {name}")


# ------------------------------------------------------------------ equal to in-process


@pytest.mark.parametrize("kind", list(MODELS))
def test_an_executor_gives_the_in_process_numbers(kind: str, executor: Executor) -> None:
    model, values = MODELS[kind]()
    ref = model.solve_batch(**values, progress=False)
    got = model.solve_batch(**values, executor=executor, chunk_size=CHUNK)
    assert got.execution is not None and got.execution.chunks == math.ceil(S / CHUNK)
    assert got.execution.pilot == 0 and got.execution.workers == 2
    _same_batch(got, ref)
    _same_derivatives(got, ref, model)
    if kind.startswith("ineq"):
        # The active set carries from scenario to scenario within each chunk (and a
        # worker's first scenario starts from the last one it solved, if any).
        assert 0 < got.warm_starts <= S and 0 < ref.warm_starts <= S


def test_shared_K_costs_one_factorization_per_process(pool: Executor) -> None:
    model, values = MODELS["eq-qb"]()
    batch = model.solve_batch(**values, executor=pool, chunk_size=CHUNK)
    assert batch.factorizations <= 2  # one per worker process at most, for 6 chunks
    batch.backward({"x": np.ones(12)})
    # Each worker keeps its factorization: only one that had no chunk yet factors again.
    assert model.solve_batch(**values, executor=pool, chunk_size=CHUNK).factorizations <= 1
    in_process = model.solve_batch(**values)
    assert in_process.factorizations <= 1
    varying, vals = MODELS["eq-A"]()
    assert varying.solve_batch(**vals).factorizations == S


# ------------------------------------------------------------------ failures


def test_a_failing_scenario_is_recorded_and_the_rest_finish(executor: Executor) -> None:
    model, values = MODELS["ineq-qu"]()
    values = _infeasible_at(values, 17)
    ref = model.solve_batch(**values, on_error="record")
    got = model.solve_batch(**values, executor=executor, chunk_size=CHUNK, on_error="record")
    for batch in (ref, got):
        assert batch.status[17] == "infeasible"
        assert set(batch.errors) == {17}
        assert "infeasible" in batch.errors[17]
        assert np.isnan(batch.primal["x"][17]).all() and np.isnan(batch.value[17])
        assert np.isnan(batch.dual["cap"][17]).all()
        assert all(s == "optimal" for i, s in enumerate(batch.status) if i != 17)
        assert not batch.active["cap"][17].any()
    _same_batch(got, ref)
    grads = got.backward({"x": np.ones(8)})
    assert np.isnan(grads["u"][17]).all() and np.isfinite(np.delete(grads["u"], 17, 0)).all()


@pytest.mark.parametrize("where", ["in-process", "processes", "dask"])
def test_by_default_the_failing_scenario_is_named(where: str,
                                                  request: pytest.FixtureRequest) -> None:
    model, values = MODELS["ineq-qu"]()
    values = _infeasible_at(values, 17)
    options: dict[str, Any] = {}
    if where != "in-process":
        options = {"executor": request.getfixturevalue(
            "pool" if where == "processes" else "dask_executor"), "chunk_size": CHUNK}
    with pytest.raises(dm.SolverError, match=r"^scenario 17: .*infeasible") as info:
        model.solve_batch(**values, **options)
    assert info.value.status == "infeasible"
    # The model is still usable, on the same executor.
    assert model.solve_batch(**{k: v[:3] for k, v in values.items()}, **options).status == [
        "optimal"] * 3


def test_the_failure_of_lowest_index_is_raised(pool: Executor) -> None:
    model, values = MODELS["ineq-qu"]()
    for i in (33, 9, 26):
        values = _infeasible_at(values, i)
    with pytest.raises(dm.SolverError, match=r"^scenario 9: "):
        model.solve_batch(**values, executor=pool, chunk_size=3)


def test_an_equality_failure_in_the_middle_is_recorded(pool: Executor) -> None:
    x = cp.Variable(2, name="x")
    c = cp.Parameter(2, name="c")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"one": x[0] == c[0], "two": x[0] == c[1]})
    C = np.repeat(np.arange(1.0, S + 1)[:, None], 2, axis=1)
    C[17, 1] += 1.0  # x[0] == 18 and x[0] == 19
    batch = model.solve_batch(c=C, executor=pool, chunk_size=CHUNK, on_error="record")
    assert batch.status[17] == "infeasible" and set(batch.errors) == {17}
    np.testing.assert_allclose(np.delete(batch.primal["x"][:, 0], 17), np.delete(C[:, 0], 17),
                               rtol=1e-15)
    with pytest.raises(dm.SolverError, match=r"^scenario 17: .*infeasible"):
        model.solve_batch(c=C, executor=pool, chunk_size=CHUNK)


# ------------------------------------------------------------------ pickles, shipments


def test_the_model_pickles_and_the_shipment_is_small_without_cvxpy(pool: Executor) -> None:
    x = cp.Variable(200, name="x")
    A = cp.Parameter((50, 200), name="A")
    b = cp.Parameter(50, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"eq": A @ x == b})
    assert pickle.loads(pickle.dumps(model)).size == model.size
    digest, blob = problem_bytes(model.compiled)
    assert b"cvxpy" not in blob
    # The maps hold one coefficient per entry of A, plus names and patterns.
    assert len(blob) < 40 * 50 * 200
    assert problem_bytes(model.compiled) == (digest, blob)  # pickled once
    # What a process pool is sent: the bytes with the first task per worker, and again
    # with a task whose worker did not have them (it answers None, see below).
    data = random_qp(10, 4, seed=98)  # a problem this pool has not seen
    small, _ = as_model(data, parameters=("q", "b", "A"))
    rng = np.random.default_rng(0)
    values = {"q": data.q + rng.standard_normal((S, 10)),
              "A": data.A.toarray() + 0.1 * rng.standard_normal((S, 4, 10))}
    size = len(problem_bytes(small.compiled)[1])
    first = small.solve_batch(**values, executor=pool, chunk_size=CHUNK)
    assert first.execution is not None
    assert size <= first.execution.shipped <= (2 + first.execution.chunks) * size


class _Recording(Executor):
    """An executor that runs on ``inner`` and keeps the chunk tasks it was given."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.tasks: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.tasks.append(args[-1])
        return self.inner.submit(fn, *args, **kwargs)


@pytest.mark.parametrize("kind", ["eq-qb", "ineq-qu"])
def test_a_gradient_shared_by_every_scenario_is_sent_once_per_chunk(
        kind: str, pool: Executor) -> None:
    """ℓ = Σx has the same gradient in every scenario: each backward task carries
    it as one column (not one per scenario), with the in-process numbers."""
    model, values = MODELS[kind]()
    ref = model.solve_batch(**values, progress=False)
    recording = _Recording(pool)
    got = model.solve_batch(**values, executor=recording, chunk_size=CHUNK)
    shared = {"x": np.linspace(-1.0, 1.0, ref.primal["x"].shape[1])}
    g_ref, g_got = ref.backward(shared), got.backward(shared)
    for name in g_ref:
        _close(g_got[name], g_ref[name], f"backward {name}")
    backward = [t for t in recording.tasks if t.kind == "backward"]
    assert len(backward) == math.ceil(S / CHUNK)
    assert all(t.GX.shape[1] == 1 and t.GY.shape[1] == 1 for t in backward)
    varied = np.repeat(shared["x"][None, :], S, axis=0)
    varied[5] += 1.0  # one scenario's gradient differs: every column is sent
    recording.tasks.clear()
    g_var = got.backward({"x": varied})
    assert all(t.GX.shape[1] == t.size for t in recording.tasks)
    _close(g_var["q"], ref.backward({"x": varied})["q"], "backward q, varied")


def test_rows_shared_by_a_chunk_are_sent_once(pool: Executor,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep over b with a constant matrix parameter A (8,000 entries): a chunk
    sends A once, not once per scenario, and is sized by the entries that vary."""
    n, m = 200, 40
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"eq": A @ x == b})
    rng = np.random.default_rng(8)
    A.value = rng.standard_normal((m, n))
    B = rng.standard_normal((S, m))
    ref = model.solve_batch(b=B, progress=False)
    recording = _Recording(pool)
    got = model.solve_batch(b=B, executor=recording, chunk_size=CHUNK)
    _same_batch(got, ref)
    task = recording.tasks[0]
    assert task.thetas.shape == (1 + m * n + m, CHUNK)
    per_scenario = 8 * (m + n + m)  # b out; x and y back
    assert len(pickle.dumps(task)) < 8 * (m * n + 1) + CHUNK * per_scenario
    copy = pickle.loads(pickle.dumps(task))
    np.testing.assert_array_equal(copy.thetas, task.thetas)
    # The byte cap counts the 40 entries of b that vary, not the 8,000 of A.
    monkeypatch.setattr(runner_module, "TASK_BYTES", 10 * per_scenario)
    capped = model.solve_batch(b=B, executor=pool)
    assert capped.execution is not None and capped.execution.chunk_size == 10
    _same_batch(capped, ref)


def test_a_worker_keeps_the_problems_it_was_sent() -> None:
    model, values = MODELS["eq-A"]()
    batch = model.solve_batch(**values, progress=False)
    result = batch._parts()[0]
    digest, blob = problem_bytes(model.compiled)
    task = chunks_module.ChunkTask("solve", 0, result.thetas[:, :3], "kkt")
    chunks_module._WORKER_ENGINES.clear()
    assert chunks_module.run_chunk(digest, None, task) is None  # not sent, not cached
    part = chunks_module.run_chunk(digest, blob, task)
    assert part is not None
    _close(part.arrays[0], batch.primal["x"][:3].T, "x")
    engine = chunks_module._WORKER_ENGINES[digest]
    again = chunks_module.run_chunk(digest, None, task)  # cached: no bytes needed
    assert again is not None and chunks_module._WORKER_ENGINES[digest] is engine
    for i in range(chunks_module.WORKER_CACHE):  # least recently used first out
        other = as_model(random_qp(5, 2, seed=200 + i))[0]
        key, data = problem_bytes(other.compiled)
        chunks_module._worker_engine(key, data)
    assert chunks_module.run_chunk(digest, None, task) is None
    chunks_module._WORKER_ENGINES.clear()


def test_dask_receives_the_problem_once(dask_executor: Executor) -> None:
    data = random_qp(10, 4, seed=99)  # a problem this cluster has not seen
    model, _ = as_model(data, parameters=("q", "b", "A"))
    rng = np.random.default_rng(0)
    values = {"q": data.q + rng.standard_normal((S, 10)),
              "A": data.A.toarray() + 0.1 * rng.standard_normal((S, 4, 10))}
    size = len(problem_bytes(model.compiled)[1])
    first = model.solve_batch(**values, executor=dask_executor, chunk_size=CHUNK)
    assert first.execution is not None and first.execution.shipped == 2 * size  # broadcast
    second = model.solve_batch(**values, executor=dask_executor, chunk_size=CHUNK)
    assert second.execution is not None and second.execution.shipped == 0


# ------------------------------------------------------------------ chunks


def test_chunks_are_sized_by_the_pilot(pool: Executor) -> None:
    model, values = MODELS["eq-A"]()
    batch = model.solve_batch(**values, executor=pool)
    run = batch.execution
    assert run is not None and 1 <= run.pilot <= S and run.per_scenario > 0
    cap = runner_module.TASK_BYTES // (8 * (1 + 12 + 5 + 60 + 12 + 5))  # θ̃, x, y per scenario
    expected = min(S, max(1, math.ceil(TASK_SECONDS / run.per_scenario)), cap)
    assert run.chunk_size == expected
    assert run.chunks == math.ceil((S - run.pilot) / run.chunk_size)


def test_small_chunks_when_scenarios_are_slow(pool: Executor,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # As if each task had to compute for 1 ms only: chunks of a few scenarios.
    monkeypatch.setattr(runner_module, "TASK_SECONDS", 1e-3)
    monkeypatch.setattr(runner_module, "PILOT_SCENARIOS", 3)
    model, values = MODELS["eq-A"]()
    ref = model.solve_batch(**values, progress=False)
    batch = model.solve_batch(**values, executor=pool)
    run = batch.execution
    assert run is not None and run.pilot == 3 and run.chunks > 1
    assert run.chunk_size == max(1, math.ceil(1e-3 / run.per_scenario))
    _same_batch(batch, ref)


def test_chunk_size_overrides_and_the_order_is_deterministic(pool: Executor) -> None:
    model, values = MODELS["eq-A"]()
    runs = [model.solve_batch(**values, executor=pool, chunk_size=3) for _ in range(2)]
    for run in runs:
        assert run.execution is not None
        assert (run.execution.chunk_size, run.execution.chunks, run.execution.pilot) == (
            3, math.ceil(S / 3), 0)
    for name in runs[0].primal:
        np.testing.assert_array_equal(runs[0].primal[name], runs[1].primal[name])
    np.testing.assert_array_equal(runs[0].value, runs[1].value)
    # Scenario i is scenario i: each against its own single solve.
    for i in (0, 17, S - 1):
        sol = model.solve(**{k: v[i] for k, v in values.items()})
        _close(runs[0].primal["x"][i], sol.primal["x"], f"scenario {i}")


def test_shared_K_in_blocks_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of 3 right-hand sides, one factorization for all of them.
    model, values = MODELS["eq-qb"]()
    whole = model.solve_batch(**values, chunk_size=S)
    monkeypatch.setattr(chunks_module, "BLOCK_COLUMNS", 3)
    blocks = model.solve_batch(**values, chunk_size=S)
    assert blocks.factorizations == 0  # the factorization of the first batch, reused
    _same_batch(blocks, whole)
    _same_derivatives(blocks, whole, model)


def test_options_are_checked() -> None:
    model, values = MODELS["eq-qb"]()
    with pytest.raises(dm.ModelError, match="executor must be a concurrent.futures.Executor"):
        model.solve_batch(**values, executor="dask")
    with pytest.raises(dm.ModelError, match="chunk_size must be a positive integer"):
        model.solve_batch(**values, chunk_size=0)
    with pytest.raises(dm.ModelError, match="progress must be None, True or False"):
        model.solve_batch(**values, progress="yes")
    with pytest.raises(dm.ModelError, match="on_error must be 'raise' or 'record'"):
        model.solve_batch(**values, on_error="skip")
    x = cp.Variable(2, name="x")
    for name in ("solver", "executor", "chunk_size", "on_error", "progress"):
        p = cp.Parameter(2, name=name)
        with pytest.raises(dm.ModelError, match=rf"a parameter is named '{name}', which the "
                                                r"keyword option .* reserves"):
            dm.Model(cp.Minimize(cp.sum_squares(x - p)))


# ------------------------------------------------------------------ progress


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str], pool: Executor) -> None:
    model, values = MODELS["eq-A"]()
    batch = model.solve_batch(**values, progress=True)
    err = capsys.readouterr().err
    assert "solve_batch" in err and f"{S}/{S}" in err
    batch.backward({"x": np.ones(12)})
    assert "backward: 100%" in capsys.readouterr().err
    model.solve_batch(**values, executor=pool, chunk_size=CHUNK, progress=True)
    assert f"{S}/{S}" in capsys.readouterr().err
    quiet = model.solve_batch(**values, executor=pool, chunk_size=CHUNK, progress=False)
    quiet.backward({"x": np.ones(12)})
    quiet.derivative({"b": np.ones(5)})
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ summary


def test_summary_matches_single_solves() -> None:
    model, values = MODELS["ineq-G"]()
    values = _infeasible_at(values, 4)
    batch = model.solve_batch(**values, on_error="record")
    report = batch.sensitivity(quantiles=(0.1, 0.5, 0.9), top=3)
    assert report.scenarios == S and report.solved == S - 1
    assert report.failures == ((4, batch.errors[4]),)
    grads: dict[str, list[np.ndarray]] = {p: [] for p in model.parameters}
    binding = {c: np.zeros(8, dtype=int) for c in ("cap", "floor")}
    for i in range(S):
        if i == 4:
            assert np.isnan(report.gradients["q"][i]).all()
            continue
        sol = model.solve(**{k: v[i] for k, v in values.items()})
        g = sol.objective_gradient()
        for p in grads:
            _close(report.gradients[p][i], g[p], f"∂f*/∂{p} of scenario {i}")
            grads[p].append(g[p])
        for c in binding:
            binding[c] += sol.active[c]
            assert np.array_equal(batch.active[c][i], sol.active[c])
    for p, rows in grads.items():
        G = np.array(rows)
        s = report.objective[p]
        np.testing.assert_allclose(s.mean, G.mean(axis=0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(s.std, G.std(axis=0), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(s.mean_abs, np.abs(G).mean(axis=0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(s.quantiles, np.quantile(G, (0.1, 0.5, 0.9), axis=0),
                                   rtol=1e-12, atol=1e-14)
        theta = np.delete(values[p], 4, axis=0)
        f = np.delete(batch.value, 4)
        np.testing.assert_allclose(s.elasticity_mean, (G * theta / f[:, None]).mean(axis=0),
                                   rtol=1e-10, atol=1e-14)
        norms = np.linalg.norm(G, axis=1)
        solved = np.delete(np.arange(S), 4)
        order = np.argsort(-norms)[:3]
        assert [i for i, _ in s.top] == [int(solved[j]) for j in order]
    for c, counts in binding.items():
        np.testing.assert_array_equal(report.binding[c].count, counts)
        np.testing.assert_allclose(report.binding[c].frequency, counts / (S - 1))
    assert set(report.binding) == {"cap", "floor"}  # the equality always binds


def test_summary_through_an_executor_is_the_same(pool: Executor) -> None:
    model, values = MODELS["ineq-qu"]()
    ref = model.solve_batch(**values).sensitivity()
    got = model.solve_batch(**values, executor=pool, chunk_size=CHUNK).sensitivity()
    for p in ref.objective:
        _close(got.gradients[p], ref.gradients[p], p)
    for c in ref.binding:
        np.testing.assert_array_equal(got.binding[c].count, ref.binding[c].count)


def test_summary_renders(tmp_path: Any) -> None:
    pd = pytest.importorskip("pandas", reason='needs the report extra: pip install -e ".[report]"')
    pytest.importorskip("matplotlib", reason='needs the report extra')
    model, values = MODELS["ineq-qu"]()
    batch = model.solve_batch(**_infeasible_at(values, 2), on_error="record")
    labels = {"u": [f"asset {i}" for i in range(8)], "cap": [f"asset {i}" for i in range(8)]}
    report = batch.sensitivity(labels=labels, top=4)
    text = str(report)
    assert "Scenario sensitivity report" in text and "u[asset " in text and "cap[asset " in text
    assert "scenario 2 failed" in text and "Binding inequalities" in text
    md = report.to_markdown()
    assert md.startswith("# Scenario sensitivity report") and "| parameter entry |" in md
    page = report.to_html(tmp_path / "scenarios.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 and "http" not in page.split("<body>")[1]
    assert [p.name for p in report.save_plots(tmp_path / "png")] == [
        "values.png", "distribution.png", "binding.png"]
    frame = report.to_dataframe()
    assert set(frame["kind"]) == {"value", "objective", "elasticity", "binding"}
    row = frame[(frame["kind"] == "objective") & (frame["label"] == "u[asset 3]")].iloc[0]
    assert row["mean"] == pytest.approx(float(report.objective["u"].mean[3]), rel=1e-15)
    assert row["q0.5"] == pytest.approx(float(report.objective["u"].quantiles[2, 3]), abs=1e-15)
    binding = frame[frame["kind"] == "binding"]
    assert binding["count"].sum() == sum(int(b.count.sum()) for b in report.binding.values())
    import json

    doc = json.loads(report.to_json())
    assert doc["solved"] == S - 1 and doc["failures"][0][0] == 2
    assert doc["objective"]["q"]["mean"] == pytest.approx(report.objective["q"].mean.tolist())
    stacked = batch.to_dataframe(labels={"x": [f"asset {i}" for i in range(8)]})
    assert isinstance(stacked, pd.DataFrame) and stacked.index.name == "scenario"
    assert list(stacked.columns[:5]) == ["status", "f*", "accuracy", "error", "x[asset 0]"]
    assert stacked.loc[2, "status"] == "infeasible" and "infeasible" in stacked.loc[2, "error"]
    np.testing.assert_array_equal(stacked["x[asset 7]"].to_numpy(), batch.primal["x"][:, 7])
    np.testing.assert_array_equal(stacked["total"].to_numpy(), batch.dual["total"])


def test_summary_errors_name_the_culprit() -> None:
    model, values = MODELS["eq-qb"]()
    batch = model.solve_batch(**values)
    with pytest.raises(dm.ModelError, match="unknown parameter 'z'|'z'"):
        batch.sensitivity(wrt="z")
    with pytest.raises(dm.ModelError, match=r"quantiles must be probabilities in \[0, 1\]"):
        batch.sensitivity(quantiles=(0.5, 50))
    with pytest.raises(dm.ModelError, match="top must be a positive integer"):
        batch.sensitivity(top=0)
    with pytest.raises(dm.ModelError, match="expected a diffmodel BatchSolution"):
        dm.analysis.scenario_sensitivity(model)  # type: ignore[arg-type]
