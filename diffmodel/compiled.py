"""The compiled problem: immutable maps θ → QP data, and the layout of names.

A model is compiled once (by :mod:`diffmodel.canon`) into

    minimize  ½ xᵀP(θ)x + q(θ)ᵀx + r(θ)
    subject to  A(θ) x = b(θ),   G(θ) x ≤ h(θ),

where every entry of P, q, r, A, b, G and h is affine in θ. With θ̃ = (1, θ)
each of them is a constant sparse matrix applied to θ̃ (:class:`LinearMap`,
with its adjoint beside it for reverse mode). The constraint rows are kept
stacked, M = [A; G] and c = [b; h], the first ``m_eq`` rows being the
equalities. P is stored as its upper triangle in compressed columns, M in
compressed rows; both patterns are fixed at compile time.

Everything here is plain NumPy/SciPy data: a :class:`CompiledProblem` is
immutable, knows nothing of CVXPY objects, can be shared by threads and
pickles compactly. :class:`ProblemData` holds the numbers for one θ.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp

from ._typing import FloatArray, IntArray

__all__ = [
    "Block", "ConstraintBlock", "Layout", "LinearMap", "ParametricMatrix",
    "ParametricVector", "CompiledProblem", "ProblemData", "coefficients_to_matrix",
    "coefficients_to_vector",
]


#: Maps with at most this many entries (rows × columns) are applied densely:
#: for small models a dense product is several times faster than a sparse one.
DENSE_LIMIT = 40_000


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


# --------------------------------------------------------------------- names


@dataclass(frozen=True)
class Block:
    """Where a named object lives in a stacked vector.

    ``vector[offset:stop]`` is the object flattened in column-major order.
    """

    name: str
    offset: int
    shape: tuple[int, ...]
    size: int = field(init=False)
    stop: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.shape))
        object.__setattr__(self, "stop", self.offset + self.size)

    def take(self, vector: FloatArray, shift: int = 0) -> FloatArray:
        """The object's entries in ``vector[shift:]``, shaped like the object (a view)."""
        part = vector[shift + self.offset: shift + self.stop]
        if len(self.shape) == 1:
            return part
        return part.reshape(self.shape, order="F")

    def take_batch(self, block: FloatArray, shift: int = 0) -> FloatArray:
        """The object's entries in each column of ``block`` (N, B): shape (B, *shape)."""
        rows = block[shift + self.offset: shift + self.stop]
        return np.asarray(rows.T.reshape((block.shape[1], *self.shape), order="F"))

    def put(self, vector: FloatArray, value: FloatArray, shift: int = 0) -> None:
        """Write ``value`` (shaped like the object) into ``vector[shift:]``."""
        vector[shift + self.offset: shift + self.stop] = (
            value if value.ndim <= 1 else value.ravel(order="F"))


@dataclass(frozen=True)
class ConstraintBlock(Block):
    """A named constraint: rows ``offset:stop`` of the equalities or inequalities.

    ``kind`` is ``"eq"`` (rows of A, duals ν) or ``"ineq"`` (rows of G,
    duals λ ≥ 0). ``text`` is a readable form of the constraint for reports.
    """

    kind: Literal["eq", "ineq"] = "eq"
    text: str = ""


@dataclass(frozen=True)
class Layout:
    """Names and sizes of a compiled problem.

    Attributes
    ----------
    variables : dict of str to Block
        User variables in x (auxiliary variables follow them, unnamed).
    constraints : dict of str to ConstraintBlock
        User constraints (rows added by the compiler follow them, unnamed).
    parameters : dict of str to Block
        Parameters in θ (θ̃ = (1, θ): a parameter's entries are at
        ``1 + offset : 1 + stop`` of θ̃).
    n, m_eq, m_ineq, n_theta : int
        Dimensions of x, of the equality rows, of the inequality rows, of θ.
    sign : float
        +1 for Minimize, −1 for Maximize (the compiled problem always minimizes).
    """

    variables: dict[str, Block]
    constraints: dict[str, ConstraintBlock]
    parameters: dict[str, Block]
    n: int
    m_eq: int
    m_ineq: int
    n_theta: int
    sign: float

    @property
    def rows(self) -> int:
        """All constraint rows, m_eq + m_ineq."""
        return self.m_eq + self.m_ineq

    def constraint_rows(self, name: str) -> tuple[int, int]:
        """Rows ``(start, stop)`` of a named constraint in the stacked M = [A; G]."""
        block = self.constraints[name]
        shift = 0 if block.kind == "eq" else self.m_eq
        return shift + block.offset, shift + block.stop


