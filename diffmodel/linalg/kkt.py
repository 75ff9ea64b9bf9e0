"""The KKT matrix over a chosen set of constraint rows: pattern and assembly.

For the QP data P (n × n, symmetric, upper triangle stored column-wise) and a
matrix of constraint rows C (rows of A, and active rows of G; stored
row-wise), the KKT matrix is

    K = [[P, Cᵀ],
         [C, 0 ]].

Its upper triangle in compressed-column form has, in column j < n, the rows
of P's column j (with the diagonal entry always present, for the
regularization), and in column n + r the columns of C's row r followed by
the diagonal entry (n + r, n + r). :class:`KKTPattern` is that pattern, built
once per row set, with the positions where the data of P and C go, and the
full symmetric pattern (both triangles, row-wise) used for residuals.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray, IntArray

__all__ = ["KKTPattern"]



def _index_dtype(size: int) -> type:
    return np.int32 if size < 2**31 - 1 else np.int64


@dataclass(frozen=True, eq=False)
class KKTPattern:
    """The structure of K for a fixed P pattern and a fixed set of rows.

    Attributes
    ----------
    n, rows : int
        Primal dimension and number of constraint rows; K is (n + rows)².
    indptr, indices : ndarray
        Upper triangle of K, compressed columns, diagonal present in every column.
    p_pos : ndarray
        Position in K's data of each entry of P's data.
    c_pos, c_src : ndarray
        Position in K's data of each entry of the selected rows, and its
        position in the data of the stacked constraint matrix.
    full_indptr, full_indices, full_src : ndarray
        The full symmetric K row-wise: entry e is K's upper datum
        ``full_src[e]`` (computed on first use: the dense path never needs
        them).

    Index arrays are 32-bit when K's size allows (a pattern is cached and
    kept by every factorization that uses it; SciPy then shares, rather than
    converts, the arrays of the matrices built on it).
    """

    n: int
    rows: int
    indptr: IntArray
    indices: IntArray
    p_pos: IntArray
    c_pos: IntArray
    c_src: IntArray

    @property
    def dim(self) -> int:
        return self.n + self.rows

    @functools.cached_property
    def _full_arrays(self) -> tuple[IntArray, IntArray, IntArray]:
        # (a benign race between threads computes equal arrays)
        return _full(self.indptr, self.indices, self.dim)

    @property
    def full_indptr(self) -> IntArray:
        return self._full_arrays[0]

    @property
    def full_indices(self) -> IntArray:
        return self._full_arrays[1]

    @property
    def full_src(self) -> IntArray:
        return self._full_arrays[2]

    def cols(self) -> IntArray:
        """Column of every entry of the upper triangle (computed, not stored)."""
        return np.repeat(np.arange(self.dim, dtype=self.indices.dtype), np.diff(self.indptr))

    @property
    def nnz(self) -> int:
        """Stored entries of the upper triangle (explicit diagonal included)."""
        return int(self.indices.shape[0])

    @classmethod
    def build(cls, n: int, p_indptr: IntArray, p_indices: IntArray,
              m_indptr: IntArray, m_indices: IntArray, selected: IntArray) -> KKTPattern:
        """The pattern for P (upper CSC) and the rows ``selected`` of M (CSR).

        Parameters
        ----------
        n : int
            Number of variables.
        p_indptr, p_indices : ndarray
            P's upper triangle, compressed columns, rows sorted in each column.
        m_indptr, m_indices : ndarray
            The stacked constraint matrix (all rows), compressed rows, sorted.
        selected : ndarray of int
            Indices of the rows of M that enter K, in order.
        """
        rows = int(selected.shape[0])
        dim = n + rows
        p_nnz = int(p_indices.shape[0])
        starts = m_indptr[selected]
        c_counts = m_indptr[selected + 1] - starts
        total_c = int(c_counts.sum())
        # One index type for everything below: 32-bit whenever the sizes allow
        # (the temporaries here set the peak memory of a first solve).
        it = _index_dtype(max(dim, p_nnz + total_c + 2 * dim, int(m_indptr[-1])))
        # P's columns, each completed with its diagonal entry if absent.
        p_indptr = p_indptr.astype(it, copy=False)
        p_counts = np.diff(p_indptr)
        has_diag = np.zeros(n, dtype=bool)
        if p_nnz:
            nonempty = p_counts > 0
            has_diag[nonempty] = p_indices[p_indptr[1:][nonempty] - 1] == np.flatnonzero(nonempty)
        # Selected rows of M, each as a column of K followed by its diagonal.
        counts = np.concatenate([p_counts + ~has_diag, c_counts.astype(it) + 1])
        indptr: IntArray = np.zeros(dim + 1, dtype=it)
        np.cumsum(counts, out=indptr[1:])
        del counts
        nnz = int(indptr[-1])
        indices: IntArray = np.empty(nnz, dtype=it)
        # P entries: at the start of each column, in P's order.
        p_pos = np.repeat(indptr[:n] - p_indptr[:n], p_counts)
        p_pos += np.arange(p_nnz, dtype=it)
        indices[p_pos] = p_indices
        missing = np.flatnonzero(~has_diag)
        indices[indptr[1:][missing] - 1] = missing
        # C entries: column n + r holds row r of C, then the diagonal.
        within: IntArray = np.arange(total_c, dtype=it)
        within -= np.repeat((np.cumsum(c_counts) - c_counts).astype(it), c_counts)
        c_src = np.repeat(starts.astype(it), c_counts) + within
        c_pos = np.repeat(indptr[n:dim], c_counts) + within
        del within
        indices[c_pos] = m_indices[c_src]
        indices[indptr[n + 1:] - 1] = np.arange(n, dim, dtype=it)
        return cls(n=n, rows=rows, indptr=indptr, indices=indices, p_pos=p_pos,
                   c_pos=c_pos, c_src=c_src)

    def assemble(self, p_data: FloatArray, m_data: FloatArray) -> FloatArray:
        """K's upper-triangular data for the numeric P and stacked constraint data."""
        data = np.zeros(self.nnz)
        data[self.p_pos] = p_data
        data[self.c_pos] = m_data[self.c_src]
        return data

    def upper(self, data: FloatArray) -> sp.csc_matrix:
        """K's upper triangle as a SciPy matrix (sharing the pattern arrays)."""
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(self.dim, self.dim))

    def dense(self, data: FloatArray) -> FloatArray:
        """The full symmetric K as a dense array, for the upper data ``data``."""
        out = np.zeros((self.dim, self.dim))
        flat = out.reshape(-1)
        upper, mirror = self._dense_positions
        flat[upper] = data  # (a scatter by flat position: several times faster than
        flat[mirror] = data  # indexing with row and column arrays, and no gather)
        return out

    def dense_from(self, p_data: FloatArray, m_data: FloatArray) -> FloatArray:
        """``dense(assemble(p_data, m_data))`` without the upper data in between:
        P's and the rows' entries scattered straight to their places and mirrors."""
        dim = self.dim
        out = np.zeros(dim * dim)
        p_up, p_mirror, c_up, c_mirror, c_src = self._dense_sources
        out[p_up] = p_data
        out[p_mirror] = p_data
        c = m_data[c_src]
        out[c_up] = c
        out[c_mirror] = c
        return out.reshape(dim, dim)

    @functools.cached_property
    def _dense_sources(self) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
        """For :meth:`dense_from`: the flat positions of P's entries and of the
        rows' entries, each with its mirror, and ``c_src``, as native indices
        (NumPy converts narrower index arrays on every use, which costs more
        than the scatter itself at these sizes)."""
        upper, mirror = self._dense_positions
        return (upper[self.p_pos].astype(np.intp), mirror[self.p_pos].astype(np.intp),
                upper[self.c_pos].astype(np.intp), mirror[self.c_pos].astype(np.intp),
                self.c_src.astype(np.intp))

    @functools.cached_property
    def _dense_positions(self) -> tuple[IntArray, IntArray]:
        """Row-major flat positions of each upper entry and of its mirror image,
        computed on the first dense assembly (a benign race between threads
        computes equal arrays)."""
        dim = self.dim
        dtype = np.int32 if dim * dim < 2**31 else np.int64
        rows, cols = self.indices.astype(dtype), self.cols().astype(dtype)
        return rows * dim + cols, cols * dim + rows



