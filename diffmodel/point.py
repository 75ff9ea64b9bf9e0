"""One verified optimal point of a compiled problem, with what derivatives need."""

from __future__ import annotations

import threading

from ._typing import FloatArray, IntArray
from .compiled import CompiledProblem, ProblemData
from .linalg import Factorization, KKTPattern, held_bytes
from .solvers.base import RawSolution

__all__ = ["Point"]

_REBUILD_LOCK = threading.Lock()


class Point:
    """The numeric state of one solve; immutable and shareable between threads.

    Attributes
    ----------
    problem : CompiledProblem
    theta : ndarray
        θ̃ = (1, θ) of this solve (read-only).
    data : ProblemData
        The QP's numbers at θ̃.
    raw : RawSolution
        The backend's verified solution and its KKT factorization.
    value : float
        The optimal value of the compiled (minimization) problem.
    solver : str
        The backend's name.
    all_rows : bool
        Whether every constraint row is in the KKT system (no inequalities).
    """

    __slots__ = ("problem", "theta", "data", "raw", "value", "solver", "all_rows")

    def __init__(self, problem: CompiledProblem, theta: FloatArray, data: ProblemData,
                 raw: RawSolution, value: float, solver: str) -> None:
        self.problem, self.theta, self.data, self.raw = problem, theta, data, raw
        self.value, self.solver = value, solver
        self.all_rows = raw.rows.shape[0] == problem.layout.rows

    @property
    def nbytes(self) -> int:
        """About the memory keeping this point costs: its arrays and its
        factorization (see :attr:`Factorization.nbytes`)."""
        raw, fact = self.raw, self.raw.factorization
        return (held_bytes(self.theta, self.data.P_data, self.data.M_data, self.data.rhs,
                           raw.x, raw.y, raw.rows, raw.active)
                + (fact.nbytes if fact is not None else 0))

    @property
    def x(self) -> FloatArray:
        return self.raw.x

    @property
    def y(self) -> FloatArray:
        """Multipliers of all rows of M (zero on rows outside the KKT system)."""
        return self.raw.y

    @property
    def rows(self) -> IntArray:
        return self.raw.rows

    @property
    def factorization(self) -> Factorization:
        """The KKT factorization of this point (rebuilt once after unpickling)."""
        fact = self.raw.factorization
        if fact is None:
            with _REBUILD_LOCK:
                fact = self.raw.factorization
                if fact is None:
                    problem, data = self.problem, self.data
                    pattern = KKTPattern.build(problem.n, problem.P.indptr, problem.P.indices,
                                               problem.M.indptr, problem.M.indices, self.rows)
                    fact = Factorization(pattern, pattern.assemble(data.P_data, data.M_data),
                                         need_inertia=False, reused=problem.k_constant)
                    self.raw = self.raw._replace(factorization=fact)
        return fact

    def __getstate__(self) -> dict[str, object]:
        """Everything but the factorization, which does not pickle (it is rebuilt)."""
        state: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        state["raw"] = self.raw._replace(factorization=None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
