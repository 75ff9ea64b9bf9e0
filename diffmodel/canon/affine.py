"""Affine expressions of CVXPY as coefficient lists over θ̃ = (1, θ) and x̃ = (1, x).

Every affine expression becomes an :class:`Affine` tensor, a list of entries
``(row, p, v, val)`` meaning ``expr[row] += val * θ̃[p] * x̃[v]``. Index 0 of
θ̃ and x̃ stands for the constant 1, so one list holds constants, parameter
terms, variable terms and the bilinear products ``A(θ) @ x`` that DPP allows.
Work and memory are proportional to the number of entries of the problem
data, never to (parameter entries × problem size).

Expressions are walked directly (CVXPY's reductions are not used).
Vectorization is column-major (Fortran order) throughout, as in CVXPY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

from .._typing import FloatArray, IntArray
from ..errors import ModelError
from .printer import constraint_text, expression_text, shorten

__all__ = ["Affine", "Walker", "INT", "broadcast", "describe", "pairs", "size_of"]

INT = np.int64

def describe(expr: object, limit: int = 70) -> str:
    """An expression or constraint as the user wrote it, for messages (shortened)."""
    text = constraint_text(expr) if isinstance(expr, cp.Constraint) else expression_text(expr)
    return shorten(text, limit)


def _zeros(size: int) -> IntArray:
    """A read-only array of ``size`` zeros that takes no memory (zero stride).

    Constants have parameter and variable index 0 in every entry; these
    columns are only ever read, indexed or concatenated, never written.
    """
    return np.broadcast_to(np.zeros(1, dtype=INT), (size,))


def size_of(shape: tuple[int, ...]) -> int:
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
        return size_of(self.shape)

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
            empty_i = np.zeros(0, dtype=INT)
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
    if isinstance(value, (sp.spmatrix, sp.sparray)):
        coo = sp.coo_matrix(value)  # type: ignore[call-overload]  # any SciPy sparse input
        nrows = coo.shape[0]
        flat = coo.row.astype(INT) + nrows * coo.col.astype(INT)
        data = np.asarray(coo.data, dtype=float)
    else:
        arr = np.asarray(value)
        if np.iscomplexobj(arr):
            raise ModelError("complex constants are not supported")
        arr = np.broadcast_to(arr.astype(float), shape) if arr.shape != shape else arr
        vec = np.asarray(arr, dtype=float).ravel(order="F")
        flat = np.flatnonzero(vec).astype(INT)
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
        shape, M.indices[pos].astype(INT), a.p[rep], a.v[rep], a.val[rep] * M.data[pos]
    )


def _expand(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For entry e repeated counts[e] times: (entry index, 0..counts[e]-1)."""
    total = int(counts.sum())
    rep = np.repeat(np.arange(counts.shape[0], dtype=INT), counts)
    starts = np.cumsum(counts) - counts
    offs = np.arange(total, dtype=INT) - starts[rep]
    return rep, offs


def pairs(key_l: IntArray, key_r: IntArray, nkeys: int) -> tuple[IntArray, IntArray]:
    """All pairs (i, j) with key_l[i] == key_r[j], in O(len + pairs)."""
    order = np.argsort(key_r, kind="stable")
    count_r = np.bincount(key_r, minlength=nkeys).astype(INT)
    start_r = np.cumsum(count_r) - count_r
    rep, offs = _expand(count_r[key_l])
    return rep, order[start_r[key_l][rep] + offs]


def _selection(out_to_in: IntArray, n_in: int) -> sp.csc_matrix:
    n_out = out_to_in.shape[0]
    return sp.csc_matrix(
        (np.ones(n_out), (np.arange(n_out), out_to_in)), shape=(n_out, n_in)
    )


def _flat_index(shape: tuple[int, ...]) -> IntArray:
    return np.arange(size_of(shape), dtype=INT).reshape(shape, order="F")


# ---------------------------------------------------------------------------
# Walking CVXPY expressions
# ---------------------------------------------------------------------------


