"""The objective: quadratic terms recognized, checked for convexity, expanded.

A convex quadratic objective is split into quadratic terms ``uᵀ W u`` (u
affine, W affine in θ only) and affine parts. A term whose argument u is free
of θ is expanded into P, q and r directly; the others are *lifted* by the
assembly (:mod:`diffmodel.canon`): an auxiliary y with the equality y = u
keeps P affine in θ.

Recognized atoms: ``quad_form``, ``sum_squares``, ``square`` and
``power(·, 2)``, ``norm(·, 2) ** 2``, ``quad_over_lin`` with a constant
denominator, and weighted sums of squares, each times constants or scalar
parameters, plus affine terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.add_expr import AddExpression
from cvxpy.atoms.affine.binary_operators import DivExpression, MulExpression, multiply
from cvxpy.atoms.affine.sum import Sum
from cvxpy.atoms.affine.unary_operators import NegExpression
from cvxpy.atoms.elementwise.power import Power
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.atoms.quad_over_lin import quad_over_lin

from .._typing import FloatArray, IntArray
from ..errors import ModelError
from .affine import INT, Affine, Walker, broadcast, describe, pairs

__all__ = ["QuadTerm", "objective_terms", "check_convex_objective", "is_selection",
           "expand_quadratic"]


# Atoms that make a term quadratic even where CVXPY calls the expression
# affine (``0 * sum_squares(x)`` is affine by CVXPY's sign rules).
_QUADRATIC_ATOMS = (QuadForm, quad_over_lin, Power, Pnorm)


@dataclass(frozen=True)
class QuadTerm:
    """``uᵀ W u`` with u affine and W (N × N) affine in θ only."""

    u: Affine
    W: Affine
    expr: cp.Expression

    @property
    def source(self) -> str:
        return describe(self.expr)


def _scalar_factor(w: Walker, expr: cp.Expression) -> Affine | None:
    """The factor of a product that is a scalar free of variables, if any."""
    if expr.size == 1 and not expr.variables():
        return w.affine(expr)
    return None


def _scale_weight(w: Walker, W: Affine, s: Affine, expr: object) -> Affine:
    if not s.has_params and not s.has_vars:  # a constant factor
        return W.scaled(float(s.val.sum()))
    il, ir = pairs(np.zeros_like(s.row), np.zeros_like(W.row), 1)
    return w.product(s, W, il, ir, W.row[ir], W.shape, expr)


def _identity_weight(n: int, scale: float = 1.0) -> Affine:
    rows = np.arange(n, dtype=INT) * (n + 1)
    zeros = np.zeros(n, dtype=INT)
    return Affine((n, n), rows, zeros, zeros.copy(), np.full(n, scale))


def _diag_weight(weights: Affine, n: int) -> Affine:
    return Affine((n, n), weights.row * (n + 1), weights.p, weights.v, weights.val)


def _flatten(u: Affine) -> Affine:
    return u.with_shape((u.size,))


def objective_terms(
    w: Walker, expr: cp.Expression, factor: Affine, quads: list[QuadTerm],
    linear: list[Affine],
) -> None:
    """Split ``factor * expr`` into quadratic terms and affine parts."""
    if expr.is_affine() and not _atoms(expr, _QUADRATIC_ATOMS):
        a = w.affine(expr)
        if a.size != 1:
            raise ModelError(f"objective: {describe(expr)} is not scalar")
        il, ir = pairs(np.zeros_like(factor.row), np.zeros_like(a.row), 1)
        linear.append(w.product(factor, a, il, ir, np.zeros(il.shape[0], dtype=INT), (), expr))
        return
    if isinstance(expr, AddExpression):
        for arg in expr.args:
            objective_terms(w, arg, factor, quads, linear)
        return
    if isinstance(expr, NegExpression):
        objective_terms(w, expr.args[0], factor.scaled(-1.0), quads, linear)
        return
    if isinstance(expr, DivExpression):
        num, den = expr.args
        if not den.parameters() and not den.variables() and den.size == 1:
            value = float(np.asarray(den.value))
            if value == 0 or not np.isfinite(value):
                raise ModelError(f"objective: {describe(expr)} divides by {value}")
            objective_terms(w, num, factor.scaled(1.0 / value), quads, linear)
            return
    if isinstance(expr, (multiply, MulExpression)) and expr.size == 1:
        lhs, rhs = expr.args
        for scal, other in ((lhs, rhs), (rhs, lhs)):
            s = _scalar_factor(w, scal)
            if s is not None and not s.has_vars:
                il, ir = pairs(np.zeros_like(factor.row), np.zeros_like(s.row), 1)
                new = w.product(factor, s, il, ir, np.zeros(il.shape[0], dtype=INT), (), expr)
                objective_terms(w, other, new, quads, linear)
                return
    quad = _quadratic(w, expr)
    if quad is None:
        raise ModelError(
            f"objective: {describe(expr)} is not a quadratic term diffmodel can handle; "
            "use sum_squares, quad_form, square or quad_over_lin (constant "
            "denominator) of affine expressions, plus affine terms"
        )
    u, W = quad
    quads.append(QuadTerm(_flatten(u), _scale_weight(w, W, factor, expr), expr))


def _quadratic(w: Walker, expr: cp.Expression) -> tuple[Affine, Affine] | None:
    """(u, W) with expr == uᵀ W u, for the quadratic atoms diffmodel accepts:
    quad_form, quad_over_lin (constant denominator), square/power(·, 2) of a
    scalar, norm(·, 2) ** 2, and sums of (weighted) squares."""
    if isinstance(expr, QuadForm):
        x, Q = expr.args
        u = w.affine(x)
        Wq = w.affine(Q)
        if Wq.has_vars:
            return None
        return u, Wq
    if isinstance(expr, quad_over_lin):
        x, y = expr.args
        if y.parameters() or y.variables() or y.size != 1:
            return None
        denom = float(np.asarray(y.value))
        if denom <= 0:
            return None
        u = w.affine(x)
        return u, _identity_weight(u.size, 1.0 / denom)
    if isinstance(expr, Power) and expr.size == 1 and _is_square(expr):
        inner = expr.args[0]
        if isinstance(inner, Pnorm) and float(inner.p) == 2 and inner.axis is None:
            # norm(u, 2) ** 2 (also norm(U, "fro") ** 2) is sum_squares(u).
            u = w.affine(inner.args[0])
            return u, _identity_weight(u.size)
        u = w.affine(inner)
        return u, _identity_weight(1)
    if isinstance(expr, Sum) and expr.axis is None:
        return _sum_of_squares(w, expr.args[0])
    if isinstance(expr, MulExpression) and not isinstance(expr, multiply) and expr.size == 1:
        # c @ square(u) with a weight vector c free of variables: Σ c_i u_i².
        lhs, rhs = expr.args
        for coef, other in ((lhs, rhs), (rhs, lhs)):
            if (isinstance(other, Power) and _is_square(other) and not coef.variables()
                    and coef.size == other.size):
                u = w.affine(other.args[0])
                if u.size != other.size:
                    u = broadcast(u, tuple(other.shape))
                return u, _diag_weight(w.affine(coef), u.size)
    return None


def _is_square(expr: Power) -> bool:
    p = getattr(expr, "_p_orig", None)
    if p is None:
        p = expr.p
    return float(np.asarray(p.value if hasattr(p, "value") else p)) == 2.0


def _sum_of_squares(w: Walker, expr: cp.Expression) -> tuple[Affine, Affine] | None:
    """``sum(square(u))`` or ``sum(multiply(c, square(u)))`` with c ≥ 0 constant."""
    if isinstance(expr, Power) and _is_square(expr):
        u = w.affine(expr.args[0])
        if u.shape != tuple(expr.shape):
            u = broadcast(u, tuple(expr.shape))
        return u, _identity_weight(u.size)
    if isinstance(expr, (multiply, MulExpression)):
        lhs, rhs = expr.args
        for coef, other in ((lhs, rhs), (rhs, lhs)):
            if isinstance(other, Power) and _is_square(other) and not coef.variables():
                u = w.affine(other.args[0])
                shape = tuple(expr.shape)
                if u.shape != shape:
                    u = broadcast(u, shape)
                c = w.affine(coef)
                if c.shape != shape:
                    c = broadcast(c, shape)
                return u, _diag_weight(c, u.size)
    return None


def check_convex_objective(objective: cp.Minimize | cp.Maximize,
                            parameters: dict[str, cp.Parameter]) -> None:
    """Raise a ModelError naming the culprit if the objective is not convex.

    ``quad_form(x, W)`` with a matrix W that depends on parameters is not DCP
    by CVXPY's rules unless W is a Parameter declared PSD; diffmodel accepts
    it (any W: the form uses its symmetric part) and checks convexity
    numerically at every solve, from the inertia of the KKT matrix.
    """
    if objective.is_dcp():
        return
    expr = objective.args[0]
    relaxed = type(objective)(_assume_psd_forms(expr))
    if relaxed.is_dcp():
        return
    kind = "convex" if isinstance(objective, cp.Minimize) else "concave"
    culprits = sorted({
        p.name()
        for node in _atoms(expr, (multiply, MulExpression))
        if any(not arg.is_affine() for arg in node.args)
        for arg in node.args if arg.is_affine()
        for p in arg.parameters() if not (p.is_nonneg() or p.is_nonpos())
    })
    hint = ""
    if culprits:
        names = ", ".join(repr(c) for c in culprits)
        hint = (f" Parameter(s) {names} multiply a quadratic term but have no declared "
                "sign: declare them nonneg=True (or nonpos=True for a Maximize).")
    raise ModelError(
        f"the objective {describe(expr)} is not {kind} by CVXPY's DCP rules; "
        f"diffmodel needs a convex quadratic program.{hint}"
    )


def _assume_psd_forms(expr: cp.Expression) -> cp.Expression:
    """A copy of expr in which every parametric quad_form matrix is assumed PSD."""
    if isinstance(expr, QuadForm) and expr.args[1].parameters():
        from cvxpy.atoms.affine.wraps import psd_wrap

        return QuadForm(expr.args[0], psd_wrap(expr.args[1]))
    if not expr.args:
        return expr
    copied: cp.Expression = expr.copy([_assume_psd_forms(arg) for arg in expr.args])
    return copied


def _atoms(expr: cp.Expression, cls: type | tuple[type, ...]) -> list[cp.Expression]:
    found = [expr] if isinstance(expr, cls) else []
    for arg in expr.args:
        found.extend(_atoms(arg, cls))
    return found


def is_selection(u: Affine) -> bool:
    """Each row of u is one variable entry times a constant, with no offset."""
    if u.has_params or np.any(u.v == 0):
        return False
    return bool(np.bincount(u.row, minlength=u.size).max(initial=0) <= 1)


def expand_quadratic(u: Affine, W: Affine,
                      linear: list[Affine]) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
    """P, q and r entries of ``uᵀ W u`` for u free of θ.

    With u = C x + c: uᵀWu = ½ xᵀ Cᵀ(W + Wᵀ)C x + cᵀ(W + Wᵀ)C x + cᵀ W c.
    Returns the upper-triangular P entries (0-based variable indices).
    """
    N = u.size
    if is_selection(u) and u.row.shape[0] == N:
        # u_k = c_k x_{j(k)} (quad_form(x, Q), sum_squares(x), ...): no join
        # needed. Temporaries are dropped early: this runs on every entry of
        # a (possibly large) constant P, and sets the compile's peak memory.
        var = np.empty(N, dtype=np.int32 if N < 2**31 - 1 else INT)
        coef = np.empty(N)
        var[u.row] = u.v - 1
        coef[u.row] = u.val
        k = W.row % N
        ci: IntArray = var[k]
        val = coef[k] * W.val
        del k
        l_ = W.row // N
        cj: IntArray = var[l_]
        val *= coef[l_]
        del l_
        # W_kl contributes val at (i, j) and at (j, i): once to the upper
        # triangle, or twice on the diagonal.
        val[ci == cj] *= 2.0
        first: IntArray = np.minimum(ci, cj)
        second: IntArray = np.maximum(ci, cj)
        return first, second, W.p, val
    k_w = W.row % N
    l_w = W.row // N
    xpart = u.take(np.flatnonzero(u.v > 0))
    cpart = u.take(np.flatnonzero(u.v == 0))
    # P: for each W entry (k, l), pair C[k, i] with C[l, j].
    ik, iw = pairs(xpart.row, k_w, N)
    jl, jw = pairs(l_w[iw], xpart.row, N)
    wi = iw[jl]
    ci = xpart.v[ik][jl] - 1
    cj = xpart.v[jw] - 1
    val = xpart.val[ik][jl] * W.val[wi] * xpart.val[jw]
    p = W.p[wi]
    # P = Cᵀ(W + Wᵀ)C: each product contributes at (i, j) and (j, i).
    pi = np.concatenate([ci, cj])
    pj = np.concatenate([cj, ci])
    pv = np.concatenate([val, val])
    pp = np.concatenate([p, p])
    upper = pi <= pj
    # Linear term: 2 cᵀ sym(W) C x = Σ_kl c_k W_kl C_l + C_k W_kl c_l.
    if cpart.row.shape[0]:
        lin_rows = []
        for a_row, b_row, a, b in ((k_w, l_w, cpart, xpart), (l_w, k_w, cpart, xpart)):
            ia, iw2 = pairs(a.row, a_row, N)
            iwb, ib = pairs(b_row[iw2], b.row, N)
            ww = iw2[iwb]
            lin_rows.append(Affine(
                (), np.zeros(ww.shape[0], dtype=INT), W.p[ww], b.v[ib],
                a.val[ia][iwb] * W.val[ww] * b.val[ib],
            ))
        # Constant: cᵀ W c.
        ia, iw2 = pairs(cpart.row, k_w, N)
        iwb, ib = pairs(l_w[iw2], cpart.row, N)
        ww = iw2[iwb]
        lin_rows.append(Affine(
            (), np.zeros(ww.shape[0], dtype=INT), W.p[ww], np.zeros(ww.shape[0], dtype=INT),
            cpart.val[ia][iwb] * W.val[ww] * cpart.val[ib],
        ))
        linear.extend(lin_rows)
    return pi[upper], pj[upper], pp[upper], pv[upper]
