"""How batches run: chunks of scenarios, in this process or on an executor.

A :class:`Runner` solves and differentiates a batch of scenarios (columns of
θ̃) of one :class:`~diffmodel.engine.Engine`'s compiled problem: in this
process, or as tasks of a ``concurrent.futures`` executor (a process pool, a
Dask client's executor). The compiled problem goes to each worker once; the
chunks are sized from a pilot run; the results come back in scenario order
and equal the in-process ones.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from ._typing import BoolArray, FloatArray, IntArray
from .chunks import (
    _SHIP_LOCK,
    ChunkResult,
    ChunkTask,
    adjoint_columns,
    adjoint_reduced,
    problem_bytes,
    run_chunk,
    run_task,
)
from .engine import BatchResult, Engine, _shares_k
from .errors import ModelError, SolverError
from .linalg import Factorization
from .linalg.factor import same_columns
from .point import Point

__all__ = ["Runner", "Execution", "ProgressBar", "TASK_SECONDS", "TASK_BYTES",
           "PILOT_SECONDS", "PILOT_SCENARIOS", "KEEP_BYTES"]


#: A chunk computes for at least about this many seconds, so that shipping
#: and scheduling it stay a small part of its cost (a few ms per task on Dask).
TASK_SECONDS = 0.1
#: The pilot (chunks of 1, 2, 4, ... scenarios solved in this process) stops
#: once it has taken this many seconds or solved :data:`PILOT_SCENARIOS`.
PILOT_SECONDS = 0.02
PILOT_SCENARIOS = 64
#: A chunk carries at most about this many bytes of data (the parameters that
#: vary, and its solutions or loss gradients): Dask warns about task graphs over
#: 10 MB, and large messages stall the scheduler.
TASK_BYTES = 4 * 2**20
#: A batch solved in this process keeps its scenarios' points (solutions with
#: their factorizations) while they fit in about this many bytes (a point's
#: size measured on the first one kept, :attr:`~diffmodel.point.Point.nbytes`):
#: their derivatives then solve nothing again. The scenarios beyond are solved
#: again for their derivatives, one by one.
KEEP_BYTES = 256 * 2**20

# What each executor was sent: digest -> the Dask future of the scattered
# bytes, or None for executors whose workers cache the bytes they receive.
_SENT: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


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


class _KeepBudget:
    """The bytes left for the points a batch keeps in this process. A point's
    size is measured on the first one kept (:attr:`Point.nbytes`) and taken
    for the others: points of one batch share their structure."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.each: int | None = None

    @property
    def open(self) -> bool:
        """Whether points may still be kept."""
        return self.left > 0 and (self.each is None or self.left >= self.each)

    def charge(self, points: list[Point | None] | None) -> None:
        """Count a chunk's kept points; drop those beyond the budget (in place)."""
        if points is None:
            return
        for i, point in enumerate(points):
            if point is None:
                continue
            if self.each is None:
                self.each = max(point.nbytes, 1)
            if self.left < self.each:
                points[i] = None  # (not kept: solved again for its derivatives)
            else:
                self.left -= self.each


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

    def scenario_bytes(self, thetas: FloatArray) -> int:
        """Bytes of data a scenario adds to a chunk (about, at most: the entries
        of θ̃ that vary in the batch, and its solution or loss gradients), judged
        from the first columns (chunks send repeated rows once, see
        :func:`~diffmodel.chunks.compact`)."""
        layout = self.engine.problem.layout
        sample = thetas[:, :PILOT_SCENARIOS]
        varying = int(np.count_nonzero((sample != sample[:, :1]).any(axis=1)
                                       | (thetas[:, -1] != thetas[:, 0])))
        return 8 * (varying + layout.n + layout.rows)

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
        keep = self.executor is None and KEEP_BYTES > 0
        budget = _KeepBudget(KEEP_BYTES if keep else 0)
        parts: list[ChunkResult] = []
        fact: Factorization | None = None
        t0 = time.perf_counter()
        try:
            done, per = 0, math.nan
            if chunk_size is None:
                done, per, fact = self._pilot(thetas, solver, on_error, parts, bar, budget)
                chunk = max(1, math.ceil(TASK_SECONDS / per)) if per > 0 else size
                chunk = min(chunk, max(1, TASK_BYTES // self.scenario_bytes(thetas)))
            else:
                chunk = chunk_size
            chunk = min(chunk, size)
            shipped = self.shipped
            tasks = [ChunkTask("solve", s, thetas[:, s: s + chunk], solver)
                     for s in range(done, size, chunk)]
            results, shared = self._map(tasks, bar, on_error == "raise", budget)
            parts.extend(results)
            fact = shared if fact is None else fact
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        result = self._assemble(thetas, solver, parts, fact, keep)
        if on_error == "raise" and result.errors:
            first = min(result.errors)
            raise SolverError(f"scenario {first}: {result.errors[first]}", result.status[first])
        execution = Execution(
            executor=self.name, workers=self.workers, chunk_size=chunk, chunks=len(tasks),
            pilot=done, per_scenario=per, compute=sum(p.seconds for p in parts), wall=wall,
            shipped=self.shipped - shipped)
        return result, execution

    def _pilot(self, thetas: FloatArray, solver: str, on_error: str,
               parts: list[ChunkResult], bar: ProgressBar, budget: _KeepBudget
               ) -> tuple[int, float, Factorization | None]:
        """Chunks of 1, 2, 4, ... scenarios in this process; returns the scenarios
        done, the seconds per scenario of the last chunk, and a shared factorization."""
        size, done, step, spent = thetas.shape[1], 0, 1, 0.0
        per, fact = math.nan, None
        while done < size:
            k = min(step, size - done)
            part, shared = run_task(self.engine, ChunkTask("solve", done,
                                                           thetas[:, done: done + k], solver),
                                    keep=budget.open)
            budget.charge(part.points)
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
                  fact: Factorization | None, keep: bool) -> BatchResult:
        problem = self.engine.problem
        size = thetas.shape[1]
        X, Y = np.full((problem.n, size), np.nan), np.full((problem.layout.rows, size), np.nan)
        values, accuracy = np.full(size, np.nan), np.full(size, np.nan)
        active = np.zeros((problem.m_ineq, size), dtype=bool)
        status = ["not run"] * size
        errors: dict[int, str] = {}
        points: list[Point | None] | None = [None] * size if keep else None
        for part in sorted(parts, key=lambda p: p.start):
            cols = slice(part.start, part.start + len(part.status))
            X[:, cols], Y[:, cols], values[cols], accuracy[cols], active[:, cols] = part.arrays
            status[cols] = part.status
            errors.update(part.errors)
            if points is not None and part.points is not None:
                points[cols] = part.points
        shared = problem.m_ineq == 0 and _shares_k(problem, thetas, solver)
        return BatchResult(
            thetas=thetas, X=X, Y=Y, values=values, accuracy=accuracy, status=status,
            errors=errors, rows=np.arange(problem.m_eq, dtype=np.int64),
            factorization=fact if shared and self.executor is None else None,
            factorizations=sum(p.factorizations for p in parts), active=active,
            warm_starts=sum(p.warm_starts for p in parts),
            points=points if points is not None and any(p is not None for p in points)
            else None)

    # ------------------------------------------------------- derivatives

    def backward(self, result: BatchResult, solver: str, ok: BoolArray, GX: FloatArray,
                 GY: FloatArray, chunk: int) -> FloatArray:
        """dℓ_i/dθ̃ for every scenario (columns; NaN where not ``ok``), chunk by chunk."""
        thetas, size = result.thetas, result.thetas.shape[1]
        if self.executor is not None and same_columns(GX) and same_columns(GY):
            GX, GY = GX[:, :1], GY[:, :1]  # one gradient for all: sent as one column

        def columns(G: FloatArray, s: int) -> FloatArray:
            return G if G.shape[1] == 1 else G[:, s: s + chunk]

        tasks = [ChunkTask("backward", s, thetas[:, s: s + chunk], solver, ok[s: s + chunk],
                           columns(GX, s), columns(GY, s), active=result.active[:, s: s + chunk])
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
            for part in self._map(tasks, bar, True, points=result.points)[0]:
                out[:, part.start: part.start + part.arrays[0].shape[1]] = part.arrays[0]
        finally:
            bar.close()
        return out

    def backward_reduced(self, result: BatchResult, solver: str, ok: BoolArray,
                         GX: FloatArray, GY: FloatArray, chunk: int, keep: IntArray,
                         total: IntArray) -> tuple[FloatArray, FloatArray]:
        """:meth:`backward` reduced to what a caller uses: the entries ``keep`` of
        every scenario's dℓ_i/dθ̃ (rows; NaN where not ``ok``) and the entries
        ``total`` of their sum over the batch (NaN if a scenario is not ok).

        In this process the other entries are never formed, nor the columns of
        the sum (see :func:`~diffmodel.diff.pullback_sum`); on an executor the
        full columns come back and are reduced here.
        """
        if self.executor is not None:
            out = self.backward(result, solver, ok, GX, GY, chunk)
            return out[keep], out[total].sum(axis=1)
        size = result.thetas.shape[1]
        per_item, summed = np.empty((keep.shape[0], size)), np.zeros(total.shape[0])
        shared = result.factorization
        bar = self._bar(size, "backward")
        try:
            for s in range(0, size, chunk):
                cols = slice(s, s + chunk)
                task = ChunkTask("backward", s, result.thetas[:, cols], solver, ok[cols],
                                 GX[:, cols], GY[:, cols], active=result.active[:, cols])
                block = (None if shared is None
                         else (shared, result.rows, result.X[:, cols], result.Y[:, cols]))
                points = None if result.points is None else result.points[cols]
                per_item[:, cols], part = adjoint_reduced(self.engine, task, keep, total,
                                                          block, points)
                summed += part
                bar.update(task.size)
        finally:
            bar.close()
        return per_item, summed

    def derivative(self, result: BatchResult, solver: str, ok: BoolArray, dtheta: FloatArray,
                   chunk: int) -> tuple[FloatArray, FloatArray]:
        """(dX, dY) for every scenario along one direction (NaN where not ``ok``)."""
        thetas, size = result.thetas, result.thetas.shape[1]
        problem = self.engine.problem
        tasks = [ChunkTask("derivative", s, thetas[:, s: s + chunk], solver, ok[s: s + chunk],
                           dtheta=dtheta, active=result.active[:, s: s + chunk])
                 for s in range(0, size, chunk)]
        DX, DY = np.empty((problem.n, size)), np.empty((problem.layout.rows, size))
        bar = self._bar(size, "derivative")
        try:
            for part in self._map(tasks, bar, True, points=result.points)[0]:
                cols = slice(part.start, part.start + part.arrays[0].shape[1])
                DX[:, cols], DY[:, cols] = part.arrays
        finally:
            bar.close()
        return DX, DY

    # ---------------------------------------------------------- executing

    def _map(self, tasks: list[ChunkTask], bar: ProgressBar, stop_on_failure: bool,
             budget: _KeepBudget | None = None, points: list[Point | None] | None = None
             ) -> tuple[list[ChunkResult], Factorization | None]:
        """Run the tasks (here or on the executor); results in any order, and the
        shared factorization of in-process solves. With ``stop_on_failure``,
        chunks after a failing scenario are not run. In this process, solves
        keep their points within the ``budget``, and derivatives use ``points``
        (the batch's, by scenario) where given."""
        if self.executor is None:
            parts, fact = [], None
            for task in tasks:
                mine = (None if points is None else
                        points[task.start: task.start + task.size])
                keep = budget is not None and budget.open
                part, shared = run_task(self.engine, task, keep=keep, points=mine)
                if budget is not None:
                    budget.charge(part.points)
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