def _full(indptr: IntArray, indices: IntArray,
          dim: int) -> tuple[IntArray, IntArray, IntArray]:
    """Row-wise pattern of the full symmetric matrix and each entry's upper source.

    The upper triangle U is stored by columns with its diagonal explicit, so
    read by rows the same arrays are the lower triangle L = Uᵀ. Row r of the
    full matrix is row r of L (columns ≤ r, the diagonal last) followed by
    row r of U without its diagonal (columns > r): both in order, so the
    rows are sorted with two counting passes and no sort. Everything is in
    the index type of ``indptr``.
    """
    it = indptr.dtype
    nnz = indices.shape[0]
    src = np.arange(nnz, dtype=it)
    # U by rows: a counting-sort transpose of the column-wise arrays.
    by_rows = sp.csc_matrix((src, indices, indptr), shape=(dim, dim)).tocsr()
    u_indptr = by_rows.indptr.astype(it, copy=False)
    l_counts = np.diff(indptr)
    u_counts = np.diff(u_indptr) - 1  # without the diagonal, U's first entry of each row
    full_indptr = np.zeros(dim + 1, dtype=it)
    np.cumsum(l_counts + u_counts, out=full_indptr[1:])
    full_nnz = int(full_indptr[-1])
    full_indices: IntArray = np.empty(full_nnz, dtype=indices.dtype)
    full_src: IntArray = np.empty(full_nnz, dtype=it)
    # Row r of L: positions full_indptr[r] + (k − indptr[r]).
    pos = np.repeat(full_indptr[:-1] - indptr[:-1], l_counts)
    pos += src
    full_indices[pos] = indices
    full_src[pos] = src
    del pos, src
    # Row r of U past its diagonal: positions full_indptr[r] + l_counts[r] + (k − u_indptr[r] − 1).
    keep = np.ones(nnz, dtype=bool)
    keep[u_indptr[:-1]] = False  # the diagonal of each row of U
    pos = np.repeat(full_indptr[:-1] + l_counts - u_indptr[:-1] - 1, u_counts)
    pos += np.flatnonzero(keep).astype(it)
    full_indices[pos] = by_rows.indices[keep]
    full_src[pos] = by_rows.data[keep]
    return full_indptr, full_indices, full_src
