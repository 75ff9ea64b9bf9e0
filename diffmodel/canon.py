"""Canonicalization: a CVXPY problem to parametric QP data.

The model is mapped once, at construction, to

    minimize  ½ xᵀ P(θ) x + q(θ)ᵀ x + r(θ)   subject to  A(θ) x = b(θ),

where every entry of P, q, r, A and b is an *affine* function of the stacked
parameter vector θ. The maps are stored as sparse coordinate lists over the
augmented vector θ̃ = (1, θ), so evaluating the data for new parameter values
is one sparse matrix-vector product, and the adjoint needed by reverse-mode
differentiation is its transpose.

Expressions are walked directly (CVXPY's reductions are not used): every
affine expression becomes an :class:`Affine` tensor, a list of entries
``(row, p, v, val)`` meaning ``expr[row] += val * θ̃[p] * x̃[v]`` with
x̃ = (1, x). Index 0 of θ̃ and x̃ stands for the constant 1, so one list holds
constants, parameter terms, variable terms and the bilinear products
``A(θ) @ x`` that DPP allows. Work and memory are proportional to the number
of entries of the problem data, never to (parameter entries × problem size).

Quadratic objective terms (``sum_squares``, ``quad_form``, ``square``,
``power(·, 2)``, ``quad_over_lin`` with a constant denominator) are expanded
into P directly when their argument does not depend on θ. Otherwise the
argument u is *lifted*: an auxiliary variable y and the equality y = u are
added, so P stays affine in θ (``sum_squares(A @ x - b)`` with parameters A, b
becomes ``sum_squares(y)`` with ``y == A @ x - b``).

Vectorization is column-major (Fortran order) throughout, as in CVXPY.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from cvxpy.atoms.elementwise.power import Power
from cvxpy.atoms.pnorm import Pnorm
from cvxpy.atoms.affine.wraps import Wrap
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.atoms.quad_over_lin import quad_over_lin
from cvxpy.constraints.zero import Equality, Zero
from numpy.typing import NDArray

from .errors import ModelError

__all__ = ["Affine", "Block", "ParametricQP", "canonicalize"]

_INT = np.int64
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

# Variable attributes that are (or imply) constraints other than equalities.
_UNSUPPORTED_VAR_ATTRS = (
    "nonneg", "nonpos", "pos", "neg", "boolean", "integer", "PSD", "NSD",
    "symmetric", "diag", "hermitian", "complex", "imag", "sparsity",
)


def _describe(expr: object, limit: int = 70) -> str:
    # CVXPY prints some atoms by their implementation class ("PnormApprox").
    text = str(expr).replace("Approx(", "(")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _zeros(size: int) -> IntArray:
    """A read-only array of ``size`` zeros that takes no memory (zero stride).

    Constants have parameter and variable index 0 in every entry; these
    columns are only ever read, indexed or concatenated, never written.
    """
    return np.broadcast_to(np.zeros(1, dtype=_INT), (size,))


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


# ---------------------------------------------------------------------------
# Affine tensors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """An expression affine in x and in θ, as a list of entries.

    ``expr.ravel(order="F")[row] = Σ val * θ̃[p] * x̃[v]`` over the entries,
    with θ̃ = (1, θ) and x̃ = (1, x). An entry with ``p > 0`` and ``v > 0`` is a
    bilinear term (a parameter multiplying a variable).
    """

    shape: tuple[int, ...]
    row: IntArray
    p: IntArray
    v: IntArray
    val: FloatArray

    @property
    def size(self) -> int:
        return _size(self.shape)

    @property
    def has_params(self) -> bool:
        return bool(np.any(self.p > 0))

    @property
    def has_vars(self) -> bool:
        return bool(np.any(self.v > 0))

    def take(self, idx: IntArray | slice) -> Affine:
        return Affine(self.shape, self.row[idx], self.p[idx], self.v[idx], self.val[idx])

    def with_shape(self, shape: tuple[int, ...]) -> Affine:
        return Affine(shape, self.row, self.p, self.v, self.val)

    @staticmethod
    def concat(shape: tuple[int, ...], parts: list[Affine], offsets: list[int]) -> Affine:
        if not parts:
            empty_i = np.zeros(0, dtype=_INT)
            return Affine(shape, empty_i, empty_i, empty_i, np.zeros(0))
        return Affine(
            shape,
            np.concatenate([a.row + off for a, off in zip(parts, offsets)]),
            np.concatenate([a.p for a in parts]),
            np.concatenate([a.v for a in parts]),
            np.concatenate([a.val for a in parts]),
        )

    def scaled(self, c: float) -> Affine:
        return Affine(self.shape, self.row, self.p, self.v, self.val * c)


def _constant_affine(value: object, shape: tuple[int, ...]) -> Affine:
    """Entries of a constant (dense or sparse) in column-major order."""
    if sp.issparse(value):
        coo = sp.coo_matrix(value)
        nrows = coo.shape[0]
        flat = coo.row.astype(_INT) + nrows * coo.col.astype(_INT)
        data = np.asarray(coo.data, dtype=float)
    else:
        arr = np.asarray(value)
        if np.iscomplexobj(arr):
            raise ModelError("complex constants are not supported")
        arr = np.broadcast_to(arr.astype(float), shape) if arr.shape != shape else arr
        vec = np.asarray(arr, dtype=float).ravel(order="F")
        flat = np.flatnonzero(vec).astype(_INT)
        data = vec[flat]
    if not np.all(np.isfinite(data)):
        raise ModelError("a constant in the model contains NaN or inf")
    zeros = _zeros(flat.shape[0])
    return Affine(shape, flat, zeros, zeros, data)


def _apply_linear(M: sp.csc_matrix, a: Affine, shape: tuple[int, ...]) -> Affine:
    """Apply a constant sparse map M (out × in) to the rows of ``a``."""
    counts = np.diff(M.indptr)[a.row]
    rep, offs = _expand(counts)
    pos = M.indptr[a.row][rep] + offs
    return Affine(
        shape, M.indices[pos].astype(_INT), a.p[rep], a.v[rep], a.val[rep] * M.data[pos]
    )


def _expand(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For entry e repeated counts[e] times: (entry index, 0..counts[e]-1)."""
    total = int(counts.sum())
    rep = np.repeat(np.arange(counts.shape[0], dtype=_INT), counts)
    starts = np.cumsum(counts) - counts
    offs = np.arange(total, dtype=_INT) - starts[rep]
    return rep, offs


