"""Failure messages in the user's words, pinned: they name the culprit and the fix.

Statuses and certificates: infeasibility names the conflicting constraint
rows (from the certificate), unboundedness the variables of the direction,
nonconvexity the count of negative eigenvalues; no CVXPY internals in any.
"""

from __future__ import annotations

import re

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm
from test_printer import CVXPY_FRAGMENTS

x = cp.Variable(3, name="x")
b = cp.Parameter(name="b")
q = cp.Parameter(3, name="q")


def _message(model: dm.Model, status: str, **values: object) -> str:
    with pytest.raises(dm.SolverError) as info:
        model.solve(**values)
    assert info.value.status == status
    text = str(info.value)
    assert not CVXPY_FRAGMENTS.search(text), text
    return text


def test_inconsistent_equalities_are_named() -> None:
    model = dm.Model(cp.Minimize(cp.sum_squares(x)),
                     {"total": cp.sum(x) == 1, "again": cp.sum(x) == b, "other": x[0] == 0})
    assert _message(model, "infeasible", b=2.0) == (
        "the constraints are inconsistent (infeasible): a combination of constraint rows "
        "'total', 'again' cancels on the left-hand side but not on the right-hand side")
    assert model.solve(b=1.0).status == "optimal"  # the model keeps working


def test_infeasible_inequalities_are_named() -> None:
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"floor": x >= 1, "ceiling": cp.sum(x) <= b})
    text = _message(model, "infeasible", b=2.0)
    assert text.startswith("the constraints are inconsistent (infeasible): a nonnegative "
                           "combination of constraint rows ")
    assert "'floor'[0]" in text and "'ceiling'" in text
    assert model.solve(b=4.0).status == "optimal"


def test_unbounded_names_the_direction() -> None:
    model = dm.Model(cp.Minimize(q @ x), {"fix": x[0] == 1})
    assert _message(model, "unbounded", q=np.array([1.0, 1.0, 0.0])) == (
        "the problem is unbounded below: moving x[1] along a feasible direction keeps the "
        "quadratic term flat and the linear term decreases without bound; add a bound or a "
        "cost on these variables")


def test_unbounded_maximize_says_above() -> None:
    model = dm.Model(cp.Maximize(q @ x), {"fix": x[0] == 1, "pos": x >= 0})
    text = _message(model, "unbounded", q=np.array([1.0, 1.0, 0.0]))
    assert text.startswith("the problem is unbounded above: moving x[1] along")
    assert "increases without bound" in text


def test_nonconvex_counts_the_negative_curvature() -> None:
    S = cp.Parameter((3, 3), symmetric=True, name="S")
    model = dm.Model(cp.Minimize(cp.quad_form(x, S)), {"total": cp.sum(x) == 1})
    assert _message(model, "nonconvex", S=-np.eye(3)) == (
        "the objective is not convex on the feasible set for these parameter values: the KKT "
        "matrix has 3 negative eigenvalues where a convex QP has 1 (P has a direction of "
        "negative curvature in the null space of the constraints)")


def test_parameter_value_breaking_its_attributes_is_named() -> None:
    Q = cp.Parameter((2, 2), PSD=True, name="Q")
    y = cp.Variable(2, name="y")
    model = dm.Model(cp.Minimize(cp.quad_form(y, Q)), {"s": cp.sum(y) == 1})
    with pytest.raises(dm.ModelError, match=re.escape(
            "parameter 'Q': declared PSD=True, but the value is not positive semidefinite "
            "(eigenvalue -1)")):
        model.solve(Q=np.diag([1.0, -1.0]))


def test_overflowing_values_are_named() -> None:
    model = dm.Model(cp.Minimize(cp.sum_squares(x) + q @ x), {"total": cp.sum(x) == b})
    with pytest.raises(dm.ModelError, match="the optimal value overflows double precision"):
        model.solve(q=np.array([1e200, 0.0, 0.0]), b=1.0)
    assert model.solve(q=np.zeros(3), b=1.0).status == "optimal"


