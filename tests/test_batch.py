"""solve_batch / backward_batch: equal to item-by-item solves, one factorization when K is shared."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from diffmodel.testing import as_model, random_qp


def _batch_values(data, params, size, rng):
    values = {"q": data.q + rng.standard_normal((size, data.n)),
              "b": data.b + rng.standard_normal((size, data.m))}
    if "A" in params:
        values["A"] = data.A.toarray() + 0.1 * rng.standard_normal((size, data.m, data.n))
    return values


@pytest.mark.parametrize("params", [("q", "b"), ("q", "b", "A")], ids=["qb", "qbA"])
@pytest.mark.parametrize("solver", ["kkt", "osqp"])
def test_batch_equals_individual_solves(params, solver):
    data = random_qp(9, 4, seed=3)
    model, _ = as_model(data, parameters=params)
    rng = np.random.default_rng(0)
    size = 6
    values = _batch_values(data, params, size, rng)
    batch = model.solve_batch(solver=solver, **values)
    G = rng.standard_normal((size, data.n))
    H = rng.standard_normal((size, data.m))
    grads = model.backward_batch({"x": G}, dual={"eq": H})
    assert batch.primal["x"].shape == (size, data.n)
    assert batch.dual["eq"].shape == (size, data.m)
    tol = 1e-10 if solver == "kkt" else 1e-6
    for i in range(size):
        sol = model.solve(solver=solver, **{k: v[i] for k, v in values.items()})
        np.testing.assert_allclose(batch.primal["x"][i], sol.primal["x"], rtol=tol, atol=tol)
        np.testing.assert_allclose(batch.dual["eq"][i], sol.dual["eq"], rtol=tol, atol=tol)
        assert batch.value[i] == pytest.approx(sol.value, rel=tol, abs=tol)
        single = model.backward({"x": G[i]}, dual={"eq": H[i]})
        for key in params:
            assert grads[key].shape == (size, *np.shape(single[key]))
            np.testing.assert_allclose(grads[key][i], single[key], rtol=1e-6, atol=1e-8)


def test_batch_against_dense_kkt():
    data = random_qp(7, 3, seed=8)
    model, _ = as_model(data)
    rng = np.random.default_rng(1)
    values = _batch_values(data, ("q", "b"), 5, rng)
    batch = model.solve_batch(**values)
    K = data.kkt().toarray()
    Z = np.linalg.solve(K, np.vstack([-values["q"].T, values["b"].T]))
    np.testing.assert_allclose(batch.primal["x"], Z[:7].T, rtol=1e-10, atol=1e-12)
    G = rng.standard_normal((5, 7))
    grads = model.backward_batch({"x": G})
    W = np.linalg.solve(K, np.vstack([G.T, np.zeros((3, 5))]))
    np.testing.assert_allclose(grads["q"], -W[:7].T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["b"], W[7:].T, rtol=1e-10, atol=1e-12)


def test_one_factorization_when_only_q_and_b_vary():
    data = random_qp(30, 10, seed=2)
    model, _ = as_model(data)
    rng = np.random.default_rng(2)
    batch = model.solve_batch(**_batch_values(data, ("q", "b"), 50, rng))
    assert batch.factorizations == 1
    before = model.factorizations
    model.backward_batch({"x": np.ones(30)})  # shared gradient, broadcast
    assert model.factorizations == before
    again = model.solve_batch(q=data.q + rng.standard_normal((20, 30)))
    assert again.factorizations == 0


def test_batch_with_a_varying_matrix_factors_each_item():
    data = random_qp(6, 2, seed=4)
    model, _ = as_model(data, parameters=("q", "b", "A"))
    rng = np.random.default_rng(3)
    batch = model.solve_batch(**_batch_values(data, ("q", "b", "A"), 4, rng))
    assert batch.factorizations == 4


@pytest.mark.parametrize("inequalities", [False, True], ids=["eq", "ineq"])
def test_a_small_batch_keeps_its_points_and_differentiates_without_solving(
        inequalities, monkeypatch):
    """Scenarios that refactor keep their factorizations (batch small enough):
    derivatives solve nothing again, and equal those of a batch that re-solves."""
    import diffmodel.runner as runner_module

    n, m, size = 7, 3, 5
    x = cp.Variable(n, name="x")
    A, q, b = cp.Parameter((m, n), name="A"), cp.Parameter(n, name="q"), cp.Parameter(m, name="b")
    cons = {"eq": A @ x == b}
    if inequalities:
        cons["cap"] = x <= 0.3
    model = dm.Model(cp.Minimize(cp.sum_squares(x) + q @ x), cons)
    rng = np.random.default_rng(5)
    values = {"A": rng.standard_normal((size, m, n)), "q": rng.standard_normal((size, n))}
    x0 = rng.uniform(-0.2, 0.2, (size, n))  # feasible: A x0 = b with x0 below the caps
    values["b"] = np.einsum("smn,sn->sm", values["A"], x0)
    G, D = rng.standard_normal((size, n)), {"q": rng.standard_normal(n)}
    kept = model.solve_batch(**values)
    before = model.factorizations
    grads, tangents = kept.backward({"x": G}), kept.derivative(D)
    assert model.factorizations == before  # no scenario was solved again
    monkeypatch.setattr(runner_module, "KEEP_BYTES", 0)
    again = model.solve_batch(**values)
    engine, solves = model._engine, []
    solve = engine.solve
    monkeypatch.setattr(engine, "solve", lambda *args: solves.append(1) or solve(*args))
    ref, ref_tangents = again.backward({"x": G}), again.derivative(D)
    assert len(solves) == 2 * size  # each scenario solved again, twice
    for name in ref:
        np.testing.assert_array_equal(grads[name], ref[name])
    for name in ref_tangents:
        np.testing.assert_array_equal(tangents[name], ref_tangents[name])
    for i in range(size):  # and each equals its own solve's
        sol = model.solve(**{k: v[i] for k, v in values.items()})
        own = sol.backward({"x": G[i]})
        for name in own:
            np.testing.assert_allclose(grads[name][i], own[name], rtol=1e-12, atol=1e-12)


def test_a_batch_keeps_the_points_its_budget_holds_and_solves_the_others_again(monkeypatch):
    """A sparse problem whose A varies, 24 scenarios, a budget for about 10
    of their points (measured, ``Point.nbytes``): the first 10 are kept, and
    the derivatives solve exactly the other 14 again, with the gradients of
    a batch that keeps everything. (The budget used to count 24 d² bytes
    per scenario, as for a dense factorization: 13.5 MB at d = 750 where a
    sparse point holds about 0.3 MB, so no sparse batch of any size kept.)"""
    import diffmodel.runner as runner_module
    from diffmodel.testing import banded_qp

    data, size = banded_qp(200), 24
    x = cp.Variable(data.n, name="x")
    q, a = cp.Parameter(data.n, name="q"), cp.Parameter(data.m, name="a")
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, data.P, assume_PSD=True) + q @ x),
                     {"eq": data.A @ x + cp.multiply(a, x[:data.m]) == data.b})
    rng = np.random.default_rng(9)
    values = {"q": data.q + rng.standard_normal((size, data.n)),
              "a": 0.1 * rng.standard_normal((size, data.m))}
    G = rng.standard_normal((size, data.n))
    each = model.solve(**{k: v[0] for k, v in values.items()})._point.nbytes
    assert 1e4 < each < 24 * (data.n + data.m) ** 2 / 10  # sparse: far below 24 d²
    full = model.solve_batch(**values, progress=False).backward({"x": G})
    monkeypatch.setattr(runner_module, "KEEP_BYTES", int(10.5 * each))
    batch = model.solve_batch(**values, progress=False, chunk_size=4)
    points = batch._result.points
    assert points is not None and [p is not None for p in points] == [True] * 10 + [False] * 14
    engine, solves = model._engine, []
    solve = engine.solve
    monkeypatch.setattr(engine, "solve", lambda *args: solves.append(1) or solve(*args))
    grads = batch.backward({"x": G})
    assert len(solves) == 14
    for name in full:
        np.testing.assert_array_equal(grads[name], full[name])


def test_batch_errors_name_the_culprit():
    data = random_qp(5, 2, seed=5)
    model, _ = as_model(data)
    with pytest.raises(dm.ModelError, match="no batched value"):
        model.solve_batch(q=data.q)
    with pytest.raises(dm.ModelError, match="has a batch of 3 values, others have 2"):
        model.solve_batch(q=np.zeros((2, 5)), b=np.zeros((3, 2)))
    with pytest.raises(dm.ModelError, match=r"parameter 'q\[1\]': value contains NaN"):
        model.solve_batch(q=np.array([np.zeros(5), np.full(5, np.nan)]))
    with pytest.raises(dm.NotSolvedError, match="solve_batch"):
        dm.testing.as_model(data)[0].backward_batch({"x": np.ones(5)})
    model.solve_batch(q=np.zeros((2, 5)))
    with pytest.raises(dm.ModelError, match=r"expected shape \(2, 5\), got \(3, 5\)"):
        model.backward_batch({"x": np.ones((3, 5))})


def test_batch_item_failure_gives_its_index():
    x = cp.Variable(2, name="x")
    c = cp.Parameter(2, name="c")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"one": x[0] == c[0], "two": x[0] == c[1]})
    with pytest.raises(dm.SolverError, match="scenario 1: .*infeasible") as info:
        model.solve_batch(c=np.array([[1.0, 1.0], [1.0, 2.0]]))
    assert info.value.status == "infeasible"
    sol = model.solve_batch(c=np.array([[1.0, 1.0], [2.0, 2.0]]))
    np.testing.assert_allclose(sol.primal["x"][:, 0], [1.0, 2.0])


def test_warm_starts_back_off_on_unrelated_scenarios_and_come_back_on_related_ones(
        monkeypatch):
    """Where K varies (here through ``a``), trying the last active set costs a
    factorization: after a few misses in a row it is only probed now and then,
    and a sweep of related scenarios wins it back. The numbers never depend on it."""
    n = 8
    x = cp.Variable(n, name="x")
    q, u, a = (cp.Parameter(n, name="q"), cp.Parameter(n, name="u"),
               cp.Parameter(n, name="a"))
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                     {"cap": x <= u, "total": a @ x == 1})
    backend = model._engine.backend("kkt")
    tries = []
    reverify = backend._reverify
    monkeypatch.setattr(backend, "_reverify", lambda *args: tries.append(1) or reverify(*args))
    rng = np.random.default_rng(8)
    unrelated = {"q": rng.standard_normal((40, n)), "u": 0.05 + 0.5 * rng.random((40, n)),
                 "a": 1.0 + 0.5 * rng.random((40, n))}
    batch = model.solve_batch(**unrelated)
    misses = len(tries) - batch.warm_starts
    # each success allows 3 misses in a row again; otherwise one probe in 8
    assert 0 < misses <= 3 * (batch.warm_starts + 1) + 40 // 8 + 1
    assert len(tries) <= 20  # out of 39 solves that could have tried
    for i in (0, 17, 39):  # equal to solves that start from scratch
        sol = model.solve(solver="osqp", **{k: v[i] for k, v in unrelated.items()})
        np.testing.assert_allclose(batch.primal["x"][i], sol.primal["x"], atol=1e-10)
    base = rng.standard_normal(n)
    related = {"q": base + 1e-3 * rng.standard_normal((40, n)), "u": np.full((40, n), 0.3),
               "a": np.ones((40, n))}
    assert model.solve_batch(**related).warm_starts >= 30


def test_warm_starts_cost_no_factorization_where_k_is_constant():
    """With K constant, K₀ (over the equality rows) is factored once and the
    search from the last active set runs on its Schur complement: unrelated
    scenarios cost about one factorization each (the found set's), never a
    failed try of the last set (107 factorizations for these 40 before)."""
    n = 8
    x = cp.Variable(n, name="x")
    q, u = cp.Parameter(n, name="q"), cp.Parameter(n, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                     {"cap": x <= u, "total": cp.sum(x) == 1})
    rng = np.random.default_rng(8)
    unrelated = {"q": rng.standard_normal((40, n)), "u": 0.05 + 0.5 * rng.random((40, n))}
    batch = model.solve_batch(**unrelated)
    assert batch.factorizations <= 45
    assert model._engine.backend("kkt").osqp_solves == 0
    for i in (0, 17, 39):  # equal to solves from scratch by the other backend
        sol = model.solve(solver="osqp", **{k: v[i] for k, v in unrelated.items()})
        np.testing.assert_allclose(batch.primal["x"][i], sol.primal["x"], atol=1e-10)


def test_a_bar_that_cannot_show_is_not_made(capsys):
    """progress=None on a stderr that is not a terminal (as here), False, or no
    work: a no-op bar (a tqdm object costs more than a small solve); True: tqdm."""
    from tqdm import tqdm

    from diffmodel.analysis._common import NullBar, progress_bar

    for total, progress in ((10, None), (10, False), (0, True)):
        assert isinstance(progress_bar(total, "work", progress), NullBar)
    bar = progress_bar(3, "work", True)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "work" in capsys.readouterr().err


def test_scenarios_solved_again_for_derivatives_start_from_their_own_active_sets(monkeypatch):
    """A batch too large to keep its factorizations solves each scenario again
    for its gradient: from the binding rows its solve found, never from an
    unrelated scenario's, the empty set or OSQP; gradients equal kept ones."""
    import diffmodel.runner as runner_module

    n, size = 12, 9
    x = cp.Variable(n, name="x")
    q, u = cp.Parameter(n, name="q"), cp.Parameter(n, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                     {"cap": x <= u, "total": cp.sum(x) == 1})
    rng = np.random.default_rng(21)
    values = {"q": rng.standard_normal((size, n)), "u": 0.05 + 0.5 * rng.random((size, n))}
    G = rng.standard_normal((size, n))
    kept = model.solve_batch(**values).backward({"x": G})
    monkeypatch.setattr(runner_module, "KEEP_BYTES", 0)
    batch = model.solve_batch(**values)
    assert batch.active["cap"].any(axis=1).all()  # each scenario has binding rows
    backend = model._engine.backend("kkt")
    osqp, cold = backend.osqp_solves, []
    from_empty = backend._from_empty
    monkeypatch.setattr(backend, "_from_empty", lambda *a: cold.append(1) or from_empty(*a))
    grads = batch.backward({"x": G})
    assert backend.osqp_solves == osqp and not cold
    for name in kept:
        np.testing.assert_array_equal(grads[name], kept[name])


def _ineq_model():
    """Capped holdings with a budget: P, q, the budget's coefficients and the caps vary."""
    n = 6
    x = cp.Variable(n, name="x")
    L = cp.Parameter((n, n), name="L")
    q = cp.Parameter(n, name="q")
    a = cp.Parameter(n, name="a")
    u = cp.Parameter(n, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(L @ x) + q @ x),
                     {"budget": a @ x == 1, "cap": x <= u, "floor": x >= -1})
    rng = np.random.default_rng(5)
    L.value = np.eye(n) + 0.1 * rng.standard_normal((n, n))
    a.value, u.value = np.ones(n), np.full(n, 0.4)
    size = 9
    values = {"q": rng.standard_normal((size, n)),
              "a": 1.0 + 0.1 * rng.standard_normal((size, n)),
              "u": 0.3 + 0.1 * rng.random((size, n))}
    return model, values