def _pairs(key_l: IntArray, key_r: IntArray, nkeys: int) -> tuple[IntArray, IntArray]:
    """All pairs (i, j) with key_l[i] == key_r[j], in O(len + pairs)."""
    order = np.argsort(key_r, kind="stable")
    count_r = np.bincount(key_r, minlength=nkeys).astype(_INT)
    start_r = np.cumsum(count_r) - count_r
    rep, offs = _expand(count_r[key_l])
    return rep, order[start_r[key_l][rep] + offs]


def _selection(out_to_in: IntArray, n_in: int) -> sp.csc_matrix:
    n_out = out_to_in.shape[0]
    return sp.csc_matrix(
        (np.ones(n_out), (np.arange(n_out), out_to_in)), shape=(n_out, n_in)
    )


def _flat_index(shape: tuple[int, ...]) -> IntArray:
    return np.arange(_size(shape), dtype=_INT).reshape(shape, order="F")


# ---------------------------------------------------------------------------
# Walking CVXPY expressions
# ---------------------------------------------------------------------------


@dataclass
class _Walker:
    """Turns CVXPY affine expressions into :class:`Affine` tensors."""

    var_offsets: dict[int, int]  # cvxpy id -> offset in x̃ (1-based)
    param_offsets: dict[int, int]  # cvxpy id -> offset in θ̃ (1-based)
    context: str = ""

    def affine(self, expr: cp.Expression) -> Affine:
        shape = tuple(expr.shape)
        if len(shape) > 2:
            raise ModelError(
                f"{self.context}: expressions with more than 2 dimensions are not "
                f"supported ({_describe(expr)} has shape {shape})"
            )
        if isinstance(expr, cp.Variable):
            return self._leaf(shape, self.var_offsets[expr.id], is_var=True)
        if isinstance(expr, cp.Parameter):
            return self._leaf(shape, self.param_offsets[expr.id], is_var=False)
        if isinstance(expr, cp.Constant):
            return _constant_affine(expr.value, shape)
        handler = _HANDLERS.get(type(expr))
        if handler is None:
            for cls, fn in _HANDLERS.items():
                if isinstance(expr, cls):
                    handler = fn
                    break
        if handler is None:
            raise ModelError(
                f"{self.context}: '{type(expr).__name__}' is not supported in an "
                f"affine expression (in {_describe(expr)}); diffmodel handles "
                "quadratic programs built from +, -, @, *, /, indexing, sum, "
                "reshape, hstack/vstack, transpose, diag and trace"
            )
        return handler(self, expr)

    @staticmethod
    def _leaf(shape: tuple[int, ...], offset: int, *, is_var: bool) -> Affine:
        size = _size(shape)
        rows = np.arange(size, dtype=_INT)
        idx = offset + rows
        zeros = _zeros(size)
        if is_var:
            return Affine(shape, rows, zeros, idx, np.ones(size))
        return Affine(shape, rows, idx, zeros, np.ones(size))

    def product(self, left: Affine, right: Affine, il: IntArray, ir: IntArray,
                rows: IntArray, shape: tuple[int, ...], expr: object) -> Affine:
        pl, pr = left.p[il], right.p[ir]
        vl, vr = left.v[il], right.v[ir]
        if np.any((pl > 0) & (pr > 0)):
            raise ModelError(
                f"{self.context}: {_describe(expr)} multiplies two parameter "
                "expressions; the data must be affine in the parameters (DPP)"
            )
        if np.any((vl > 0) & (vr > 0)):
            raise ModelError(
                f"{self.context}: {_describe(expr)} multiplies two variable "
                "expressions; write quadratic terms with sum_squares, quad_form "
                "or square in the objective"
            )
        return Affine(shape, rows, pl + pr, vl + vr, left.val[il] * right.val[ir])