@dataclass
class Walker:
    """Turns CVXPY affine expressions into :class:`Affine` tensors."""

    var_offsets: dict[int, int]  # cvxpy id -> offset in x̃ (1-based)
    param_offsets: dict[int, int]  # cvxpy id -> offset in θ̃ (1-based)
    context: str = ""
    #: (start, stop, name) of each parameter in θ̃, for messages.
    param_names: tuple[tuple[int, int, str], ...] = ()

    def parameter_names(self, indices: IntArray) -> list[str]:
        """The names of the parameters that the θ̃ entries ``indices`` belong to."""
        found = {int(i) for i in np.unique(indices[indices > 0])}
        return [name for start, stop, name in self.param_names
                if any(start <= i < stop for i in found)]

    def affine(self, expr: cp.Expression) -> Affine:
        shape = tuple(expr.shape)
        if len(shape) > 2:
            raise ModelError(
                f"{self.context}: expressions with more than 2 dimensions are not "
                f"supported ({describe(expr)} has shape {shape})"
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
                f"affine expression (in {describe(expr)}); diffmodel handles "
                "quadratic programs built from +, -, @, *, /, indexing, sum, "
                "reshape, hstack/vstack, transpose, diag and trace"
            )
        return handler(self, expr)

    @staticmethod
    def _leaf(shape: tuple[int, ...], offset: int, *, is_var: bool) -> Affine:
        size = size_of(shape)
        rows = np.arange(size, dtype=INT)
        idx = offset + rows
        zeros = _zeros(size)
        if is_var:
            return Affine(shape, rows, zeros, idx, np.ones(size))
        return Affine(shape, rows, idx, zeros, np.ones(size))

    def product(self, left: Affine, right: Affine, il: IntArray, ir: IntArray,
                rows: IntArray, shape: tuple[int, ...], expr: object) -> Affine:
        pl, pr = left.p[il], right.p[ir]
        vl, vr = left.v[il], right.v[ir]
        both = (pl > 0) & (pr > 0)
        if np.any(both):
            names = list(dict.fromkeys(self.parameter_names(pl[both])
                                       + self.parameter_names(pr[both])))
            pair = " and ".join(f"'{n}'" for n in names)
            raise ModelError(
                f"{self.context}: the term {describe(expr)} multiplies parameters {pair}, and the "
                "problem data must be affine in the parameters (DPP): fold one into the "
                "other (for a scalar times a matrix, declare one parameter for the product "
                "and set its value to the product), or pass the product as one parameter")
        if np.any((vl > 0) & (vr > 0)):
            raise ModelError(
                f"{self.context}: {describe(expr)} multiplies two variable "
                "expressions; write quadratic terms with sum_squares, quad_form "
                "or square in the objective"
            )
        return Affine(shape, rows, pl + pr, vl + vr, left.val[il] * right.val[ir])


def _h_add(w: Walker, expr: AddExpression) -> Affine:
    shape = tuple(expr.shape)
    parts = []
    for arg in expr.args:
        a = w.affine(arg)
        if a.shape != shape:
            a = broadcast(a, shape)
        parts.append(a)
    return Affine.concat(shape, parts, [0] * len(parts))


def broadcast(a: Affine, shape: tuple[int, ...]) -> Affine:
    idx = np.broadcast_to(_flat_index(a.shape), shape).ravel(order="F")
    return _apply_linear(_selection(idx, a.size), a, shape)


def _h_wrap(w: Walker, expr: Wrap) -> Affine:
    # psd_wrap, symmetric_wrap, ...: assertions about the argument, no change of value.
    return w.affine(expr.args[0])


def _h_neg(w: Walker, expr: NegExpression) -> Affine:
    return w.affine(expr.args[0]).scaled(-1.0)


def _h_promote(w: Walker, expr: Promote) -> Affine:
    return broadcast(w.affine(expr.args[0]), tuple(expr.shape))


def _h_index(w: Walker, expr: index) -> Affine:
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
    if sel.shape[0] != size_of(shape):
        raise ModelError(f"{w.context}: could not interpret the index in {describe(expr)}")
    return _apply_linear(_selection(sel, a.size), a, shape)


def _h_transpose(w: Walker, expr: transpose) -> Affine:
    a = w.affine(expr.args[0])
    axes = getattr(expr, "axes", None)
    sel = np.transpose(_flat_index(a.shape), axes).ravel(order="F")
    return _apply_linear(_selection(sel, a.size), a, tuple(expr.shape))


def _h_reshape(w: Walker, expr: reshape) -> Affine:
    a = w.affine(expr.args[0])
    shape = tuple(expr.shape)
    order: Literal["C", "F"] = "C" if getattr(expr, "order", "F") == "C" else "F"
    flat = _flat_index(a.shape).ravel(order=order)
    sel = flat.reshape(shape, order=order).ravel(order="F")
    return _apply_linear(_selection(sel, a.size), a, shape)


def _h_broadcast_to(w: Walker, expr: broadcast_to) -> Affine:
    return broadcast(w.affine(expr.args[0]), tuple(expr.shape))


