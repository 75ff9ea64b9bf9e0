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