def _dense_model():
    """½xᵀPx + qᵀx + ½ Σ wᵢxᵢ² with A x = b: P dense, w on the diagonal."""
    n, m = 6, 2
    x = cp.Variable(n, name="x")
    P = cp.Parameter((n, n), name="P", PSD=True)
    w = cp.Parameter(n, name="w", nonneg=True)
    q = cp.Parameter(n, name="q")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + 0.5 * w @ cp.square(x) + q @ x),
                     {"eq": A @ x == b})
    rng = np.random.default_rng(6)
    size = 8
    M = rng.standard_normal((size, n, n))
    values = {"P": M @ M.transpose(0, 2, 1) + np.eye(n), "w": rng.random((size, n)),
              "q": rng.standard_normal((size, n)), "A": rng.standard_normal((size, m, n)),
              "b": rng.standard_normal((size, m))}
    return model, values


def _sparse_dependence_model():
    """½ Σ wᵢxᵢ² + qᵀx with A x + a ∘ x[:m] = b: P and M depend on few entries."""
    n, m = 20, 10
    data = random_qp(n, m, seed=4)
    x = cp.Variable(n, name="x")
    w = cp.Parameter(n, name="w", nonneg=True)
    q = cp.Parameter(n, name="q")
    a = cp.Parameter(m, name="a")
    b = cp.Parameter(m, name="b")
    model = dm.Model(cp.Minimize(0.5 * w @ cp.square(x) + q @ x),
                     {"eq": data.A @ x + cp.multiply(a, x[:m]) == b})
    rng = np.random.default_rng(7)
    size = 8
    values = {"w": 1.0 + rng.random((size, n)), "q": rng.standard_normal((size, n)),
              "a": 0.1 * rng.standard_normal((size, m)), "b": rng.standard_normal((size, m))}
    return model, values


