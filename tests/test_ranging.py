"""Ranging (diffmodel.analysis.ranging): how far each parameter entry can move
before the active set changes.

Every range is checked by re-solves with ``model.solve``: just inside each end
the binding rows are those of the solution, just outside they are not, and
the row named at that end is the one that changed, in the direction named
(``enters``: it binds after; ``leaves``: it no longer does). This holds
exactly for parameters that enter only q, b and h: random non-degenerate
problems (minimize and maximize, inequalities and variable bounds) and the
two examples. Forward and reverse passes give the same ranges; degenerate
points give empty sides; every report format shows the ranges.
"""

from __future__ import annotations

import html
import json
import runpy
import warnings
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from diffmodel import analysis as rp
from diffmodel.analysis.render.markdown import md_cell

ROOT = Path(__file__).resolve().parents[1]
#: Re-solves at θ + (1 ∓ STEP)(end − θ): just inside and just outside an end.
STEP = 0.01


# ---------------------------------------------------------------- helpers


def _binding(sol: dm.Solution) -> dict[str, np.ndarray]:
    return {c: np.array(m) for c, m in sol.active.items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[c], b[c]) for c in a)


def check_ranges(model: dm.Model, values: dict[str, Any], ranges: dict[str, rp.ParameterRange],
                 names: list[str]) -> int:
    """Re-solve around every finite end of every entry of ``names``; return the number
    of ends checked. Just outside an end the problem may have no solution (the rows
    binding there pin the solution, and the parameter pushes them apart): that
    counts as a change, for a minority of ends. Leaves the model solved at
    ``values``."""
    base = _binding(model.solve(**values))
    checked = 0
    infeasible: list[str] = []
    for name in names:
        rng = ranges[name]
        value = np.asarray(values[name], dtype=float)
        assert rng.exact.all(), name
        for k in range(value.size):
            idx = np.unravel_index(k, value.shape, order="F") if value.shape else ()
            for end, limit in ((rng.low[idx], rng.at_low[k]), (rng.high[idx], rng.at_high[k])):
                if not np.isfinite(end):
                    assert limit is None
                    continue
                assert limit is not None
                if limit.event == "domain":
                    continue
                theta = float(value[idx])
                assert end != theta, (name, idx, "a non-degenerate point has no empty side")
                for frac, inside in ((1 - STEP, True), (1 + STEP, False)):
                    moved = value.copy()
                    moved[idx] = theta + frac * (end - theta)
                    where = f"{name}{list(idx)} at {frac:g} of the way to {end:.6g} ({limit})"
                    try:
                        active = _binding(model.solve(**{**values, name: moved}))
                    except dm.ModelError:  # outside the parameter's domain (cap < 0)
                        assert not inside, where
                        continue
                    except dm.SolverError as exc:  # no solution beyond the end (hi < lo, say)
                        assert not inside, (where, str(exc))
                        assert exc.status in ("infeasible", "inaccurate"), (where, str(exc))
                        infeasible.append(where)
                        continue
                    if inside:
                        assert _same(active, base), where
                        continue
                    assert not _same(active, base), where
                    row = active[limit.constraint][limit.index]
                    assert row == (limit.event == "enters"), where
                    assert base[limit.constraint][limit.index] != row, where
                checked += 1
    model.solve(**values)
    assert len(infeasible) < checked / 2, infeasible
    return checked


def random_problem(seed: int, maximize: bool = False
                   ) -> tuple[dm.Model, dict[str, np.ndarray], np.ndarray]:
    """minimize ½xᵀPx + qᵀx s.t. A x = b, G x ≤ h, x ≥ lo, x ≤ hi (q, b, h, lo, hi
    parameters; P, A, G constants), from a strictly feasible point x₀; or the
    equivalent Maximize of −(…). Returns the model, the values and G."""
    rng = np.random.default_rng(seed)
    n, m_eq, m_in = 7, 2, 6
    R = rng.standard_normal((n, n))
    P = R @ R.T / n + 0.5 * np.eye(n)
    A, G = rng.standard_normal((m_eq, n)), rng.standard_normal((m_in, n))
    x0 = 0.3 * rng.standard_normal(n)
    q, b, h = cp.Parameter(n, name="q"), cp.Parameter(m_eq, name="b"), cp.Parameter(m_in,
                                                                                    name="h")
    lo, hi = cp.Parameter(n, name="lo"), cp.Parameter(n, name="hi")
    x = cp.Variable(n, name="x", bounds=[lo, hi])
    f = 0.5 * cp.quad_form(x, P) + q @ x
    model = dm.Model(cp.Maximize(-f) if maximize else cp.Minimize(f),
                     {"eq": A @ x == b, "ineq": G @ x <= h})
    values = {"q": 2.0 * rng.standard_normal(n), "b": A @ x0, "h": G @ x0 + rng.random(m_in),
              "lo": x0 - 0.2 - rng.random(n), "hi": x0 + 0.2 + rng.random(n)}
    return model, values, G