# ---------------------------------------------------------------- the maps


class LinearMap:
    """A constant linear map y = M x with its adjoint x̄ = Mᵀ ȳ beside it.

    Stored sparse (CSR for M and, built on first use, for Mᵀ), or dense when
    small, so that applying it costs as little as possible either way.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self.matrix = matrix
        self.shape: tuple[int, int] = self.matrix.shape
        self._dense = self.shape[0] * self.shape[1] <= DENSE_LIMIT
        self._fwd: FloatArray | sp.csr_matrix = (
            self.matrix.toarray() if self._dense else self.matrix)
        self._adj: FloatArray | sp.csr_matrix | None = None

    def apply(self, x: FloatArray) -> FloatArray:
        """M x (x may be a block of columns: only the rows of the block that M
        reads are taken, so that a wide block is never copied whole)."""
        if x.ndim == 2:
            narrow = self._narrow
            if narrow is not None:
                support, sub = narrow
                return np.asarray(sub.dot(x[support]))
        out: FloatArray = self._fwd.dot(x)
        return out

    @functools.cached_property
    def _narrow(self) -> tuple[IntArray, FloatArray | sp.csr_matrix] | None:
        """(support, M restricted to it) when M reads less than half of x."""
        support = self.support
        if 2 * support.shape[0] >= self.shape[1]:
            return None
        sub = (np.ascontiguousarray(np.asarray(self._fwd)[:, support]) if self._dense
               else sp.csr_matrix(self.matrix[:, support]))
        return support, sub

    def apply_adjoint(self, y: FloatArray) -> FloatArray:
        """Mᵀ y (y may be a block of columns)."""
        adj = self._adj
        if adj is None:  # a benign race: two threads build equal copies
            adj = (np.ascontiguousarray(self._fwd.T) if self._dense
                   else self.matrix.T.tocsr())
            self._adj = adj
        out: FloatArray = adj.dot(y)
        return out

    @functools.cached_property
    def support(self) -> IntArray:
        """The columns of M with a nonzero entry (sorted): the only entries of x
        that M x depends on, and of Mᵀ y that can be nonzero."""
        return np.unique(self.matrix.indices).astype(np.int64)

    def columns(self, cols: IntArray) -> FloatArray:
        """The columns ``cols`` of M as a dense block: M applied to one-hot directions."""
        if self._dense:
            return np.asarray(self._fwd)[:, cols]
        return np.asarray(self.matrix[:, cols].toarray())

    def adjoint_rows(self, y: FloatArray, rows: IntArray) -> FloatArray:
        """(Mᵀ y)[rows], without forming the other rows."""
        if self._dense:
            return np.asarray(np.asarray(self._fwd)[:, rows].T @ y)
        return np.asarray(self.matrix[:, rows].T @ y)

    def __reduce__(self) -> tuple[type[LinearMap], tuple[sp.csr_matrix]]:
        return (LinearMap, (self.matrix,))  # the dense copy and the adjoint are rebuilt


@dataclass(frozen=True, eq=False)
class ParametricVector:
    """A vector v(θ̃) = map θ̃ of a fixed size."""

    size: int
    map: LinearMap
    theta: IntArray  # indices (≥ 1) of θ̃ it depends on

    def values(self, theta: FloatArray) -> FloatArray:
        return self.map.apply(theta)


@dataclass(frozen=True, eq=False)
class ParametricMatrix:
    """A sparse matrix with fixed pattern whose data are ``map θ̃``.

    ``indptr, indices`` are compressed columns (P, ``by_columns``) or rows
    (M), sorted. ``dep`` lists the data positions that depend on θ and
    ``dep_map`` maps θ̃ to those entries alone: derivatives only ever touch
    them. Their matrix coordinates are ``dep_row``, ``dep_col`` (for P, the
    upper triangle: ``dep_row <= dep_col``; ``dep_diag`` marks the diagonal
    ones). Only the pattern and the map are pickled; the rest is derived.
    """

    shape: tuple[int, int]
    indptr: IntArray
    indices: IntArray
    map: LinearMap
    by_columns: bool
    dep: IntArray = field(init=False)
    dep_map: LinearMap = field(init=False)
    theta: IntArray = field(init=False)
    dep_row: IntArray = field(init=False)
    dep_col: IntArray = field(init=False)
    dep_diag: IntArray = field(init=False)

    def __post_init__(self) -> None:
        mat = self.map.matrix
        # Rows of the map with an entry beyond column 0 (the constant) depend on θ.
        map_rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr))
        dep = np.unique(map_rows[mat.indices > 0])
        dep_mat = sp.csr_matrix(mat[dep]) if dep.shape[0] else sp.csr_matrix((0, mat.shape[1]))
        outer = np.repeat(np.arange(self.indptr.shape[0] - 1, dtype=np.int64),
                          np.diff(self.indptr))[dep]
        inner = self.indices[dep].astype(np.int64)
        row, col = (inner, outer) if self.by_columns else (outer, inner)
        theta = np.unique(mat.indices[mat.indices > 0]).astype(np.int64)
        for name, value in (("dep", dep), ("dep_map", LinearMap(dep_mat)), ("theta", theta),
                            ("dep_row", row), ("dep_col", col),
                            ("dep_diag", np.flatnonzero(row == col))):
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (ParametricMatrix, (self.shape, self.indptr, self.indices, self.map,
                                   self.by_columns))

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def values(self, theta: FloatArray) -> FloatArray:
        return self.map.apply(theta)

    def outer_index(self) -> IntArray:
        """The compressed axis' index (column of P, row of M) of each datum."""
        return np.repeat(np.arange(self.indptr.shape[0] - 1, dtype=np.int64),
                         np.diff(self.indptr))


