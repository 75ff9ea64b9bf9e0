"""A readable printer of CVXPY expressions and constraints, by name.

CVXPY prints its internal representation (``Sum(w, None, False)``,
``quad_over_lin(x, 1.0, None, False)``, ``Promote(b, (2,))``). Reports,
labels and error messages print what the user wrote instead:
``sum(w) == 1``, ``x[0] + 2*x[1] <= h``, ``quad_form(w, Sigma)``, with the
names of variables and parameters, small constants written out and larger
ones shown by their shape.
"""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.atoms.affine.add_expr import AddExpression
from cvxpy.atoms.affine.binary_operators import DivExpression, MulExpression, multiply
from cvxpy.atoms.affine.broadcast_to import broadcast_to
from cvxpy.atoms.affine.concatenate import Concatenate
from cvxpy.atoms.affine.diag import diag_mat, diag_vec
from cvxpy.atoms.affine.hstack import Hstack
from cvxpy.atoms.affine.index import index, special_index
from cvxpy.atoms.affine.promote import Promote
from cvxpy.atoms.affine.reshape import reshape
from cvxpy.atoms.affine.sum import Sum
from cvxpy.atoms.affine.trace import Trace
from cvxpy.atoms.affine.transpose import transpose
from cvxpy.atoms.affine.unary_operators import NegExpression
from cvxpy.atoms.affine.vstack import Vstack
from cvxpy.atoms.affine.wraps import Wrap
from cvxpy.atoms.elementwise.power import Power
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.atoms.quad_over_lin import quad_over_lin
from cvxpy.constraints.nonpos import Inequality, NonNeg, NonPos
from cvxpy.constraints.zero import Equality, Zero

__all__ = ["expression_text", "constraint_text", "shorten"]

# Binding strength of the printed operators: a child binding less tightly
# than its parent is parenthesized.
_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = 1, 2, 3, 4, 5


def _number(value: float) -> str:
    text = f"{value:.6g}"
    return text[:-2] if text.endswith(".0") else text


def _constant(expr: cp.Constant) -> str:
    raw = expr.value
    if isinstance(raw, (sp.spmatrix, sp.sparray)):
        return f"<{'×'.join(map(str, expr.shape))} sparse array>"
    value = np.asarray(raw)
    if value.size == 1:
        return _number(float(value.reshape(-1)[0]))
    if value.ndim == 1 and value.size <= 4:
        return "[" + ", ".join(_number(float(v)) for v in value) + "]"
    if value.size and np.all(value == value.reshape(-1)[0]):
        return f"{_number(float(value.reshape(-1)[0]))} (×{'×'.join(map(str, value.shape))})"
    return f"<{'×'.join(map(str, value.shape))} array>"


def _slice_text(key: slice, dim: int) -> str:
    start, stop, step = key.indices(dim)
    if step == 1 and start == 0 and stop == dim:
        return ":"
    if step == 1:
        return f"{start}:{stop}" if stop != dim else f"{start}:"
    return f"{start}:{stop}:{step}"


def _index(expr: index) -> str:
    shape = expr.args[0].shape
    key = getattr(expr, "_orig_key", expr.key)  # as written: integers stay integers
    key = key if isinstance(key, tuple) else (key,)
    parts = []
    for k, dim in zip(key, shape):
        if isinstance(k, slice):
            parts.append(_slice_text(k, dim))
        elif isinstance(k, (int, np.integer)):
            parts.append(str(int(k)))
        else:
            parts.append("...")
    return ", ".join(parts)


def _args(expr: cp.Expression) -> list[str]:
    return [_text(arg, 0)[0] for arg in expr.args]


def _call(name: str) -> Callable[[cp.Expression], tuple[str, int]]:
    def render(expr: cp.Expression) -> tuple[str, int]:
        return f"{name}({', '.join(_args(expr))})", _ATOM
    return render


def _wrap(text: str, strength: int, parent: int) -> str:
    return f"({text})" if strength < parent else text


def _text(expr: object, parent: int) -> tuple[str, int]:
    """(text, binding strength) of an expression."""
    if isinstance(expr, (cp.Variable, cp.Parameter)):
        return str(expr.name()), _ATOM
    if isinstance(expr, cp.Constant):
        return _constant(expr), _ATOM
    for cls, render in _RENDERERS:
        if isinstance(expr, cls):
            text, strength = render(expr)
            return _wrap(text, strength, parent), strength
    if isinstance(expr, cp.Expression):
        name = type(expr).__name__.lower()
        return f"{name}({', '.join(_args(expr))})", _ATOM
    return str(expr), _ATOM


def _add(expr: AddExpression) -> tuple[str, int]:
    out = ""
    for i, arg in enumerate(expr.args):
        if isinstance(arg, NegExpression):
            text = _text(arg.args[0], _PRODUCT)[0]
            out += f" - {text}" if i else f"-{text}"
        else:
            text = _text(arg, _SUM)[0]
            out += f" + {text}" if i else text
    return out, _SUM


def _neg(expr: NegExpression) -> tuple[str, int]:
    return "-" + _text(expr.args[0], _UNARY)[0], _UNARY


