"""Chunks of scenarios, as a worker runs them.

A batch runs as chunks of scenarios (columns of θ̃). This module is the
worker's side, wherever the worker is (this process, a process pool, a Dask
worker): the compiled problem shipped as bytes and cached per process by
digest, a :class:`ChunkTask` (solve, backward or derivative of some
scenarios) and its :class:`ChunkResult`. :mod:`diffmodel.runner` sizes the
chunks and sends them.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from ._typing import BoolArray, FloatArray, IntArray
from .compiled import CompiledProblem
from .diff import adjoint_multipliers, block_multipliers, pullback, pullback_sum, tangent
from .engine import BatchResult, Engine, _shares_k
from .errors import SolverError
from .linalg import Factorization
from .point import Point

__all__ = ["ChunkTask", "ChunkResult", "run_chunk", "problem_bytes", "adjoint_columns",
           "adjoint_reduced", "tangent_columns", "run_task", "BLOCK_COLUMNS", "WORKER_CACHE"]


# ------------------------------------------------------------------ chunks
#
# A batch runs as chunks of scenarios (columns of θ̃): in this process, or as
# tasks of a concurrent.futures executor (a process pool, or a Dask client's
# executor). The compiled problem goes to each worker once: pickled here once,
# as bytes, and kept by the worker process with its Engine in a small cache
# keyed by the bytes' digest (on Dask the bytes are scattered to every worker
# instead). How chunks are sized and sent is diffmodel.runner's business.

#: Scenarios that share K are solved and differentiated in blocks of at most
#: this many right-hand sides: beyond a few hundred columns, the block solves
#: run out of cache and cost up to twice as much per column.
BLOCK_COLUMNS = 128
#: Compiled problems (with their engines) a worker process keeps, least recent dropped.
WORKER_CACHE = 8

# In a worker process: the engines of the problems it was sent, by digest.
_WORKER_ENGINES: OrderedDict[str, Engine] = OrderedDict()
_WORKER_LOCK = threading.Lock()
# Here: each problem's bytes, pickled once.
_BYTES: weakref.WeakKeyDictionary[CompiledProblem, tuple[str, bytes]] = (
    weakref.WeakKeyDictionary())
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


# ------------------------------------------------------------------ shipping
#
# A sweep usually varies a few parameters: most rows of a chunk's θ̃ block are
# the same in every scenario (a constant matrix parameter repeats all its
# entries), and so are many rows of its results (with a shared loss gradient,
# the gradient with respect to q and b when K is shared). Pickled, a chunk's
# 2-D float blocks send such rows once: the transfer between processes, not
# the compute, bounds a sweep of cheap scenarios.


@dataclass(frozen=True)
class Repeated:
    """A block (N, k) as shipped: its first column, and the rows that differ
    from it somewhere (indices, values)."""

    base: FloatArray
    rows: IntArray
    values: FloatArray

    def full(self) -> FloatArray:
        """The block (column-major, as a batch's θ̃ is)."""
        out = np.empty((self.base.shape[0], self.values.shape[1]), order="F")
        out[...] = self.base[:, None]
        out[self.rows] = self.values
        return out


def compact(block: Any) -> Any:
    """A 2-D float block with rows repeated across its columns as :class:`Repeated`;
    anything else as it is. NaN rows count as differing, so the block comes
    back bit for bit (up to the sign of zeros)."""
    if (not isinstance(block, np.ndarray) or block.ndim != 2 or block.shape[1] < 2
            or block.dtype != np.float64):
        return block
    base = block[:, 0]
    differ = np.flatnonzero((block != base[:, None]).any(axis=1))
    if differ.shape[0] == block.shape[0]:  # (a copy costs far less than its transfer)
        return block
    return Repeated(base.copy(), differ, block[differ])


def expand(item: Any) -> Any:
    """The inverse of :func:`compact`."""
    return item.full() if isinstance(item, Repeated) else item


def _shipped(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of a chunk task or result: its fields, 2-D blocks compacted."""
    values = [getattr(obj, f.name) for f in fields(obj)]
    packed = [tuple(compact(a) for a in v) if isinstance(v, tuple) else compact(v)
              for v in values]
    return (_received, (type(obj), packed))


def _received(cls: Any, packed: list[Any]) -> Any:
    return cls(*[tuple(expand(a) for a in v) if isinstance(v, tuple) else expand(v)
                 for v in packed])


@dataclass(frozen=True, eq=False)
class ChunkTask:
    """Scenarios ``start : start + k`` of a batch (the k columns of ``thetas``).

    ``kind`` says what to do: ``"solve"``; ``"backward"`` with loss gradients
    ``GX``, ``GY`` (columns, or one column shared by every scenario);
    ``"derivative"`` along ``dtheta``. Derivatives
    are taken for the scenarios marked in ``ok`` (solved before), which are
    solved again (same data, same result) for their factorizations, starting
    from their binding rows ``active`` (m_ineq × k) when the model has
    inequalities.
    """

    kind: Literal["solve", "backward", "derivative"]
    start: int
    thetas: FloatArray
    solver: str
    ok: BoolArray | None = None
    GX: FloatArray | None = None
    GY: FloatArray | None = None
    dtheta: FloatArray | None = None
    active: BoolArray | None = None

    @property
    def size(self) -> int:
        return int(self.thetas.shape[1])

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _shipped(self)


@dataclass(frozen=True, eq=False)
class ChunkResult:
    """A chunk's results: its arrays (columns), failures and costs.

    ``arrays`` holds (X, Y, values, accuracy, active) for a solve, (dθ̃,) for
    backward and (dX, dY) for derivative. ``errors`` are keyed by the
    scenario's index in the batch; ``seconds`` is the chunk's compute time
    where it ran (wall clock), ``cpu`` the CPU time of that process meanwhile.
    ``points``: the solved scenarios' points, when a solve in this process was
    asked to keep them (never shipped back from a worker).
    """

    start: int
    arrays: tuple[np.ndarray[Any, Any], ...]
    status: list[str]
    errors: dict[int, str]
    factorizations: int
    warm_starts: int
    seconds: float
    cpu: float
    points: list[Point | None] | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _shipped(self)


def _resolve(engine: Engine, task: ChunkTask, i: int) -> Point:
    """Scenario i of the chunk solved again (from its binding rows when known),
    as a point with its factorization."""
    active = task.active
    rows = (np.flatnonzero(active[:, i]) if active is not None and active.shape[0]
            else None)
    try:
        return engine.solve(np.ascontiguousarray(task.thetas[:, i]), task.solver, rows)
    except SolverError as exc:  # pragma: no cover - it solved before
        raise SolverError(f"scenario {task.start + i}: {exc}", exc.status) from None


def _point(engine: Engine, task: ChunkTask, i: int,
           points: Sequence[Point | None] | None) -> Point:
    """Scenario i of the chunk as a point: kept from its solve, or solved again."""
    kept = points[i] if points is not None else None
    if kept is not None:
        return kept
    return _resolve(engine, task, i)


def _solve_columns(engine: Engine, thetas: FloatArray, solver: str,
                   keep: bool = False) -> BatchResult:
    """:meth:`Engine.solve_batch` (recording failures) in blocks of
    :data:`BLOCK_COLUMNS` columns; one factorization serves every block that shares K."""
    size = thetas.shape[1]
    if size <= BLOCK_COLUMNS:
        return engine.solve_batch(thetas, solver, "record", keep=keep)
    starts = range(0, size, BLOCK_COLUMNS)
    parts = [engine.solve_batch(thetas[:, s: s + BLOCK_COLUMNS], solver, "record", keep=keep)
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
        warm_starts=sum(p.warm_starts for p in parts),
        points=_joined([p.points for p in parts]) if keep else None)


def _joined(lists: list[list[Point | None] | None]) -> list[Point | None] | None:
    """The lists end to end; None if any is missing."""
    out: list[Point | None] = []
    for part in lists:
        if part is None:
            return None
        out.extend(part)
    return out


def adjoint_columns(engine: Engine, task: ChunkTask,
                    block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None = None,
                    points: Sequence[Point | None] | None = None) -> FloatArray:
    """Reverse mode for each scenario of a chunk: dℓ_i/dθ̃ as columns (NaN where not ok).

    Scenarios that share K use one factorization for all their adjoint solves
    (``block`` = (factorization, rows, X, Y) when the caller has it, else one
    block solve of the chunk); the others use their kept ``points`` (the
    chunk's, in order) or are solved again one by one. The pull-back to θ̃
    runs on blocks of scenarios.
    """
    out = np.full((engine.problem.layout.n_theta + 1, task.size), np.nan)
    idx, X, Y, WX, WY = _multipliers(engine, task, block, points)
    for s in range(0, idx.shape[0], BLOCK_COLUMNS):
        cols = slice(s, s + BLOCK_COLUMNS)
        out[:, idx[cols]] = pullback(engine.problem, X[:, cols], Y[:, cols], WX[:, cols],
                                     WY[:, cols])
    return out


def adjoint_reduced(engine: Engine, task: ChunkTask, keep: IntArray, total: IntArray,
                    block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None = None,
                    points: Sequence[Point | None] | None = None
                    ) -> tuple[FloatArray, FloatArray]:
    """:func:`adjoint_columns` reduced to what a caller uses: the entries ``keep``
    of every scenario's dℓ_i/dθ̃ (columns, NaN where not ok), and the entries
    ``total`` of their sum over the chunk's scenarios (NaN if one is not ok).
    """
    idx, X, Y, WX, WY = _multipliers(engine, task, block, points)
    per_item = np.full((keep.shape[0], task.size), np.nan)
    summed = np.zeros(total.shape[0]) if idx.shape[0] == task.size else np.full(
        total.shape[0], np.nan)
    problem = engine.problem
    for s in range(0, idx.shape[0], BLOCK_COLUMNS):
        cols = slice(s, s + BLOCK_COLUMNS)
        parts = (X[:, cols], Y[:, cols], WX[:, cols], WY[:, cols])
        if keep.shape[0]:
            per_item[:, idx[cols]] = pullback(problem, *parts, keep=keep)
        if total.shape[0]:
            summed += pullback_sum(problem, *parts)[total]
    return per_item, summed


def _multipliers(engine: Engine, task: ChunkTask,
                 block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None,
                 points: Sequence[Point | None] | None
                 ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """The chunk's ok scenarios (indices), their solutions X, Y and adjoint
    solutions WX, WY (columns, in that order), as :func:`adjoint_columns` says."""
    problem, thetas = engine.problem, task.thetas
    assert task.ok is not None and task.GX is not None and task.GY is not None
    GX = np.broadcast_to(task.GX, (task.GX.shape[0], task.size))
    GY = np.broadcast_to(task.GY, (task.GY.shape[0], task.size))
    idx = np.flatnonzero(task.ok)
    n, m, k = problem.n, problem.layout.rows, idx.shape[0]
    if (k and block is None and points is None and problem.m_ineq == 0
            and _shares_k(problem, thetas, task.solver)):
        res = _solve_columns(engine, thetas, task.solver)
        if res.factorization is not None:
            block = (res.factorization, res.rows, res.X, res.Y)
    WX, WY = np.empty((n, k)), np.empty((m, k))
    if block is not None:
        fact, rows, X, Y = block
        for s in range(0, k, BLOCK_COLUMNS):
            cols = idx[s: s + BLOCK_COLUMNS]
            WX[:, s: s + cols.shape[0]], WY[:, s: s + cols.shape[0]] = block_multipliers(
                problem, fact, rows, GX[:, cols], GY[:, cols])
        return idx, X[:, idx], Y[:, idx], WX, WY
    X, Y = np.empty((n, k)), np.empty((m, k))
    for c, i in enumerate(idx):
        point = _point(engine, task, int(i), points)
        X[:, c], Y[:, c] = point.x, point.y
        WX[:, c], WY[:, c] = adjoint_multipliers(point, GX[:, i], GY[:, i])
    return idx, X, Y, WX, WY


def tangent_columns(engine: Engine, task: ChunkTask,
                    points: Sequence[Point | None] | None = None
                    ) -> tuple[FloatArray, FloatArray]:
    """Forward mode for each scenario of a chunk along ``task.dtheta``: (dX, dY)
    as columns, NaN where not ok; ``points`` as for :func:`adjoint_columns`."""
    problem = engine.problem
    assert task.ok is not None and task.dtheta is not None
    DX = np.full((problem.n, task.size), np.nan)
    DY = np.full((problem.layout.rows, task.size), np.nan)
    for i in np.flatnonzero(task.ok):
        point = _point(engine, task, int(i), points)
        DX[:, i], DY[:, i] = tangent(point, task.dtheta)
    return DX, DY


def run_task(engine: Engine, task: ChunkTask,
             block: tuple[Factorization, IntArray, FloatArray, FloatArray] | None = None, *,
             keep: bool = False, points: Sequence[Point | None] | None = None
             ) -> tuple[ChunkResult, Factorization | None]:
    """Run a chunk with ``engine``; also returns a solve's shared factorization.

    ``keep``: a solve keeps its scenarios' points in the result (in this
    process only); ``points``: a derivative uses them instead of solving again.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    before = engine.factorizations
    if task.kind == "solve":
        res = _solve_columns(engine, task.thetas, task.solver, keep)
        out = ChunkResult(task.start, (res.X, res.Y, res.values, res.accuracy, res.active),
                          res.status, {task.start + i: msg for i, msg in res.errors.items()},
                          res.factorizations, res.warm_starts, time.perf_counter() - t0,
                          time.process_time() - c0, res.points)
        return out, res.factorization
    arrays: tuple[np.ndarray[Any, Any], ...]
    if task.kind == "backward":
        arrays = (adjoint_columns(engine, task, block, points),)
    else:
        arrays = tangent_columns(engine, task, points)
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
    return run_task(engine, task)[0]
