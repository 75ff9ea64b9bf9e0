"""The expression printer: constraints and terms as the user wrote them, by name."""

from __future__ import annotations

import re

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

import diffmodel as dm
from diffmodel.canon.printer import constraint_text, expression_text

w = cp.Variable(3, name="w")
x = cp.Variable(2, name="x")
X = cp.Variable((2, 3), name="X")
M = cp.Variable((3, 3), name="M")
Sigma = cp.Parameter((3, 3), PSD=True, name="Sigma")
A = cp.Parameter((2, 3), name="A")
b = cp.Parameter(2, name="b")
h = cp.Parameter(name="h")
gamma = cp.Parameter(name="gamma", nonneg=True)

#: Every atom diffmodel accepts, and how it must print.
EXPRESSIONS = [
    (cp.sum(w), "sum(w)"),
    (x[0] + 2 * x[1], "x[0] + 2*x[1]"),
    (cp.quad_form(w, Sigma), "quad_form(w, Sigma)"),
    (gamma * cp.quad_form(w, Sigma), "gamma*quad_form(w, Sigma)"),
    (cp.sum_squares(A @ w - b), "sum_squares(A @ w - b)"),
    (cp.square(x[0]), "square(x[0])"),
    (cp.norm(x, 2) ** 2, "norm(x)**2"),
    (-(x[0] - x[1]), "-(x[0] - x[1])"),
    (X.T, "X.T"),
    (cp.reshape(X, (3, 2), order="F"), "reshape(X, (3, 2))"),
    (X[0, :], "X[0, :]"),
    (X[:, 1:], "X[:, 1:]"),
    (cp.sum(X, axis=0), "sum(X, axis=0)"),
    (cp.hstack([x, x]), "hstack(x, x)"),
    (cp.vstack([X, X]), "vstack(X, X)"),
    (cp.diag(w), "diag(w)"),
    (cp.trace(M), "trace(M)"),
    (x / 2, "x/2"),
    (cp.multiply(b, x), "b*x"),
    (cp.quad_over_lin(x, 1.0), "sum_squares(x)"),
    (cp.quad_over_lin(x, 4.0), "quad_over_lin(x, 4)"),
    (0.5 * cp.sum_squares(x) + b @ x, "0.5*sum_squares(x) + b @ x"),
    (x - np.array([1.0, 2.0]), "x - [1, 2]"),
    (cp.sum(cp.multiply(np.array([1.0, 2.0]), cp.square(x))), "sum([1, 2]*square(x))"),
    (np.arange(12.0).reshape(3, 4) @ cp.Variable(4, name="v"), "<3×4 array> @ v"),
    (cp.psd_wrap(Sigma), "Sigma"),
    (sp.csc_matrix(np.eye(3)) @ w, "<3×3 sparse array> @ w"),
    (sp.csc_array(np.eye(3)) @ w, "<3×3 sparse array> @ w"),
    # An empty matrix (a factor of rank 0): it raised an IndexError, and the
    # model with it could not be built.
    (cp.sum_squares(np.zeros((0, 3)) @ w), "sum_squares(<0×3 array> @ w)"),
]

CONSTRAINTS = [
    (cp.sum(w) == 1, "sum(w) == 1"),
    (x[0] + 2 * x[1] <= h, "x[0] + 2*x[1] <= h"),
    (x >= 0, "x >= 0"),
    (w <= cp.Parameter(3, name="cap"), "w <= cap"),
    (A @ w == b, "A @ w == b"),
    (cp.NonNeg(x), "x >= 0"),
]

#: Fragments of CVXPY's own representation that must never reach a user.
CVXPY_FRAGMENTS = re.compile(
    r"None, False|Promote\(|Sum\(|AddExpression|MulExpression|NegExpression|QuadForm\(|"
    r"quad_over_lin\(.*1\.0|Pnorm|Approx|Variable\(\(|Parameter\(\(|Constant\(")


@pytest.mark.parametrize(("expr", "text"), EXPRESSIONS, ids=[t for _, t in EXPRESSIONS])
def test_expressions_print_as_written(expr: cp.Expression, text: str) -> None:
    assert expression_text(expr) == text
    assert not CVXPY_FRAGMENTS.search(expression_text(expr))


@pytest.mark.parametrize(("con", "text"), CONSTRAINTS, ids=[t for _, t in CONSTRAINTS])
def test_constraints_print_as_written(con: cp.Constraint, text: str) -> None:
    assert constraint_text(con) == text


def test_constraint_text_reaches_the_compiled_layout() -> None:
    model = dm.Model(cp.Minimize(cp.sum_squares(w)),
                     {"budget": cp.sum(w) == 1, "cap": w <= 0.5, "floor": w >= 0})
    texts = {name: block.text for name, block in model.compiled.layout.constraints.items()}
    assert texts == {"budget": "sum(w) == 1", "cap": "w <= 0.5", "floor": "w >= 0"}


def test_messages_speak_the_users_words() -> None:
    """Refusals name the term as written and the parameters by name."""
    with pytest.raises(dm.ModelError) as info:
        dm.Model(cp.Minimize(gamma * cp.quad_form(w, Sigma)), {"b": cp.sum(w) == 1})
    message = str(info.value)
    assert "quad_form(w, Sigma)" in message and "'gamma' and 'Sigma'" in message
    assert "pass the product as one parameter" in message
    assert not CVXPY_FRAGMENTS.search(message)
    with pytest.raises(dm.ModelError) as info:
        dm.Model(cp.Minimize(cp.norm(x, 2)), {"s": cp.sum(x) == 1})
    assert str(info.value).startswith("objective: norm(x) is not a quadratic term")
    assert not CVXPY_FRAGMENTS.search(str(info.value))
