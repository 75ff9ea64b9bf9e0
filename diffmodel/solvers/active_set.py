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
2. Otherwise (``"kkt"``) primal-dual active-set steps from the empty set:
   the equality-constrained optimum, then violated rows enter and rows with
   negative multipliers leave. The steps run on the Schur complement of K₀,
   the KKT matrix over the equality rows, factored once: each costs a dense
   solve of the order of the trial set, and only the set they settle on is
   factored and verified (two factorizations in all, where factoring K for
   every trial set took two to ten). Where K₀ is singular or the search
   does not apply, the steps factor K for each trial set.
3. If that does not settle within a few steps, OSQP solves the QP
   (warm-started), and its point suggests 𝒜: rows with a clearly positive
   multiplier or a negligible slack. Where OSQP's point leads nowhere (it
   can stop at its iteration limit on badly scaled, nearly flat problems),
   Clarabel's interior point suggests 𝒜 instead (:mod:`~.ipm`): right
   after the rough OSQP solve when that one stopped at its limit, else
   after the tight one.
4. The KKT system over 𝒜 is solved with the equilibrated factorization and
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

import functools
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._typing import BoolArray, FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..errors import SolverError
from ..linalg import Factorization
from ..tolerances import (
    ACTIVE_TOL,
    BACKWARD_TOL,
    DEGENERATE_TOL,
    MAX_ACTIVE_SET_STEPS,
    WARM_ACTIVE_SET_STEPS,
)
from .base import (
    STATUS_ERROR,
    STATUS_INACCURATE,
    STATUS_INFEASIBLE,
    STATUS_UNBOUNDED,
    RawSolution,
    objective,
)
from .cache import KKTCache
from .dependence import (
    crossover,
    dependent_row,
    loose_row,
    nonnegative_basis,
    share_multipliers,
)
from .direct import factor
from .ipm import ClarabelRunner
from .osqp import OSQPRunner
from .search import Schur, search
from .verify import accept, certificate, infeasibility, unboundedness

__all__ = ["ActiveSetBackend"]


class _State(NamedTuple):
    """The last verified point, for the next solve to start from, and the
    data it solved."""

    raw: RawSolution
    out_set: BoolArray  # the inequality rows not in the set
    gather: IntArray  # indices of (−q, c) entering the KKT right-hand side
    degenerate: bool  # (weakly active or dependent rows: no lean re-verification)
    rhs: FloatArray
    k_values: FloatArray

    @property
    def active(self) -> IntArray:
        return self.raw.active

    @property
    def rows(self) -> IntArray:
        return self.raw.rows

    def solved(self, data: ProblemData, k_values: FloatArray) -> bool:
        """Whether these are the data this point solved (the same numbers)."""
        return (np.array_equal(self.k_values, k_values)
                and np.array_equal(self.rhs, data.rhs))


def _suggested(slack: FloatArray, size: FloatArray, lam: FloatArray, y: FloatArray,
               tol: float) -> IntArray:
    """The inequality rows a point suggests: a multiplier ``lam`` above ``tol``
    of the largest of ``y``, or a slack below ``tol`` of its terms' ``size``."""
    big = float(np.max(np.abs(y), initial=0.0)) or 1.0
    return np.flatnonzero((lam > tol * big) | (slack <= tol * size))


class _Check(NamedTuple):
    """What verifying a point measured: slacks, their magnitudes, scaled multipliers."""

    slack: FloatArray
    size: FloatArray
    lam_hat: FloatArray
    z_hat: float
    accuracy: float

