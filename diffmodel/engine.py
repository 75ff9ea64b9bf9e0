"""The solve engine: θ̃ in, verified :class:`~diffmodel.point.Point` out.

An :class:`Engine` owns what solves of one compiled problem share: the
backends (with their OSQP workspaces), the KKT patterns and the latest
factorization per row set (:class:`~diffmodel.solvers.KKTCache`), and the
last evaluated P and M data. All of it is guarded by locks, and nothing a
returned point holds is ever modified, so one engine serves many threads.
Pickling keeps only the compiled problem; the caches are rebuilt on use.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._typing import BoolArray, FloatArray, IntArray
from .compiled import CompiledProblem, ProblemData
from .errors import ModelError, SolverError
from .linalg import Factorization
from .point import Point
from .solvers import ActiveSetBackend, Backend, DirectKKT, KKTCache, make_backend
from .solvers.base import STATUS_OPTIMAL, objective

__all__ = ["Engine", "BatchResult"]



@dataclass(frozen=True, eq=False)
class BatchResult:
    """Solutions of a batch, stacked by column; failed items hold NaN.

    ``factorization`` is the one shared by every item when K did not vary
    (None otherwise: derivatives then refactor item by item, unless the
    items' ``points`` were kept). ``active``
    marks, per item (column), the binding inequality rows (shape
    (m_ineq, B); all False for a failed item). ``warm_starts`` counts the
    items whose active set was verified from the previous item's (no OSQP
    run).
    """

    thetas: FloatArray
    X: FloatArray
    Y: FloatArray
    values: FloatArray
    accuracy: FloatArray
    status: list[str]
    errors: dict[int, str]
    rows: IntArray
    factorization: Factorization | None
    factorizations: int
    active: BoolArray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    warm_starts: int = 0
    #: Each solved item's point, with its factorization (None for failed items),
    #: when the batch was asked to keep them: derivatives then solve nothing again.
    points: list[Point | None] | None = None


class Engine:
    """Solves one compiled problem for any θ̃; shared, thread-safe caches."""

    def __init__(self, problem: CompiledProblem) -> None:
        self.problem = problem
        self._init_caches()

    def _init_caches(self) -> None:
        self.cache = KKTCache(self.problem)
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._kdata: tuple[FloatArray, FloatArray, FloatArray] | None = None

    def __reduce__(self) -> tuple[type[Engine], tuple[CompiledProblem]]:
        return (Engine, (self.problem,))  # caches are rebuilt on use

    @property
    def factorizations(self) -> int:
        """Numeric KKT factorizations performed so far."""
        return self.cache.count

    def backend(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            with self._lock:
                backend = self._backends.get(name)
                if backend is None:
                    backend = self._backends[name] = make_backend(name, self.problem,
                                                                  self.cache)
        return backend

    # ------------------------------------------------------------------ data

    def data(self, theta: FloatArray) -> tuple[ProblemData, FloatArray]:
        """The QP data at θ̃ (P and M reused when their parameters are unchanged)."""
        problem = self.problem
        k_values = theta[problem.k_theta]
        cached = self._kdata  # (an atomic read; replaced whole, never mutated)
        if cached is not None and (not k_values.shape[0] or np.array_equal(cached[0], k_values)):
            P_data, M_data = cached[1], cached[2]
        else:
            P_data, M_data = problem.P.values(theta), problem.M.values(theta)
            self._kdata = (k_values, P_data, M_data)
        return problem.data(theta, (P_data, M_data)), k_values

    # ----------------------------------------------------------------- solves

    def solve(self, theta: FloatArray, solver: str, start: IntArray | None = None) -> Point:
        """Solve at θ̃ with the named backend (``start``: inequality rows known
        to bind there, tried first).

        Raises
        ------
        ModelError
            If the data overflow for these parameter values.
        SolverError
            If there is no accepted optimal point.
        """
        with np.errstate(all="ignore"):  # non-finite results are caught explicitly
            data, k_values = self.data(theta)
            try:
                raw = self.backend(solver).solve(data, k_values, start=start)
            except SolverError:
                _check_finite(data)  # overflowing data are the caller's to fix: say so
                raise
            value = _finite_value(raw.objective + data.r)
        theta = theta.copy()
        theta.flags.writeable = False
        return Point(self.problem, theta, data, raw, value, solver)

    def solve_batch(self, thetas: FloatArray, solver: str,
                    on_error: Literal["raise", "record"] = "raise", *,
                    keep: bool = False) -> BatchResult:
        """Solve at each column of θ̃ (shape (n_theta + 1, B)).

        Columns that share K (no parameter of P or M varies) share one
        factorization and are solved as one block with the direct backend.
        The others are solved one by one; with ``keep``, their points (and
        factorizations) are kept in the result's ``points``.

        Raises
        ------
        SolverError
            With ``on_error="raise"``, for the first failing item, naming its index.
        """
        with np.errstate(all="ignore"):  # non-finite results are caught explicitly
            return self._solve_batch(thetas, solver, on_error, keep)

    def _solve_batch(self, thetas: FloatArray, solver: str,
                     on_error: Literal["raise", "record"], keep: bool) -> BatchResult:
        problem = self.problem
        size = thetas.shape[1]
        n, m = problem.n, problem.layout.rows
        shared = _shares_k(problem, thetas, solver)
        before = self.cache.count
        X, Y = np.full((n, size), np.nan), np.full((m, size), np.nan)
        values, accuracy = np.full(size, np.nan), np.full(size, np.nan)
        active = np.zeros((problem.m_ineq, size), dtype=bool)
        status = [STATUS_OPTIMAL] * size
        errors: dict[int, str] = {}
        fact: Factorization | None = None
        points: list[Point | None] | None = None
        backend = self.backend(solver)
        reuses = backend.reuses if isinstance(backend, ActiveSetBackend) else 0
        rows = np.arange(problem.m_eq, dtype=np.int64)

        def fail(i: int, exc: SolverError) -> None:
            if on_error == "raise":
                raise SolverError(f"scenario {i}: {exc}", exc.status) from None
            status[i], errors[i] = exc.status, str(exc)

        # (a single column is "shared" too; kept, it is a point like any other)
        if shared and isinstance(backend, DirectKKT) and not (keep and size == 1):
            data, k_values = self.data(np.ascontiguousarray(thetas[:, 0]))
            RHS = -problem.f.apply(thetas)
            _check_finite_block(RHS)
            fact, Z, _, verdicts = backend.solve_block(data, k_values, RHS)
            r = problem.r(thetas)
            for i, verdict in enumerate(verdicts):
                if isinstance(verdict, SolverError):
                    fail(i, verdict)
                    continue
                x = Z[:n, i]
                try:
                    values[i] = _finite_value(objective(RHS[:, i], Z[:, i]) + float(r[i]))
                except SolverError as exc:
                    fail(i, exc)
                    continue
                X[:, i], Y[rows, i], accuracy[i] = x, Z[n:, i], verdict[0]
        else:
            points = [None] * size if keep else None
            for i in range(size):
                try:
                    point = self.solve(np.ascontiguousarray(thetas[:, i]), solver)
                except SolverError as exc:
                    fail(i, exc)
                    continue
                if points is not None:
                    points[i] = point
                X[:, i], Y[:, i] = point.x, point.y
                values[i], accuracy[i] = point.value, point.raw.accuracy
                active[point.raw.active, i] = True
        warm = backend.reuses - reuses if isinstance(backend, ActiveSetBackend) else 0
        return BatchResult(thetas=thetas, X=X, Y=Y, values=values, accuracy=accuracy,
                           status=status, errors=errors, rows=rows,
                           factorization=fact if shared else None,
                           factorizations=self.cache.count - before, active=active,
                           warm_starts=warm, points=points)


def _check_finite(data: ProblemData) -> None:
    for label, values in (("P", data.P_data), ("q", data.q), ("A or G", data.M_data),
                          ("b or h", np.asarray(data.c))):
        if not np.isfinite(values.sum()) and not np.all(np.isfinite(values)):
            raise ModelError(
                f"the problem data ({label}) overflow double precision for these parameter "
                "values: rescale the parameters (values near 1e308 do not fit)")
    if not np.isfinite(data.r):
        raise ModelError("the objective's constant term overflows double precision for "
                         "these parameter values: rescale the parameters")


def _check_finite_block(RHS: FloatArray) -> None:
    if not np.all(np.isfinite(RHS)):
        raise ModelError("the problem data (q, b or h) overflow double precision for some "
                         "batch items: rescale the parameters")


def _finite_value(value: float) -> float:
    if not np.isfinite(value):
        raise ModelError(
            "the optimal value overflows double precision for these parameter values (its "
            "magnitude exceeds about 1e308): rescale the parameters")
    return value


# What the packing of a batch told about it: the array that owns a batch's θ̃
# (by id, with a weak reference to tell a reused id apart) and whether every
# column has the same K because no parameter of P or M is batched. Scanning
# for it costs a pass over every batched entry of P and M (30 ms for a dense
# n = 500 matrix parameter and 128 columns), and every chunk and block asks.
_SHARED: dict[int, tuple[weakref.ref[np.ndarray], bool]] = {}


def note_shared_k(thetas: FloatArray, shared: bool) -> None:
    """Record that every column of this batch's θ̃ has the same K (``shared``),
    as its packing knows; :func:`_shares_k` then answers for it, and for any
    block of its columns, without reading them."""
    owner = thetas if thetas.base is None else thetas.base
    key = id(owner)
    _SHARED[key] = (weakref.ref(owner, lambda _: _SHARED.pop(key, None)), shared)


def _known_shared(thetas: FloatArray) -> bool:
    owner = thetas if thetas.base is None else thetas.base
    entry = _SHARED.get(id(owner))
    return entry is not None and entry[0]() is owner and entry[1]


def _shares_k(problem: CompiledProblem, thetas: FloatArray, solver: str) -> bool:
    """Whether every column of θ̃ has the same K (no entry of P or M varies) for "kkt"."""
    if solver != "kkt":
        return False
    if _known_shared(thetas):
        return True
    index = problem.k_theta
    first = thetas[index, 0]
    # The last column first: where K varies it usually differs there already,
    # and the answer costs one column rather than the whole block.
    if not np.array_equal(thetas[index, -1], first):
        return False
    return bool(np.all(thetas[index] == first[:, None]))