@pytest.mark.parametrize("case", ["shared K", "A varies", "dense P", "sparse dependence",
                                  "inequalities", "process pool"])
def test_reduced_backward_equals_the_rows_and_sums_of_the_full_one(case):
    """What a layer asks for (every scenario's gradient for batched data, the sum
    over scenarios for shared data, nothing for the rest) equals the full
    backward's rows and sums, on every path: one shared factorization, kept
    points, active sets, and an executor."""
    rng = np.random.default_rng(2)
    if case == "inequalities":
        model, values = _ineq_model()
        per_item, summed = ["q", "u"], ["L", "a"]
    elif case == "sparse dependence":
        model, values = _sparse_dependence_model()
        per_item, summed = ["q"], ["w", "a", "b"]
    elif case == "dense P":
        model, values = _dense_model()
        per_item, summed = ["A", "q"], ["P", "w", "b"]
    else:
        data = random_qp(9, 4, seed=3)
        params = ("q", "b") if case == "shared K" else ("q", "b", "A")
        model, _ = as_model(data, parameters=params)
        values = _batch_values(data, params, 7, rng)
        if case == "shared K":
            per_item, summed = ["q"], ["b"]
        else:
            per_item, summed = ["A", "b"], ["q"]
            values["q"] = values["q"][0]  # broadcast: its gradient is summed
    executor = None
    if case == "process pool":
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(2)
    try:
        batch = model.solve_batch(**values, executor=executor, chunk_size=3)
        size = batch.batch_size
        G = rng.standard_normal((size, *batch.primal["x"].shape[1:]))
        con = next(iter(batch.dual))
        H = rng.standard_normal(batch.dual[con].shape)
        full = batch.backward({"x": G}, dual={con: H})
        reduced = batch._backward_reduced({"x": G}, {con: H}, per_item, summed)
    finally:
        if executor is not None:
            executor.shutdown()
    assert set(reduced) == set(per_item) | set(summed)
    for name in per_item:
        np.testing.assert_allclose(reduced[name], full[name], rtol=1e-13, atol=1e-14)
    for name in summed:
        want = full[name].sum(axis=0)
        assert reduced[name].shape == want.shape
        np.testing.assert_allclose(reduced[name], want, rtol=1e-12,
                                   atol=1e-13 * np.abs(full[name]).sum())