def _load(name: str) -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example_under_test")


# ---------------------------------------------------------------- exact ranges


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ranges_of_q_b_h_hold_inside_and_end_outside(seed: int, maximize: bool) -> None:
    model, values, _ = random_problem(seed, maximize)
    sol = model.solve(**values)
    assert not any(m.any() for m in sol.degenerate.values()), "construction: non-degenerate"
    assert sum(int(m.sum()) for c, m in sol.active.items() if c != "eq") >= 2, "construction"
    ranges = rp.ranging(sol)
    assert list(ranges) == ["q", "b", "h", "lo", "hi"]
    checked = check_ranges(model, values, ranges, list(ranges))
    assert checked >= 20
    for name, rng in ranges.items():
        assert rng.low.shape == rng.high.shape == np.shape(values[name])
        np.testing.assert_array_equal(rng.value, values[name])
        assert np.all(rng.low < rng.value) and np.all(rng.value < rng.high)
        assert len(rng.at_low) == len(rng.at_high) == len(rng.labels) == rng.value.size


def test_forward_and_reverse_passes_give_the_same_ranges() -> None:
    model, values, _ = random_problem(5)
    sol = model.solve(**values)
    # 29 parameter entries against 22 rows of M (2 equalities, 20 inequalities):
    # reverse passes, one per row; one parameter at a time: forward passes, one
    # per entry.
    report = model.sensitivity(top=3)
    assert report.range_solves == 22
    together = report.ranges_detail
    for name in values:
        alone = rp.ranging(sol, wrt=name)[name]
        for a, b in ((together[name].low, alone.low), (together[name].high, alone.high)):
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
            np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-10,
                                       atol=1e-12)
        assert together[name].at_low == alone.at_low
        assert together[name].at_high == alone.at_high
        np.testing.assert_array_equal(report.ranges[name][0], together[name].low)


