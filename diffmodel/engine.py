"""The solve engine: θ̃ in, verified :class:`~diffmodel.point.Point` out.

An :class:`Engine` owns what solves of one compiled problem share: the
backends (with their OSQP workspaces), the KKT patterns and the latest
factorization per row set (:class:`~diffmodel.solvers.KKTCache`), and the
last evaluated P and M data. All of it is guarded by locks, and nothing a
returned point holds is ever modified, so one engine serves many threads.
Pickling keeps only the compiled problem; the caches are rebuilt on use.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from ._typing import BoolArray, FloatArray, IntArray
from .compiled import CompiledProblem, ProblemData
from .diff import adjoint, adjoint_block, tangent
from .errors import ModelError, SolverError
from .linalg import Factorization
from .point import Point
from .solvers import ActiveSetBackend, Backend, DirectKKT, KKTCache, make_backend
from .solvers.base import STATUS_OPTIMAL, objective

__all__ = ["Engine", "BatchResult", "Runner", "Execution", "ChunkTask", "ChunkResult",
           "run_chunk", "problem_bytes", "adjoint_columns", "tangent_columns",
           "TASK_SECONDS", "TASK_BYTES", "PILOT_SECONDS", "PILOT_SCENARIOS", "BLOCK_COLUMNS"]



@dataclass(frozen=True, eq=False)
class BatchResult:
    """Solutions of a batch, stacked by column; failed items hold NaN.

    ``factorization`` is the one shared by every item when K did not vary
    (None otherwise: derivatives then refactor item by item). ``active``
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

    def solve(self, theta: FloatArray, solver: str) -> Point:
        """Solve at θ̃ with the named backend.

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
                raw = self.backend(solver).solve(data, k_values)
            except SolverError:
                _check_finite(data)  # overflowing data are the caller's to fix: say so
                raise
            value = _finite_value(raw.objective + data.r)
        theta = theta.copy()
        theta.flags.writeable = False
        return Point(self.problem, theta, data, raw, value, solver)

    def solve_batch(self, thetas: FloatArray, solver: str,
                    on_error: Literal["raise", "record"] = "raise") -> BatchResult:
        """Solve at each column of θ̃ (shape (n_theta + 1, B)).

        Columns that share K (no parameter of P or M varies) share one
        factorization and are solved as one block with the direct backend.

        Raises
        ------
        SolverError
            With ``on_error="raise"``, for the first failing item, naming its index.
        """
        with np.errstate(all="ignore"):  # non-finite results are caught explicitly
            return self._solve_batch(thetas, solver, on_error)

    def _solve_batch(self, thetas: FloatArray, solver: str,
                     on_error: Literal["raise", "record"]) -> BatchResult:
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
        backend = self.backend(solver)
        reuses = backend.reuses if isinstance(backend, ActiveSetBackend) else 0
        rows = np.arange(problem.m_eq, dtype=np.int64)

        def fail(i: int, exc: SolverError) -> None:
            if on_error == "raise":
                raise SolverError(f"scenario {i}: {exc}", exc.status) from None
            status[i], errors[i] = exc.status, str(exc)

        if shared and isinstance(backend, DirectKKT):
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
            for i in range(size):
                try:
                    point = self.solve(np.ascontiguousarray(thetas[:, i]), solver)
                except SolverError as exc:
                    fail(i, exc)
                    continue
                X[:, i], Y[:, i] = point.x, point.y
                values[i], accuracy[i] = point.value, point.raw.accuracy
                active[point.raw.active, i] = True
        warm = backend.reuses - reuses if isinstance(backend, ActiveSetBackend) else 0
        return BatchResult(thetas=thetas, X=X, Y=Y, values=values, accuracy=accuracy,
                           status=status, errors=errors, rows=rows,
                           factorization=fact if shared else None,
                           factorizations=self.cache.count - before, active=active,
                           warm_starts=warm)


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


def _shares_k(problem: CompiledProblem, thetas: FloatArray, solver: str) -> bool:
    """Whether every column of θ̃ has the same K (no entry of P or M varies) for "kkt"."""
    K_rows = thetas[problem.k_theta]
    return solver == "kkt" and bool(np.all(K_rows == K_rows[:, :1]))


# ------------------------------------------------------------------ chunks
#
# A batch runs as chunks of scenarios (columns of θ̃): in this process, or as
# tasks of a concurrent.futures executor (a process pool, or a Dask client's
# executor). The compiled problem goes to each worker once: pickled here once,
# as bytes, and kept by the worker process with its Engine in a small cache
# keyed by the bytes' digest (on Dask the bytes are scattered to every worker
# instead). Chunks are sized so that each computes for TASK_SECONDS or more,
# from the cost of a scenario measured on a pilot run in this process.

#: A chunk computes for at least about this many seconds, so that shipping
#: and scheduling it stay a small part of its cost (a few ms per task on Dask).
TASK_SECONDS = 0.1
#: The pilot (chunks of 1, 2, 4, ... scenarios solved in this process) stops
#: once it has taken this many seconds or solved :data:`PILOT_SCENARIOS`.
PILOT_SECONDS = 0.02
PILOT_SCENARIOS = 64
#: A chunk carries at most about this many bytes of data (its parameters, and
#: the loss gradients of a backward pass): Dask warns about task graphs over
#: 10 MB, and large messages stall the scheduler.
TASK_BYTES = 4 * 2**20
#: Scenarios that share K are solved and differentiated in blocks of at most
#: this many right-hand sides: beyond a few hundred columns, the block solves
#: run out of cache and cost up to twice as much per column.
BLOCK_COLUMNS = 128
#: Compiled problems (with their engines) a worker process keeps, least recent dropped.
WORKER_CACHE = 8

# In a worker process: the engines of the problems it was sent, by digest.
_WORKER_ENGINES: OrderedDict[str, Engine] = OrderedDict()
_WORKER_LOCK = threading.Lock()
# Here: each problem's bytes, pickled once; and what each executor was sent
# (digest -> the Dask future of the scattered bytes, or None for executors
# whose workers cache the bytes they receive).
_BYTES: weakref.WeakKeyDictionary[CompiledProblem, tuple[str, bytes]] = (
    weakref.WeakKeyDictionary())
_SENT: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_SHIP_LOCK = threading.Lock()


def problem_bytes(problem: CompiledProblem) -> tuple[str, bytes]:
    """The compiled problem as shipped to workers: (digest, pickled bytes).

    Only plain NumPy/SciPy data and names: no CVXPY object, no factorization.
    Pickled once per problem (kept while the problem lives).
    """
    with _SHIP_LOCK:
        cached = _BYTES.get(problem)
    if cached is None:
        blob = pickle.dumps(problem, protocol=pickle.HIGHEST_PROTOCOL)
        cached = (hashlib.blake2b(blob, digest_size=16).hexdigest(), blob)
        with _SHIP_LOCK:
            _BYTES[problem] = cached
    return cached


def _worker_engine(digest: str, blob: bytes | None) -> Engine | None:
    """This process's engine for the problem ``digest`` (built from ``blob`` the
    first time); None when it is not cached and no bytes came with the task."""
    with _WORKER_LOCK:
        engine = _WORKER_ENGINES.get(digest)
        if engine is not None:
            _WORKER_ENGINES.move_to_end(digest)
            return engine
    if blob is None:
        return None
    engine = Engine(pickle.loads(blob))  # our own bytes, from problem_bytes()
    with _WORKER_LOCK:
        engine = _WORKER_ENGINES.setdefault(digest, engine)
        _WORKER_ENGINES.move_to_end(digest)
        while len(_WORKER_ENGINES) > WORKER_CACHE:
            _WORKER_ENGINES.popitem(last=False)
    return engine


@dataclass(frozen=True, eq=False)
class ChunkTask:
    """Scenarios ``start : start + k`` of a batch (the k columns of ``thetas``).

    ``kind`` says what to do: ``"solve"``; ``"backward"`` with loss gradients
    ``GX``, ``GY`` (columns); ``"derivative"`` along ``dtheta``. Derivatives
    are taken for the scenarios marked in ``ok`` (solved before), which are
    solved again (same data, same result) for their factorizations.
    """

    kind: Literal["solve", "backward", "derivative"]
    start: int
    thetas: FloatArray
    solver: str
    ok: BoolArray | None = None
    GX: FloatArray | None = None
    GY: FloatArray | None = None
    dtheta: FloatArray | None = None

    @property
    def size(self) -> int:
        return int(self.thetas.shape[1])


@dataclass(frozen=True, eq=False)
class ChunkResult:
    """A chunk's results: its arrays (columns), failures and costs.

    ``arrays`` holds (X, Y, values, accuracy, active) for a solve, (dθ̃,) for
    backward and (dX, dY) for derivative. ``errors`` are keyed by the
    scenario's index in the batch; ``seconds`` is the chunk's compute time
    where it ran (wall clock), ``cpu`` the CPU time of that process meanwhile.
    """

    start: int
    arrays: tuple[np.ndarray[Any, Any], ...]
    status: list[str]
    errors: dict[int, str]
    factorizations: int
    warm_starts: int
    seconds: float
    cpu: float


def _resolve(engine: Engine, thetas: FloatArray, i: int, solver: str, start: int) -> Point:
    """Scenario ``start + i`` solved again, as a point with its factorization."""
    try:
        return engine.solve(np.ascontiguousarray(thetas[:, i]), solver)
    except SolverError as exc:  # pragma: no cover - it solved before
        raise SolverError(f"scenario {start + i}: {exc}", exc.status) from None


def _solve_columns(engine: Engine, thetas: FloatArray, solver: str) -> BatchResult:
    """:meth:`Engine.solve_batch` (recording failures) in blocks of
    :data:`BLOCK_COLUMNS` columns; one factorization serves every block that shares K."""
    size = thetas.shape[1]
    if size <= BLOCK_COLUMNS:
        return engine.solve_batch(thetas, solver, "record")
    starts = range(0, size, BLOCK_COLUMNS)
    parts = [engine.solve_batch(thetas[:, s: s + BLOCK_COLUMNS], solver, "record")
             for s in starts]
    shared = all(p.factorization is not None for p in parts) and _shares_k(
        engine.problem, thetas, solver)
    return BatchResult(
        thetas=thetas, X=np.hstack([p.X for p in parts]), Y=np.hstack([p.Y for p in parts]),
        values=np.concatenate([p.values for p in parts]),
        accuracy=np.concatenate([p.accuracy for p in parts]),
        status=[st for p in parts for st in p.status],
        errors={s + i: msg for s, p in zip(starts, parts) for i, msg in p.errors.items()},
        rows=parts[0].rows, factorization=parts[0].factorization if shared else None,
        factorizations=sum(p.factorizations for p in parts),
        active=np.hstack([p.active for p in parts]),
        warm_starts=sum(p.warm_starts for p in parts))


def adjoint_columns(engine: Engine, task: ChunkTask,
                    block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None = None
                    ) -> FloatArray:
    """Reverse mode for each scenario of a chunk: dℓ_i/dθ̃ as columns (NaN where not ok).

    Scenarios that share K use one factorization for all their adjoint solves
    (``block`` = (factorization, rows, X, Y) when the caller has it, else one
    block solve of the chunk); the others are solved again one by one.
    """
    problem, thetas = engine.problem, task.thetas
    assert task.ok is not None and task.GX is not None and task.GY is not None
    out = np.full((problem.layout.n_theta + 1, task.size), np.nan)
    idx = np.flatnonzero(task.ok)
    if idx.shape[0] == 0:
        return out
    if block is None and problem.m_ineq == 0 and _shares_k(problem, thetas, task.solver):
        res = _solve_columns(engine, thetas, task.solver)
        if res.factorization is not None:
            block = (res.factorization, res.rows, res.X, res.Y)
    if block is not None:
        fact, rows, X, Y = block
        for s in range(0, idx.shape[0], BLOCK_COLUMNS):
            cols = idx[s: s + BLOCK_COLUMNS]
            out[:, cols] = adjoint_block(problem, fact, rows, X[:, cols], Y[:, cols],
                                         task.GX[:, cols], task.GY[:, cols])
        return out
    for i in idx:
        point = _resolve(engine, thetas, int(i), task.solver, task.start)
        out[:, i] = adjoint(point, task.GX[:, i], task.GY[:, i])
    return out


def tangent_columns(engine: Engine, task: ChunkTask) -> tuple[FloatArray, FloatArray]:
    """Forward mode for each scenario of a chunk along ``task.dtheta``: (dX, dY)
    as columns, NaN where not ok."""
    problem = engine.problem
    assert task.ok is not None and task.dtheta is not None
    DX = np.full((problem.n, task.size), np.nan)
    DY = np.full((problem.layout.rows, task.size), np.nan)
    for i in np.flatnonzero(task.ok):
        point = _resolve(engine, task.thetas, int(i), task.solver, task.start)
        DX[:, i], DY[:, i] = tangent(point, task.dtheta)
    return DX, DY


def _run(engine: Engine, task: ChunkTask,
         block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None = None
         ) -> tuple[ChunkResult, Factorization | None]:
    """Run a chunk with ``engine``; also returns a solve's shared factorization."""
    t0, c0 = time.perf_counter(), time.process_time()
    before = engine.factorizations
    if task.kind == "solve":
        res = _solve_columns(engine, task.thetas, task.solver)
        out = ChunkResult(task.start, (res.X, res.Y, res.values, res.accuracy, res.active),
                          res.status, {task.start + i: msg for i, msg in res.errors.items()},
                          res.factorizations, res.warm_starts, time.perf_counter() - t0,
                          time.process_time() - c0)
        return out, res.factorization
    arrays: tuple[np.ndarray[Any, Any], ...]
    if task.kind == "backward":
        arrays = (adjoint_columns(engine, task, block),)
    else:
        arrays = tangent_columns(engine, task)
    return ChunkResult(task.start, arrays, [], {}, engine.factorizations - before, 0,
                       time.perf_counter() - t0, time.process_time() - c0), None


