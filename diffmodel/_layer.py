"""The framework-free half of the layers: :class:`NumpyLayer`.

Batch axes (one leading axis shared by the batched inputs, the others
broadcast), chunks over threads, output selection, the reduction of gradients
of broadcast inputs, and BLAS thread limits while solving. :mod:`diffmodel.torch`
and :mod:`diffmodel.jax` wrap it; it imports neither framework.
"""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._typing import FloatArray
from ._validation import check_array
from .errors import ModelError, SolverError
from .model import Model
from .solution import BatchSolution, Solution

__all__ = ["Call", "NumpyLayer", "Solved", "require"]

#: The prefix of a batch item's SolverError (diffmodel.engine, diffmodel.runner).
_SCENARIO = re.compile(r"scenario (\d+): ")



def require(module: str, extra: str) -> Any:
    """Import an optional framework, or raise ImportError naming the extra.

    Parameters
    ----------
    module : str
        ``"torch"`` or ``"jax"``.
    extra : str
        The install command to suggest, e.g. ``pip install "diffmodel[torch]"``.

    Raises
    ------
    ImportError
        If ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"diffmodel.{module} needs {module}, which is not installed: "
                          f"{extra}") from exc


# --------------------------------------------------------------------------
# The framework-free half of the layers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """How one layer call maps onto :meth:`Model.solve_batch`.

    Attributes
    ----------
    names : tuple of str
        The parameters given, in the order of the arrays passed along.
    batched : tuple of bool
        Per given parameter: whether it carries the leading batch axis.
    size : int or None
        The batch size, or None for an unbatched call (no batch axis in or out).
    """

    names: tuple[str, ...]
    batched: tuple[bool, ...]
    size: int | None


@dataclass(frozen=True, eq=False)
class Solved:
    """The outputs of one call, with the batch solutions that differentiate them.

    ``outputs`` are arrays by output name, shape (B, *shape), or (*shape) for an
    unbatched call; ``chunks`` are ((start, stop), BatchSolution) pairs covering
    the batch (one chunk unless ``n_jobs`` > 1); an unbatched call with inputs
    has its :class:`Solution` in ``single`` instead (no batch machinery).
    """

    call: Call
    outputs: dict[str, FloatArray]
    chunks: tuple[tuple[tuple[int, int], BatchSolution], ...]
    single: Solution | None = None


class _BlasLimit:
    """Limit the BLAS libraries' threads while layer calls run, process-wide.

    Small dense factorizations (diffmodel's KKT matrices up to a few thousand
    rows) gain little from BLAS threads and lose much when the cores are busy
    or when ``n_jobs`` threads each start BLAS threads of their own (measured
    in docs/layers.md). The limit is counted: the first call to enter sets it,
    the last to leave restores the libraries' own settings. Needs threadpoolctl
    (a dependency of the torch and jax extras); without it, nothing is limited.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[int] = []
        self._libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self._libs is None:
            try:
                from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
            except ImportError:
                self._libs = []
            else:
                self._libs = list(ThreadpoolController().select(user_api="blas")
                                  .lib_controllers)
        return self._libs

    @contextmanager
    def __call__(self, threads: int | None) -> Iterator[None]:
        libs = self._controllers() if threads is not None else []
        if not libs:
            yield
            return
        with self._lock:
            if self._users == 0:
                self._saved = [lib.get_num_threads() for lib in libs]
                for lib in libs:
                    lib.set_num_threads(threads)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for lib, count in zip(libs, self._saved):
                        lib.set_num_threads(count)


_BLAS_LIMIT = _BlasLimit()