def test_ranges_agree_with_the_derivatives() -> None:
    # Inside a range the solution is affine in an entry of q, b or h: its ends are
    # where the slacks s + t·ds or the multipliers λ + t·dλ first reach zero, with
    # ds and dλ from Solution.derivative (an independent forward pass).
    model, values, G = random_problem(6)
    sol = model.solve(**values)
    rng = rp.ranging(sol, wrt="h")["h"]
    x = sol.primal["x"]
    slack = {"ineq": values["h"] - G @ x, "x.lower": x - values["lo"],
             "x.upper": values["hi"] - x}
    for k in range(values["h"].size):
        e = np.zeros_like(values["h"])
        e[k] = 1.0
        dz = sol.derivative({"h": e})
        dslack = {"ineq": e - G @ dz["x"], "x.lower": dz["x"], "x.upper": -dz["x"]}
        up, down = [np.inf], [-np.inf]
        for c, s in slack.items():
            binding = sol.active[c]
            value = np.where(binding, sol.dual[c], s)
            rate = np.where(binding, dz[c], dslack[c])
            with np.errstate(divide="ignore", invalid="ignore"):
                t = -value / rate
            up += t[rate < 0].tolist()
            down += t[rate > 0].tolist()
        theta = values["h"][k]
        assert rng.high[k] == pytest.approx(theta + min(up), rel=1e-9, abs=1e-12)
        assert rng.low[k] == pytest.approx(theta + max(down), rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- examples


def test_portfolio_ranges() -> None:
    ns = _load("portfolio")
    model = ns["model"]
    values = {"mu": ns["MU"], "cap": ns["CAP"], "B": ns["B_VALUE"], "gamma": ns["GAMMA"]}
    model.solve()
    report = model.sensitivity(labels=ns["labels"], top=5)
    ranges = report.ranges_detail
    assert check_ranges(model, values, dict(ranges), ["mu", "cap"]) >= 15
    # B and gamma move the KKT matrix: first order.
    assert not ranges["gamma"].exact and not ranges["B"].exact.any()
    # Intl equity, held at zero, enters the portfolio when its expected return
    # reaches the end of its range: the bound w.lower leaves.
    i = ns["ASSETS"].index("Intl equity")
    assert str(ranges["mu"].at_high[i]) == "w.lower[Intl equity] leaves"
    # EM equity's cap binds until it falls to zero (where the lower bound binds too).
    j = ns["ASSETS"].index("EM equity")
    assert ranges["cap"].low[j] == pytest.approx(0.0, abs=1e-12)
    assert str(ranges["cap"].at_high[j]) == "max_weight[EM equity] leaves"


def test_dispatch_ranges() -> None:
    ns = _load("dc_power_flow")
    model = ns["model"]
    values = {"c": ns["COST"], "d": ns["DEMAND"], "pmax": ns["PMAX"], "fmax": ns["FMAX"]}
    model.solve()
    report = model.sensitivity(labels=ns["labels"], top=5)
    ranges = report.ranges_detail
    assert check_ranges(model, values, dict(ranges), ["c", "d", "pmax", "fmax"]) >= 25
    # Buses without load: demand cannot fall below zero (the parameter's domain).
    d = ranges["d"]
    for bus in ("A", "E"):
        k = ns["BUSES"].index(bus)
        assert d.low[k] == 0.0 and d.at_low[k] is not None and d.at_low[k].event == "domain"
    # Line D-E stays congested while its limit is between the capacity at which
    # Sundance would run at its own capacity and that at which Brighton would.
    line = ns["LINE_NAMES"].index("D-E")
    fmax = ranges["fmax"]
    assert str(fmax.at_low[line]) == "gen_max[Sundance] enters"
    assert str(fmax.at_high[line]) == "gen_max[Brighton] enters"
    assert 100.0 < fmax.low[line] < 240.0 < fmax.high[line] < 400.0


def test_dispatch_prices_differ_by_node_only_under_congestion() -> None:
    ns = _load("dc_power_flow")
    prices, fd = ns["price_check"]()
    np.testing.assert_allclose(prices, fd, rtol=0, atol=1e-6 * np.abs(prices).max())
    assert np.ptp(prices) > 20.0  # congestion: from about 13 to 41 $/MWh
    relaxed = ns["FMAX"].copy()
    relaxed[ns["LINE_NAMES"].index("D-E")] = 1e4
    flat, fd_flat = ns["price_check"](fmax=relaxed)
    np.testing.assert_allclose(flat, fd_flat, rtol=0, atol=1e-6 * np.abs(flat).max())
    assert np.ptp(flat) < 1.0  # marginal losses only
    sol = ns["model"].solve()  # price_check leaves the parameters as they were
    np.testing.assert_allclose(-sol.dual["balance"], prices, rtol=1e-12)
    gen_gap, line_gap = ns["limit_checks"](sol, prices)
    assert gen_gap < 1e-8 and line_gap < 1e-8


# ---------------------------------------------------------------- first order


def test_entries_of_k_are_first_order_and_others_exact() -> None:
    # G as a parameter: entries of binding rows move K (first order); entries of
    # rows that do not bind leave the solution where it is (exact).
    rng = np.random.default_rng(8)
    n, m = 5, 6
    x = cp.Variable(n, name="x")
    G, h, q = cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h"), cp.Parameter(n, name="q")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), {"ineq": G @ x <= h})
    values = {"G": rng.standard_normal((m, n)), "h": rng.random(m),
              "q": 3.0 * rng.standard_normal(n)}
    sol = model.solve(**values)
    binding = sol.active["ineq"]
    assert 0 < binding.sum() < m, "construction"
    rng_G = rp.ranging(sol, wrt="G")["G"]
    np.testing.assert_array_equal(rng_G.exact, ~binding[:, None] & np.ones((m, n), bool))
    # The exact entries hold to re-solves (the others are left out of the check).
    exact = rng_G.exact.ravel(order="F")
    sub = rp.ParameterRange(
        "G", rng_G.value, np.where(rng_G.exact, rng_G.low, -np.inf),
        np.where(rng_G.exact, rng_G.high, np.inf), np.ones((m, n), bool),
        tuple(lim if e else None for lim, e in zip(rng_G.at_low, exact)),
        tuple(lim if e else None for lim, e in zip(rng_G.at_high, exact)), rng_G.labels)
    assert check_ranges(model, values, {"G": sub}, ["G"]) >= int(exact.sum())


# ---------------------------------------------------------------- degenerate points


def test_weakly_active_row_empties_one_side() -> None:
    # minimize ½‖x − a‖² s.t. x ≤ u with a₀ = u₀: row 0 binds with a zero multiplier.
    x = cp.Variable(2, name="x")
    a, u = cp.Parameter(2, name="a"), cp.Parameter(2, name="u")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x - a)), {"cap": x <= u})
    values = {"a": np.array([1.0, 0.0]), "u": np.array([1.0, 2.0])}
    with pytest.warns(dm.DegenerateWarning):
        sol = model.solve(**values)
    assert sol.degenerate["cap"].tolist() == [True, False]
    report = model.sensitivity()
    assert any("degenerate point" in note and "cap[0]" in note for note in report.notes)
    ra, ru = report.ranges_detail["a"], report.ranges_detail["u"]
    # a₀ down: the row stops binding at once (its multiplier would turn negative);
    # a₀ up: the multiplier grows, the row keeps binding.
    assert ra.low[0] == 1.0 and str(ra.at_low[0]) == "cap[0] leaves"
    assert ra.high[0] == np.inf
    # u₀ up: the row stops binding at once; u₀ down: it binds with λ > 0.
    assert ru.high[0] == 1.0 and str(ru.at_high[0]) == "cap[0] leaves"
    assert ru.low[0] == -np.inf
    # Row 1 (slack 2): a₁ can rise to 2 before it binds.
    assert ra.high[1] == pytest.approx(2.0, rel=1e-12) and str(ra.at_high[1]) == "cap[1] enters"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.DegenerateWarning)
        moved = model.solve(a=np.array([0.9, 0.0]), u=values["u"])
    assert not moved.active["cap"][0]  # the empty side, confirmed
    text = str(report)
    assert "weakly active" in text and "degenerate rows" in text