def run_chunk(digest: str, blob: bytes | None, task: ChunkTask) -> ChunkResult | None:
    """What a worker runs: one chunk of the problem ``digest``.

    ``blob`` (the pickled problem) comes with a worker's first chunks; later
    ones find the problem in the process's cache. Returns None when the
    problem is neither cached nor sent: the caller sends the chunk again with it.
    """
    engine = _worker_engine(digest, blob)
    if engine is None:
        return None
    return _run(engine, task)[0]


class ProgressBar(Protocol):
    """What a progress bar needs (tqdm's ``update`` and ``close``)."""

    def update(self, n: float | None = 1) -> object: ...

    def close(self) -> None: ...


#: Makes a progress bar from (total, description).
BarFactory = Callable[[int, str], ProgressBar]


class _NoBar:
    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Execution:
    """How a batch ran: where, in which chunks, and what it cost.

    Attributes
    ----------
    executor : str
        ``"in-process"``, ``"dask"`` or the executor's class name.
    workers : int
        Worker slots of the executor (processes, or Dask threads); 1 in-process.
    chunk_size : int
        Scenarios per chunk (the last one may be smaller); derivatives use it too.
    chunks : int
        Chunks run after the pilot.
    pilot : int
        Scenarios solved in this process to measure their cost (0 when
        ``chunk_size`` was given).
    per_scenario : float
        Seconds per scenario measured by the pilot (NaN without a pilot).
    compute : float
        Seconds of solving, summed over the chunks where they ran (pilot included).
    wall : float
        Seconds from the first chunk to the last result.
    shipped : int
        Bytes of the compiled problem sent to workers (0 in-process).
    """

    executor: str
    workers: int
    chunk_size: int
    chunks: int
    pilot: int
    per_scenario: float
    compute: float
    wall: float
    shipped: int

    @property
    def overhead(self) -> float:
        """Seconds per chunk not spent computing, from wall · workers − compute: an
        upper bound of shipping and scheduling per chunk (idle workers count too)."""
        if self.chunks == 0:
            return 0.0
        idle = self.wall * min(self.workers, self.chunks) - self.compute
        return max(idle, 0.0) / self.chunks