def _h_add(w: _Walker, expr: AddExpression) -> Affine:
    shape = tuple(expr.shape)
    parts = []
    for arg in expr.args:
        a = w.affine(arg)
        if a.shape != shape:
            a = _broadcast(a, shape)
        parts.append(a)
    return Affine.concat(shape, parts, [0] * len(parts))


def _broadcast(a: Affine, shape: tuple[int, ...]) -> Affine:
    idx = np.broadcast_to(_flat_index(a.shape), shape).ravel(order="F")
    return _apply_linear(_selection(idx, a.size), a, shape)


def _h_wrap(w: _Walker, expr: Wrap) -> Affine:
    # psd_wrap, symmetric_wrap, ...: assertions about the argument, no change of value.
    return w.affine(expr.args[0])


def _h_neg(w: _Walker, expr: NegExpression) -> Affine:
    return w.affine(expr.args[0]).scaled(-1.0)


def _h_promote(w: _Walker, expr: Promote) -> Affine:
    return _broadcast(w.affine(expr.args[0]), tuple(expr.shape))


def _h_index(w: _Walker, expr: index) -> Affine:
    arg = expr.args[0]
    a = w.affine(arg)
    shape = tuple(expr.shape)
    flat = _flat_index(a.shape)
    if isinstance(expr, special_index):
        sel = np.asarray(flat[expr.key]).ravel(order="F")
    else:
        # CVXPY normalizes basic keys to slices with absolute start and stop;
        # a stop of -1 with a negative step means "through index 0", which
        # NumPy would read as "the last entry": expand the slices explicitly.
        axes = [
            np.arange(k.start, k.stop, k.step) if isinstance(k, slice)
            and all(isinstance(v, (int, np.integer)) for v in (k.start, k.stop, k.step))
            else np.arange(dim)[k] if isinstance(k, slice) else np.array([k])
            for k, dim in zip(expr.key, a.shape)
        ]
        sel = flat[np.ix_(*axes)].ravel(order="F") if axes else flat.ravel(order="F")
    if sel.shape[0] != _size(shape):
        raise ModelError(f"{w.context}: could not interpret the index in {_describe(expr)}")
    return _apply_linear(_selection(sel, a.size), a, shape)


def _h_transpose(w: _Walker, expr: transpose) -> Affine:
    a = w.affine(expr.args[0])
    axes = getattr(expr, "axes", None)
    sel = np.transpose(_flat_index(a.shape), axes).ravel(order="F")
    return _apply_linear(_selection(sel, a.size), a, tuple(expr.shape))


def _h_reshape(w: _Walker, expr: reshape) -> Affine:
    a = w.affine(expr.args[0])
    shape = tuple(expr.shape)
    order = getattr(expr, "order", "F") or "F"
    flat = _flat_index(a.shape).ravel(order=order)
    sel = flat.reshape(shape, order=order).ravel(order="F")
    return _apply_linear(_selection(sel, a.size), a, shape)


def _h_broadcast_to(w: _Walker, expr: broadcast_to) -> Affine:
    return _broadcast(w.affine(expr.args[0]), tuple(expr.shape))


def _h_sum(w: _Walker, expr: Sum) -> Affine:
    a = w.affine(expr.args[0])
    shape = tuple(expr.shape)
    axis = expr.axis
    if axis is None:
        out_of_in = np.zeros(a.size, dtype=_INT)
    else:
        axes = (axis,) if np.isscalar(axis) else tuple(axis)
        kept = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        out_of_in = np.broadcast_to(
            np.arange(_size(kept), dtype=_INT).reshape(kept, order="F"), a.shape
        ).ravel(order="F")
    n_out = _size(shape)
    M = sp.csc_matrix(
        (np.ones(a.size), (out_of_in, np.arange(a.size))), shape=(n_out, a.size)
    )
    return _apply_linear(M, a, shape)


def _h_stack(w: _Walker, expr: Hstack | Vstack | Concatenate) -> Affine:
    parts = [w.affine(arg) for arg in expr.args]
    offsets = list(np.cumsum([0] + [a.size for a in parts[:-1]]))
    stacked = Affine.concat((sum(a.size for a in parts),), parts, offsets)
    blocks = [off + _flat_index(a.shape) for a, off in zip(parts, offsets)]
    if isinstance(expr, Vstack):
        blocks = [b if b.ndim == 2 else b.reshape(1, -1) for b in blocks]
        sel = np.vstack(blocks)
    elif isinstance(expr, Hstack):
        sel = np.hstack(blocks)
    else:
        sel = np.concatenate(blocks, axis=expr.axis)
    sel = sel.ravel(order="F")
    return _apply_linear(_selection(sel, stacked.size), stacked, tuple(expr.shape))