def test_dependent_row_empties_both_sides() -> None:
    # x₀ ≤ u and x₀ ≤ v with u = v, both binding: one is kept in K, the other
    # depends on it. Moving the dependent row's own bound changes the active set
    # at once on either side.
    x = cp.Variable(2, name="x")
    u, v = cp.Parameter(name="u"), cp.Parameter(name="v")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x - np.array([2.0, 0.0]))),
                     {"first": x[0] <= u, "second": x[0] <= v})
    with pytest.warns(dm.DegenerateWarning):
        sol = model.solve(u=1.0, v=1.0)
    dependent = [c for c in ("first", "second") if sol.degenerate[c]]
    assert len(dependent) == 1
    name = {"first": "u", "second": "v"}[dependent[0]]
    rng = rp.ranging(sol, wrt=name)[name]
    assert rng.low == 1.0 and rng.high == 1.0
    events = {rng.at_low[0].event, rng.at_high[0].event}
    assert events == {"leaves", "displaces"}
    assert rng.at_high[0].constraint == dependent[0]


# ---------------------------------------------------------------- API, formats


def test_models_without_inequalities_have_unbounded_ranges() -> None:
    x = cp.Variable(3, name="x")
    b, A = cp.Parameter(2, name="b"), cp.Parameter((2, 3), name="A")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"eq": A @ x == b})
    model.solve(b=np.ones(2), A=np.eye(2, 3) + 0.1)
    report = model.sensitivity()
    assert report.range_solves == 0
    for name, (low, high) in report.ranges.items():
        assert np.all(low == -np.inf) and np.all(high == np.inf)
        assert report.ranges_detail[name].exact.all()
        assert all(lim is None for lim in report.ranges_detail[name].at_low)
    assert "Ranges" not in str(report) and "Active set" not in str(report)
    assert json.loads(report.to_json())["ranges"]["b"]["low"] == [None, None]


def test_ranging_errors_name_the_culprit() -> None:
    model, values, _ = random_problem(0)
    sol = model.solve(**values)
    with pytest.raises(dm.ModelError, match=r"ranging\(\): unknown parameter name 'z'"):
        rp.ranging(sol, wrt="z")
    with pytest.raises(dm.ModelError, match="progress must be None, True or False"):
        rp.ranging(sol, progress="yes")  # type: ignore[arg-type]
    with pytest.raises(dm.ModelError, match="expected a diffmodel Solution"):
        rp.ranging(model)  # type: ignore[arg-type]
    with pytest.raises(dm.ModelError, match="ranges must be True or False"):
        model.sensitivity(ranges="yes")  # type: ignore[arg-type]
    assert model.sensitivity(ranges=False).ranges == {}


