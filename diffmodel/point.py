"""One verified optimal point of a compiled problem, with what derivatives need."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from ._typing import FloatArray, IntArray
from .compiled import CompiledProblem, ProblemData
from .linalg import Factorization, KKTPattern
from .solvers.base import RawSolution

__all__ = ["Point"]



@dataclass(frozen=True, eq=False)
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
    """

    problem: CompiledProblem
    theta: FloatArray
    data: ProblemData
    raw: RawSolution
    value: float
    solver: str

    @property
    def x(self) -> FloatArray:
        return self.raw.x

    @property
    def y(self) -> FloatArray:
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
                                         need_inertia=False)
                    object.__setattr__(self, "raw",
                                       dataclasses.replace(self.raw, factorization=fact))
        return fact

    def __getstate__(self) -> dict[str, object]:
        """Everything but the factorization, which does not pickle (it is rebuilt)."""
        state = dict(self.__dict__)
        state["raw"] = dataclasses.replace(self.raw, factorization=None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)


_REBUILD_LOCK = threading.Lock()