def test_a_batch_packed_without_batched_matrix_data_is_known_to_share_K():
    """solve_batch records, from which parameters are batched, that K is shared:
    chunks and blocks then never scan the batch's P and M entries (a pass over
    every column); a batch that varies A is scanned as before."""
    import gc

    from diffmodel import engine as engine_module

    data = random_qp(9, 4, seed=3)
    model, _ = as_model(data, parameters=("q", "b", "A"))
    assert model.compiled.k_parameters == {"A"}
    rng = np.random.default_rng(0)
    values = _batch_values(data, ("q", "b"), 6, rng)
    batch = model.solve_batch(**values)
    thetas = batch._parts()[0].thetas
    assert engine_module._known_shared(thetas[:, 2:4])
    assert batch.factorizations <= 1
    varying = model.solve_batch(**_batch_values(data, ("q", "b", "A"), 6, rng))
    assert not engine_module._known_shared(varying._parts()[0].thetas)
    assert varying.factorizations == 6
    # What is noted is dropped with the batch's array.
    T = np.asfortranarray(rng.random((thetas.shape[0], 4)))
    assert not engine_module._shares_k(model.compiled, T, "kkt")
    engine_module.note_shared_k(T, True)
    assert engine_module._shares_k(model.compiled, T[:, 1:], "kkt")
    key = id(T)
    del T
    gc.collect()
    assert key not in engine_module._SHARED