class ProblemData(NamedTuple):
    """The numbers of the QP for one θ (see the module docstring).

    ``P_data`` follows the compiled upper-CSC pattern of P, ``M_data`` the CSR
    pattern of M = [A; G]. ``rhs`` = (−q, c) with c = [b; h]: the right-hand
    side of the KKT system (over all rows), from which ``q`` and ``c`` are read.
    """

    P_data: FloatArray
    M_data: FloatArray
    rhs: FloatArray
    r: float
    n: int

    @property
    def q(self) -> FloatArray:
        """The linear term q (a new array)."""
        return -self.rhs[: self.n]

    @property
    def c(self) -> FloatArray:
        """The constraints' right-hand sides [b; h] (a read-only view)."""
        view = self.rhs[self.n:]
        view.flags.writeable = False
        return view

    @classmethod
    def from_parts(cls, P_data: FloatArray, M_data: FloatArray, q: FloatArray,
                   c: FloatArray, r: float) -> ProblemData:
        return cls(P_data=P_data, M_data=M_data, rhs=np.concatenate([-q, c]), r=r,
                   n=q.shape[0])


@dataclass(frozen=True, eq=False)
class CompiledProblem:
    """Immutable, picklable maps θ̃ → (P, q, r, M = [A; G], c = [b; h]) with a layout.

    ``k_theta`` lists the entries of θ̃ that P or M depend on: when none of
    them changes, the KKT matrix is unchanged and its factorization can be
    reused. ``p_theta`` lists those of P alone (convexity can change only
    with them).
    """

    layout: Layout
    P: ParametricMatrix
    q: ParametricVector
    r_index: IntArray
    r_value: FloatArray
    M: ParametricMatrix
    c: ParametricVector
    k_theta: IntArray
    p_theta: IntArray
    f: LinearMap = field(init=False, repr=False)
    rhs: LinearMap = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # θ̃ → (q, −c) in one product: the linear part f of F(z) = K z + f.
        f = sp.csr_matrix(sp.vstack([self.q.map.matrix, -self.c.map.matrix]))
        object.__setattr__(self, "f", LinearMap(f))
        object.__setattr__(self, "rhs", LinearMap(sp.csr_matrix(-f)))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (CompiledProblem, (self.layout, self.P, self.q, self.r_index, self.r_value,
                                  self.M, self.c, self.k_theta, self.p_theta))

    @property
    def n(self) -> int:
        return self.layout.n

    @property
    def m_eq(self) -> int:
        return self.layout.m_eq

    @property
    def m_ineq(self) -> int:
        return self.layout.m_ineq

    @functools.cached_property
    def k_parameters(self) -> frozenset[str]:
        """The parameters that P or M depend on (by name): a batch in which none
        of them is batched has the same K in every column."""
        return frozenset(
            name for name, block in self.layout.parameters.items()
            if np.any((self.k_theta >= 1 + block.offset) & (self.k_theta < 1 + block.stop)))

    @property
    def k_constant(self) -> bool:
        """Whether K does not depend on the parameters (its factorizations serve
        every solve over the same rows)."""
        return int(self.k_theta.shape[0]) == 0

    def r(self, theta: FloatArray) -> FloatArray:
        """The objective's constant r(θ̃) (one per column for a block of θ̃)."""
        return np.asarray(self.r_value @ theta[self.r_index])

    def data(self, theta: FloatArray, k_data: tuple[FloatArray, FloatArray] | None = None
             ) -> ProblemData:
        """The numeric data at θ̃ (reusing P and M data if given)."""
        if k_data is None:
            k_data = (self.P.values(theta), self.M.values(theta))
        r = float(self.r(theta)) if self.r_index.shape[0] else 0.0
        return ProblemData(k_data[0], k_data[1], self.rhs.apply(theta), r, self.layout.n)

    def P_matrix(self, data: ProblemData) -> sp.csc_matrix:
        """The full symmetric P for ``data``."""
        upper = sp.csc_matrix((data.P_data, self.P.indices, self.P.indptr), shape=self.P.shape)
        return sp.csc_matrix(upper + sp.triu(upper, k=1).T)

    def M_matrix(self, data: ProblemData) -> sp.csr_matrix:
        """M = [A; G] for ``data``."""
        return sp.csr_matrix((data.M_data, self.M.indices, self.M.indptr), shape=self.M.shape)