def _dask_client(executor: Executor | None) -> Any:
    """The Dask client behind ``client.get_executor()``, else None (no Dask import)."""
    if executor is None or not type(executor).__module__.startswith("distributed"):
        return None
    return getattr(executor, "_client", None)


def _worker_slots(executor: Executor | None, client: Any) -> int:
    if executor is None:
        return 1
    if client is not None:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    return max(1, int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1))


class Runner:
    """Runs the scenarios of one compiled problem chunk by chunk, in this process
    or on a ``concurrent.futures`` executor, and puts the results back in order.

    Parameters
    ----------
    engine : Engine
        This process's engine: it runs the pilot, and every chunk without an executor.
    executor : concurrent.futures.Executor or None
        A process pool, a Dask client's ``get_executor()``, or any executor.
    bar : callable, optional
        ``bar(total, description)`` makes a progress bar over scenarios.

    Raises
    ------
    ModelError
        If ``executor`` is not a ``concurrent.futures.Executor``.
    """

    def __init__(self, engine: Engine, executor: Executor | None = None,
                 bar: BarFactory | None = None) -> None:
        if executor is not None and not isinstance(executor, Executor):
            raise ModelError(
                "solve_batch(): executor must be a concurrent.futures.Executor, e.g. "
                "ProcessPoolExecutor(2) or a Dask client's get_executor(); got "
                f"{type(executor).__name__}")
        self.engine, self.executor = engine, executor
        self._bar: BarFactory = bar if bar is not None else (lambda total, desc: _NoBar())
        self._client = _dask_client(executor)
        self._impure: Any = None  # the Dask client's executor with pure=False
        self._slots: int | None = None
        #: Bytes of the compiled problem sent to workers so far.
        self.shipped = 0

    @property
    def name(self) -> str:
        """Where chunks run: ``"in-process"``, ``"dask"`` or the executor's class name."""
        if self.executor is None:
            return "in-process"
        return "dask" if self._client is not None else type(self.executor).__name__

    @property
    def scenario_bytes(self) -> int:
        """Bytes of data a scenario adds to a chunk (at most: its parameters and,
        for a backward pass, its loss gradients)."""
        layout = self.engine.problem.layout
        return 8 * (layout.n_theta + 1 + layout.n + layout.rows)

    @property
    def workers(self) -> int:
        """Worker slots of the executor (1 in-process)."""
        if self._slots is None:
            self._slots = _worker_slots(self.executor, self._client)
        return self._slots

    def __reduce__(self) -> tuple[type[Runner], tuple[Engine]]:
        return (Runner, (self.engine,))  # executors do not pickle: a copy runs in-process

    # ------------------------------------------------------------- solves

    def solve(self, thetas: FloatArray, solver: str, on_error: Literal["raise", "record"],
              chunk_size: int | None) -> tuple[BatchResult, Execution]:
        """Solve every column of θ̃; chunks sized by a pilot unless ``chunk_size`` is given.

        Raises
        ------
        SolverError
            With ``on_error="raise"``, for the failing scenario of lowest index,
            named as ``scenario i: ...``.
        """
        size = thetas.shape[1]
        bar = self._bar(size, "solve_batch")
        parts: list[ChunkResult] = []
        fact: Factorization | None = None
        t0 = time.perf_counter()
        try:
            done, per = 0, math.nan
            if chunk_size is None:
                done, per, fact = self._pilot(thetas, solver, on_error, parts, bar)
                chunk = max(1, math.ceil(TASK_SECONDS / per)) if per > 0 else size
                chunk = min(chunk, max(1, TASK_BYTES // self.scenario_bytes))
            else:
                chunk = chunk_size
            chunk = min(chunk, size)
            shipped = self.shipped
            tasks = [ChunkTask("solve", s, thetas[:, s: s + chunk], solver)
                     for s in range(done, size, chunk)]
            results, shared = self._map(tasks, bar, on_error == "raise")
            parts.extend(results)
            fact = shared if fact is None else fact
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        result = self._assemble(thetas, solver, parts, fact)
        if on_error == "raise" and result.errors:
            first = min(result.errors)
            raise SolverError(f"scenario {first}: {result.errors[first]}", result.status[first])
        execution = Execution(
            executor=self.name, workers=self.workers, chunk_size=chunk, chunks=len(tasks),
            pilot=done, per_scenario=per, compute=sum(p.seconds for p in parts), wall=wall,
            shipped=self.shipped - shipped)
        return result, execution

    def _pilot(self, thetas: FloatArray, solver: str, on_error: str,
               parts: list[ChunkResult], bar: ProgressBar
               ) -> tuple[int, float, Factorization | None]:
        """Chunks of 1, 2, 4, ... scenarios in this process; returns the scenarios
        done, the seconds per scenario of the last chunk, and a shared factorization."""
        size, done, step, spent = thetas.shape[1], 0, 1, 0.0
        per, fact = math.nan, None
        while done < size:
            k = min(step, size - done)
            part, shared = _run(self.engine, ChunkTask("solve", done, thetas[:, done: done + k],
                                                        solver))
            parts.append(part)
            fact = shared if fact is None else fact
            bar.update(k)
            done, spent, per, step = done + k, spent + part.seconds, part.seconds / k, 2 * step
            if (on_error == "raise" and part.errors) or spent >= PILOT_SECONDS or (
                    done >= PILOT_SCENARIOS):
                break
        if on_error == "raise" and parts[-1].errors:
            done = size  # nothing more to run: the failure is raised
        return done, per, fact

    def _assemble(self, thetas: FloatArray, solver: str, parts: list[ChunkResult],
                  fact: Factorization | None) -> BatchResult:
        problem = self.engine.problem
        size = thetas.shape[1]
        X, Y = np.full((problem.n, size), np.nan), np.full((problem.layout.rows, size), np.nan)
        values, accuracy = np.full(size, np.nan), np.full(size, np.nan)
        active = np.zeros((problem.m_ineq, size), dtype=bool)
        status = ["not run"] * size
        errors: dict[int, str] = {}
        for part in sorted(parts, key=lambda p: p.start):
            cols = slice(part.start, part.start + len(part.status))
            X[:, cols], Y[:, cols], values[cols], accuracy[cols], active[:, cols] = part.arrays
            status[cols] = part.status
            errors.update(part.errors)
        shared = problem.m_ineq == 0 and _shares_k(problem, thetas, solver)
        return BatchResult(
            thetas=thetas, X=X, Y=Y, values=values, accuracy=accuracy, status=status,
            errors=errors, rows=np.arange(problem.m_eq, dtype=np.int64),
            factorization=fact if shared and self.executor is None else None,
            factorizations=sum(p.factorizations for p in parts), active=active,
            warm_starts=sum(p.warm_starts for p in parts))

    # ------------------------------------------------------- derivatives

    def backward(self, result: BatchResult, solver: str, ok: BoolArray, GX: FloatArray,
                 GY: FloatArray, chunk: int) -> FloatArray:
        """dℓ_i/dθ̃ for every scenario (columns; NaN where not ``ok``), chunk by chunk."""
        thetas, size = result.thetas, result.thetas.shape[1]
        tasks = [ChunkTask("backward", s, thetas[:, s: s + chunk], solver, ok[s: s + chunk],
                           GX[:, s: s + chunk], GY[:, s: s + chunk])
                 for s in range(0, size, chunk)]
        block = None
        if self.executor is None and result.factorization is not None:
            block = (result.factorization, result.rows, result.X, result.Y)
        out = np.empty((self.engine.problem.layout.n_theta + 1, size))
        bar = self._bar(size, "backward")
        try:
            if block is not None:  # one factorization for the whole batch: no re-solve
                fact, rows, X, Y = block
                for task in tasks:
                    cols = slice(task.start, task.start + task.size)
                    out[:, cols] = adjoint_columns(self.engine, task,
                                                   (fact, rows, X[:, cols], Y[:, cols]))
                    bar.update(task.size)
                return out
            for part in self._map(tasks, bar, True)[0]:
                out[:, part.start: part.start + part.arrays[0].shape[1]] = part.arrays[0]
        finally:
            bar.close()
        return out

    def derivative(self, result: BatchResult, solver: str, ok: BoolArray, dtheta: FloatArray,
                   chunk: int) -> tuple[FloatArray, FloatArray]:
        """(dX, dY) for every scenario along one direction (NaN where not ``ok``)."""
        thetas, size = result.thetas, result.thetas.shape[1]
        problem = self.engine.problem
        tasks = [ChunkTask("derivative", s, thetas[:, s: s + chunk], solver, ok[s: s + chunk],
                           dtheta=dtheta) for s in range(0, size, chunk)]
        DX, DY = np.empty((problem.n, size)), np.empty((problem.layout.rows, size))
        bar = self._bar(size, "derivative")
        try:
            for part in self._map(tasks, bar, True)[0]:
                cols = slice(part.start, part.start + part.arrays[0].shape[1])
                DX[:, cols], DY[:, cols] = part.arrays
        finally:
            bar.close()
        return DX, DY

    # ---------------------------------------------------------- executing

    def _map(self, tasks: list[ChunkTask], bar: ProgressBar, stop_on_failure: bool
             ) -> tuple[list[ChunkResult], Factorization | None]:
        """Run the tasks (here or on the executor); results in any order, and the
        shared factorization of in-process solves. With ``stop_on_failure``,
        chunks after a failing scenario are not run."""
        if self.executor is None:
            parts, fact = [], None
            for task in tasks:
                part, shared = _run(self.engine, task)
                parts.append(part)
                fact = shared if fact is None else fact
                bar.update(task.size)
                if stop_on_failure and part.errors:
                    break
            return parts, fact
        return self._submit_all(tasks, bar, stop_on_failure), None

    def ship(self) -> tuple[str, bytes, Any, bool]:
        """The problem's digest and bytes; on Dask, the future of the bytes scattered
        to every worker (once per executor). The flag says whether this executor's
        workers were sent the problem before."""
        assert self.executor is not None
        digest, blob = problem_bytes(self.engine.problem)
        with _SHIP_LOCK:  # by Dask client: each get_executor() is a new executor
            sent = _SENT.setdefault(self._client or self.executor, {})
            before = digest in sent
            scattered = sent.get(digest)
        if self._client is not None and scattered is None:
            scattered = self._client.scatter(blob, broadcast=True)
            self.shipped += len(blob) * max(1, len(self._client.nthreads()))
        with _SHIP_LOCK:
            sent[digest] = scattered
        return digest, blob, scattered, before

    def submit(self, task: ChunkTask, shipment: tuple[str, bytes, Any, bool],
               with_problem: bool) -> Future[ChunkResult | None]:
        """Submit one chunk to the executor: with the problem's bytes if asked (or,
        on Dask, its scattered copy); the result is None if the worker lacked it."""
        assert self.executor is not None
        digest, blob, scattered, _ = shipment
        if scattered is not None:  # Dask: the scattered bytes, resolved on the worker
            if self._impure is None:  # tasks keyed at random: no hashing of their arrays
                self._impure = self._client.get_executor(pure=False)
            future: Future[ChunkResult | None] = self._impure.submit(run_chunk, digest,
                                                                     scattered, task)
            return future
        if with_problem:
            self.shipped += len(blob)
        return self.executor.submit(run_chunk, digest, blob if with_problem else None, task)

    def _submit_all(self, tasks: list[ChunkTask], bar: ProgressBar, stop_on_failure: bool
                    ) -> list[ChunkResult]:
        """Submit every task and collect the results. The problem's bytes go with
        the first task per worker slot the first time this executor sees the
        problem; a task whose worker lacks the problem comes back (None) and is
        sent again with it."""
        shipment = self.ship()
        first = 0 if shipment[3] else self.workers
        pending = {self.submit(task, shipment, i < first): task
                   for i, task in enumerate(tasks)}
        parts: list[ChunkResult] = []
        failed_at = math.inf
        try:
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    part = future.result()  # a worker's exception is raised here
                    if part is None:  # that worker had not received the problem yet
                        pending[self.submit(task, shipment, True)] = task
                        continue
                    parts.append(part)
                    bar.update(task.size)
                    if stop_on_failure and part.errors:
                        failed_at = min(failed_at, min(part.errors))
                        # A cancelled future never runs; wait() would not see it as
                        # done until its executor gets to it, which may be never.
                        for other in [f for f, t in pending.items() if t.start > failed_at]:
                            if other.cancel():
                                del pending[other]
        finally:
            for future in pending:
                future.cancel()
        return parts
