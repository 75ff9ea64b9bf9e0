"""Factorizations shared between solves: patterns per row set, reuse per K.

A model solved again with new values of q, b or h has the same KKT matrix:
its factorization is reused. A new K with the same pattern reuses the
symbolic analysis (ordering and elimination tree) of a spare solver. The
cache is shared by the threads using one model; every lookup is under a
lock, every factorization is built outside it, and a factorization is never
modified once built, so solutions that hold one never see it change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..linalg import Factorization, KKTPattern, SolverPool
from ..linalg.factor import use_dense

__all__ = ["KKTCache"]


#: Row sets (active sets) whose pattern and latest factorization are kept.
MAX_ROW_SETS = 8


class KKTCache:
    """Patterns, spare solvers and the latest factorization, per row set.

    Parameters
    ----------
    problem : CompiledProblem
        The problem whose KKT systems are factored.

    Attributes
    ----------
    count : int
        Numeric factorizations performed so far.
    """

    def __init__(self, problem: CompiledProblem) -> None:
        self.problem = problem
        self.count = 0
        self._lock = threading.Lock()
        # Per row set: its pattern and spare solvers (None for a dense K).
        self._entries: OrderedDict[bytes, tuple[KKTPattern, SolverPool] | None] = OrderedDict()
        self._latest: dict[bytes, tuple[FloatArray, Factorization]] = {}
        self._all: tuple[KKTPattern, IntArray, int] | None = None
        self._dense_all: tuple[FloatArray, FloatArray] | None = None

    def pattern(self, rows: IntArray) -> tuple[KKTPattern, SolverPool]:
        """The KKT pattern for the rows ``rows`` of M (built once per row set)."""
        key = rows.tobytes()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        P, M = self.problem.P, self.problem.M
        pattern = KKTPattern.build(self.problem.n, P.indptr, P.indices, M.indptr, M.indices, rows)
        entry = (pattern, SolverPool())
        self._remember(key, entry)
        return entry

    def _remember(self, key: bytes, entry: tuple[KKTPattern, SolverPool] | None) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ROW_SETS:
                old, _ = self._entries.popitem(last=False)
                self._latest.pop(old, None)

    def _all_rows(self) -> tuple[KKTPattern, IntArray, int]:
        """The pattern over every row of M, the entries of each row, and the
        entries of K's upper triangle that are not constraint rows'."""
        if self._all is None:  # (a benign race builds equal copies)
            P, M = self.problem.P, self.problem.M
            rows = np.arange(self.problem.layout.rows, dtype=np.int64)
            pattern = KKTPattern.build(self.problem.n, P.indptr, P.indices, M.indptr,
                                       M.indices, rows)
            counts = np.diff(M.indptr).astype(np.int64)
            self._all = (pattern, counts, pattern.nnz - int(counts.sum()) - rows.shape[0])
        return self._all

    def dense(self, rows: IntArray) -> bool:
        """Whether K over ``rows`` is taken from a dense K over every row: both
        take the dense path (decided from the counts of their entries, so that
        no pattern is built per row set)."""
        pattern, counts, p_part = self._all_rows()
        dim = self.problem.n + rows.shape[0]
        return (use_dense(pattern.dim, pattern.nnz)
                and use_dense(dim, p_part + int(counts[rows].sum()) + rows.shape[0]))

    def _dense_k(self, data: ProblemData, k_values: FloatArray, rows: IntArray) -> FloatArray:
        """K over ``rows`` as a dense array: taken from K over every row, formed
        once per K (an active-set solve factors several row sets of one K)."""
        n = self.problem.n
        pattern = self._all_rows()[0]
        if rows.shape[0] == self.problem.layout.rows:  # all of it: nothing to keep
            return pattern.dense_from(data.P_data, data.M_data)
        cached = self._dense_all  # an atomic read of an immutable pair
        if cached is not None and np.array_equal(cached[0], k_values):
            full = cached[1]
        else:
            full = pattern.dense_from(data.P_data, data.M_data)
            self._dense_all = (k_values.copy(), full)
        out = np.zeros((n + rows.shape[0], n + rows.shape[0]))
        out[:n, :n] = full[:n, :n]
        C = full[n + rows, :n]  # the rows' constraint data (the dual block is zero)
        out[n:, :n] = C
        out[:n, n:] = C.T
        return out

    def factor(self, data: ProblemData, k_values: FloatArray, rows: IntArray, *,
               need_inertia: bool, key: bytes | None = None) -> Factorization:
        """The factorization of K over ``rows`` for ``data``, reused when K is unchanged.

        ``k_values`` are the entries of θ̃ that P and M depend on: equal values
        mean an equal K.

        Raises
        ------
        ArithmeticError
            From :class:`~diffmodel.linalg.Factorization`.
        """
        if key is None:
            key = rows.tobytes()
        latest = self._latest.get(key)  # an atomic read of an immutable pair
        if latest is not None and (not k_values.shape[0] or np.array_equal(latest[0], k_values)):
            return latest[1]
        if self.dense(rows):
            fact = Factorization.from_dense(self.problem.n, rows.shape[0],
                                            self._dense_k(data, k_values, rows),
                                            reused=self.problem.k_constant)
            self._remember(key, None)  # (a row set's entry, also for the LRU order)
        else:
            pattern, pool = self.pattern(rows)
            fact = Factorization(pattern, pattern.assemble(data.P_data, data.M_data),
                                 need_inertia=need_inertia, pool=pool,
                                 reused=self.problem.k_constant)
        with self._lock:
            self.count += 1
            if key in self._entries:
                self._latest[key] = (k_values.copy(), fact)
        return fact

    def forget(self) -> None:
        """Drop the latest factorizations (the patterns stay)."""
        with self._lock:
            self._latest.clear()