# ------------------------------------------------------- from coefficients


def coefficients_to_matrix(i: IntArray, j: IntArray, p: IntArray, val: FloatArray,
                           shape: tuple[int, int], n_theta: int, *,
                           by_columns: bool) -> ParametricMatrix:
    """A :class:`ParametricMatrix` from entries ``M[i, j] += val · θ̃[p]``.

    The pattern is the set of distinct (i, j), compressed by columns or rows.
    Entries that cancel exactly keep their place in the pattern.
    """
    outer, inner = (j, i) if by_columns else (i, j)
    n_outer, n_inner = (shape[1], shape[0]) if by_columns else shape
    keys = outer.astype(np.int64) * max(n_inner, 1) + inner.astype(np.int64)
    # The distinct keys in order, and each coefficient's rank among them. A
    # stable argsort (timsort) is several times faster than np.unique's
    # quicksort here: the walker emits the coefficients in sorted runs.
    order = keys.argsort(kind="stable")
    sorted_keys = keys[order]
    del keys
    first = np.empty(sorted_keys.shape[0], dtype=bool)
    first[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    ukeys = sorted_keys[first]
    nnz = ukeys.shape[0]
    idx = np.int32 if max(shape) < 2**31 - 1 else np.int64
    indices = (ukeys % max(n_inner, 1)).astype(idx)
    indptr = np.zeros(n_outer + 1, dtype=np.int64)
    np.cumsum(np.bincount(ukeys // max(n_inner, 1), minlength=n_outer), out=indptr[1:])
    # Row k of the map holds the coefficients of pattern entry k: built in CSR
    # directly from the sorted order (no COO detour), duplicates summed.
    small = np.int32 if max(sorted_keys.shape[0], n_theta + 1) < 2**31 - 1 else np.int64
    map_indptr = np.zeros(nnz + 1, dtype=small)
    map_indptr[1:] = np.flatnonzero(np.append(first[1:], True)) + 1
    mat = sp.csr_matrix((np.asarray(val, dtype=np.float64)[order],
                         np.asarray(p[order], dtype=small), map_indptr),
                        shape=(nnz, n_theta + 1))
    mat.sum_duplicates()
    return ParametricMatrix(shape=shape, indptr=indptr, indices=indices, map=LinearMap(mat),
                            by_columns=by_columns)


def coefficients_to_vector(i: IntArray, p: IntArray, val: FloatArray, size: int,
                           n_theta: int) -> ParametricVector:
    """A :class:`ParametricVector` from entries ``v[i] += val · θ̃[p]``."""
    mat = sp.csr_matrix((val, (i, p)), shape=(size, n_theta + 1))
    mat.sum_duplicates()
    return ParametricVector(size=size, map=LinearMap(mat),
                            theta=np.unique(p[p > 0]).astype(np.int64))