@pytest.mark.parametrize("dense", [False, True], ids=["sparse map", "dense map"])
def test_a_map_applied_to_a_wide_block_reads_only_its_support(dense):
    """LinearMap.apply on a block of columns takes only the rows the map reads
    (q and b of a θ̃ that also holds a large matrix parameter): the same
    numbers as column by column."""
    import scipy.sparse as sp

    from diffmodel.compiled import DENSE_LIMIT, LinearMap

    rng = np.random.default_rng(3)
    cols = 40 if dense else 4000
    M = sp.random(30, cols, density=1.0, random_state=1, format="csr")
    M = sp.csr_matrix(M.multiply(np.isin(np.arange(cols), [0, 3, 4, 17, 25, 26])))
    M.eliminate_zeros()
    lmap = LinearMap(M)
    assert lmap._dense == (30 * cols <= DENSE_LIMIT) == dense
    np.testing.assert_array_equal(lmap.support, [0, 3, 4, 17, 25, 26])
    X = np.asfortranarray(rng.standard_normal((cols, 9)))
    block = lmap.apply(X)
    assert lmap._narrow is not None
    for j in range(9):
        np.testing.assert_allclose(block[:, j], lmap.apply(X[:, j]), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(block, M @ X, rtol=1e-14, atol=1e-14)


def test_a_bad_item_of_a_batch_with_attributes_is_named():
    """Values of parameters declared PSD, nonneg, bounded, symmetric or diagonal
    are checked item by item in a batch; the message names the bad item."""
    n, B = 4, 6
    x = cp.Variable(n, name="x")
    P = cp.Parameter((n, n), name="P", PSD=True)
    w = cp.Parameter(n, name="w", nonneg=True)
    u = cp.Parameter(n, name="u", bounds=(np.zeros(n), np.full(n, 5.0)))
    S = cp.Parameter((n, n), name="S", symmetric=True)
    D = cp.Parameter((n, n), name="D", diag=True)
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + 0.5 * w @ cp.square(x)
                                 + cp.sum(S @ x) + cp.sum(D @ x) - cp.sum(x)),
                     {"cap": x <= u})
    rng = np.random.default_rng(8)
    M = rng.standard_normal((B, n, n))
    good = {"P": M @ M.transpose(0, 2, 1) + 1e-3 * np.eye(n), "w": rng.random((B, n)),
            "u": 1.0 + rng.random((B, n)), "S": M + M.transpose(0, 2, 1),
            "D": np.einsum("bi,ij->bij", rng.random((B, n)), np.eye(n))}
    model.solve_batch(**good, progress=False)
    semidefinite = good["P"].copy()
    semidefinite[0] = np.diag([1.0, 1.0, 0.0, 0.0])  # singular, yet PSD: accepted
    model.solve_batch(**{**good, "P": semidefinite}, progress=False)
    bad_cases = {
        "P": (3, lambda v: -v, r"parameter 'P\[3\]': declared PSD=True.*not positive semidef"),
        "w": (2, lambda v: v - 2.0, r"parameter 'w\[2\]': declared nonneg=True"),
        "u": (5, lambda v: v + 10.0, r"parameter 'u\[5\]': the value lies outside"),
        "S": (1, lambda v: v + np.triu(np.ones((n, n)), 1), r"parameter 'S\[1\]': declared "
              r"symmetric"),
        "D": (4, lambda v: v + 1.0, r"parameter 'D\[4\]': declared diag=True"),
    }
    for name, (i, spoil, message) in bad_cases.items():
        values = {k: v.copy() for k, v in good.items()}
        values[name][i] = spoil(values[name][i])
        with pytest.raises(dm.ModelError, match=message):
            model.solve_batch(**values, progress=False)