def _h_diag_vec(w: _Walker, expr: diag_vec) -> Affine:
    a = w.affine(expr.args[0])
    k = getattr(expr, "k", 0)
    n = expr.shape[0]
    rows_in = np.arange(a.size)
    i = rows_in + max(-k, 0)
    j = rows_in + max(k, 0)
    M = sp.csc_matrix((np.ones(a.size), (i + n * j, rows_in)), shape=(n * n, a.size))
    return _apply_linear(M, a, tuple(expr.shape))


def _h_diag_mat(w: _Walker, expr: diag_mat) -> Affine:
    a = w.affine(expr.args[0])
    k = getattr(expr, "k", 0)
    n = a.shape[0]
    size = _size(tuple(expr.shape))
    rows_out = np.arange(size)
    src = (rows_out + max(-k, 0)) + n * (rows_out + max(k, 0))
    return _apply_linear(_selection(src, a.size), a, tuple(expr.shape))


def _h_trace(w: _Walker, expr: Trace) -> Affine:
    a = w.affine(expr.args[0])
    n = a.shape[0]
    src = np.arange(n) * (n + 1)
    M = sp.csc_matrix((np.ones(n), (np.zeros(n, dtype=_INT), src)), shape=(1, a.size))
    return _apply_linear(M, a, ())


def _as_matrix_shape(shape: tuple[int, ...], *, left: bool) -> tuple[int, int]:
    if len(shape) == 2:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (1, shape[0]) if left else (shape[0], 1)
    return (1, 1)