def _h_sum(w: Walker, expr: Sum) -> Affine:
    a = w.affine(expr.args[0])
    shape = tuple(expr.shape)
    axis = expr.axis
    if axis is None:
        out_of_in = np.zeros(a.size, dtype=INT)
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        kept = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        out_of_in = np.broadcast_to(
            np.arange(size_of(kept), dtype=INT).reshape(kept, order="F"), a.shape
        ).ravel(order="F")
    n_out = size_of(shape)
    M = sp.csc_matrix(
        (np.ones(a.size), (out_of_in, np.arange(a.size))), shape=(n_out, a.size)
    )
    return _apply_linear(M, a, shape)


def _h_stack(w: Walker, expr: Hstack | Vstack | Concatenate) -> Affine:
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


def _h_diag_vec(w: Walker, expr: diag_vec) -> Affine:
    a = w.affine(expr.args[0])
    k = getattr(expr, "k", 0)
    n = expr.shape[0]
    rows_in = np.arange(a.size)
    i = rows_in + max(-k, 0)
    j = rows_in + max(k, 0)
    M = sp.csc_matrix((np.ones(a.size), (i + n * j, rows_in)), shape=(n * n, a.size))
    return _apply_linear(M, a, tuple(expr.shape))


def _h_diag_mat(w: Walker, expr: diag_mat) -> Affine:
    a = w.affine(expr.args[0])
    k = getattr(expr, "k", 0)
    n = a.shape[0]
    size = size_of(tuple(expr.shape))
    rows_out = np.arange(size)
    src = (rows_out + max(-k, 0)) + n * (rows_out + max(k, 0))
    return _apply_linear(_selection(src, a.size), a, tuple(expr.shape))


def _h_trace(w: Walker, expr: Trace) -> Affine:
    a = w.affine(expr.args[0])
    n = a.shape[0]
    src = np.arange(n) * (n + 1)
    M = sp.csc_matrix((np.ones(n), (np.zeros(n, dtype=INT), src)), shape=(1, a.size))
    return _apply_linear(M, a, ())


def _as_matrix_shape(shape: tuple[int, ...], *, left: bool) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 1:
        return (1, shape[0]) if left else (shape[0], 1)
    return (1, 1)


def _h_matmul(w: Walker, expr: MulExpression) -> Affine:
    lhs, rhs = expr.args
    if lhs.shape == () or rhs.shape == ():
        return _h_multiply(w, expr)
    left, right = w.affine(lhs), w.affine(rhs)
    a, b = _as_matrix_shape(left.shape, left=True)
    _, c = _as_matrix_shape(right.shape, left=False)
    shape = tuple(expr.shape)
    if not left.has_params and not left.has_vars:
        ML = sp.csc_matrix((left.val, (left.row % a, left.row // a)), shape=(a, b))
        M_left = ML if c == 1 else sp.kron(sp.identity(c, format="csc"), ML, format="csc")
        return _apply_linear(sp.csc_matrix(M_left), right, shape)
    if not right.has_params and not right.has_vars:
        MR = sp.csc_matrix((right.val, (right.row % b, right.row // b)), shape=(b, c))
        M_right = MR.T if a == 1 else sp.kron(MR.T, sp.identity(a, format="csc"))
        return _apply_linear(sp.csc_matrix(M_right), left, shape)
    il, ir = pairs(left.row // a, right.row % b, b)
    rows = (left.row[il] % a) + a * (right.row[ir] // b)
    return w.product(left, right, il, ir, rows, shape, expr)


def _h_multiply(w: Walker, expr: MulExpression) -> Affine:
    shape = tuple(expr.shape)
    left, right = (w.affine(arg) for arg in expr.args)
    if left.size == 1 and right.size != 1:
        il, ir = pairs(np.zeros_like(left.row), np.zeros_like(right.row), 1)
        return w.product(left, right, il, ir, right.row[ir], shape, expr)
    if right.size == 1 and left.size != 1:
        il, ir = pairs(np.zeros_like(left.row), np.zeros_like(right.row), 1)
        return w.product(left, right, il, ir, left.row[il], shape, expr)
    if left.shape != shape:
        left = broadcast(left, shape)
    if right.shape != shape:
        right = broadcast(right, shape)
    il, ir = pairs(left.row, right.row, max(size_of(shape), 1))
    return w.product(left, right, il, ir, left.row[il], shape, expr)


def _h_div(w: Walker, expr: DivExpression) -> Affine:
    num, den = expr.args
    if den.parameters() or den.variables():
        raise ModelError(
            f"{w.context}: {describe(expr)} divides by a parameter or variable "
            "expression; only division by a constant is affine"
        )
    value = np.asarray(den.value, dtype=float)
    if np.any(value == 0) or not np.all(np.isfinite(value)):
        raise ModelError(f"{w.context}: {describe(expr)} divides by zero, NaN or inf")
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
