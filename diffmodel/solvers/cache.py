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
        self._entries: OrderedDict[bytes, tuple[KKTPattern, SolverPool]] = OrderedDict()
        self._latest: dict[bytes, tuple[FloatArray, Factorization]] = {}

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
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > MAX_ROW_SETS:
                old, _ = self._entries.popitem(last=False)
                self._latest.pop(old, None)
        return entry

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
