"""Sensitivity reports, first-order predictions and sweeps (diffmodel.analysis).

Every number is checked against something computed independently of the
report: central finite differences of re-solves, CVXPY's own duals
(Clarabel), :meth:`Model.jacobian`, dense NumPy algebra, or closed forms.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from diffmodel import analysis as rp
from diffmodel.analysis import labels as lb
from problems import GENERATORS, make

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


def _small_model() -> tuple[dm.Model, dict[str, np.ndarray]]:
    """x ∈ ℝ³, b ∈ ℝ², A (2×3), q ∈ ℝ³: asymmetric sizes, so a transposition shows."""
    rng = np.random.default_rng(7)
    x = cp.Variable(3, name="x")
    A = cp.Parameter((2, 3), name="A")
    b = cp.Parameter(2, name="b")
    q = cp.Parameter(3, name="q")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"balance": A @ x == b})
    values = {"A": rng.standard_normal((2, 3)) + np.array([[2.0, 0, 0], [0, 2.0, 0]]),
              "b": np.array([1.0, -2.0]), "q": rng.standard_normal(3)}
    model.solve(**values)
    return model, values


def _fd_entry(model: dm.Model, values: dict[str, np.ndarray], name: str,
              direction: np.ndarray, fn) -> float:
    """Central difference of fn(solution) along ``direction`` for parameter ``name``."""
    h = 1e-6 * max(1.0, float(np.max(np.abs(values[name]))))
    plus = fn(model.solve(**{**values, name: values[name] + h * direction}))
    minus = fn(model.solve(**{**values, name: values[name] - h * direction}))
    model.solve(**values)
    return (plus - minus) / (2 * h)


def _directions(param: cp.Parameter, shape: tuple[int, ...]):
    """Unit directions per entry; symmetric pairs for symmetric/PSD parameters."""
    size = int(np.prod(shape, dtype=int))
    structured = param.attributes.get("symmetric") or param.attributes.get("PSD")
    for k in range(size):
        idx = np.unravel_index(k, shape, order="F") if shape else ()
        d = np.zeros(shape)
        if structured:
            i, j = idx
            if i > j:
                continue
            d[i, j] = d[j, i] = 1.0
        else:
            d[idx] = 1.0
        yield d


# ---------------------------------------------------------------- objective


@pytest.mark.parametrize("name", ["canonical", "maximize", "several_vars", "matrix_var",
                                  "least_squares", "scalars"])
def test_objective_sensitivity_matches_finite_differences(name: str) -> None:
    qp = make(name, 4, 2, 3)
    model = qp.model()
    model.solve(**qp.values)
    report = model.sensitivity()
    assert set(report.objective) == set(qp.values)
    for pname, value in qp.values.items():
        gradient = report.objective[pname].gradient
        assert gradient.shape == np.shape(value)
        for d in _directions(model.parameters[pname], np.shape(value)):
            fd = _fd_entry(model, qp.values, pname, d, lambda s: s.value)
            assert float(np.sum(gradient * d)) == pytest.approx(fd, rel=1e-6, abs=1e-7), pname
        np.testing.assert_array_equal(report.objective[pname].value, value)


def test_elasticities_follow_their_definition() -> None:
    model, values = _small_model()
    values = {**values, "q": np.array([0.5, 0.0, -1.5])}  # one zero entry
    sol = model.solve(**values)
    report = model.sensitivity()
    for pname, value in values.items():
        obj = report.objective[pname]
        np.testing.assert_allclose(obj.elasticity, obj.gradient * value / sol.value,
                                   rtol=1e-13, atol=0)
    assert report.objective["q"].elasticity[1] == 0.0  # θ = 0: no relative change
    # d log f* / d log θ by central differences of re-solves, for b[1] (θ ≠ 0).
    h = 1e-6
    plus = model.solve(**{**values, "b": values["b"] * np.array([1, 1 + h])}).value
    minus = model.solve(**{**values, "b": values["b"] * np.array([1, 1 - h])}).value
    assert report.objective["b"].elasticity[1] == pytest.approx(
        (plus - minus) / (2 * h * sol.value), rel=1e-6)


def test_elasticities_are_undefined_where_the_optimal_value_is_zero() -> None:
    x = cp.Variable(2, name="x")
    b = cp.Parameter(2, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"fix": x == b})
    model.solve(b=np.zeros(2))
    report = model.sensitivity()
    assert report.value == 0.0
    assert np.isnan(report.objective["b"].elasticity).all()
    assert np.isnan(report.blocks["x", "b"].largest[0].elasticity)  # x = 0 too
    doc = json.loads(report.to_json())  # NaN is written as null
    assert doc["objective"]["b"]["elasticity"] == [None, None]


# ---------------------------------------------------------------- shadow prices


def _budget_model(swapped: bool, maximize: bool):
    rng = np.random.default_rng(11)
    x = cp.Variable(4, name="x")
    A = cp.Parameter((2, 4), name="A")
    b = cp.Parameter(2, name="b")
    q = cp.Parameter(4, name="q")
    con = (b == A @ x) if swapped else (A @ x == b)
    f = 0.5 * cp.sum_squares(x) + q @ x
    objective = cp.Maximize(-f) if maximize else cp.Minimize(f)
    values = {"A": rng.standard_normal((2, 4)) + np.eye(2, 4) * 2,
              "b": np.array([1.0, -0.5]), "q": rng.standard_normal(4)}
    return dm.Model(objective, {"budget": con}), con, objective, values


@pytest.mark.parametrize("swapped", [False, True], ids=["A@x==b", "b==A@x"])
@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_shadow_prices_match_cvxpy_duals_and_finite_differences(swapped: bool,
                                                                maximize: bool) -> None:
    model, con, objective, values = _budget_model(swapped, maximize)
    sol = model.solve(**values)
    price = model.sensitivity().shadow_prices["budget"]
    # The dual is CVXPY's.
    problem = cp.Problem(objective, [con])
    for p in problem.parameters():
        p.value = values[p.name()]
    problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(price.dual, con.dual_value, atol=1e-6)
    np.testing.assert_allclose(price.dual, sol.dual["budget"], rtol=0, atol=0)
    # The price is ∂f*/∂ε for lhs == rhs + ε, by finite differences. For A@x == b that
    # is b ↦ b + ε; for b == A@x (lhs b, rhs A@x) it is A@x = b − ε.
    shift = -1.0 if swapped else 1.0
    assert (price.lhs, price.rhs) == (("b", "A @ x") if swapped else ("A @ x", "b"))
    for i in range(2):
        e = np.eye(2)[i]
        fd = _fd_entry(model, values, "b", shift * e, lambda s: s.value)
        assert price.price[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    # ∂f*/∂b = −ν (Minimize, b on the right), as the issue states; signs flip with
    # the side and the sense.
    sign = (-1.0 if swapped else 1.0) * (-1.0 if maximize else 1.0)
    np.testing.assert_allclose(model.objective_gradient()["b"], -sign * sol.dual["budget"],
                               rtol=1e-12, atol=1e-14)
    assert "per unit increase of the right-hand side" in price.meaning
    assert ("+ν" if maximize else "−ν") in price.meaning


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_inequality_shadow_prices_match_cvxpy_duals_and_finite_differences(
        maximize: bool) -> None:
    # cap: A x <= b (row 0 binding, row 1 slack); floor: x[2] >= c, which CVXPY
    # stores as c <= x[2]: relaxing it to c <= x[2] + ε lowers the floor by ε.
    x = cp.Variable(3, name="x")
    A = cp.Parameter((2, 3), name="A")
    b = cp.Parameter(2, name="b")
    c = cp.Parameter(name="c")
    q = np.array([-2.0, -1.0, 1.0])
    f = 0.5 * cp.sum_squares(x) + q @ x
    cons = {"cap": A @ x <= b, "floor": x[2] >= c}
    objective = cp.Maximize(-f) if maximize else cp.Minimize(f)
    model = dm.Model(objective, cons)
    values = {"A": np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]), "b": np.array([1.0, 5.0]),
              "c": 0.5}
    sol = model.solve(**values)
    report = model.sensitivity()
    cap, floor = report.shadow_prices["cap"], report.shadow_prices["floor"]
    assert (cap.lhs, cap.relation, cap.rhs) == ("A @ x", "<=", "b")
    assert (floor.lhs, floor.relation, floor.rhs) == ("c", "<=", "x[2]")
    assert "relaxed to c <= x[2] + ε" in floor.meaning
    problem = cp.Problem(objective, list(cons.values()))
    for p in problem.parameters():
        p.value = values[p.name()]
    problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(cap.dual, cons["cap"].dual_value, atol=1e-6)
    np.testing.assert_allclose(floor.dual, cons["floor"].dual_value, atol=1e-6)
    assert cap.dual[0] > 0.1 and floor.dual > 0.1 and cap.price[1] == 0.0  # row 1 slack
    for i in range(2):
        fd = _fd_entry(model, values, "b", np.eye(2)[i], lambda s: s.value)
        assert cap.price[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    fd = _fd_entry(model, values, "c", np.array(-1.0), lambda s: s.value)
    assert float(floor.price) == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert np.sign(float(floor.price)) == (1.0 if maximize else -1.0)
    assert sol.value == report.value
    assert "cap: A @ x <= b" in str(report)


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_bound_shadow_prices_match_cvxpy_duals_and_finite_differences(maximize: bool) -> None:
    # Variable bounds: x ≥ 0 (nonneg=True, rows "x.lower", stored as 0 <= x) and
    # y ≤ u (bounds=[None, u], rows "y.upper", stored as y <= u), against the twin
    # with explicit constraints solved by Clarabel, and finite differences of f*.
    u = cp.Parameter(2, name="u")
    a = np.array([-1.0, 2.0, 0.5])
    x = cp.Variable(3, name="x", nonneg=True)
    y = cp.Variable(2, name="y", bounds=[None, u])
    f = 0.5 * cp.sum_squares(x - a) + 0.5 * cp.sum_squares(y - np.array([3.0, -1.0]))
    cons = {"link": cp.sum(x) + y[1] <= 4.0}
    objective = cp.Maximize(-f) if maximize else cp.Minimize(f)
    model = dm.Model(objective, cons)
    values = {"u": np.array([1.0, 0.5])}
    sol = model.solve(**values)
    report = model.sensitivity()
    lower, upper = report.shadow_prices["x.lower"], report.shadow_prices["y.upper"]
    assert (lower.lhs, lower.relation, lower.rhs) == ("0", "<=", "x")
    assert (upper.lhs, upper.relation, upper.rhs) == ("y", "<=", "u")
    assert report.active["x.lower"].tolist() == [True, False, False]
    assert report.active["y.upper"].tolist() == [True, False]
    assert lower.status == ("binding", "not binding", "not binding")
    np.testing.assert_allclose(lower.slack, [0.0, 2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(upper.slack, [0.0, 1.5], atol=1e-12)
    # CVXPY's duals of the same problem written with explicit constraints.
    xt, yt = cp.Variable(3, name="x"), cp.Variable(2, name="y")
    ft = 0.5 * cp.sum_squares(xt - a) + 0.5 * cp.sum_squares(yt - np.array([3.0, -1.0]))
    twin_cons = [xt >= 0, yt <= u, cp.sum(xt) + yt[1] <= 4.0]
    twin = cp.Problem(cp.Maximize(-ft) if maximize else cp.Minimize(ft), twin_cons)
    u.value = values["u"]
    twin.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(lower.dual, twin_cons[0].dual_value, atol=1e-6)
    np.testing.assert_allclose(upper.dual, twin_cons[1].dual_value, atol=1e-6)
    assert lower.dual[0] > 0.5 and upper.dual[0] > 1.0
    # The price of y <= u + ε is ∂f*/∂u; that of 0 <= x + ε is ∂f*/∂(−lower bound).
    for i in range(2):
        fd = _fd_entry(model, values, "u", np.eye(2)[i], lambda s: s.value)
        assert upper.price[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    np.testing.assert_allclose(model.objective_gradient()["u"], upper.price, atol=1e-12)
    # The numeric bound cannot be moved by a parameter: a closed form instead. With
    # "link" slack, x[0] is on its own: the minimized part is ½(ℓ − a₀)² for its
    # lower bound ℓ ≥ a₀ = −1, whose derivative is ℓ − a₀ = 1 at ℓ = 0; relaxing
    # 0 <= x + ε lowers ℓ by ε.
    assert not report.active["link"]
    expected = -1.0 if not maximize else 1.0
    assert float(lower.price[0]) == pytest.approx(expected, rel=1e-10)
    assert sol.value == report.value


def test_active_set_and_degenerate_rows_appear_in_every_format(tmp_path: Path) -> None:
    # minimize ½‖x − a‖² s.t. x ≤ u, x ≥ 0: a₀ = u₀ makes cap[0] weakly active,
    # a₁ > u₁ makes cap[1] bind, a₂ < 0 makes x.lower[2] bind.
    x = cp.Variable(3, name="x", nonneg=True)
    a, u = cp.Parameter(3, name="a"), cp.Parameter(3, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x - a)), {"cap": x <= u})
    with pytest.warns(dm.DegenerateWarning):
        sol = model.solve(a=np.array([1.0, 3.0, -1.0]), u=np.array([1.0, 2.0, 5.0]))
    report = model.sensitivity(labels={"cap": ["p", "q", "r"]})
    assert report.active["cap"].tolist() == [True, True, False]
    assert report.degenerate["cap"].tolist() == [True, False, False]
    assert report.active["x.lower"].tolist() == [False, False, True]
    for c in ("cap", "x.lower"):
        np.testing.assert_array_equal(report.active[c], sol.active[c])
        np.testing.assert_array_equal(report.degenerate[c], sol.degenerate[c])
    assert report.shadow_prices["cap"].status == ("weakly active", "binding", "not binding")
    text, md = str(report), report.to_markdown()
    page = report.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    for doc in (text, md, page):
        assert "Active set" in doc and "3 of 6 inequality rows bind" in doc
        assert "weakly active" in doc and "not binding" in doc
        assert "cap[p], cap[q]" in doc  # the binding rows, by label
        assert "degenerate point: cap[p]" in doc
    assert "| cap | x <= u | 3 | 2 | cap[p], cap[q] | cap[p] |" in md
    doc = json.loads(report.to_json())
    assert doc["shadow_prices"]["cap"]["active"] == [True, True, False]
    assert doc["shadow_prices"]["cap"]["degenerate"] == [True, False, False]
    assert doc["shadow_prices"]["cap"]["status"][0] == "weakly active"
    assert doc["shadow_prices"]["cap"]["slack"] == [0.0, 0.0, 5.0]
    frame = report.to_dataframe("constraints")
    assert list(frame.columns) == ["constraint", "index", "label", "relation", "slack", "dual",
                                   "price", "active", "degenerate", "status", "threshold"]
    row = frame[frame["label"] == "cap[q]"].iloc[0]
    assert (row["active"], row["degenerate"], row["status"]) == (True, False, "binding")
    assert row["dual"] == pytest.approx(1.0) and row["price"] == pytest.approx(-1.0)
    assert len(frame) == 6  # cap and x.lower, three rows each


def test_equality_reports_have_no_active_set_section() -> None:
    model, _ = _small_model()
    report = model.sensitivity()
    assert report.active["balance"].tolist() == [True, True]
    assert report.shadow_prices["balance"].slack is None
    assert report.shadow_prices["balance"].status == ("equality", "equality")
    text = str(report)
    assert "Active set" not in text and "Ranges" not in text and "slack" not in text
    frame = report.to_dataframe("constraints")
    assert frame["status"].tolist() == ["equality", "equality"]
    assert frame["slack"].isna().all()


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_blocks_agree_with_model_jacobian(name: str) -> None:
    qp = make(name, 5, 2, 1)
    model = qp.model()
    sol = model.solve(**qp.values)
    report = model.sensitivity(top=4)
    outputs = [*model.variables, *model.constraints]
    assert report.outputs == tuple(outputs)
    assert set(report.blocks) == {(o, p) for o in outputs for p in model.parameters}
    values = {**sol.primal, **sol.dual}
    for (o, p), blk in report.blocks.items():
        J = model.jacobian(o, p)
        assert blk.jacobian is not None
        np.testing.assert_allclose(blk.jacobian, J, rtol=1e-10, atol=1e-12)
        assert blk.norm == pytest.approx(np.linalg.norm(J), rel=1e-10, abs=1e-14)
        assert blk.max_abs == pytest.approx(np.abs(J).max(initial=0.0), rel=1e-10, abs=1e-14)
        # The largest entries are the top of |J|, in order, at their (i, j).
        mags = np.sort(np.abs(J).ravel())[::-1][: len(blk.largest)]
        np.testing.assert_allclose([abs(e.derivative) for e in blk.largest], mags,
                                   rtol=1e-10, atol=1e-14)
        theta = np.ravel(qp.values[p], order="F")
        y = np.ravel(values[o], order="F")
        oshape, pshape = np.shape(values[o]), np.shape(qp.values[p])
        for e in blk.largest:
            i = np.ravel_multi_index(e.output_index, oshape, order="F") if oshape else 0
            j = np.ravel_multi_index(e.parameter_index, pshape, order="F") if pshape else 0
            assert e.derivative == pytest.approx(J[i, j], rel=1e-10, abs=1e-14)
            if abs(y[i]) > 1e-8:
                assert e.elasticity == pytest.approx(J[i, j] * theta[j] / y[i], rel=1e-9)
        assert len(blk.entries) == J.size


def test_blocks_agree_with_a_dense_kkt_solve() -> None:
    # Independent of diffmodel's derivative code: dz/dθ = −K⁻¹ ∂F/∂θ written out densely
    # for minimize ½‖x‖² + qᵀx s.t. A x = b (K = [[I, Aᵀ], [A, 0]]).
    model, values = _small_model()
    sol = model.solve(**values)
    A = values["A"]
    K = np.block([[np.eye(3), A.T], [A, np.zeros((2, 2))]])
    x, nu = sol.primal["x"], sol.dual["balance"]
    dF_db = np.vstack([np.zeros((3, 2)), -np.eye(2)])
    dF_dq = np.vstack([np.eye(3), np.zeros((2, 3))])
    dF_dA = np.zeros((5, 6))  # columns: vec(A), column-major
    for k in range(6):
        i, j = k % 2, k // 2
        dF_dA[j, k] = nu[i]      # (dAᵀ ν)_j
        dF_dA[3 + i, k] = x[j]   # (dA x)_i
    report = model.sensitivity()
    for p, dF in {"b": dF_db, "q": dF_dq, "A": dF_dA}.items():
        dz = -np.linalg.solve(K, dF)
        np.testing.assert_allclose(report.blocks["x", p].jacobian, dz[:3], atol=1e-12)
        np.testing.assert_allclose(report.blocks["balance", p].jacobian, dz[3:], atol=1e-12)


def test_capped_report_keeps_the_same_summaries() -> None:
    qp = make("several_vars", 6, 3, 2)
    model = qp.model()
    model.solve(**qp.values)
    full = model.sensitivity(top=3)
    capped = model.sensitivity(of=list(full.outputs), top=3, max_entries=10)
    assert model.sensitivity(max_entries=10).outputs == ("x", "y")  # default: variables
    assert any("max_entries=10" in n and "of=" in n and "top=" in n for n in capped.notes)
    assert full.notes == []
    for key, blk in full.blocks.items():
        other = capped.blocks[key]
        assert other.jacobian is None
        assert other.norm == pytest.approx(blk.norm, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose([e.derivative for e in other.largest],
                                   [e.derivative for e in blk.largest], rtol=1e-12, atol=1e-15)
        assert other.entries == other.largest
    for a, b in zip(full.top.overall, capped.top.overall):
        assert (a.parameter, a.index) == (b.parameter, b.index)


def test_forward_and_reverse_passes_agree() -> None:
    model, _ = _small_model()
    # 3 output rows vs 6 + 2 + 3 parameter entries: reverse; 5 rows vs 2 entries: forward.
    reverse = model.sensitivity(of="x")
    forward = model.sensitivity(wrt="b")
    assert (reverse.mode, forward.mode) == ("reverse", "forward")
    assert reverse.solves == 3 and forward.solves == 2
    np.testing.assert_allclose(reverse.blocks["x", "b"].jacobian,
                               forward.blocks["x", "b"].jacobian, rtol=1e-12, atol=1e-14)
    assert set(forward.blocks) == {("x", "b"), ("balance", "b")}
    assert set(forward.objective) == {"b"}


def test_rankings_match_dense_column_norms() -> None:
    qp = make("several_vars", 6, 3, 5)
    model = qp.model()
    model.solve(**qp.values)
    k = 5
    report = model.sensitivity(top=k)
    params = list(model.parameters)
    columns = [(p, j) for p in params for j in range(np.size(qp.values[p]))]
    stacked = {o: np.hstack([model.jacobian(o, p) for p in params]) for o in report.outputs}
    total = np.sqrt(sum((J ** 2).sum(axis=0) for J in stacked.values()))

    def check(ranking, scores):
        order = np.argsort(-scores, kind="stable")[:k]
        assert [(i.parameter, np.ravel_multi_index(i.index, np.shape(qp.values[i.parameter]),
                                                   order="F") if i.index else 0)
                for i in ranking] == [columns[c] for c in order]
        np.testing.assert_allclose([i.score for i in ranking], scores[order], rtol=1e-10)

    check(report.top.overall, total)
    for o, J in stacked.items():
        check(report.top.per_output[o], np.linalg.norm(J, axis=0))
    grads = np.concatenate([np.ravel(model.objective_gradient()[p], order="F") for p in params])
    check(report.top.objective, np.abs(grads))


# ---------------------------------------------------------------- labels


def test_labels_land_on_the_right_rows() -> None:
    model, values = _small_model()
    labels = {"x": ["a", "b", "c"], "b": ["north", "south"],
              "A": (["r0", "r1"], ["c0", "c1", "c2"]), "balance": ["n", "s"]}
    original = {k: (list(v[0]), list(v[1])) if isinstance(v, tuple) else list(v)
                for k, v in labels.items()}
    report = model.sensitivity(labels=labels, top=100)
    assert labels == original  # caller data not mutated
    df = report.to_dataframe().set_index(["output_label", "parameter_label"])
    Jb, JA = model.jacobian("x", "b"), model.jacobian("balance", "A")
    assert df.loc[("x[c]", "b[north]"), "derivative"] == pytest.approx(Jb[2, 0], rel=1e-12)
    assert df.loc[("x[a]", "b[south]"), "derivative"] == pytest.approx(Jb[0, 1], rel=1e-12)
    # A[1, 2] is entry 1 + 2·2 = 5 of vec(A).
    assert df.loc[("balance[s]", "A[r1, c2]"), "derivative"] == pytest.approx(JA[1, 5],
                                                                             rel=1e-12)
    assert df.loc[("balance[s]", "A[r1, c2]"), "parameter_index"] == (1, 2)
    assert df.loc[("x[c]", "b[north]"), "output_index"] == (2,)
    entry = [e for e in report.blocks["x", "b"].largest if e.output_label == "x[c]"
             and e.parameter_label == "b[north]"][0]
    assert str(entry) == f"x[c] w.r.t. b[north]: {Jb[2, 0]:.6g}"
    assert report.objective["b"].gradient[1] == pytest.approx(
        df.loc[("f*", "b[south]"), "derivative"])
    text = str(report)
    assert "x[c] w.r.t. b[north]" in text and "balance[s]" in text
    # Without labels, matrix entries read (i, j).
    plain = model.sensitivity(top=100)
    assert "A[1, 2]" in plain.labels["A"] and plain.labels["A"][5] == "A[1, 2]"


def test_bad_labels_are_reported() -> None:
    model, _ = _small_model()
    with pytest.raises(dm.ModelError, match=r"labels\['b'\]: expected 2 labels, got 3"):
        model.sensitivity(labels={"b": ["n", "s", "e"]})
    with pytest.raises(dm.ModelError, match=r"unknown name 'z'.*'x', 'balance'.*'A', 'b', 'q'"):
        model.sensitivity(labels={"z": ["a"]})
    with pytest.raises(dm.ModelError, match=r"2 row labels and 3 column labels, got 3 and 2"):
        model.sensitivity(labels={"A": (["a", "b", "c"], ["d", "e"])})
    with pytest.raises(dm.ModelError, match=r"labels\['q'\]: expected 3 labels, got 1"):
        model.sensitivity(wrt="b", labels={"q": ["only one"]})  # checked even if not reported


# ---------------------------------------------------------------- errors


def test_errors_name_the_culprit() -> None:
    qp = make("canonical", 4, 2, 0)
    model = qp.model()
    with pytest.raises(dm.NotSolvedError, match=r"sensitivity\(\) needs a solution: call "
                                                r"model.solve\(\) first"):
        model.sensitivity()
    with pytest.raises(dm.NotSolvedError, match="predict"):
        model.predict({"b": np.zeros(2)})
    with pytest.raises(dm.NotSolvedError, match="sweep"):
        model.sweep("b", [1.0, 2.0])
    model.solve(**qp.values)
    with pytest.raises(dm.ModelError, match=r"'y' is neither a variable nor a constraint "
                                            r"\(known: 'x', 'balance'\)"):
        model.sensitivity(of="y")
    with pytest.raises(dm.ModelError, match=r"unknown parameter name 'B'.*'Q', 'q', 'A', 'b'"):
        model.sensitivity(wrt=["b", "B"])
    with pytest.raises(dm.ModelError, match="top must be a positive integer"):
        model.sensitivity(top=0)
    with pytest.raises(dm.ModelError, match="unknown parameter name 'c'"):
        model.sensitivity(sweep={"c": [1.0]})
    with pytest.raises(dm.ModelError, match=r"predict\(\): change of parameter 'b': expected "
                                            r"shape \(2,\), got \(3,\)"):
        model.predict({"b": np.zeros(3)})
    with pytest.raises(dm.ModelError, match=r"must have shape \(k,\) or \(k, \*\(2,\)\)"):
        model.sweep("b", np.ones((3, 3)))
    with pytest.raises(dm.ModelError, match="expected a diffmodel Solution"):
        rp.sensitivity("model")  # type: ignore[arg-type]
    with pytest.raises(dm.ModelError, match=r"got Model: pass model.solution"):
        rp.predict(model, {"b": np.zeros(2)})  # type: ignore[arg-type]
    assert model.solution is not None  # still usable
    model.sensitivity()


# ---------------------------------------------------------------- what-if


def test_predict_is_first_order() -> None:
    model, values = _small_model()
    sol = model.solve(**values)
    rng = np.random.default_rng(3)
    delta = {"A": rng.standard_normal((2, 3)), "q": rng.standard_normal(3)}
    kept = {k: v.copy() for k, v in delta.items()}
    errors = []
    for h in (1e-2, 5e-3):
        step = {k: h * v for k, v in delta.items()}
        guess = model.predict(step)
        # Against the forward-mode derivative.
        dz = model.derivative(step)
        np.testing.assert_allclose(guess.primal["x"], sol.primal["x"] + dz["x"], atol=1e-14)
        np.testing.assert_allclose(guess.dual["balance"], sol.dual["balance"] + dz["balance"],
                                   atol=1e-14)
        g = model.objective_gradient()
        assert guess.value == pytest.approx(
            sol.value + sum(float(np.sum(g[k] * v)) for k, v in step.items()), rel=1e-14)
        assert guess.base_value == sol.value
        # Against re-solves: the error is second order.
        actual = model.solve(**{**values, **{k: values[k] + v for k, v in step.items()}})
        errors.append((abs(actual.value - guess.value),
                       np.abs(actual.primal["x"] - guess.primal["x"]).max()))
        model.solve(**values)
    assert 3.0 < errors[0][0] / errors[1][0] < 5.0
    assert 3.0 < errors[0][1] / errors[1][1] < 5.0
    assert all(np.array_equal(delta[k], kept[k]) for k in delta)


def test_predict_is_exact_where_the_solution_is_affine() -> None:
    # K does not depend on b or q: x and ν are affine in them.
    model, values = _small_model()
    delta = {"b": np.array([0.3, -0.2]), "q": np.array([1.0, 0.0, -1.0])}
    guess = model.predict(delta)
    actual = model.solve(**{**values, **{k: values[k] + v for k, v in delta.items()}})
    np.testing.assert_allclose(guess.primal["x"], actual.primal["x"], atol=1e-12)
    np.testing.assert_allclose(guess.dual["balance"], actual.dual["balance"], atol=1e-12)


@pytest.mark.parametrize("kind", ["multiplier", "value", "index"])
def test_sweep_compares_predictions_with_resolves(kind: str) -> None:
    x = cp.Variable(3, name="x")
    A = cp.Parameter((2, 3), name="A")
    b = cp.Parameter(2, name="b")
    s = cp.Parameter(name="s", nonneg=True)
    model = dm.Model(cp.Minimize(s * cp.sum_squares(x) + np.array([1.0, -1.0, 0.5]) @ x),
                     {"balance": A @ x == b})
    values = {"A": np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]]), "b": np.array([1.0, 2.0]),
              "s": 0.5}
    before = model.solve(**values)
    g = model.objective_gradient()
    if kind == "multiplier":
        name, path = "A", np.array([0.8, 1.0, 1.3])
        thetas = path[:, None, None] * values["A"]
    elif kind == "value":
        name, path = "s", np.array([0.25, 0.5, 2.0])
        thetas = path
    else:
        name = "b"
        path = np.array([[1.0, 2.0], [0.0, 2.5], [-1.0, 1.0]])
        thetas = path
    path_copy = path.copy()
    sw = model.sweep(name, path)
    assert sw.step_kind == kind and sw.failures == ()
    np.testing.assert_array_equal(path, path_copy)
    # Untouched: the same latest solution, parameter and variable values as before
    # (re-solves go through the solution's engine, not through the model).
    assert model.solution is before
    for p, v in values.items():
        np.testing.assert_array_equal(model.parameters[p].value, v)
    np.testing.assert_array_equal(x.value, before.primal["x"])
    np.testing.assert_array_equal(model.constraints["balance"].dual_value,
                                  before.dual["balance"])
    # Independent re-solves and first-order predictions at every step.
    fresh = dm.Model(cp.Minimize(s * cp.sum_squares(x) + np.array([1.0, -1.0, 0.5]) @ x),
                     {"balance": A @ x == b})
    for i, theta in enumerate(thetas):
        ref = fresh.solve(**{**values, name: theta})
        assert sw.value[i] == pytest.approx(ref.value, rel=1e-12)
        np.testing.assert_allclose(sw.primal["x"][i], ref.primal["x"], atol=1e-12)
        np.testing.assert_allclose(sw.dual["balance"][i], ref.dual["balance"], atol=1e-12)
        delta = {name: np.asarray(theta) - values[name]}
        guess = model.predict(delta)
        assert sw.predicted_value[i] == pytest.approx(
            before.value + float(np.sum(g[name] * delta[name])), rel=1e-12, abs=1e-14)
        np.testing.assert_allclose(sw.predicted_primal["x"][i], guess.primal["x"], atol=1e-12)
        err = max(np.abs(guess.primal["x"] - ref.primal["x"]).max(),
                  np.abs(guess.dual["balance"] - ref.dual["balance"]).max())
        assert sw.error[i] == pytest.approx(err, rel=1e-8, abs=1e-13)
        assert sw.value_error[i] == pytest.approx(abs(sw.predicted_value[i] - ref.value),
                                                  rel=1e-8, abs=1e-13)
    base = int(np.argmin(np.abs(sw.steps - (1.0 if kind == "multiplier" else 0.5))))
    if kind != "index":
        assert sw.error[base] < 1e-12  # the path passes through θ₀
    assert "f* (re-solved)" in str(sw)


def test_sweep_records_failed_steps_and_restores() -> None:
    model, values = _small_model()
    before = model.solution
    report = model.sensitivity(sweep={"A": [1.0, 0.0]})  # A = 0: infeasible
    sw = report.sweeps["A"]
    assert [i for i, _ in sw.failures] == [1] and "infeasible" in sw.failures[0][1]
    assert np.isnan(sw.value[1]) and np.isnan(sw.error[1]) and not np.isnan(sw.value[0])
    assert any("sweep of 'A'" in n and "step 1" in n for n in report.notes)
    assert model.solution is before


def test_analyses_use_their_own_solution() -> None:
    # A report, a prediction and a sweep of an older solution are those of that
    # solution, whatever the model solved since: compare with a fresh model.
    model, values = _small_model()
    old = model.solve(**values)
    other = {**values, "b": np.array([3.0, 0.5]), "A": values["A"] + 0.3}
    model.solve(**other)
    fresh, _ = _small_model()  # solved at ``values``
    report, ref = old.sensitivity(top=3), fresh.sensitivity(top=3)
    assert report.value == pytest.approx(ref.value, rel=1e-13)
    for key, blk in ref.blocks.items():
        np.testing.assert_allclose(report.blocks[key].jacobian, blk.jacobian, rtol=1e-10,
                                   atol=1e-13)
    np.testing.assert_allclose(rp.predict(old, {"b": np.ones(2)}).primal["x"],
                               fresh.predict({"b": np.ones(2)}).primal["x"], atol=1e-13)
    sw = rp.sweep(old, "b", [1.0, 1.5])
    assert sw.value[0] == pytest.approx(old.value, rel=1e-13)
    # The model's latest solution and parameter values stay those of ``other``.
    np.testing.assert_array_equal(model.parameters["b"].value, other["b"])
    assert model.solution is not None and model.solution is not old


def test_sweep_failures_speak_of_the_model_sense() -> None:
    x = cp.Variable(2, name="x")
    g = cp.Parameter(nonneg=True, name="g")
    mu = cp.Parameter(2, name="mu")
    model = dm.Model(cp.Maximize(mu @ x - g * cp.sum_squares(x)), {"budget": cp.sum(x) == 1})
    sol = model.solve(g=1.0, mu=np.array([1.0, 2.0]))
    sw = sol.sweep("g", [1.0, 0.0])  # g = 0: the utility grows without bound
    assert [i for i, _ in sw.failures] == [1]
    assert "unbounded above" in sw.failures[0][1] and "increases" in sw.failures[0][1]
    assert sw.value[0] == pytest.approx(sol.value, rel=1e-13)


def test_constraint_sides_are_readable() -> None:
    # Sides in the order CVXPY stores them; numeric literals read C.
    x = cp.Variable(3, name="x")
    b = cp.Parameter(2, name="b")
    A = np.arange(6.0).reshape(2, 3)
    assert lb.constraint_sides(str(A @ x == b)) == ("C @ x", "b", "==")
    assert lb.constraint_sides(str(b == A @ x)) == ("b", "C @ x", "==")
    assert lb.constraint_sides(str(A @ x <= b)) == ("C @ x", "b", "<=")
    big = np.arange(400.0).reshape(20, 20)
    y = cp.Variable(20, name="y")
    lhs, rhs, _ = lb.constraint_sides(str(big @ y - big @ y[::-1] == 0))
    assert "\n" not in lhs and lhs.startswith("C @ y") and rhs == "0.0"
    # A text cut short before the relation keeps what it shows.
    assert lb.constraint_sides("[[1.00 2.00] [3.0 ...") == ("C...", "...", "==")
    assert lb.constraint_sides("x[0] + y[1] == 1.0") == ("x[0] + y[1]", "1.0", "==")


def test_importing_diffmodel_needs_neither_matplotlib_nor_pandas() -> None:
    code = ("import sys, diffmodel, diffmodel.analysis\n"
            "assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------- renderings


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.plots: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "figure":
            self.plots.append(a.get("data-plot") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("src", "href", "action", "data", "poster"):
            value = a.get(key)
            if value is not None and not value.startswith(("data:", "#")):
                self.external.append(f"{tag} {key}={value[:60]}")
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.external.append(tag)


def _report_with_sweep() -> tuple[dm.Model, rp.SensitivityReport]:
    model, _ = _small_model()
    report = model.sensitivity(labels={"b": ["north", "south"]}, top=4,
                               sweep={"b": np.linspace(0.5, 1.5, 5), "A": [0.9, 1.0, 1.1]})
    return model, report


def test_text_markdown_and_json_renderings() -> None:
    model, report = _report_with_sweep()
    text = str(report)
    for title in ("Objective sensitivity", "Shadow prices", "Solution sensitivities",
                  "∂x/∂A", "∂balance/∂q", "Most influential", "Sweeps"):
        assert title in text
    assert "b[north]" in text and "change of the optimal" in text
    md = report.to_markdown()
    assert md.startswith("# Sensitivity report")
    assert md.count("\n| ---") + md.count("\n|---") >= 10
    assert "\\|∂f\\*/∂θ\\|" in md  # table cells escaped
    doc = json.loads(report.to_json())
    np.testing.assert_allclose(doc["objective"]["b"]["gradient"],
                               model.objective_gradient()["b"], rtol=1e-15)
    blocks = {(b["output"], b["parameter"]): b for b in doc["blocks"]}
    np.testing.assert_allclose(blocks["x", "A"]["jacobian"], model.jacobian("x", "A"),
                               rtol=1e-10, atol=1e-13)
    assert doc["shadow_prices"]["balance"]["lhs"] == "A @ x"
    assert len(doc["sweeps"]["b"]["value"]) == 5
    assert doc["top"]["objective"][0]["label"] == report.top.objective[0].label
    assert "SensitivityReport(" in repr(report)


def test_dataframe_is_long_format() -> None:
    model, report = _report_with_sweep()
    df = report.to_dataframe()
    assert list(df.columns) == ["kind", "output", "output_index", "output_label", "parameter",
                                "parameter_index", "parameter_label", "derivative",
                                "elasticity", "threshold"]
    sizes = {"A": 6, "b": 2, "q": 3}
    assert len(df) == sum(sizes.values()) + (3 + 2) * sum(sizes.values())
    assert (df["kind"] == "objective").sum() == sum(sizes.values())
    for (o, p), blk in report.blocks.items():
        rows = df[(df["output"] == o) & (df["parameter"] == p)]
        J = model.jacobian(o, p)
        for _, row in rows.iterrows():
            i = row["output_index"][0]
            j = np.ravel_multi_index(row["parameter_index"], (2, 3), order="F") \
                if p == "A" else row["parameter_index"][0]
            assert row["derivative"] == pytest.approx(J[i, j], rel=1e-10, abs=1e-14)


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    _, report = _report_with_sweep()
    path = report.to_html(tmp_path / "report.html")
    assert path == tmp_path / "report.html" and list(tmp_path.iterdir()) == [path]
    page = path.read_text(encoding="utf-8")
    parser = _Structure()
    parser.feed(page)
    assert parser.external == []
    assert "http://" not in page and "https://" not in page
    expected = ({"tornado", "sweep-b", "sweep-A"}
                | {f"heatmap-{o}-{p}" for o, p in report.blocks})
    assert set(parser.plots) == expected and len(parser.plots) == len(expected)
    assert len(parser.images) == len(expected)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        import base64
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    # Every table: objective, shadow prices, block summary, one per block, rankings
    # (objective, overall, per output), one per sweep.
    n_tables = 1 + 1 + 1 + len(report.blocks) + 2 + len(report.outputs) + 2
    assert parser.tags.count("table") == n_tables
    assert page.count("<figure") == len(expected)
    assert "b[north]" in page


def test_save_plots_writes_pngs(tmp_path: Path) -> None:
    _, report = _report_with_sweep()
    paths = report.save_plots(tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"tornado.png", "heatmap-x-b.png", "sweep-b.png"} <= names
    assert len(paths) == 1 + len(report.blocks) + 2
    assert all(p.read_bytes()[:8] == PNG for p in paths)


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, report = _report_with_sweep()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "diffmodel\[report\]"'):
        report.to_dataframe()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'needs matplotlib.*pip install "diffmodel\[report\]"'):
        report.to_html(tmp_path / "r.html")
    with pytest.raises(ImportError, match=r'pip install "diffmodel\[report\]"'):
        report.save_plots(tmp_path)
    assert not (tmp_path / "r.html").exists()
    assert "Objective sensitivity" in str(report) and json.loads(report.to_json())


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = _small_model()
    model.sensitivity(progress=True)
    err = capsys.readouterr().err
    assert "sensitivity (reverse passes)" in err and "100%" in err and err.endswith("\n")
    model.sensitivity()  # automatic: short work, not a terminal
    model.sensitivity(progress=False)
    assert capsys.readouterr() == ("", "")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_automatic_progress_bar_needs_a_terminal_and_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from diffmodel.analysis import _common

    model, _ = _small_model()
    for delay, shown in ((_common.PROGRESS_DELAY, False), (0.0, True)):
        monkeypatch.setattr(_common, "PROGRESS_DELAY", delay)
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        model.sweep("b", [0.5, 1.0, 1.5])  # progress=None: automatic
        out = terminal.getvalue()
        assert ("sweep of 'b'" in out and "3/3" in out) is shown, out
    with pytest.raises(dm.ModelError, match="progress must be None, True or False"):
        model.sweep("b", [1.0], progress="yes")  # type: ignore[arg-type]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("headless Chromium is not installed")
    _, report = _report_with_sweep()
    page = report.to_html(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1200,1600", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000


# ---------------------------------------------------------------- significance


def _planted_model() -> dm.Model:
    """x = D q with D = diag(1, 1e-13, 2), except x[0] = b: ∂x[1]/∂q[1] = 1e-13 and
    the dual of "fix" is q[0] − b = 1e-13, both far below what the solution resolves."""
    x = cp.Variable(3, name="x")
    q = cp.Parameter(3, name="q")
    b = cp.Parameter(name="b")
    D = np.diag([1.0, 1e-13, 2.0])
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) - (D @ q) @ x), {"fix": x[0] == b})
    qv = np.array([1.0 + 1e-13, 3.0, 0.5])
    model.solve(q=qv, b=1.0)
    return model


def test_a_planted_tiny_entry_is_shown_as_zero_and_never_ranked(tmp_path: Path) -> None:
    model = _planted_model()
    raw = model.jacobian("x", "q")
    assert raw[1, 1] == pytest.approx(1e-13, rel=1e-6)  # the planted entry is there ...
    report = model.sensitivity(labels={"q": ["a", "b", "c"]})
    blk = report.blocks["x", "q"]
    assert 1e-13 < blk.threshold < 1e-8
    assert blk.jacobian is not None and blk.jacobian[1, 1] == 0.0  # ... and counts as 0
    np.testing.assert_array_equal(blk.jacobian, [[0, 0, 0], [0, 0, 0], [0, 0, 2.0]])
    assert [(e.output_label, e.parameter_label) for e in blk.largest] == [("x[2]", "q[c]")]
    fix = report.shadow_prices["fix"]
    assert 1e-13 < fix.threshold < 1e-8 and float(fix.dual) == 0.0 == float(fix.price)
    obj = report.objective["q"]  # ∂f*/∂q = −D x: 1e-13 · x[1] = 3e-26 for q[b]
    assert obj.gradient[1] == 0.0 and obj.gradient[0] != 0.0
    # ∂f*/∂b = ν: 0 as well; x[0] = b moves with b, so b ranks for the solution.
    assert float(report.objective["b"].gradient) == 0.0
    assert [i.label for i in report.top.objective] == ["q[c]", "q[a]"]
    ranked = [i.label for i in (*report.top.overall, *report.top.per_output["x"])]
    assert "q[b]" not in ranked and "b" in ranked
    # Every format shows the entry as 0 and states the threshold.
    md, text = report.to_markdown(), str(report)
    for doc in (md, text):
        assert "e-13" not in doc and "e-14" not in doc
        assert "Significance: the solution's accuracy estimate is" in doc
        assert f"≤ {rp.render.tables.tol(blk.threshold)} counts as 0" in doc
        assert "the 1 nonzero of 9 entries" in doc and "(8 are 0)" in doc
        assert "x[1] w.r.t. q[b]" not in doc
    doc = json.loads(report.to_json())
    jac = {(b["output"], b["parameter"]): b for b in doc["blocks"]}["x", "q"]
    assert jac["jacobian"][1][1] == 0.0 and jac["threshold"] == blk.threshold
    assert doc["shadow_prices"]["fix"]["dual"] == 0.0
    assert doc["significance"]["resolution"] == report.resolution
    frame = report.to_dataframe()
    row = frame[(frame["output_label"] == "x[1]") & (frame["parameter_label"] == "q[b]")]
    assert row["derivative"].tolist() == [0.0] and row["threshold"].iloc[0] == blk.threshold
    page = report.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "e-13" not in page.split("<img", 1)[0] and "counts as 0" in page


EXAMPLES = {"portfolio": (["w", "budget"], ["mu", "gamma", "cap"], {"gamma": [3.0, 4.0, 5.0]}),
            "dc_power_flow": (["p", "balance"], ["c", "d", "fmax"], {"d": [0.9, 1.0, 1.1]})}


@pytest.fixture(scope="module")
def example_reports() -> dict[str, rp.SensitivityReport]:
    """The reports of docs/reports.md (portfolio and the DC dispatch), with sweeps."""
    import runpy

    out = {}
    for name, (of, wrt, sweep) in EXAMPLES.items():
        ns = runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="docs")
        ns["model"].solve()
        out[name] = ns["model"].sensitivity(of=of, wrt=wrt, labels=ns["labels"], top=10,
                                            sweep=sweep)
    return out


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_reports_rank_nothing_below_the_stated_threshold(
        name: str, example_reports: dict[str, rp.SensitivityReport]) -> None:
    report = example_reports[name]
    floors = {p: obj.threshold for p, obj in report.objective.items()}
    for p, obj in report.objective.items():
        g = np.abs(obj.gradient)
        assert not np.any((g > 0) & (g <= obj.threshold)), p
    for inf in report.top.objective:
        assert inf.score > floors[inf.parameter], inf
    for c, sp in report.shadow_prices.items():
        nu = np.abs(sp.dual)
        assert not np.any((nu > 0) & (nu <= sp.threshold)), c
    for key, blk in report.blocks.items():
        assert blk.threshold > 0 and blk.jacobian is not None, key
        J = np.abs(blk.jacobian)
        assert not np.any((J > 0) & (J <= blk.threshold)), key
        assert all(abs(e.derivative) > blk.threshold for e in blk.largest), key
    for o, items in report.top.per_output.items():
        for inf in items:
            floor = report.blocks[o, inf.parameter].threshold
            assert inf.score > floor, (o, inf)
    for inf in report.top.overall:
        assert inf.score > min(report.blocks[o, inf.parameter].threshold
                               for o in report.top.per_output), inf
    md = report.to_markdown()
    assert "Significance: the solution's accuracy estimate is" in md
    # Each table states its group's threshold: ∂f*/∂θ, each constraint, each block.
    stated = md.count("counts as 0") + md.count("exact (threshold 0)")
    assert stated == 1 + 1 + len(report.shadow_prices) + len(report.blocks)  # 1: the rule


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_reports_have_no_cvxpy_internals_in_any_format(
        name: str, example_reports: dict[str, rp.SensitivityReport], tmp_path: Path) -> None:
    import re

    from test_printer import CVXPY_FRAGMENTS

    report = example_reports[name]
    page = report.to_html(tmp_path / f"{name}.html").read_text(encoding="utf-8")
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # the plots
    frame = report.to_dataframe()
    cells = " ".join(map(str, frame["output_label"].tolist() + frame["parameter_label"].tolist()))
    for kind, doc in (("text", str(report)), ("markdown", report.to_markdown()),
                      ("json", report.to_json()), ("html", page), ("dataframe", cells)):
        found = CVXPY_FRAGMENTS.search(doc)
        assert found is None, f"{name} ({kind}): {doc[max(0, found.start() - 80):found.end() + 80]}"
    # The HTML drew every kind of plot: tornado, ranges, heatmaps, sweep.
    kinds = {plot.kind for plot in rp.render.content.report_plots(report)}
    assert kinds == {"tornado", "ranges", "heatmap", "sweep"}


# ---------------------------------------------------------------- plots


def test_colour_scales_follow_the_data() -> None:
    from diffmodel.analysis.render.plots import colour_scale

    mixed = colour_scale(np.array([[-0.5, 2.0], [0.0, 1.0]]), 1e-12)
    assert (mixed.kind, mixed.cmap, mixed.vmin, mixed.vmax) == ("diverging", "RdBu_r", -2.0, 2.0)
    # One sign: the scale spans the data, so -0.0221 and -0.0224 look different.
    neg = colour_scale(np.array([-0.0221, -0.0224, -0.0222]), 1e-12)
    assert (neg.kind, neg.vmin, neg.vmax) == ("negative", -0.0224, -0.0221)
    pos = colour_scale(np.array([0.0, 3.0]), 1e-12)
    assert (pos.kind, pos.vmin, pos.vmax) == ("positive", 0.0, 3.0)
    flat = colour_scale(np.full((3, 2), -0.022), 1e-12)
    assert flat.kind == "uniform" and "every entry is -0.022" in flat.label
    assert flat.vmin < -0.022 < flat.vmax
    assert colour_scale(np.zeros((2, 2)), 0.0).kind == "uniform"


def _texts(fig) -> str:
    """Every text of a matplotlib figure (titles, labels, notes, legend), joined."""
    return " | ".join(t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text")))


def test_every_kind_of_plot_is_drawn() -> None:
    """Tornado, ranges, a heatmap of each colour scale (diverging, one sign,
    uniform) and a sweep whose log axis has exact zeros."""
    from diffmodel.analysis.render import content, plots

    pytest.importorskip("matplotlib")
    x = cp.Variable(3, name="x", nonneg=True)
    b, u = cp.Parameter(name="b"), cp.Parameter(3, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x)), {"total": cp.sum(x) == b,
                                                            "cap": x <= u})
    model.solve(b=3.0, u=np.array([0.5, 5.0, 5.0]))
    report = model.sensitivity(sweep={"b": [2.0, 3.0, 4.0]})
    drawn = {}
    for plot in content.report_plots(report):
        fig = plots.draw(plot, report)
        assert plots.png(fig)[:8] == PNG
        drawn[plot.key] = fig
    assert {"tornado", "ranges", "heatmap-x-b", "heatmap-x-u", "sweep-b"} <= set(drawn)
    # ∂x/∂b = (0, ½, ½): one sign, so a sequential scale over [0, ½].
    assert "every entry ≥ 0, the scale spans [0, 0.5]" in _texts(drawn["heatmap-x-b"])
    # ∂total/∂b: one entry, a uniform block with a note giving its value.
    flat = _texts(drawn["heatmap-total-b"])
    assert "uniform block: every entry is" in flat and "one colour" in flat
    assert "diverging, centred at 0" in _texts(drawn["heatmap-x-u"])
    assert "How far" in _texts(drawn["ranges"]) and "Objective sensitivity" in _texts(
        drawn["tornado"])
    # The sweep's errors: at b = 3 (the solution itself) both are exactly 0. They
    # are marked at the bottom of the log axis, which follows the data (no floor).
    sw = report.sweeps["b"]
    assert sw.value_error[1] == 0.0 and sw.error[1] == 0.0
    errors = drawn["sweep-b"].axes[1]
    positive = np.concatenate([sw.value_error, sw.error])
    positive = positive[positive > 0]
    bottom = errors.get_ylim()[0]
    assert errors.get_yscale() == "log"
    assert bottom == pytest.approx(positive.min() / 10 ** 0.5)
    zeros = [line for line in errors.get_lines() if line.get_marker() == "v"]
    assert zeros and all(np.all(line.get_ydata() == bottom) for line in zeros)
    assert "exact 0" in _texts(drawn["sweep-b"])


# ---------------------------------------------------------------- large models


def test_large_model_top_k_without_the_dense_jacobian() -> None:
    # minimize ½‖x‖² + qᵀx s.t. aᵀx = 1, x ∈ ℝ⁵⁰⁰⁰, parameters q, a (10,000 entries).
    # Closed form: x = −q + s·a with s = (1 + aᵀq)/‖a‖², so
    #   ∂x/∂q = −I + aaᵀ/‖a‖²,  ∂x/∂a = s·I + a gᵀ,  g = q/‖a‖² − 2 s a/‖a‖².
    n = 5000
    rng = np.random.default_rng(0)
    x = cp.Variable(n, name="x")
    q = cp.Parameter(n, name="q")
    a = cp.Parameter(n, name="a")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"budget": a @ x == 1})
    qv, av = rng.standard_normal(n), 1.0 + rng.random(n)
    model.solve(q=qv, a=av)
    k = 5
    tracemalloc.start()
    try:
        report = model.sensitivity(top=k)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense = 8 * n * 2 * n  # bytes of the dense ∂x/∂(q, a)
    assert peak < dense / 10, f"peak {peak / 1e6:.0f} MB vs dense {dense / 1e6:.0f} MB"
    assert report.outputs == ("x",) and report.mode == "reverse" and report.solves == n
    assert any("only the variables are reported" in note for note in report.notes)
    assert any("capped" in note and "wrt=" in note for note in report.notes)
    assert all(blk.jacobian is None for blk in report.blocks.values())

    S = av @ av
    s = (1 + av @ qv) / S
    g = qv / S - 2 * s * av / S
    assert report.blocks["x", "q"].norm == pytest.approx(np.sqrt(n - 1), rel=1e-9)
    assert report.blocks["x", "a"].norm == pytest.approx(
        np.sqrt(n * s**2 + 2 * s * (av @ g) + S * (g @ g)), rel=1e-9)
    # Column norms in closed form give the per-output ranking exactly.
    col_q = np.sqrt(1 - av**2 / S)
    col_a = np.sqrt(s**2 + 2 * s * av * g + S * g**2)
    scores = np.concatenate([col_q, col_a])
    order = np.argsort(-scores, kind="stable")[:k]
    ranked = [(i.parameter, i.index[0]) for i in report.top.per_output["x"]]
    assert ranked == [("q", int(c)) if c < n else ("a", int(c - n)) for c in order]
    np.testing.assert_allclose([i.score for i in report.top.per_output["x"]], scores[order],
                               rtol=1e-9)
    # Largest entries of ∂x/∂a: on the diagonal (s + a_i g_i) or off it (a_i g_j, i ≠ j).
    diag = np.abs(s + av * g)
    ia, ig = np.argsort(-np.abs(av))[:2], np.argsort(-np.abs(g))[:2]
    off = max(abs(av[i] * g[j]) for i in ia for j in ig if i != j)
    largest = report.blocks["x", "a"].largest
    assert abs(largest[0].derivative) == pytest.approx(max(diag.max(), off), rel=1e-9)
    for e in largest:
        i, j = e.output_index[0], e.parameter_index[0]
        assert e.derivative == pytest.approx(s * (i == j) + av[i] * g[j], rel=1e-9)
    # Objective: ∂f*/∂q = x, ∂f*/∂a = ν x (envelope theorem: ∂L/∂a with ν = −s).
    xs = -qv + s * av
    np.testing.assert_allclose(report.objective["q"].gradient, xs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(report.objective["a"].gradient, -s * xs, rtol=1e-9, atol=1e-12)
