"""QPs with inequalities: an active set, polished and verified on the KKT system.

A point of ``minimize ½xᵀPx + qᵀx s.t. A x = b, G x ≤ h`` is optimal when,
for some set 𝒜 of inequality rows, the equality-constrained KKT system over
the equalities and 𝒜 has a solution (x, ν, λ_𝒜) with

- λ_𝒜 ≥ 0 (dual feasibility), and
- G_i x ≤ h_i for the rows i ∉ 𝒜 (primal feasibility),

complementarity holding by construction (λ_i = 0 off 𝒜, G_i x = h_i on 𝒜).
:class:`ActiveSetBackend` finds 𝒜 and proves it that way:

1. ``solver="kkt"`` (the default) first tries the previous solve's active
   set: one KKT solve, verified. In sweeps, sensitivities and training
   loops, parameters move little and this is all a re-solve costs.
2. Otherwise OSQP solves the QP (warm-started), and its point suggests 𝒜:
   rows with a clearly positive multiplier or a negligible slack.
3. The KKT system over 𝒜 is solved with the equilibrated factorization and
   checked as above, to scale-aware tolerances (:mod:`~diffmodel.tolerances`).
   Where the check fails, primal-dual active-set steps correct 𝒜 (rows whose
   multiplier is negative leave, violated rows enter: Hintermüller, Ito and
   Kunisch, SIAM J. Optim. 13, 2003) until it holds.

Active rows that depend linearly on the others (a duplicated row, say) are
left out of the KKT system, their multipliers sharing the others' in the
minimum-norm way. Binding rows with a zero multiplier are weakly active: the
point is optimal, but the solution is only directionally differentiable
there (:mod:`diffmodel.diff`). Infeasible and unbounded problems are reported
from OSQP's certificates, verified on the data.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..errors import SolverError
from ..linalg import Factorization
from ..tolerances import (
    ACTIVE_TOL, DEGENERATE_TOL, MAX_ACTIVE_SET_STEPS, WARM_ACTIVE_SET_STEPS,
)
from .base import STATUS_INACCURATE, STATUS_INFEASIBLE, STATUS_UNBOUNDED, RawSolution, objective
from .cache import KKTCache
from .direct import factor
from .osqp import OSQPRunner
from .verify import accept, describe_rows

__all__ = ["ActiveSetBackend"]

#: OSQP's answer is read with this relative tolerance to guess the active set.
_GUESS_TOL = 1e-6
#: A certificate must cancel to this relative level, and its objective or
#: right-hand-side product must exceed it.
_CERT_TOL = 1e-6


class _Trial:
    """A candidate active set and what solving over it gave."""

    def __init__(self, active: IntArray) -> None:
        self.active = np.unique(active).astype(np.int64)
        self.dependent = np.zeros(0, dtype=np.int64)


class ActiveSetBackend:
    """Solve a QP with inequalities: find, polish and verify its active set.

    Parameters
    ----------
    problem : CompiledProblem
    cache : KKTCache
        Patterns and factorizations shared with the model's other solves.
    name : {"kkt", "osqp"}
        ``"kkt"`` tries the last verified active set before OSQP; ``"osqp"``
        always runs OSQP first.

    Attributes
    ----------
    reuses : int
        Solves whose previous active set was verified optimal (no OSQP run).
    """

    def __init__(self, problem: CompiledProblem, cache: KKTCache, name: str) -> None:
        self.problem, self.cache, self.name = problem, cache, name
        self.runner = OSQPRunner(problem)
        self.reuses = 0
        # The last verified point: (active rows, x, y). Replaced whole, never
        # mutated: a read by another thread sees one consistent state.
        self._last: tuple[IntArray, FloatArray, FloatArray] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"problem": self.problem, "cache": self.cache, "name": self.name}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc, arg-type]

    # ------------------------------------------------------------------ solve

    def solve(self, data: ProblemData, k_values: FloatArray) -> RawSolution:
        """Find and verify the active set at these data.

        Raises
        ------
        SolverError
            ``infeasible`` or ``unbounded`` (verified certificates),
            ``nonconvex``, or ``inaccurate`` when no active set can be verified.
        """
        last = self._last
        if self.name == "kkt" and last is not None:
            raw = self._polish(data, k_values, last[0], WARM_ACTIVE_SET_STEPS, 0)
            if raw is not None:
                self.reuses += 1
                self._remember(raw)
                return raw
        result = self.runner.run(data, warm=None if last is None else (last[1], last[2]))
        if result.status == STATUS_INFEASIBLE:
            raise self._infeasible(data, result.certificate)
        if result.status == STATUS_UNBOUNDED:
            raise self._unbounded(data, result.certificate)
        if result.status is not None:
            raise SolverError(result.message, result.status)
        raw = self._polish(data, k_values, self._guess(data, result.x, result.y),
                           MAX_ACTIVE_SET_STEPS, result.iterations)
        if raw is None:
            raise SolverError(
                "no active set could be verified: the primal-dual active-set steps from "
                "OSQP's solution did not settle on a point that is feasible with nonnegative "
                "multipliers to working accuracy; the problem may be too ill-conditioned",
                STATUS_INACCURATE)
        self._remember(raw)
        return raw

    def _remember(self, raw: RawSolution) -> None:
        m_eq = self.problem.m_eq
        self._last = (raw.rows[raw.rows >= m_eq] - m_eq, raw.x, raw.y)

    def _guess(self, data: ProblemData, x: FloatArray, y: FloatArray) -> IntArray:
        """Rows with a clearly positive multiplier or a negligible slack in OSQP's point."""
        m_eq = self.problem.m_eq
        slack, scale = self._slack(data, x)
        lam = y[m_eq:]
        big = float(np.max(np.abs(y), initial=0.0)) or 1.0
        return np.flatnonzero((lam > _GUESS_TOL * big) | (slack <= _GUESS_TOL * scale))

    def _slack(self, data: ProblemData, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """h − G x for every inequality row, and the magnitude |G||x| + |h| of its terms."""
        problem = self.problem
        M = sp.csr_matrix((data.M_data, problem.M.indices, problem.M.indptr),
                          shape=problem.M.shape)[problem.m_eq:]
        h = np.asarray(data.c)[problem.m_eq:]
        return h - M @ x, abs(M) @ np.abs(x) + np.abs(h)

    # ----------------------------------------------------------------- polish

    def _polish(self, data: ProblemData, k_values: FloatArray, active: IntArray, steps: int,
                iterations: int) -> RawSolution | None:
        """Primal-dual active-set steps from ``active``; the verified point, or None."""
        problem, n, m_eq = self.problem, self.problem.n, self.problem.m_eq
        trial = _Trial(active)
        seen: set[bytes] = set()
        for _ in range(steps):
            key = trial.active.tobytes()
            if key in seen:  # cycling: give up on this start
                return None
            seen.add(key)
            kept = np.setdiff1d(trial.active, trial.dependent)
            rows = np.concatenate([np.arange(m_eq), m_eq + kept]).astype(np.int64)
            fact = factor(self.cache, data, k_values, rows)
            rhs = np.concatenate([data.rhs[:n], data.rhs[n + rows]])
            z, omega, _, estimate = fact.solve(rhs)
            if fact.singular:
                drop = _dependent(fact, kept, m_eq)
                if drop.shape[0]:
                    trial.dependent = np.union1d(trial.dependent, drop)
                    seen.discard(key)
                    continue
            accuracy, unique = accept(problem, data, fact, rows, omega, estimate)
            lam = z[n + m_eq:]
            slack, size = self._slack(data, z[:n])
            tol = max(ACTIVE_TOL, 10.0 * accuracy)
            z_hat = float(np.max(np.abs(z / fact.scale), initial=0.0))
            lam_hat = lam / fact.scale[n + m_eq:]
            outside = np.ones(problem.m_ineq, dtype=bool)
            outside[trial.active] = False
            violated = np.flatnonzero(outside & (slack < -tol * size))
            negative = kept[lam_hat < -tol * z_hat]
            if violated.shape[0] == 0 and negative.shape[0] == 0:
                return self._verified(data, k_values, trial, kept, rows, fact, z, omega,
                                      accuracy, unique, iterations, lam_hat, z_hat, slack, size)
            trial = _Trial(np.union1d(np.setdiff1d(trial.active, negative), violated))
        return None

    def _verified(self, data: ProblemData, k_values: FloatArray, trial: _Trial, kept: IntArray,
                  rows: IntArray,
                  fact: Factorization, z: FloatArray, omega: float, accuracy: float,
                  unique: bool, iterations: int, lam_hat: FloatArray, z_hat: float,
                  slack: FloatArray, size: FloatArray) -> RawSolution:
        """The RawSolution of a verified point, with its degenerate rows classified."""
        problem, n, m_eq = self.problem, self.problem.n, self.problem.m_eq
        y = np.zeros(problem.layout.rows)
        y[rows] = z[n:]
        if trial.dependent.shape[0]:
            y = _share_multipliers(problem, data, y, kept, trial.dependent)
        tol = max(DEGENERATE_TOL, 100.0 * accuracy)
        weak_in = kept[lam_hat <= tol * z_hat]
        outside = np.ones(problem.m_ineq, dtype=bool)
        outside[trial.active] = False
        weak_out = np.flatnonzero(outside & (slack <= tol * size))
        active = np.union1d(trial.active, weak_out)
        weak = np.union1d(weak_in, weak_out)
        if weak_out.shape[0]:
            # Binding rows outside the set join the KKT system, as reverse mode
            # and Jacobians treat weakly active rows (see diffmodel.diff). Their
            # multipliers are zero; x and y are unchanged.
            kept = np.union1d(kept, weak_out)
            rows = np.concatenate([np.arange(m_eq), m_eq + kept]).astype(np.int64)
            fact = factor(self.cache, data, k_values, rows)
        x = z[:n].copy()
        x.flags.writeable = False
        y.flags.writeable = False
        return RawSolution(x, y, rows, fact, omega, accuracy, unique, iterations,
                           objective(data.rhs, np.concatenate([x, y])), active, weak,
                           trial.dependent)

    # ----------------------------------------------------------- certificates

    def _infeasible(self, data: ProblemData, dy: FloatArray) -> SolverError:
        """OSQP's δy, verified: Mᵀδy = 0, δy ≥ 0 on inequality rows, cᵀδy < 0."""
        problem = self.problem
        M = sp.csr_matrix((data.M_data, problem.M.indices, problem.M.indptr),
                          shape=problem.M.shape)
        c = np.asarray(data.c)
        dy = dy.copy()
        top = float(np.max(np.abs(dy), initial=0.0))
        tail = dy[problem.m_eq:]  # a view: the inequality rows
        tail[(tail < 0) & (tail > -_CERT_TOL * top)] = 0.0  # rounding-level negatives
        valid_sign = bool(np.all(tail >= 0))
        cancel = np.abs(M.T @ dy) <= _CERT_TOL * (abs(M).T @ np.abs(dy)) + 1e-300
        if valid_sign and bool(np.all(cancel)) and float(c @ dy) < -_CERT_TOL * float(
                np.abs(c) @ np.abs(dy)):
            rows = np.flatnonzero(dy != 0)
            return SolverError(
                "the constraints are inconsistent (infeasible): a nonnegative combination of "
                f"{describe_rows(problem, rows, dy[rows])} cancels on the left-hand side but "
                "not on the right-hand side", STATUS_INFEASIBLE)
        return SolverError(
            "OSQP reports the problem infeasible, but its certificate does not hold on the "
            "data to working accuracy: the problem is nearly infeasible or too "
            "ill-conditioned to decide", STATUS_INACCURATE)

    def _unbounded(self, data: ProblemData, dx: FloatArray) -> SolverError:
        """OSQP's δx, verified: P δx = 0, A δx = 0, G δx ≤ 0, qᵀδx < 0."""
        problem = self.problem
        P = problem.P_matrix(data)
        M = sp.csr_matrix((data.M_data, problem.M.indices, problem.M.indptr),
                          shape=problem.M.shape)
        q, adx = data.q, np.abs(dx)
        Mdx, Mmag = M @ dx, abs(M) @ adx
        eq, ineq = slice(0, problem.m_eq), slice(problem.m_eq, None)
        flat = bool(np.all(np.abs(P @ dx) <= _CERT_TOL * (abs(P) @ adx) + 1e-300))
        feasible = (bool(np.all(np.abs(Mdx[eq]) <= _CERT_TOL * Mmag[eq] + 1e-300))
                    and bool(np.all(Mdx[ineq] <= _CERT_TOL * Mmag[ineq] + 1e-300)))
        if flat and feasible and float(q @ dx) < -_CERT_TOL * float(np.abs(q) @ adx):
            return SolverError(
                "the problem is unbounded below: there is a feasible direction along which "
                "the quadratic term is flat and the linear term decreases", STATUS_UNBOUNDED)
        return SolverError(
            "OSQP reports the problem unbounded, but its certificate does not hold on the "
            "data to working accuracy: the problem is nearly unbounded or too "
            "ill-conditioned to decide", STATUS_INACCURATE)


def _dependent(fact: Factorization, kept: IntArray, m_eq: int) -> IntArray:
    """Active inequality rows to leave out of a singular KKT system.

    A null vector (d, w) of K with w supported on constraint rows is a linear
    dependence among them; the inequality row carrying its largest weight is
    dropped (its multiplier is shared back afterwards).
    """
    n = fact.n
    for e in fact.null_vectors().T:
        w = np.abs(e[n + m_eq:])
        if w.shape[0] and float(w.max()) > 1e-3 * float(np.abs(e).max()):
            return kept[[int(np.argmax(w))]]
    return np.zeros(0, dtype=np.int64)


def _share_multipliers(problem: CompiledProblem, data: ProblemData, y: FloatArray,
                       kept: IntArray, dependent: IntArray) -> FloatArray:
    """Split the multipliers of dependent rows with those they depend on, minimum-norm.

    The multipliers λ of the binding rows are determined only up to the null
    space of their matrix's transpose; among the choices with the same
    Gᵀλ, the one of least norm (equal shares for duplicated rows) is the one
    interior-point solvers approach.
    """
    m_eq = problem.m_eq
    M = sp.csr_matrix((data.M_data, problem.M.indices, problem.M.indptr),
                      shape=problem.M.shape)
    rows = np.concatenate([m_eq + kept, m_eq + dependent])
    G = M[rows].toarray()
    lam = y[rows]
    # Minimum-norm λ' with Gᵀλ' = Gᵀλ: λ' = pinv(Gᵀ) Gᵀ λ (the projection on range(G)).
    shared = np.linalg.lstsq(G.T, G.T @ lam, rcond=None)[0]
    if np.all(shared >= -1e-12 * max(float(np.abs(lam).max()), 1e-300)):
        y = y.copy()
        y[rows] = np.maximum(shared, 0.0)
    return y
