"""Direct backend: one verified factorization of the KKT matrix (equality QPs)."""

from __future__ import annotations

import numpy as np

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..errors import SolverError
from ..linalg import Factorization
from .base import STATUS_NONCONVEX, RawSolution, objective
from .cache import KKTCache
from .verify import accept, check_convex

__all__ = ["DirectKKT", "factor"]



def factor(cache: KKTCache, data: ProblemData, k_values: FloatArray, rows: IntArray,
           key: bytes | None = None) -> Factorization:
    """Factor K over ``rows`` (or reuse the factorization) and check convexity.

    Raises
    ------
    SolverError
        ``nonconvex`` if the factorization breaks down or the inertia shows
        negative curvature.
    """
    try:
        fact = cache.factor(data, k_values, rows,
                            need_inertia=cache.problem.p_theta.shape[0] > 0, key=key)
    except ArithmeticError:
        raise SolverError(
            "the KKT matrix could not be factored: the quadratic objective is not "
            "positive semidefinite for these parameter values (the problem is not convex)",
            STATUS_NONCONVEX) from None
    check_convex(fact)
    return fact


class DirectKKT:
    """Solve an equality-constrained QP by factoring its KKT matrix."""

    name = "kkt"

    def __init__(self, problem: CompiledProblem, cache: KKTCache) -> None:
        self.problem = problem
        self.cache = cache
        self.rows = np.arange(problem.m_eq, dtype=np.int64)
        self._key = self.rows.tobytes()

    def solve(self, data: ProblemData, k_values: FloatArray, *,
              start: IntArray | None = None) -> RawSolution:
        """Solve K (x, ν) = (−q, b), verify, and return the point (``start``: unused)."""
        problem, n = self.problem, self.problem.n
        fact = factor(self.cache, data, k_values, self.rows, self._key)
        z, omega, steps, estimate = fact.solve(data.rhs)
        accuracy, unique = accept(problem, data, fact, self.rows, omega, estimate)
        z.flags.writeable = False  # the point's x and y are views of it
        return RawSolution(z[:n], z[n:], self.rows, fact, omega, accuracy, unique, steps,
                           objective(data.rhs, z))

    def solve_block(self, data: ProblemData, k_values: FloatArray, RHS: FloatArray
                    ) -> tuple[Factorization, FloatArray, FloatArray,
                               list[SolverError | tuple[float, bool]]]:
        """Solve for B right-hand sides (−q, c) sharing K: the columns of RHS (n + m, B).

        Returns the factorization, the stacked solutions Z (n + m, B), their
        backward errors, and per column either (accuracy, unique) or the
        SolverError that refuses it.
        """
        fact = factor(self.cache, data, k_values, self.rows)
        Z, omegas, estimates = fact.solve_many(RHS)
        verdicts: list[SolverError | tuple[float, bool]] = []
        for b in range(Z.shape[1]):
            item = ProblemData(P_data=data.P_data, M_data=data.M_data, rhs=RHS[:, b],
                               r=data.r, n=data.n)
            try:
                verdicts.append(accept(self.problem, item, fact, self.rows, float(omegas[b]),
                                       float(estimates[b])))
            except SolverError as exc:
                verdicts.append(exc)
        return fact, Z, omegas, verdicts