def _h_matmul(w: _Walker, expr: MulExpression) -> Affine:
    lhs, rhs = expr.args
    if lhs.shape == () or rhs.shape == ():
        return _h_multiply(w, expr)
    left, right = w.affine(lhs), w.affine(rhs)
    a, b = _as_matrix_shape(left.shape, left=True)
    _, c = _as_matrix_shape(right.shape, left=False)
    shape = tuple(expr.shape)
    if not left.has_params and not left.has_vars:
        ML = sp.csc_matrix((left.val, (left.row % a, left.row // a)), shape=(a, b))
        M = ML if c == 1 else sp.kron(sp.identity(c, format="csc"), ML, format="csc")
        return _apply_linear(sp.csc_matrix(M), right, shape)
    if not right.has_params and not right.has_vars:
        MR = sp.csc_matrix((right.val, (right.row % b, right.row // b)), shape=(b, c))
        M = MR.T if a == 1 else sp.kron(MR.T, sp.identity(a, format="csc"))
        return _apply_linear(sp.csc_matrix(M), left, shape)
    il, ir = _pairs(left.row // a, right.row % b, b)
    rows = (left.row[il] % a) + a * (right.row[ir] // b)
    return w.product(left, right, il, ir, rows, shape, expr)


def _h_multiply(w: _Walker, expr: MulExpression) -> Affine:
    shape = tuple(expr.shape)
    left, right = (w.affine(arg) for arg in expr.args)
    if left.size == 1 and right.size != 1:
        il, ir = _pairs(np.zeros_like(left.row), np.zeros_like(right.row), 1)
        return w.product(left, right, il, ir, right.row[ir], shape, expr)
    if right.size == 1 and left.size != 1:
        il, ir = _pairs(np.zeros_like(left.row), np.zeros_like(right.row), 1)
        return w.product(left, right, il, ir, left.row[il], shape, expr)
    if left.shape != shape:
        left = _broadcast(left, shape)
    if right.shape != shape:
        right = _broadcast(right, shape)
    il, ir = _pairs(left.row, right.row, max(_size(shape), 1))
    return w.product(left, right, il, ir, left.row[il], shape, expr)


def _h_div(w: _Walker, expr: DivExpression) -> Affine:
    num, den = expr.args
    if den.parameters() or den.variables():
        raise ModelError(
            f"{w.context}: {_describe(expr)} divides by a parameter or variable "
            "expression; only division by a constant is affine"
        )
    value = np.asarray(den.value, dtype=float)
    if np.any(value == 0) or not np.all(np.isfinite(value)):
        raise ModelError(f"{w.context}: {_describe(expr)} divides by zero, NaN or inf")
    inv = cp.Constant(1.0 / value)
    return _h_multiply(w, multiply(num, inv))


_HANDLERS = {
    AddExpression: _h_add,
    NegExpression: _h_neg,
    Promote: _h_promote,
    special_index: _h_index,
    index: _h_index,
    transpose: _h_transpose,
    reshape: _h_reshape,
    broadcast_to: _h_broadcast_to,
    Sum: _h_sum,
    Hstack: _h_stack,
    Vstack: _h_stack,
    Concatenate: _h_stack,
    diag_vec: _h_diag_vec,
    diag_mat: _h_diag_mat,
    Trace: _h_trace,
    multiply: _h_multiply,
    DivExpression: _h_div,
    MulExpression: _h_matmul,
    Wrap: _h_wrap,
}


# ---------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _QuadTerm:
    """``uᵀ W u`` with u affine and W (N × N) affine in θ only."""

    u: Affine
    W: Affine
    expr: cp.Expression

    @property
    def source(self) -> str:
        return _describe(self.expr)


def _scalar_factor(w: _Walker, expr: cp.Expression) -> Affine | None:
    """The factor of a product that is a scalar free of variables, if any."""
    if expr.size == 1 and not expr.variables():
        return w.affine(expr)
    return None


def _scale_weight(w: _Walker, W: Affine, s: Affine, expr: object) -> Affine:
    if not s.has_params and not s.has_vars:  # a constant factor
        return W.scaled(float(s.val.sum()))
    il, ir = _pairs(np.zeros_like(s.row), np.zeros_like(W.row), 1)
    return w.product(s, W, il, ir, W.row[ir], W.shape, expr)


def _identity_weight(n: int, scale: float = 1.0) -> Affine:
    rows = np.arange(n, dtype=_INT) * (n + 1)
    zeros = np.zeros(n, dtype=_INT)
    return Affine((n, n), rows, zeros, zeros.copy(), np.full(n, scale))


def _diag_weight(weights: Affine, n: int) -> Affine:
    return Affine((n, n), weights.row * (n + 1), weights.p, weights.v, weights.val)


def _flatten(u: Affine) -> Affine:
    return u.with_shape((u.size,))


def _objective_terms(
    w: _Walker, expr: cp.Expression, factor: Affine, quads: list[_QuadTerm],
    linear: list[Affine],
) -> None:
    """Split ``factor * expr`` into quadratic terms and affine parts."""
    if expr.is_affine():
        a = w.affine(expr)
        if a.size != 1:
            raise ModelError(f"objective: {_describe(expr)} is not scalar")
        il, ir = _pairs(np.zeros_like(factor.row), np.zeros_like(a.row), 1)
        linear.append(w.product(factor, a, il, ir, np.zeros(il.shape[0], dtype=_INT), (), expr))
        return
    if isinstance(expr, AddExpression):
        for arg in expr.args:
            _objective_terms(w, arg, factor, quads, linear)
        return
    if isinstance(expr, NegExpression):
        _objective_terms(w, expr.args[0], factor.scaled(-1.0), quads, linear)
        return
    if isinstance(expr, DivExpression):
        num, den = expr.args
        if not den.parameters() and not den.variables() and den.size == 1:
            value = float(np.asarray(den.value))
            if value == 0 or not np.isfinite(value):
                raise ModelError(f"objective: {_describe(expr)} divides by {value}")
            _objective_terms(w, num, factor.scaled(1.0 / value), quads, linear)
            return
    if isinstance(expr, (multiply, MulExpression)) and expr.size == 1:
        lhs, rhs = expr.args
        for scal, other in ((lhs, rhs), (rhs, lhs)):
            s = _scalar_factor(w, scal)
            if s is not None and not s.has_vars:
                il, ir = _pairs(np.zeros_like(factor.row), np.zeros_like(s.row), 1)
                new = w.product(factor, s, il, ir, np.zeros(il.shape[0], dtype=_INT), (), expr)
                _objective_terms(w, other, new, quads, linear)
                return
    quad = _quadratic(w, expr)
    if quad is None:
        raise ModelError(
            f"objective: {_describe(expr)} is not a quadratic term diffmodel can handle; "
            "use sum_squares, quad_form, square or quad_over_lin (constant "
            "denominator) of affine expressions, plus affine terms"
        )
    u, W = quad
    quads.append(_QuadTerm(_flatten(u), _scale_weight(w, W, factor, expr), expr))


def _quadratic(w: _Walker, expr: cp.Expression) -> tuple[Affine, Affine] | None:
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
                    u = _broadcast(u, tuple(other.shape))
                return u, _diag_weight(w.affine(coef), u.size)
    return None


def _is_square(expr: Power) -> bool:
    p = getattr(expr, "_p_orig", None)
    if p is None:
        p = expr.p
    return float(np.asarray(p.value if hasattr(p, "value") else p)) == 2.0


def _sum_of_squares(w: _Walker, expr: cp.Expression) -> tuple[Affine, Affine] | None:
    """``sum(square(u))`` or ``sum(multiply(c, square(u)))`` with c ≥ 0 constant."""
    if isinstance(expr, Power) and _is_square(expr):
        u = w.affine(expr.args[0])
        if u.shape != tuple(expr.shape):
            u = _broadcast(u, tuple(expr.shape))
        return u, _identity_weight(u.size)
    if isinstance(expr, (multiply, MulExpression)):
        lhs, rhs = expr.args
        for coef, other in ((lhs, rhs), (rhs, lhs)):
            if isinstance(other, Power) and _is_square(other) and not coef.variables():
                u = w.affine(other.args[0])
                shape = tuple(expr.shape)
                if u.shape != shape:
                    u = _broadcast(u, shape)
                c = w.affine(coef)
                if c.shape != shape:
                    c = _broadcast(c, shape)
                return u, _diag_weight(c, u.size)
    return None


# ---------------------------------------------------------------------------
# The parametric QP
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Where a named CVXPY object lives in a stacked vector.

    ``vector[block.offset:block.stop]`` is the object flattened in
    column-major order.
    """

    name: str
    offset: int
    shape: tuple[int, ...]
    size: int = field(init=False)
    stop: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.shape))
        object.__setattr__(self, "stop", self.offset + self.size)


@dataclass(frozen=True)
class Coo:
    """Entries ``M[i, j] += val * θ̃[p]`` of a parametric matrix."""

    i: IntArray
    j: IntArray
    p: IntArray
    val: FloatArray


@dataclass
class ParametricQP:
    """The model as affine maps θ̃ → (P, q, r, A, b).

    Attributes
    ----------
    n, m : int
        Number of variables (user variables first, then lifted auxiliaries)
        and of equality rows (user constraints first, then lifting rows).
    n_theta : int
        Number of parameter entries; θ̃ has ``n_theta + 1`` entries.
    P : Coo
        Upper-triangular entries of the symmetric P (i ≤ j).
    q : Coo
        Entries of q (``j`` unused).
    r : Coo
        Constant term of the objective (``i``, ``j`` unused).
    A : Coo
        Entries of A.
    b : Coo
        Entries of b (``j`` unused).
    variables, constraints, parameters : dict[str, Block]
        Layout of the named objects in x, in the constraint rows and in θ
        (offsets into θ, not θ̃).
    sign : float
        +1 for Minimize, −1 for Maximize (the canonical form always minimizes).
    """

    n: int
    m: int
    n_theta: int
    P: Coo
    q: Coo
    r: Coo
    A: Coo
    b: Coo
    variables: dict[str, Block]
    constraints: dict[str, Block]
    parameters: dict[str, Block]
    sign: float
    n_user: int
    m_user: int
    lifted: list[str] = field(default_factory=list)

    def layout(self) -> ParametricQP:
        """A copy without the coefficient lists: names, blocks and sizes only.

        The model keeps this after building its KKT maps, so that the lists
        (several bytes per data entry) can be freed.
        """
        empty = Coo(*(np.zeros(0, dtype=_INT) for _ in range(3)), np.zeros(0))
        return ParametricQP(
            n=self.n, m=self.m, n_theta=self.n_theta, P=empty, q=empty, r=empty, A=empty,
            b=empty, variables=self.variables, constraints=self.constraints,
            parameters=self.parameters, sign=self.sign, n_user=self.n_user,
            m_user=self.m_user, lifted=self.lifted,
        )


def _named(objs: list[cp.Expression], kind: str) -> dict[str, cp.Expression]:
    out: dict[str, cp.Expression] = {}
    for obj in sorted(objs, key=lambda o: o.id):
        name = obj.name()
        auto = f"{'var' if kind == 'variable' else 'param'}{obj.id}"
        if getattr(obj, "_name", None) is None or name == auto:
            raise ModelError(
                f"every {kind} needs an explicit name: {kind} of shape "
                f"{tuple(obj.shape)} has none; create it as "
                f"cp.{'Variable' if kind == 'variable' else 'Parameter'}"
                f"({tuple(obj.shape)}, name='...')"
            )
        if name in out:
            raise ModelError(
                f"two different {kind}s are named '{name}'; names must be unique"
            )
        out[name] = obj
    return out


def canonicalize(
    objective: cp.Minimize | cp.Maximize,
    constraints: dict[str, cp.Constraint],
) -> tuple[ParametricQP, dict[str, cp.Variable], dict[str, cp.Parameter]]:
    """Map a CVXPY objective and named equality constraints to a ParametricQP.

    Parameters
    ----------
    objective : cp.Minimize or cp.Maximize
        A convex quadratic objective (concave for Maximize).
    constraints : dict of str to cp.Constraint
        Equality constraints by name.

    Returns
    -------
    qp : ParametricQP
    variables : dict of str to cp.Variable
        In order of creation.
    parameters : dict of str to cp.Parameter
        In order of creation.

    Raises
    ------
    ModelError
        If the model is not a convex QP with equality constraints, or a
        variable or parameter is unnamed or named twice.
    """
    if not isinstance(objective, (cp.Minimize, cp.Maximize)):
        raise ModelError(
            f"the objective must be cp.Minimize or cp.Maximize, got {type(objective).__name__}"
        )
    _check_constraints(constraints)
    problem = cp.Problem(objective, list(constraints.values()))
    variables = _named(problem.variables(), "variable")
    parameters = _named(problem.parameters(), "parameter")
    for name, var in variables.items():
        for attr in _UNSUPPORTED_VAR_ATTRS:
            if var.attributes.get(attr):
                raise ModelError(
                    f"variable '{name}' is declared {attr}=True; variable attributes "
                    "imply constraints that diffmodel does not support yet: declare a "
                    "plain variable and write the constraint explicitly"
                )
        if var.attributes.get("bounds") is not None:
            raise ModelError(
                f"variable '{name}' has bounds: inequality constraints are not supported yet"
            )
    for name, par in parameters.items():
        if par.is_complex():
            raise ModelError(f"parameter '{name}' is complex; only real parameters are supported")

    var_blocks: dict[str, Block] = {}
    offset = 0
    for name, var in variables.items():
        var_blocks[name] = Block(name, offset, tuple(var.shape))
        offset += var.size
    n_user = offset
    par_blocks: dict[str, Block] = {}
    poff = 0
    for name, par in parameters.items():
        par_blocks[name] = Block(name, poff, tuple(par.shape))
        poff += par.size

    walker = _Walker(
        {var.id: var_blocks[nm].offset + 1 for nm, var in variables.items()},
        {par.id: par_blocks[nm].offset + 1 for nm, par in parameters.items()},
    )

    # Objective.
    sign = 1.0 if isinstance(objective, cp.Minimize) else -1.0
    _check_convex_objective(objective, parameters)
    walker.context = "objective"
    quads: list[_QuadTerm] = []
    linear: list[Affine] = []
    one = Affine((), np.zeros(1, dtype=_INT), np.zeros(1, dtype=_INT), np.zeros(1, dtype=_INT),
                 np.array([sign]))
    _objective_terms(walker, objective.args[0], one, quads, linear)

    # Constraints.
    con_blocks: dict[str, Block] = {}
    rows: list[Affine] = []
    row_offsets: list[int] = []
    m = 0
    for name, con in constraints.items():
        walker.context = f"constraint '{name}'"
        g = walker.affine(con.expr)
        con_blocks[name] = Block(name, m, tuple(con.shape))
        rows.append(g)
        row_offsets.append(m)
        m += g.size
    m_user = m

    # Quadratic terms: expand into P or lift.
    P_parts: list[tuple[IntArray, IntArray, IntArray, FloatArray]] = []
    n = n_user
    lifted: list[str] = []
    for term in quads:
        u, W = term.u, term.W
        if W.size != u.size * u.size:
            raise ModelError(f"objective: weight of {term.source} does not match its argument")
        direct = not u.has_params and (not W.has_params or _is_selection(u))
        if not direct:
            # y = u: rows  y - u = 0.
            N = u.size
            y = Affine((N,), np.arange(N, dtype=_INT), np.zeros(N, dtype=_INT),
                       n + 1 + np.arange(N, dtype=_INT), np.ones(N))
            rows.append(Affine.concat((N,), [y, u.scaled(-1.0)], [0, 0]))
            row_offsets.append(m)
            m += N
            n += N
            lifted.append(term.source)
            u = y
        P_parts.append(_expand_quadratic(u, W, linear))

    qp = _assemble(
        n, m, poff, P_parts, linear, rows, row_offsets, var_blocks, con_blocks,
        par_blocks, sign, n_user, m_user, lifted,
    )
    return qp, dict(variables), dict(parameters)


def _check_constraints(constraints: dict[str, cp.Constraint]) -> None:
    for name, con in constraints.items():
        if not isinstance(name, str) or not name:
            raise ModelError(f"constraint names must be non-empty strings, got {name!r}")
        if isinstance(con, (Equality, Zero)):
            continue
        if isinstance(con, cp.constraints.Inequality) or isinstance(
            con, (cp.constraints.NonNeg, cp.constraints.NonPos)
        ):
            raise ModelError(
                f"constraint '{name}' ({_describe(con)}) is an inequality: inequality "
                "constraints are not supported yet, only equalities (==)"
            )
        if isinstance(con, cp.Constraint):
            raise ModelError(
                f"constraint '{name}' ({_describe(con)}) is a {type(con).__name__} "
                "constraint; only equality constraints (==) are supported"
            )
        raise ModelError(
            f"constraint '{name}' is not a CVXPY constraint (got {type(con).__name__})"
        )


def _check_convex_objective(objective: cp.Minimize | cp.Maximize,
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
        f"the objective {_describe(expr)} is not {kind} by CVXPY's DCP rules; "
        f"diffmodel needs a convex quadratic program.{hint}"
    )


def _assume_psd_forms(expr: cp.Expression) -> cp.Expression:
    """A copy of expr in which every parametric quad_form matrix is assumed PSD."""
    if isinstance(expr, QuadForm) and expr.args[1].parameters():
        from cvxpy.atoms.affine.wraps import psd_wrap

        return QuadForm(expr.args[0], psd_wrap(expr.args[1]))
    if not expr.args:
        return expr
    return expr.copy([_assume_psd_forms(arg) for arg in expr.args])


def _atoms(expr: cp.Expression, cls: type | tuple[type, ...]) -> list[cp.Expression]:
    found = [expr] if isinstance(expr, cls) else []
    for arg in expr.args:
        found.extend(_atoms(arg, cls))
    return found


def _is_selection(u: Affine) -> bool:
    """Each row of u is one variable entry times a constant, with no offset."""
    if u.has_params or np.any(u.v == 0):
        return False
    return bool(np.bincount(u.row, minlength=u.size).max(initial=0) <= 1)


def _expand_quadratic(u: Affine, W: Affine,
                      linear: list[Affine]) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
    """P, q and r entries of ``uᵀ W u`` for u free of θ.

    With u = C x + c: uᵀWu = ½ xᵀ Cᵀ(W + Wᵀ)C x + cᵀ(W + Wᵀ)C x + cᵀ W c.
    Returns the upper-triangular P entries (0-based variable indices).
    """
    N = u.size
    if _is_selection(u) and u.row.shape[0] == N:
        # u_k = c_k x_{j(k)} (quad_form(x, Q), sum_squares(x), ...): no join
        # needed. Temporaries are dropped early: this runs on every entry of
        # a (possibly large) constant P, and sets the compile's peak memory.
        var = np.empty(N, dtype=np.int32 if N < 2**31 - 1 else _INT)
        coef = np.empty(N)
        var[u.row] = u.v - 1
        coef[u.row] = u.val
        k = W.row % N
        ci = var[k]
        val = coef[k] * W.val
        del k
        l_ = W.row // N
        cj = var[l_]
        val *= coef[l_]
        del l_
        # W_kl contributes val at (i, j) and at (j, i): once to the upper
        # triangle, or twice on the diagonal.
        val[ci == cj] *= 2.0
        return np.minimum(ci, cj), np.maximum(ci, cj), W.p, val
    k_w = W.row % N
    l_w = W.row // N
    xpart = u.take(u.v > 0)
    cpart = u.take(u.v == 0)
    # P: for each W entry (k, l), pair C[k, i] with C[l, j].
    ik, iw = _pairs(xpart.row, k_w, N)
    jl, jw = _pairs(l_w[iw], xpart.row, N)
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
            ia, iw2 = _pairs(a.row, a_row, N)
            iwb, ib = _pairs(b_row[iw2], b.row, N)
            ww = iw2[iwb]
            lin_rows.append(Affine(
                (), np.zeros(ww.shape[0], dtype=_INT), W.p[ww], b.v[ib],
                a.val[ia][iwb] * W.val[ww] * b.val[ib],
            ))
        # Constant: cᵀ W c.
        ia, iw2 = _pairs(cpart.row, k_w, N)
        iwb, ib = _pairs(l_w[iw2], cpart.row, N)
        ww = iw2[iwb]
        lin_rows.append(Affine(
            (), np.zeros(ww.shape[0], dtype=_INT), W.p[ww], np.zeros(ww.shape[0], dtype=_INT),
            cpart.val[ia][iwb] * W.val[ww] * cpart.val[ib],
        ))
        linear.extend(lin_rows)
    return pi[upper], pj[upper], pp[upper], pv[upper]


def _assemble(
    n: int, m: int, n_theta: int,
    P_parts: list[tuple[IntArray, IntArray, IntArray, FloatArray]],
    linear: list[Affine], rows: list[Affine], row_offsets: list[int],
    var_blocks: dict[str, Block], con_blocks: dict[str, Block],
    par_blocks: dict[str, Block], sign: float, n_user: int, m_user: int,
    lifted: list[str],
) -> ParametricQP:
    def cat(parts: list[IntArray] | list[FloatArray], dtype: type) -> NDArray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    # Indices in the smallest integer type that holds them (memory at compile).
    var_t = np.int32 if n < 2**31 - 1 else _INT
    par_t = np.int32 if n_theta < 2**31 - 2 else _INT
    P = Coo(
        cat([t[0] for t in P_parts], var_t), cat([t[1] for t in P_parts], var_t),
        cat([t[2] for t in P_parts], par_t), cat([t[3] for t in P_parts], float),
    )
    lin = Affine.concat((), linear, [0] * len(linear))
    has_x = lin.v > 0
    if np.any(lin.v > n_user):
        raise ModelError("objective: internal error, linear term on an auxiliary variable")
    q = Coo(lin.v[has_x] - 1, np.zeros(int(has_x.sum()), dtype=_INT), lin.p[has_x], lin.val[has_x])
    r = Coo(np.zeros(int((~has_x).sum()), dtype=_INT), np.zeros(int((~has_x).sum()), dtype=_INT),
            lin.p[~has_x], lin.val[~has_x])
    g = Affine.concat((m,), rows, row_offsets)
    in_A = g.v > 0
    A = Coo(g.row[in_A], g.v[in_A] - 1, g.p[in_A], g.val[in_A])
    # g = A x - b  =>  b = -(constant part of g).
    b = Coo(g.row[~in_A], np.zeros(int((~in_A).sum()), dtype=_INT), g.p[~in_A], -g.val[~in_A])
    return ParametricQP(
        n=n, m=m, n_theta=n_theta, P=P, q=q, r=r, A=A, b=b,
        variables=var_blocks, constraints=con_blocks, parameters=par_blocks,
        sign=sign, n_user=n_user, m_user=m_user, lifted=lifted,
    )