def _binary(symbol: str) -> Callable[[cp.Expression], tuple[str, int]]:
    def render(expr: cp.Expression) -> tuple[str, int]:
        left = _text(expr.args[0], _PRODUCT)[0]
        right = _text(expr.args[1], _PRODUCT + 1)[0]
        return f"{left}{symbol}{right}", _PRODUCT
    return render


def _matmul(expr: MulExpression) -> tuple[str, int]:
    scalar = expr.args[0].shape == () or expr.args[1].shape == ()
    return _binary("*" if scalar else " @ ")(expr)


def _power(expr: Power) -> tuple[str, int]:
    p = getattr(expr, "_p_orig", None)
    p = expr.p if p is None else p
    exponent = float(np.asarray(getattr(p, "value", p)))
    base = expr.args[0]
    if isinstance(base, Pnorm):
        return f"{_text(base, _POWER + 1)[0]}**{_number(exponent)}", _POWER
    if exponent == 2:
        return f"square({_text(base, 0)[0]})", _ATOM
    return f"power({_text(base, 0)[0]}, {_number(exponent)})", _ATOM


def _sum(expr: Sum) -> tuple[str, int]:
    inner = expr.args[0]
    if isinstance(inner, Power) and _text(inner, 0)[0].startswith("square("):
        return f"sum_squares({_text(inner.args[0], 0)[0]})", _ATOM
    axis = "" if expr.axis is None else f", axis={expr.axis}"
    return f"sum({_text(inner, 0)[0]}{axis})", _ATOM


def _quad_over_lin(expr: quad_over_lin) -> tuple[str, int]:
    x, y = expr.args
    if isinstance(y, cp.Constant) and np.asarray(y.value).size == 1 and float(y.value) == 1.0:
        return f"sum_squares({_text(x, 0)[0]})", _ATOM
    return f"quad_over_lin({_text(x, 0)[0]}, {_text(y, 0)[0]})", _ATOM


def _pnorm(expr: Pnorm) -> tuple[str, int]:
    p = float(expr.p)
    order = "" if p == 2 else f", {_number(p)}"
    return f"norm({_text(expr.args[0], 0)[0]}{order})", _ATOM


def _transpose(expr: transpose) -> tuple[str, int]:
    return f"{_text(expr.args[0], _ATOM)[0]}.T", _ATOM


def _reshape(expr: reshape) -> tuple[str, int]:
    if tuple(expr.args[0].shape) == tuple(expr.shape):  # a no-op CVXPY inserts
        return _text(expr.args[0], 0)
    return f"reshape({_text(expr.args[0], 0)[0]}, {tuple(expr.shape)})", _ATOM


def _indexed(expr: index) -> tuple[str, int]:
    return f"{_text(expr.args[0], _ATOM)[0]}[{_index(expr)}]", _ATOM


def _special(expr: special_index) -> tuple[str, int]:
    return f"{_text(expr.args[0], _ATOM)[0]}[...]", _ATOM


def _passthrough(expr: cp.Expression) -> tuple[str, int]:
    return _text(expr.args[0], 0)


_RENDERERS: list[tuple[type, Callable[..., tuple[str, int]]]] = [
    (AddExpression, _add),
    (NegExpression, _neg),
    (multiply, _binary("*")),
    (DivExpression, _binary("/")),
    (MulExpression, _matmul),
    (QuadForm, _call("quad_form")),
    (quad_over_lin, _quad_over_lin),
    (Power, _power),
    (Pnorm, _pnorm),
    (Sum, _sum),
    (special_index, _special),
    (index, _indexed),
    (transpose, _transpose),
    (reshape, _reshape),
    (Promote, _passthrough),
    (broadcast_to, _passthrough),
    (Wrap, _passthrough),
    (Hstack, _call("hstack")),
    (Vstack, _call("vstack")),
    (Concatenate, _call("concatenate")),
    (diag_vec, _call("diag")),
    (diag_mat, _call("diag")),
    (Trace, _call("trace")),
]


def expression_text(expr: object) -> str:
    """How the user would write ``expr``: names, operators, atoms by their function names."""
    return _text(expr, 0)[0]


def constraint_text(con: object) -> str:
    """``lhs == rhs``, ``lhs <= rhs`` (``>=`` as written is stored flipped by
    CVXPY: ``a >= b`` prints as ``b <= a``), ``expr >= 0``, ``expr <= 0``."""
    if isinstance(con, Equality):
        return f"{expression_text(con.args[0])} == {expression_text(con.args[1])}"
    if isinstance(con, Inequality):
        lhs, rhs = con.args
        if isinstance(lhs, cp.Constant) and not isinstance(rhs, cp.Constant):
            # CVXPY stores x >= 0 as 0 <= x: print it the way it is usually written.
            return f"{expression_text(rhs)} >= {expression_text(lhs)}"
        return f"{expression_text(lhs)} <= {expression_text(rhs)}"
    if isinstance(con, NonNeg):
        return f"{expression_text(con.args[0])} >= 0"
    if isinstance(con, (NonPos,)):
        return f"{expression_text(con.args[0])} <= 0"
    if isinstance(con, Zero):
        return f"{expression_text(con.args[0])} == 0"
    if isinstance(con, cp.Constraint):
        return f"{type(con).__name__} constraint on {', '.join(expression_text(a) for a in con.args)}"
    return str(con)


def shorten(text: str, limit: int = 70) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