@pytest.mark.parametrize("attribute", [("PSD", True), ("NSD", True), ("symmetric", True),
                                       ("diag", True), ("nonneg", True), ("integer", True),
                                       ("bounds", (-np.ones((5, 5)), None))])
def test_the_batched_attribute_check_accepts_only_what_items_pass(attribute, monkeypatch):
    """A batch's declared attributes are checked for all items at once (in
    cache-sized chunks); that check may only accept a batch whose every item
    the per-item check accepts (otherwise the items are checked one by one,
    and the bad one is named). Batches of 40 items: PSD, NSD, symmetric,
    diagonal, integer, or one random item among them."""
    import diffmodel._validation as validation
    from diffmodel._validation import ParamSpec, batch_satisfies, check_parameter_value

    monkeypatch.setattr(validation, "_CHUNK_ENTRIES", 100)  # chunks of 4 items
    spec = ParamSpec("P", (5, 5), (attribute,))
    rng = np.random.default_rng(3)
    accepted = 0
    for trial in range(60):
        M = rng.standard_normal((40, 5, 5))
        batch = [M @ M.transpose(0, 2, 1), -(M @ M.transpose(0, 2, 1)), M + M.transpose(0, 2, 1),
                 np.einsum("bi,ij->bij", rng.random((40, 5)), np.eye(5)),
                 np.round(np.abs(M))][trial % 5]
        if trial % 3 == 0:
            batch[int(rng.integers(0, 40))] = M[0]
        items_pass = True
        for item in batch:
            try:
                check_parameter_value(spec, item)
            except dm.ModelError:
                items_pass = False
        fast = batch_satisfies(spec, batch)
        assert not fast or items_pass, trial
        accepted += fast
    assert accepted >= 8  # (the check does accept)