def test_infeasibility_through_a_lifted_quadratic_term() -> None:
    # sum_squares(x - c) is canonicalized with auxiliary rows t = x − c: the
    # certificate's rounding noise on those rows must not hide the verdict.
    c = cp.Parameter(3, name="c")
    model = dm.Model(cp.Minimize(cp.sum_squares(x - c)),
                     {"low": cp.sum(x) == 1, "high": cp.sum(x) == 2})
    assert _message(model, "infeasible", c=np.ones(3)) == (
        "the constraints are inconsistent (infeasible): a combination of constraint rows "
        "'low', 'high' cancels on the left-hand side but not on the right-hand side")


def test_indefinite_matrix_flat_on_the_feasible_set_is_unbounded() -> None:
    # y = (t, 1 − t): yᵀ diag(1, −1) y = 2t − 1, linear along the feasible line.
    Q = cp.Parameter((2, 2), symmetric=True, name="Q")
    y = cp.Variable(2, name="y")
    model = dm.Model(cp.Minimize(cp.quad_form(y, Q)), {"s": cp.sum(y) == 1})
    text = _message(model, "unbounded", Q=np.diag([1.0, -1.0]))
    assert text.startswith("the problem is unbounded below: moving y[")
    _message(model, "nonconvex", Q=np.diag([1.0, -2.0]))
    assert model.solve(Q=np.diag([1.0, 2.0])).status == "optimal"


@pytest.mark.parametrize("solver", ["kkt", "osqp"])
def test_statuses_do_not_depend_on_the_previous_solve(solver: str) -> None:
    """A model that has just solved (and keeps its active set) reaches the same
    verdict as a fresh one, with the same certificate."""
    z = cp.Variable(3, name="z", nonneg=True)
    c = cp.Parameter(3, name="c")
    h = cp.Parameter(name="h")

    def build() -> dm.Model:
        return dm.Model(cp.Minimize(0.5 * cp.sum_squares(z) - c @ z),
                        {"budget": cp.sum(z) <= h}, solver=solver)

    warm = build()
    cost = np.array([1.0, 2.0, -1.0])
    for h_value in (2.0, -1.0, 0.5, -1e-3, 3.5, -5.0):
        fresh = build()
        try:
            expected = fresh.solve(c=cost, h=h_value).status
        except dm.SolverError as exc:
            expected = exc.status
            assert exc.status == "infeasible"
            assert "a nonnegative combination of constraint rows" in str(exc)
        try:
            got = warm.solve(c=cost, h=h_value).status
        except dm.SolverError as exc:
            got = exc.status
            assert "a nonnegative combination of constraint rows" in str(exc)
        assert got == expected, h_value


def test_a_combination_with_the_wrong_signs_certifies_nothing() -> None:
    """Rows 0 ≤ x ≤ 1 are dependent (w = (1, 1) cancels them) with cᵀw ≠ 0, but
    w has the wrong sign for inequality rows: the problem is feasible."""
    from diffmodel.solvers.verify import infeasibility

    v = cp.Variable(name="v")
    model = dm.Model(cp.Minimize(cp.square(v - b)), {"upper": v <= 1, "lower": v >= 0})
    sol = model.solve(b=0.5)
    problem = model.compiled
    data = problem.data(sol._point.theta) if sol._point is not None else None
    assert data is not None
    rows = np.ones(problem.layout.rows)
    assert float(data.c @ rows) > 0
    assert infeasibility(problem, data, -rows) is None     # cᵀw < 0 but w ≤ 0
    assert infeasibility(problem, data, rows) is None      # w ≥ 0 but cᵀw > 0


def test_a_long_certificate_says_how_many_rows_it_leaves_out() -> None:
    """Six lower bounds of 1 and a total below 6: every one of the seven rows is
    needed to certify infeasibility, so any certificate is long."""
    y = cp.Variable(6, name="y")
    lo = cp.Parameter(6, name="lo")
    model = dm.Model(cp.Minimize(cp.sum_squares(y)), {"low": y >= lo, "cap": cp.sum(y) <= 5.5})
    text = _message(model, "infeasible", lo=np.ones(6))
    assert re.fullmatch(
        r"the constraints are inconsistent \(infeasible\): a nonnegative combination of "
        r"constraint rows (('low'\[\d\]|'cap'), ){3}('low'\[\d\]|'cap') and 3 more cancels on the "
        r"left-hand side but not on the right-hand side", text), text