_MAX, _MIN = np.maximum.reduce, np.minimum.reduce
#: G is kept dense when it has at most this many entries (rows × columns).
_DENSE_G = 40_000
#: OSQP's answer is read with this relative tolerance to guess the active set.
_GUESS_TOL = 1e-6
#: ... and Clarabel's, where the set from the first tolerance is not verified,
#: with this one too: rows that bind with a multiplier of 1e-7 of the largest
#: may be what keeps K nonsingular, and an interior point leaves their slacks
#: and multipliers both near 1e-6 (the steps then drop any row in excess).
_LOOSE_GUESS_TOL = 1e-4
#: After this many failed starts of one kind in a row (each costs
#: factorizations), that start is tried only once every _PROBE solves.
_MISSES = 3
_PROBE = 8
#: Primal-dual active-set steps from the empty set before OSQP is asked.
_COLD_STEPS = 8
#: The search on the Schur complement (:meth:`ActiveSetBackend._search`)
#: runs for at most this many inequality rows (its block G K₀⁻¹ Gᵀ is dense),
#: and, where K₀ is factored sparsely, for at most the second number (each
#: row costs a sparse solve, once per value of K₀ and G).
_SEARCH_MAX_ROWS = 2000
_SEARCH_SPARSE_ROWS = 64


class _Backoff:
    """Whether a start is worth trying: always, until it has failed
    :data:`_MISSES` solves in a row (unrelated data, e.g. a batch of
    independent problems, for the previous active set); then once every
    :data:`_PROBE` solves, so that data where it works win it back.
    (Counters shared by threads: a lost update only shifts a probe.)"""

    def __init__(self) -> None:
        self.misses = 0
        self.skipped = 0

    def worth_trying(self) -> bool:
        if self.misses < _MISSES:
            return True
        self.skipped += 1
        return self.skipped % _PROBE == 0

    def record(self, success: bool) -> None:
        self.misses = 0 if success else self.misses + 1