@pytest.mark.parametrize("case", ["dense P", "sparse dependence", "inequalities"])
def test_reduced_backward_matches_central_differences_of_re_solves(case):
    """The reduced backward against an independent reference: central
    differences of whole-batch re-solves of ℓ = Σ_b (G_b·x_b + H_b·y_b), for
    a per-item entry (one item's parameter moved) and a summed entry (the
    entry moved in every item). Data scaled over 1e-3 … 1e3."""
    model, values = {"dense P": _dense_model, "sparse dependence": _sparse_dependence_model,
                     "inequalities": _ineq_model}[case]()
    per_item, summed = {"dense P": (["A"], ["P", "w"]),
                        "sparse dependence": (["q"], ["a", "w"]),
                        "inequalities": (["q"], ["L", "u"])}[case]
    rng = np.random.default_rng(12)
    values = {k: np.array(v, dtype=float) for k, v in values.items()}
    for name in summed:  # shared parameters: their own value, moved as one
        values.setdefault(name, np.array(model.parameters[name].value, dtype=float))
    batch = model.solve_batch(**values, progress=False)
    size = batch.batch_size
    con = next(iter(batch.dual))
    G = rng.standard_normal(batch.primal["x"].shape) * 10.0 ** rng.integers(-3, 4, (size, 1))
    H = rng.standard_normal(batch.dual[con].shape)
    got = batch._backward_reduced({"x": G}, {con: H}, per_item, summed)

    def loss(vals):
        b = model.solve_batch(**vals, progress=False)
        return float(np.sum(G * b.primal["x"]) + np.sum(H * b.dual[con]))

    def central(name, index):
        h = 1e-6 * max(1.0, float(np.max(np.abs(values[name][index]))))
        up = {k: v.copy() for k, v in values.items()}
        down = {k: v.copy() for k, v in values.items()}
        up[name][index] += h
        down[name][index] -= h
        return (loss(up) - loss(down)) / (2 * h)

    for name in per_item:
        entry = (0,) * (values[name].ndim - 1)
        for item in (0, size - 1):
            want = central(name, (item, *entry))
            assert got[name][(item, *entry)] == pytest.approx(want, rel=1e-5, abs=1e-7)
    for name in summed:
        entry = (0,) * len(model.parameters[name].shape)
        batched = values[name].ndim > len(entry)
        want = central(name, (slice(None), *entry) if batched else entry)
        assert got[name][entry] == pytest.approx(want, rel=1e-5, abs=1e-7)
