"""Scenario sweeps at scale: a local Dask cluster, and the cost model of a sweep.

``model.solve_batch(..., executor=...)`` runs scenarios on any
``concurrent.futures`` executor (a ``ProcessPoolExecutor``, or a Dask
client's ``client.get_executor()``); the mechanics are in
:mod:`diffmodel.runner` (:class:`~diffmodel.runner.Runner`): the compiled
problem goes to each worker once, scenarios go in chunks sized by a pilot
run so that each computes for about :data:`~diffmodel.runner.TASK_SECONDS`,
and results come back in scenario order. This module adds what sits on top:

- :func:`local_cluster`: a Dask ``LocalCluster`` on this machine (worker
  processes, loopback only, no dashboard, bounded start and stop), as an
  executor;
- :func:`measure` and :class:`CostModel`: the cost of a scenario, the
  overhead of a chunk (serialization, transfer, scheduling) and the
  throughput they predict on N workers (see docs/scaling.md).

Dask is optional (``pip install "diffmodel[dask]"``); nothing here imports it
until :func:`local_cluster` is called.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import pickle
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

from .chunks import ChunkTask, problem_bytes
from .errors import ModelError
from .model import Model
from .runner import TASK_SECONDS, Runner

__all__ = ["local_cluster", "measure", "CostModel", "DASK_HINT"]

#: How to install the optional Dask dependency.
DASK_HINT = 'pip install "diffmodel[dask]"'


def _distributed() -> ModuleType:
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ImportError(f"a Dask cluster needs dask.distributed, which is not installed: "
                          f"{DASK_HINT}") from exc


#: Scheduler options of :func:`local_cluster`: no dashboard, and the
#: scheduler's small HTTP server (health, metrics), which Dask starts even
#: without a dashboard, on a free loopback port rather than the fixed 8787 (taken
#: by any other cluster on the machine: Dask then warns and moves).
NO_DASHBOARD = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}


@contextlib.contextmanager
def local_cluster(workers: int = 2, *, threads_per_worker: int = 1,
                  timeout: float = 60.0) -> Iterator[Executor]:
    """A Dask ``LocalCluster`` of worker processes on this machine, as an executor.

    Parameters
    ----------
    workers : int, default 2
        Worker processes.
    threads_per_worker : int, default 1
        Threads per worker (scenarios are CPU-bound: one per core is best).
    timeout : float, default 60
        Seconds allowed for the workers to start, and for the cluster to close.

    Yields
    ------
    concurrent.futures.Executor
        ``client.get_executor()`` of a client connected to the cluster; pass
        it to :meth:`Model.solve_batch`. The cluster listens on 127.0.0.1
        only, has no dashboard, and is closed when the block exits.

    Raises
    ------
    ImportError
        If dask.distributed is missing (``pip install "diffmodel[dask]"``).

    Examples
    --------
    With the ``dask`` extra installed::

        from diffmodel.parallel import local_cluster

        with local_cluster(2) as executor:
            batch = model.solve_batch(b=B, executor=executor)
            grads = batch.backward({"x": G})   # on the same workers
    """
    distributed = _distributed()
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
        host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
        death_timeout=timeout, scheduler_kwargs=NO_DASHBOARD)
    try:
        client = distributed.Client(cluster, timeout=f"{timeout}s")
        try:
            client.wait_for_workers(workers, timeout=timeout)
            yield client.get_executor()
        finally:
            client.close(timeout=timeout)
    finally:
        cluster.close(timeout=timeout)


@dataclass(frozen=True)
class CostModel:
    """What a scenario sweep costs on an executor, and the throughput it predicts.

    A chunk of k scenarios on a worker takes k·(per_scenario + per_scenario_transfer)
    + per_chunk seconds; with W workers busy, the sweep runs at

        throughput(W, k) = W · k / (k · (per_scenario + per_scenario_transfer) + per_chunk)

    scenarios per second, and spends the fraction per_chunk / (k · per_scenario)
    of its compute on overhead.

    Attributes
    ----------
    per_scenario : float
        CPU seconds to solve one scenario and take its gradient (a solve and
        a backward task) in a worker.
    per_chunk : float
        Seconds per chunk beyond its compute, for a solve and a backward
        task together: serializing the task and its result, sending them,
        scheduling (measured on round trips of 1-scenario chunks, medians).
    per_scenario_transfer : float
        Seconds a scenario adds to a chunk's round trip beyond its compute
        (its parameters out, its solution and gradient back).
    bytes_per_scenario : int
        Bytes a scenario adds to a chunk's messages (both tasks, both ways).
    problem_bytes : int
        Size of the compiled problem, sent once to each worker.
    workers : int
        Worker slots of the executor measured.
    executor : str
        Its name (``"dask"``, ``"ProcessPoolExecutor"``, ...).
    """

    per_scenario: float
    per_chunk: float
    per_scenario_transfer: float
    bytes_per_scenario: int
    problem_bytes: int
    workers: int
    executor: str

    def chunk_size(self, task_seconds: float = TASK_SECONDS) -> int:
        """Scenarios per chunk so that a chunk computes for ``task_seconds`` (the rule
        ``solve_batch`` applies)."""
        return max(1, math.ceil(task_seconds / self.per_scenario))

    def overhead(self, chunk: int | None = None) -> float:
        """Overhead of a chunk as a fraction of its compute."""
        k = self.chunk_size() if chunk is None else chunk
        return (self.per_chunk + k * self.per_scenario_transfer) / (k * self.per_scenario)

    def throughput(self, workers: int | None = None, chunk: int | None = None) -> float:
        """Predicted scenarios per second (solve and gradient) on ``workers`` busy
        worker slots (default: the executor's), chunks of ``chunk`` (default: the rule)."""
        w = self.workers if workers is None else workers
        k = self.chunk_size() if chunk is None else chunk
        return w * k / (k * (self.per_scenario + self.per_scenario_transfer) + self.per_chunk)


def measure(model: Model, executor: Executor, repeats: int = 15,
            **values: ArrayLike) -> CostModel:
    """Measure the cost model of a sweep of ``model`` (solve and gradient) on ``executor``.

    Parameters
    ----------
    model : Model
    executor : concurrent.futures.Executor
        A process pool or a Dask client's executor. It is warmed up first:
        the sample is solved on it once (workers start, import diffmodel
        and receive the problem).
    repeats : int, default 15
        Round trips timed per probe (medians are kept).
    **values : array_like
        A batch of parameter values, as for :meth:`Model.solve_batch`: a
        sample of the scenarios (a few hundred is plenty).

    Returns
    -------
    CostModel

    Raises
    ------
    ModelError
        For bad values (as :meth:`Model.solve_batch`) or ``repeats`` < 1.

    Notes
    -----
    Probes are single tasks, one at a time (nothing overlaps): a solve and
    a backward task (of ℓ = Σx, whose gradient every scenario shares) of 1
    and of k scenarios (k from the chunk-size rule, at most the sample). The cost of a scenario is the k-scenario probes'
    CPU time in the worker over k (CPU time does not depend on other jobs
    sharing the cores). A probe's overhead is its round trip (submission to
    result) minus the worker's compute time; the overheads are fitted as
    per_chunk + k · per_scenario_transfer.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ModelError(f"measure(): repeats must be a positive integer, got {repeats!r}")
    batch = model.solve_batch(solver=None, executor=None, chunk_size=None, on_error="raise",
                              progress=False, **values)
    size = batch.batch_size
    if size < 2:
        raise ModelError("measure(): pass a sample of at least 2 scenarios")
    warm = model.solve_batch(solver=None, executor=executor, chunk_size=max(1, size // 4),
                             on_error="raise", progress=False, **values)
    warm.backward({name: np.ones(arr.shape[1:]) for name, arr in warm.primal.items()})
    result, engine, _ = batch._parts()
    runner = Runner(engine, executor)
    run = batch.execution
    per = run.per_scenario if run is not None and run.per_scenario > 0 else 1e-3
    k = int(min(size, max(2, math.ceil(TASK_SECONDS / (2 * per)))))
    n, rows = engine.problem.n, engine.problem.layout.rows
    probes = {}
    for kind in ("solve", "backward"):
        for count in (1, k):
            cols = slice(0, count)
            task = (ChunkTask("solve", 0, result.thetas[:, cols], batch.solver) if kind == "solve"
                    else ChunkTask("backward", 0, result.thetas[:, cols], batch.solver,
                                   np.ones(count, dtype=bool), np.ones((n, 1)),
                                   np.zeros((rows, 1)), active=result.active[:, cols]))
            probes[kind, count] = _round_trip(runner, task, repeats)
    overhead = {c: probes["solve", c][0] + probes["backward", c][0] for c in (1, k)}
    slope = max(0.0, (overhead[k] - overhead[1]) / (k - 1))
    grow = sum(probes[kind, k][2] - probes[kind, 1][2] for kind in ("solve", "backward"))
    return CostModel(
        per_scenario=(probes["solve", k][1] + probes["backward", k][1]) / k,
        per_chunk=max(0.0, overhead[1] - slope), per_scenario_transfer=slope,
        bytes_per_scenario=int(grow // (k - 1)),
        problem_bytes=len(problem_bytes(engine.problem)[1]), workers=runner.workers,
        executor=runner.name)


def _round_trip(runner: Runner, task: ChunkTask, repeats: int) -> tuple[float, float, int]:
    """Medians of a task's round trip beyond its compute (seconds) and of the CPU time
    of its compute, and the bytes of the task and its result."""
    shipment = runner.ship()
    overheads: list[float] = []
    computes: list[float] = []
    size = 0
    while len(overheads) < repeats:
        t0 = time.perf_counter()
        part = runner.submit(task, shipment, False).result()
        elapsed = time.perf_counter() - t0
        if part is None:  # a worker that had not received the problem yet: send it
            runner.submit(task, shipment, True).result()
            continue
        overheads.append(elapsed - part.seconds)
        computes.append(part.cpu)
        size = len(pickle.dumps(task)) + len(pickle.dumps(part))
    return statistics.median(overheads), statistics.median(computes), size