class ActiveSetBackend:
    """Solve a QP with inequalities: find, polish and verify its active set.

    Parameters
    ----------
    problem : CompiledProblem
    cache : KKTCache
        Patterns and factorizations shared with the model's other solves.
    name : {"kkt", "osqp"}
        ``"kkt"`` tries the last verified active set, then active-set steps
        from the empty set, before OSQP; ``"osqp"`` always runs OSQP first.

    Attributes
    ----------
    reuses : int
        Solves whose previous active set was verified optimal (no OSQP run).
    """

    def __init__(self, problem: CompiledProblem, cache: KKTCache, name: str) -> None:
        self.problem, self.cache, self.name = problem, cache, name
        self.runner = OSQPRunner(problem)
        self.interior = ClarabelRunner(problem, self.runner.matrices)
        self.reuses = 0
        # The pattern of G (the inequality rows of M, contiguous in its data).
        M, m_eq = problem.M, problem.m_eq
        self._g_start = int(M.indptr[m_eq])
        self._g_indptr = M.indptr[m_eq:] - self._g_start
        self._g_indices = M.indices[self._g_start:]
        self._g_cache: tuple[FloatArray, FloatArray | sp.csr_matrix,
                             FloatArray | sp.csr_matrix] | None = None
        self._schur_cache: Schur | None = None
        self._eq_rows = np.arange(m_eq, dtype=np.int64)
        # The last verified point. Replaced whole, never mutated: a read by
        # another thread sees one consistent state.
        self._last: _State | None = None
        # When to try the last active set, and the empty one, before OSQP.
        self._warm = _Backoff()
        self._cold = _Backoff()

    def __reduce__(self) -> tuple[type[ActiveSetBackend], tuple[CompiledProblem, KKTCache, str]]:
        return (ActiveSetBackend, (self.problem, self.cache, self.name))

    @property
    def osqp_solves(self) -> int:
        """OSQP solves run so far."""
        return self.runner.count

    # ------------------------------------------------------------------ solve

    def solve(self, data: ProblemData, k_values: FloatArray, *,
              start: IntArray | None = None) -> RawSolution:
        """Find and verify the active set at these data.

        ``start`` (rows known to bind, e.g. from solving the same data before)
        is tried first, with a few corrections; then the usual starts.

        Raises
        ------
        SolverError
            ``infeasible`` or ``unbounded`` (verified certificates),
            ``nonconvex``, or ``inaccurate`` when no active set can be verified.
        """
        if self.problem.p_theta.shape[0]:
            # P depends on θ: convex on the equality constraints' null space, or
            # "nonconvex", before any active set is tried (one factorization
            # per value of P, cached; and OSQP is never given a nonconvex P).
            factor(self.cache, data, k_values, self._eq_rows)
        if start is not None:
            guess = self._search(data, k_values, start)  # (None: polish from start itself)
            raw = self._polish(data, k_values, start if guess is None else guess,
                               WARM_ACTIVE_SET_STEPS, 0)
            if raw is not None:
                self._remember(raw, data, k_values)
                return raw
        last = self._last
        if start is None and last is not None and last.degenerate and last.solved(data,
                                                                                 k_values):
            # The same data again: the same point. (Repeating the search would
            # be wasted, and at a degenerate vertex, whose binding rows depend
            # on each other in many ways, need not end where it did.)
            self.reuses += 1
            return last.raw
        if self.name == "kkt" and last is not None and self._warm.worth_trying():
            raw = self._warm_start(data, k_values, last)
            self._warm.record(raw is not None)
            if raw is not None:
                self.reuses += 1
                self._remember(raw, data, k_values)
                return raw
        if self.name == "kkt" and self._cold.worth_trying():
            raw = self._from_empty(data, k_values)
            self._cold.record(raw is not None)
            if raw is not None:
                self._remember(raw, data, k_values)
                return raw
        raw = self._from_solvers(data, k_values, last)
        self._remember(raw, data, k_values)
        return raw

    def _from_solvers(self, data: ProblemData, k_values: FloatArray, last: _State | None
                      ) -> RawSolution:
        """The active set suggested by OSQP's point (rough, then tight) or
        Clarabel's, polished and verified; raises as :meth:`solve` does when
        none is verified."""
        warm = None if last is None else (last.raw.x, last.raw.y)
        interior_tried = False
        if self.name == "kkt" and not np.any(data.P_data):
            # A linear program: ADMM converges slowly on LPs, an interior point
            # does not (100 random LPs: 20% less time, no failures either way).
            interior_tried = True
            raw = self._from_interior(data, k_values, 0)
            if raw is not None:
                return raw
        if self.name == "kkt":
            # A rough OSQP solve first: its point usually shows the active set.
            rough = self.runner.run(data, warm=warm, rough=True)
            if rough.x.shape[0]:
                raw = self._polish(data, k_values, self._guess(data, rough.x, rough.y),
                                   _COLD_STEPS, rough.iterations)
                if raw is not None:
                    return raw
                warm = (rough.x, rough.y)
            if rough.status == STATUS_ERROR:
                # Not even 1e-6 within its iteration limit: OSQP struggles here
                # (bad scaling, a flat objective), and its tight solve would run
                # up to 200,000 iterations; the interior point is asked first.
                interior_tried = True
                raw = self._from_interior(data, k_values, rough.iterations)
                if raw is not None:
                    return raw
        result = self.runner.run(data, warm=warm)
        doubt = None  # OSQP's certificate, where it does not hold on the data
        if result.status in (STATUS_INFEASIBLE, STATUS_UNBOUNDED):
            doubt = (self._infeasible if result.status == STATUS_INFEASIBLE
                     else self._unbounded)(data, result.certificate)
            if doubt.status != STATUS_INACCURATE:
                raise doubt
        # (Where OSQP stopped short, at its iteration limit say, its last
        # iterate may still point at the active set: the polish decides.)
        raw = None
        if result.x.shape[0]:
            raw = self._polish(data, k_values, self._guess(data, result.x, result.y),
                               MAX_ACTIVE_SET_STEPS, result.iterations)
        if raw is None and not interior_tried:
            raw = self._from_interior(data, k_values, result.iterations)
        if raw is None and doubt is not None:
            raise doubt
        if raw is None and result.status is not None:
            raise SolverError(f"{result.message}; nor did Clarabel's point lead to a "
                              "verified active set", result.status)
        if raw is None:
            raise SolverError(
                "no active set could be verified: the primal-dual active-set steps from "
                "OSQP's and Clarabel's solutions did not settle on a point that is feasible "
                "with nonnegative multipliers to working accuracy; the problem may be too "
                "ill-conditioned", STATUS_INACCURATE)
        return raw

    def _from_interior(self, data: ProblemData, k_values: FloatArray, iterations: int
                       ) -> RawSolution | None:
        """Clarabel's answer, where OSQP's led nowhere: its point polished (the
        verified point, or None), or its certificate, raised if it holds on the
        data (None if not).

        Its point suggests the active set read with :data:`_GUESS_TOL`, then,
        if that set is not verified, with :data:`_LOOSE_GUESS_TOL`, then
        independent binding rows picked from it (:func:`~.dependence.crossover`).
        """
        answer = self.interior.run(data)
        if answer is None:
            return None
        if answer.status != "solved":
            error = (infeasibility(self.problem, data, answer.z)
                     if answer.status == "infeasible"
                     else unboundedness(self.problem, data, answer.x))
            if error is not None:
                raise error
            return None
        slack, size = self._slack(data, answer.x)
        tried: list[IntArray] = []
        for tol in (_GUESS_TOL, _LOOSE_GUESS_TOL, None):  # (each only if the last fails)
            guess = (_suggested(slack, size, answer.z[self.problem.m_eq:], answer.z, tol)
                     if tol is not None else
                     crossover(self.problem, data, self._g(data)[0],
                               np.flatnonzero(slack <= _LOOSE_GUESS_TOL * size), answer.x))
            if any(np.array_equal(guess, other) for other in tried):
                continue
            tried.append(guess)
            raw = self._polish(data, k_values, guess, MAX_ACTIVE_SET_STEPS, iterations)
            if raw is not None:
                return raw
        return None

    def _from_empty(self, data: ProblemData, k_values: FloatArray) -> RawSolution | None:
        """Active-set steps from the empty set: the verified point, or None.

        A verified certificate (infeasible, unbounded) found on the way is
        raised; a system too ill-conditioned to decide on leaves the verdict
        to OSQP's start.
        """
        empty = np.zeros(0, dtype=np.int64)
        try:
            guess = self._search(data, k_values, empty)
            if guess is not None and guess.shape[0]:
                raw = self._polish(data, k_values, guess, _COLD_STEPS, 0)
                if raw is not None:
                    return raw
            return self._polish(data, k_values, empty, _COLD_STEPS, 0)
        except SolverError as exc:
            if exc.status == STATUS_INACCURATE:
                return None
            raise

    def _warm_start(self, data: ProblemData, k_values: FloatArray, last: _State
                    ) -> RawSolution | None:
        """The previous active set at new data, verified, or a point polished
        near it; None if neither is verified (the start from the empty set
        follows, and searches).

        The lean re-verification of the previous set comes first (one KKT
        solve; no factorization where K is constant), except where P varies:
        there K₀ is factored anyway (the convexity check) while K over the
        previous set is not, so the search runs first, and the previous set
        is re-verified only if the search keeps it. Where K is constant and
        the previous set fails, the search starts from it; where the search
        does not apply, the previous set is polished.
        """
        if self.problem.p_theta.shape[0] and self._searchable:
            guess = self._search(data, k_values, last.active, WARM_ACTIVE_SET_STEPS)
            if guess is None:  # far from the previous set
                return None
            if not np.array_equal(guess, last.active):
                return self._polish(data, k_values, guess, WARM_ACTIVE_SET_STEPS, 0)
        raw = self._reverify(data, k_values, last)
        if raw is not None:
            return raw
        if not self._searchable:
            return self._polish(data, k_values, last.active, WARM_ACTIVE_SET_STEPS, 0)
        if self.problem.k_constant:  # K₀ is factored once: search from the previous set
            found = self._search(data, k_values, last.active, WARM_ACTIVE_SET_STEPS)
            if found is not None:
                return self._polish(data, k_values, found, WARM_ACTIVE_SET_STEPS, 0)
        return None

    def _remember(self, raw: RawSolution, data: ProblemData, k_values: FloatArray) -> None:
        last = self._last
        if last is not None and raw.rows is last.rows:  # the same active set, re-verified
            out_set, gather = last.out_set, last.gather
        else:
            n = self.problem.n
            out_set = np.ones(self.problem.m_ineq, dtype=bool)
            out_set[raw.active] = False
            gather = np.concatenate([np.arange(n), n + raw.rows])
        self._last = _State(raw, out_set, gather,
                            bool(raw.weak.shape[0] or raw.dependent.shape[0]), data.rhs,
                            k_values)

    def _reverify(self, data: ProblemData, k_values: FloatArray, last: _State
                  ) -> RawSolution | None:
        """The previous active set at new data: one KKT solve, verified (or None).

        The common case of sweeps and training loops, kept lean: a point that
        is degenerate, singular or violated goes through :meth:`_polish`.
        """
        if last.degenerate:
            return None
        problem, n, m_eq = self.problem, self.problem.n, self.problem.m_eq
        fact = factor(self.cache, data, k_values, last.rows)
        rhs = data.rhs[last.gather]
        z, omega, _, estimate = fact.solve(rhs)
        if fact.singular:
            return None
        accuracy, unique = accept(problem, data, fact, last.rows, omega, estimate)
        scaled = z / fact.scale
        lam_min = float(_MIN(scaled[n + m_eq:], initial=np.inf))  # (before the abs below)
        tol = max(DEGENERATE_TOL, 100.0 * accuracy)  # clear of degeneracy, not only feasible
        if lam_min <= tol * float(_MAX(np.abs(scaled, out=scaled))):
            return None
        slack, size = self._slack(data, z[:n])
        size *= tol
        loose = slack <= size
        loose &= last.out_set
        if loose.any():
            return None
        y = np.zeros(problem.layout.rows)
        y[last.rows] = z[n:]
        y.flags.writeable = False
        z.flags.writeable = False  # (a fresh array: x is a view of it)
        return RawSolution(z[:n], y, last.rows, fact, omega, accuracy, unique, 0,
                           objective(rhs, z), last.active)

    def _guess(self, data: ProblemData, x: FloatArray, y: FloatArray,
               tol: float = _GUESS_TOL) -> IntArray:
        """Rows with a clearly positive multiplier or a negligible slack in a point
        (OSQP's or Clarabel's), relative to ``tol``."""
        slack, size = self._slack(data, x)
        return _suggested(slack, size, y[self.problem.m_eq:], y, tol)

    def _slack(self, data: ProblemData, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """h − G x for every inequality row, and the magnitude |G||x| + |h| of its terms."""
        problem = self.problem
        G, G_abs = self._g(data)
        h = data.rhs[problem.n + problem.m_eq:]
        size = G_abs @ np.abs(x)
        size += np.abs(h)
        return h - G @ x, size

    def _g(self, data: ProblemData) -> tuple[FloatArray | sp.csr_matrix,
                                             FloatArray | sp.csr_matrix]:
        """G and |G| for these data (the engine hands out the same M data while
        the parameters of M do not change: they are formed once for them)."""
        cached = self._g_cache  # (an atomic read; replaced whole)
        if cached is None or cached[0] is not data.M_data:
            values = data.M_data[self._g_start:]
            shape = (self.problem.m_ineq, self.problem.n)
            sparse = sp.csr_matrix((values, self._g_indices, self._g_indptr), shape=shape)
            G: FloatArray | sp.csr_matrix = sparse
            if shape[0] * shape[1] <= _DENSE_G:
                G = sparse.toarray()  # small: dense products are several times faster
            cached = self._g_cache = (data.M_data, G, abs(G))
        return cached[1], cached[2]

    # ----------------------------------------------------------------- search

    def _search(self, data: ProblemData, k_values: FloatArray, active: IntArray,
                steps: int = MAX_ACTIVE_SET_STEPS) -> IntArray | None:
        """Primal-dual active-set steps from ``active`` on the Schur complement
        of K₀, the KKT matrix over the equality rows alone: a guess of the
        active set, or None where the search does not apply or does not settle.

        With W = (K₀⁻¹ [Gᵀ; 0])ₓ, u = (K₀⁻¹ (−q, b))ₓ and C = G W, the point
        over a set 𝒜 is x = u − W_𝒜 λ with C_𝒜𝒜 λ = G_𝒜 u − h_𝒜, and every
        slack is h − G u + C_𝒜 λ: a step costs a solve of order |𝒜|, not a
        factorization of K. The guess is unverified; :meth:`_polish` factors
        K over it and proves it (or corrects it) as for any start.
        """
        if not self._searchable:
            return None
        fact0 = factor(self.cache, data, k_values, self._eq_rows)
        if fact0.singular:
            return None
        return search(self._schur(data, fact0), fact0, data, active, steps)

    @functools.cached_property
    def _searchable(self) -> bool:
        """Whether the search applies: not too many inequality rows for its
        dense blocks, and, where K₀ is factored sparsely, few enough for a
        sparse solve each."""
        m = self.problem.m_ineq
        return m <= _SEARCH_MAX_ROWS and (m <= _SEARCH_SPARSE_ROWS
                                          or self.cache.dense(self._eq_rows))

    def _schur(self, data: ProblemData, fact0: Factorization) -> Schur:
        """The columns of W and C formed so far for K₀ and these data."""
        cached = self._schur_cache  # (an atomic read; replaced whole)
        if cached is None or cached.fact is not fact0 or cached.M_data is not data.M_data:
            G, G_abs = self._g(data)
            cached = self._schur_cache = Schur(fact0, data.M_data, G, G_abs,
                                                self.problem.m_eq)
        return cached

    # ----------------------------------------------------------------- polish

    def _polish(self, data: ProblemData, k_values: FloatArray, active: IntArray, steps: int,
                iterations: int) -> RawSolution | None:
        """Primal-dual active-set steps from ``active``; the verified point, or None."""
        problem, n, m_eq = self.problem, self.problem.n, self.problem.m_eq
        in_set = np.zeros(problem.m_ineq, dtype=bool)
        in_set[active] = True
        dependent = np.zeros(problem.m_ineq, dtype=bool)
        seen: set[bytes] = set()
        for _ in range(steps):
            key = in_set.tobytes() + dependent.tobytes()
            if key in seen:  # cycling: give up on this start
                return None
            seen.add(key)
            kept = np.flatnonzero(in_set & ~dependent)
            rows = np.concatenate([self._eq_rows, m_eq + kept])
            fact = factor(self.cache, data, k_values, rows)
            rhs = np.concatenate([data.rhs[:n], data.rhs[n + rows]])
            z, omega, _, estimate = fact.solve(rhs)
            if fact.singular:
                if omega <= BACKWARD_TOL:  # dependent but consistent: share multipliers
                    drop = nonnegative_basis(problem, data, fact, kept, z)
                    if drop is None:
                        drop = dependent_row(fact, kept, m_eq, z[n:])
                    if drop.shape[0]:
                        dependent[drop] = True
                        continue
                else:  # dependent and inconsistent: one of the rows cannot bind
                    loose = loose_row(fact, kept, m_eq, rhs[n:])
                    if loose.shape[0]:
                        in_set[loose] = False
                        continue
                    error = certificate(problem, data, fact, rows)
                    if error.status == STATUS_INACCURATE:
                        return None  # no verdict from this start
                    raise error
            accuracy, unique = accept(problem, data, fact, rows, omega, estimate)
            slack, size = self._slack(data, z[:n])
            tol = max(ACTIVE_TOL, 10.0 * accuracy)
            z_hat = float(np.max(np.abs(z / fact.scale), initial=0.0))
            lam_hat = z[n + m_eq:] / fact.scale[n + m_eq:]
            violated = ~in_set & (slack < -tol * size)
            negative = kept[lam_hat < -tol * z_hat]
            # A row left out as dependent binds only while the rows it depends
            # on bind too (and their right-hand sides agree): once it does not
            # hold with equality, it rejoins the system (violated) or leaves
            # the set (slack).
            drifted = dependent & (np.abs(slack) > tol * size)
            if not violated.any() and negative.shape[0] == 0 and not drifted.any():
                check = _Check(slack, size, lam_hat, z_hat, accuracy)
                return self._verified(data, k_values, in_set, dependent, kept, rows, fact, z,
                                      omega, unique, iterations, check)
            dependent &= ~drifted
            in_set[drifted & (slack > 0)] = False
            in_set[negative] = False
            in_set |= violated
        return None

    def _verified(self, data: ProblemData, k_values: FloatArray, in_set: BoolArray,
                  dependent: BoolArray, kept: IntArray, rows: IntArray, fact: Factorization,
                  z: FloatArray, omega: float, unique: bool, iterations: int, check: _Check
                  ) -> RawSolution:
        """The RawSolution of a verified point, with its degenerate rows classified."""
        problem, n, m_eq = self.problem, self.problem.n, self.problem.m_eq
        y = np.zeros(problem.layout.rows)
        y[rows] = z[n:]
        tol = max(DEGENERATE_TOL, 100.0 * check.accuracy)
        weak = np.zeros(problem.m_ineq, dtype=bool)
        weak[kept[check.lam_hat <= tol * check.z_hat]] = True
        weak_out = ~in_set & (check.slack <= tol * check.size)
        if weak_out.any():
            # Binding rows outside the set join the KKT system, as reverse mode
            # and Jacobians treat weakly active rows (see diffmodel.diff). Their
            # multipliers are zero; x and y are unchanged.
            weak |= weak_out
            kept = np.flatnonzero((in_set | weak_out) & ~dependent)
            rows = np.concatenate([self._eq_rows, m_eq + kept])
            fact = factor(self.cache, data, k_values, rows)
            # A joining row that depends on rows of the set (a duplicate of an
            # active row, say) makes K singular: it is left out like any
            # dependent row, and shares the multipliers below.
            while fact.singular:
                drop = dependent_row(fact, kept, m_eq, y[rows])
                if not drop.shape[0]:
                    break
                dependent[drop] = True
                kept = kept[~dependent[kept]]
                rows = np.concatenate([self._eq_rows, m_eq + kept])
                fact = factor(self.cache, data, k_values, rows)
            weak &= ~dependent
        dropped = np.flatnonzero(dependent)
        if dropped.shape[0]:
            y = share_multipliers(problem, data, y, kept, dropped)
        x = z[:n].copy()
        x.flags.writeable = False
        y.flags.writeable = False
        return RawSolution(x, y, rows, fact, omega, check.accuracy, unique, iterations,
                           objective(data.rhs, np.concatenate([x, y])),
                           np.flatnonzero(in_set | weak_out), np.flatnonzero(weak), dropped)

    # ----------------------------------------------------------- certificates

    def _infeasible(self, data: ProblemData, dy: FloatArray) -> SolverError:
        """OSQP's δy, verified (:func:`~.verify.infeasibility`)."""
        error = infeasibility(self.problem, data, dy)
        return error if error is not None else SolverError(
            "OSQP reports the problem infeasible, but its certificate does not hold on the "
            "data to working accuracy: the problem is nearly infeasible or too "
            "ill-conditioned to decide", STATUS_INACCURATE)

    def _unbounded(self, data: ProblemData, dx: FloatArray) -> SolverError:
        """OSQP's δx, verified (:func:`~.verify.unboundedness`)."""
        error = unboundedness(self.problem, data, dx)
        return error if error is not None else SolverError(
            "OSQP reports the problem unbounded, but its certificate does not hold on the "
            "data to working accuracy: the problem is nearly unbounded or too "
            "ill-conditioned to decide", STATUS_INACCURATE)