def test_ranges_render_in_every_format(tmp_path: Path) -> None:
    ns = _load("dc_power_flow")
    model = ns["model"]
    model.solve()
    report = model.sensitivity(of="p", wrt=["d", "fmax"], labels=ns["labels"], top=3)
    rng = report.ranges_detail["d"]
    i = ns["BUSES"].index("D")
    low, high = f"{rng.low[i]:.6g}", f"{rng.high[i]:.6g}"
    at_low, at_high = str(rng.at_low[i]), str(rng.at_high[i])
    assert at_low == "p.lower[Sundance] enters" and at_high == "gen_max[Sundance] enters"
    # Terminal text, Markdown and HTML: a section with a table per parameter.
    text, md = str(report), report.to_markdown()
    page = report.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    for doc, cell in ((text, str), (md, md_cell), (page, html.escape)):
        assert "how far each entry can move before the active set changes" in doc
        assert all(cell(s) in doc for s in ("d[D]", low, high, at_low, at_high))
    assert f"| d[D] | 400 | {low} | {high} | {md_cell(at_low)} | {md_cell(at_high)} |" in md
    assert "exact" in text and "nearest a change of the active set" in text
    # The parameter's own rendering lists every entry.
    assert str(rng).count("\n") == 2 + 5 and "d[A] >= 0 (domain)" in str(rng)
    # DataFrame: one row per entry.
    pd = pytest.importorskip("pandas")
    frame = report.to_dataframe("ranges")
    row = frame[frame["label"] == "d[D]"].iloc[0]
    assert (row["low"], row["high"]) == (rng.low[i], rng.high[i])
    assert (row["low_event"], row["low_constraint"], row["low_index"]) == ("enters", "p.lower",
                                                                          (3,))
    assert len(frame) == 5 + 6 and frame["exact"].all()
    inf = frame[frame["label"] == "fmax[A-B]"].iloc[0]
    assert inf["high"] == np.inf and pd.isna(inf["high_event"])
    # JSON: infinite ends as null, limits as objects.
    doc = json.loads(report.to_json())
    d = doc["ranges"]["d"]
    assert d["low"][i] == pytest.approx(rng.low[i]) and d["high"][i] == pytest.approx(rng.high[i])
    assert d["at_high"][i] == {"event": "enters", "constraint": "gen_max", "index": [3],
                               "label": "gen_max[Sundance]"}
    assert doc["ranges"]["fmax"]["high"][0] is None and doc["ranges"]["fmax"]["at_high"][0] is None
    assert "ranges" in doc["conventions"] and doc["range_solves"] == report.range_solves
    with pytest.raises(ValueError, match="table must be one of"):
        report.to_dataframe("bogus")


def test_bound_rows_take_the_labels_of_their_variable() -> None:
    x = cp.Variable(2, name="x", nonneg=True)
    u = cp.Parameter(2, name="u")
    model = dm.Model(cp.Minimize(cp.sum_squares(x - np.array([-1.0, 3.0]))), {"cap": x <= u})
    sol = model.solve(u=np.array([5.0, 2.0]))
    report = model.sensitivity(labels={"x": ["left", "right"], "cap": ["L", "R"]})
    assert report.labels["x.lower"] == ("x.lower[left]", "x.lower[right]")
    # x[1] = u[1] = 2 (capped; it would be 3): the cap stops binding at u[1] = 3, and
    # the lower bound starts binding at u[1] = 0.
    rng = report.ranges_detail["u"]
    assert (rng.low[1], rng.high[1]) == (pytest.approx(0.0, abs=1e-12), pytest.approx(3.0))
    assert str(rng.at_low[1]) == "x.lower[right] enters"
    assert str(rng.at_high[1]) == "cap[R] leaves"
    assert "x.lower[left]" in str(report)
    own = model.sensitivity(labels={"x": ["left", "right"], "x.lower": ["a", "b"]})
    assert own.labels["x.lower"] == ("x.lower[a]", "x.lower[b]")
    assert sol.active["x.lower"].tolist() == [True, False]


def test_the_solution_shortcut_gives_the_same_ranges() -> None:
    x = cp.Variable(3, name="x", nonneg=True)
    c = cp.Parameter(3, name="c")
    h = cp.Parameter(name="h")
    model = dm.Model(cp.Minimize(0.5 * cp.sum_squares(x) - c @ x), {"budget": cp.sum(x) <= h})
    sol = model.solve(c=np.array([1.0, 2.0, -1.0]), h=2.0)
    mine, theirs = sol.ranging(), rp.ranging(sol)
    assert list(mine) == list(theirs) == ["c", "h"]
    for name in mine:
        np.testing.assert_array_equal(mine[name].low, theirs[name].low)
        np.testing.assert_array_equal(mine[name].high, theirs[name].high)
    # x = (c − λ)₊ with λ = ½ on the budget: h's range ends where x₀ = 0 (h = 1)
    # and where the budget stops binding (h = 3).
    assert (float(mine["h"].low), float(mine["h"].high)) == pytest.approx((1.0, 3.0))
    assert str(mine["h"].at_low[0]) == "x.lower[0] enters"
    assert str(mine["h"].at_high[0]) == "budget leaves"