class NumpyLayer:
    """The NumPy side of :class:`Layer` and :func:`diffmodel.jax.layer`.

    Parameters
    ----------
    model : Model
        The model to solve.
    outputs : str or sequence of str, optional
        Names of variables, and of constraints for their duals, to return
        (default: every variable).
    n_jobs : int, default 1
        Threads over which a batch is split in chunks (see docs/layers.md for
        when this helps).
    blas_threads : int or None, default 1
        Threads of the BLAS libraries while a call solves or differentiates
        (process-wide, restored afterwards; needs threadpoolctl). None leaves
        them as they are.

    Raises
    ------
    ModelError
        If ``model`` is not a :class:`Model`, an output name is unknown, or
        ``n_jobs`` or ``blas_threads`` is not a positive integer.
    """

    def __init__(self, model: Model, outputs: str | Sequence[str] | None = None,
                 n_jobs: int = 1, blas_threads: int | None = 1) -> None:
        if not isinstance(model, Model):
            raise ModelError(f"a layer needs a diffmodel.Model, got {type(model).__name__}")
        for label, value in (("n_jobs", n_jobs), ("blas_threads", blas_threads)):
            if value is None and label == "blas_threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{label} must be a positive integer, got {value!r}")
        layout = model.compiled.layout
        if outputs is None:
            outputs = tuple(layout.variables)
        elif isinstance(outputs, str):
            outputs = (outputs,)
        outputs = tuple(outputs)
        known = [*layout.variables, *layout.constraints]
        for name in outputs:
            if name not in known:
                raise ModelError(f"output {name!r} is neither a variable nor a constraint of "
                                 f"the model (known: {', '.join(map(repr, known))})")
        if not outputs:
            raise ModelError("outputs is empty: name at least one variable or constraint")
        self.model = model
        self.outputs: tuple[str, ...] = outputs
        self.n_jobs = n_jobs
        self.blas_threads = blas_threads
        self.parameter_shapes = {name: block.shape for name, block in
                                 layout.parameters.items()}
        self.output_shapes = {name: (layout.variables[name] if name in layout.variables
                                     else layout.constraints[name]).shape for name in outputs}
        self._primal = frozenset(layout.variables)

    def __repr__(self) -> str:
        return (f"NumpyLayer(outputs={list(self.outputs)}, n_jobs={self.n_jobs}, "
                f"blas_threads={self.blas_threads})")

    # ------------------------------------------------------------------ plan

    def plan(self, shapes: Mapping[str, tuple[int, ...]]) -> Call:
        """The batch structure of a call from the shapes of its inputs.

        A value of shape (B, *parameter.shape) is batched; any other shape is
        the parameter's own (the model validates it). Unknown names are left
        to the model, which names them.

        Raises
        ------
        ModelError
            If batched parameters disagree on B.
        """
        names = tuple(shapes)
        batched = tuple(self._is_batched(name, shapes[name]) for name in names)
        sizes = {name: shapes[name][0] for name, b in zip(names, batched) if b}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"'{name}' has {size}" for name, size in sizes.items())
            raise ModelError(
                f"batched parameters must share one leading batch axis, but {listed}; give "
                "every batched parameter the same batch size (unbatched ones are broadcast)")
        size = next(iter(sizes.values()), None)
        return Call(names, batched, size)

    def _is_batched(self, name: str, shape: tuple[int, ...]) -> bool:
        own = self.parameter_shapes.get(name)
        return own is not None and len(shape) == len(own) + 1 and tuple(shape[1:]) == own

    # ----------------------------------------------------------------- solve

    def solve(self, call: Call, arrays: Sequence[FloatArray]) -> Solved:
        """Solve for the arrays of a call (float64, in the order of ``call.names``).

        Raises
        ------
        ModelError, SolverError
            From :meth:`Model.solve_batch`, which validates every value.
        """
        values = dict(zip(call.names, arrays))
        if call.size is None and values:  # one item: a plain solve, nothing batched
            with _BLAS_LIMIT(self.blas_threads):
                sol = self.model._solve_detached(values, "layer()")
            return Solved(call, {name: np.array((sol.primal if name in self._primal
                                                 else sol.dual)[name])
                                 for name in self.outputs}, (), sol)
        if call.size is None:  # a batch of one, every value with a new leading axis
            values = self._one_item(values)
            sliced, size = set(values), 1
        else:
            sliced = {name for name, b in zip(call.names, call.batched) if b}
            size = call.size
        chunks = self._chunks(size)

        def run(bounds: tuple[int, int]) -> BatchSolution:
            start, stop = bounds
            part: dict[str, Any] = {name: value[start:stop] if name in sliced else value
                    for name, value in values.items()}
            try:
                return self.model.solve_batch(**part)
            except SolverError as exc:  # name the item as the caller numbers it
                raise _renumbered(exc, start, call.size is None) from None

        try:
            batches = self._map(run, chunks)
        except ModelError:
            if len(chunks) == 1:
                raise
            # A bad value in a chunk: validate the whole batch, whose message names
            # the item by its index in the batch (validation precedes any solve).
            self.model.solve_batch(**dict[str, Any](values))
            raise
        outputs: dict[str, FloatArray] = {}
        for name in self.outputs:
            parts = [(b.primal if name in self._primal else b.dual)[name] for b in batches]
            out = parts[0] if len(parts) == 1 else np.concatenate(parts)
            outputs[name] = out[0] if call.size is None else out
        return Solved(call, outputs, tuple(zip(chunks, batches)))

    def _one_item(self, values: dict[str, FloatArray]) -> dict[str, FloatArray]:
        """Values of an unbatched call as a batch of one (validated shapes, new axis)."""
        if not values:  # a call without inputs: batch the current value of a parameter
            for name, param in self.model.parameters.items():
                if param.value is not None:
                    values = {name: np.asarray(param.value, dtype=np.float64)}
                    break
            else:
                raise ModelError("the model's parameters have no values: pass them by "
                                 "name, e.g. layer(q=...)")
        out = {}
        for name, value in values.items():
            shape = self.parameter_shapes.get(name)
            out[name] = (value if shape is None
                         else check_array(value, shape, f"parameter '{name}'")[None])
        return out

    def _chunks(self, size: int) -> list[tuple[int, int]]:
        if size == 0:  # the model says what is wrong with an empty batch
            return [(0, 0)]
        parts = max(1, min(self.n_jobs, size))
        step = math.ceil(size / parts)
        return [(start, min(start + step, size)) for start in range(0, size, step)]

    def _map(self, fn: Any, items: list[Any]) -> list[Any]:
        with _BLAS_LIMIT(self.blas_threads):
            if len(items) == 1:
                return [fn(items[0])]
            with ThreadPoolExecutor(max_workers=len(items)) as pool:
                return list(pool.map(fn, items))

    # -------------------------------------------------------------- backward

    def backward(self, solved: Solved, grads: Mapping[str, FloatArray | None],
                 wanted: Sequence[bool], per_item: bool = False) -> list[FloatArray | None]:
        """Gradients of the inputs of a call from the gradients of its outputs.

        Parameters
        ----------
        solved : Solved
            The result of :meth:`solve`.
        grads : dict of str to ndarray or None
            ∂ℓ/∂output by output name, shaped like the output (None: zero).
        wanted : sequence of bool
            Per given input (in the order of ``call.names``): whether its
            gradient is needed.
        per_item : bool, default False
            Return every item's gradient, shape (B, *parameter.shape) (B = 1
            for an unbatched call), also for broadcast inputs.

        Returns
        -------
        list of ndarray or None
            dℓ/dθ per given input, shaped like that input (summed over the
            batch for a broadcast input), or None where not wanted.
        """
        call = solved.call
        if not any(wanted):
            return [None] * len(call.names)
        given = {k: v for k, v in grads.items() if v is not None}
        if solved.single is not None:
            with _BLAS_LIMIT(self.blas_threads):
                found = solved.single.backward(
                    {k: v for k, v in given.items() if k in self._primal},
                    {k: v for k, v in given.items() if k not in self._primal})
            return [None if not want else found[name][None] if per_item else found[name]
                    for name, want in zip(call.names, wanted)]
        if call.size is None:
            given = {k: v[None] for k, v in given.items()}
        # Each item's gradient for batched inputs; for broadcast ones only the sum
        # over the items is formed (never one gradient per item of shared data).
        summing = call.size is not None and not per_item
        items = [k for k, b, w in zip(call.names, call.batched, wanted) if w and (b or not summing)]
        sums = [k for k, b, w in zip(call.names, call.batched, wanted) if w and not b and summing]

        def run(chunk: tuple[tuple[int, int], BatchSolution]) -> dict[str, FloatArray]:
            (start, stop), batch = chunk
            primal = {k: v[start:stop] for k, v in given.items() if k in self._primal}
            dual = {k: v[start:stop] for k, v in given.items() if k not in self._primal}
            return batch._backward_reduced(primal, dual, items, sums)

        parts = self._map(run, list(solved.chunks))
        result: list[FloatArray | None] = []
        for name, want in zip(call.names, wanted):
            if not want:
                result.append(None)
                continue
            pieces = [p[name] for p in parts]
            if name in sums:
                grad = pieces[0] if len(pieces) == 1 else np.sum(pieces, axis=0)
            else:
                grad = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
                if call.size is None and not per_item:
                    grad = grad[0]
            result.append(grad)
        return result


def _renumbered(exc: SolverError, start: int, single: bool) -> SolverError:
    """``exc`` with its item index counted from the start of the whole batch (or
    without an index for an unbatched call)."""
    found = _SCENARIO.match(str(exc))
    if found is None:
        return exc
    rest = str(exc)[found.end():]
    text = rest if single else f"scenario {int(found.group(1)) + start}: {rest}"
    return SolverError(text, exc.status)
