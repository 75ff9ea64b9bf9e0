"""A PyTorch layer over a :class:`~diffmodel.Model`: tensors by parameter name in,
solution tensors by name out, exact gradients back.

``Layer(model)`` is a ``torch.nn.Module``. Calling it with keyword tensors by
parameter name (any subset; the others keep ``Parameter.value``) solves the
QP and returns a dict of tensors by variable name (and, when asked for, by
constraint name for duals). Gradients flow to every input that requires them
through diffmodel's reverse mode (:meth:`~diffmodel.BatchSolution.backward`),
which is exact to working precision. One leading batch axis is supported,
``torch.func.vmap`` over a layer equals the batched call, and float32 inputs
give float32 outputs (solved in float64). See docs/layers.md.

This module imports PyTorch on first use of :class:`Layer`, not when it is
imported, so that ``import diffmodel.torch`` works (and its doctests are
collected) without PyTorch. Without PyTorch, using ``Layer`` raises an
ImportError that names the extra: ``pip install "diffmodel[torch]"``.

The framework-free half of both layers, :class:`NumpyLayer` (batch axes,
chunks over threads, output selection, the reduction of gradients of
broadcast inputs), lives here too; :mod:`diffmodel.jax` uses it.
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
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ._typing import FloatArray
from ._validation import check_array
from .errors import DerivativeError, ModelError, SolverError
from .model import Model
from .solution import BatchSolution

if TYPE_CHECKING:
    import torch as _torch

__all__ = ["Layer"]  # noqa: F822 - defined on first use, by __getattr__ below

#: The prefix of a batch item's SolverError (diffmodel.engine).
_SCENARIO = re.compile(r"scenario (\d+): ")

#: The ``pip install`` argument that brings PyTorch for this module.
EXTRA = 'pip install "diffmodel[torch]"'


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
    the batch (one chunk unless ``n_jobs`` > 1).
    """

    call: Call
    outputs: dict[str, FloatArray]
    chunks: tuple[tuple[tuple[int, int], BatchSolution], ...]


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
        if call.size is None:
            given = {k: v[None] for k, v in given.items()}

        def run(chunk: tuple[tuple[int, int], BatchSolution]) -> dict[str, FloatArray]:
            (start, stop), batch = chunk
            primal = {k: v[start:stop] for k, v in given.items() if k in self._primal}
            dual = {k: v[start:stop] for k, v in given.items() if k not in self._primal}
            return batch.backward(primal, dual)

        parts = self._map(run, list(solved.chunks))
        result: list[FloatArray | None] = []
        for name, batched, want in zip(call.names, call.batched, wanted):
            if not want:
                result.append(None)
                continue
            pieces = [p[name] for p in parts]
            grad = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            if per_item:
                pass
            elif call.size is None:
                grad = grad[0]
            elif not batched:
                grad = grad.sum(axis=0)  # a broadcast input: the sum over the items
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


# --------------------------------------------------------------------------
# PyTorch, defined on first use
# --------------------------------------------------------------------------


def _define() -> SimpleNamespace:
    """Import torch and define the classes that need it."""
    torch: Any = require("torch", EXTRA)

    class _Carry:
        """Hands the solution from ``forward`` to ``setup_context``."""

        solved: Solved

    @dataclass(frozen=True)
    class _Meta:
        """A call's plan, with the device and dtype of its outputs."""

        call: Call
        device: Any
        dtype: Any

    class AdjointFunction(torch.autograd.Function):  # type: ignore[misc]
        """Output gradients → input gradients (reverse mode of :class:`SolveFunction`).

        A function of its own so that ``torch.func`` transforms see plain
        tensors, with a ``vmap`` rule (one adjoint pass per vmapped cotangent:
        ``torch.func.jacrev``). Not differentiable itself.
        """

        @staticmethod
        def forward(core: NumpyLayer, solved: Solved, wanted: tuple[bool, ...],
                    targets: tuple[tuple[Any, Any], ...],
                    *tensors: _torch.Tensor | None) -> tuple[_torch.Tensor, ...]:
            # tensors: the output gradients, then the layer's inputs (unused here: they
            # make the result depend on them, so that a double backward fails loudly)
            grads = tensors[:len(core.outputs)]
            arrays = {name: None if g is None else
                      g.detach().to(device="cpu", dtype=torch.float64).numpy()
                      for name, g in zip(core.outputs, grads)}
            found = [g for g in core.backward(solved, arrays, wanted) if g is not None]
            return tuple(torch.from_numpy(g).to(device, dtype)
                         for g, (device, dtype) in zip(found, targets))

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
            raise DerivativeError("a diffmodel layer has first derivatives only: its "
                                  "gradients are not differentiable (no double backward)")

        @staticmethod
        def vmap(info: Any, in_dims: tuple[int | None, ...], core: NumpyLayer, solved: Solved,
                 wanted: tuple[bool, ...], targets: tuple[tuple[Any, Any], ...],
                 *grads: _torch.Tensor | None) -> tuple[Any, Any]:
            count = len(core.outputs)
            slices = [AdjointFunction.apply(
                core, solved, wanted, targets,
                *(g if g is None or d is None else g.select(d, i)
                  for g, d in zip(grads[:count], in_dims[4:])), *grads[count:])
                for i in range(info.batch_size)]
            outs = tuple(torch.stack(parts) for parts in zip(*slices))
            return outs, (0,) * len(outs)

    class SolveFunction(torch.autograd.Function):  # type: ignore[misc]
        """θ (tensors by position) → solution tensors, with an exact backward and a
        ``vmap`` rule (a vmapped call is one batched call)."""

        @staticmethod
        def forward(core: NumpyLayer, meta: _Meta, carry: _Carry,
                    *tensors: _torch.Tensor) -> tuple[_torch.Tensor, ...]:
            arrays = [t.detach().to(device="cpu", dtype=torch.float64).numpy()
                      for t in tensors]
            solved = core.solve(meta.call, arrays)
            carry.solved = solved
            return tuple(torch.from_numpy(solved.outputs[name]).to(meta.device, meta.dtype)
                         for name in core.outputs)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            core, _, carry, *tensors = inputs
            ctx.core, ctx.solved = core, carry.solved
            ctx.inputs = [(t.device, t.dtype) for t in tensors]
            ctx.save_for_backward(*tensors)
            ctx.set_materialize_grads(False)

        @staticmethod
        def backward(ctx: Any, *grads: _torch.Tensor | None) -> tuple[Any, ...]:
            wanted = tuple(ctx.needs_input_grad[3:])
            targets = tuple(io for io, want in zip(ctx.inputs, wanted) if want)
            found = iter(AdjointFunction.apply(ctx.core, ctx.solved, wanted, targets, *grads,
                                               *ctx.saved_tensors) if targets else ())
            return (None, None, None, *(next(found) if want else None for want in wanted))

        @staticmethod
        def vmap(info: Any, in_dims: tuple[int | None, ...], core: NumpyLayer, meta: _Meta,
                 carry: _Carry, *tensors: _torch.Tensor) -> tuple[Any, Any]:
            # The vmapped axis (size V) becomes the layer's batch axis; in an already
            # batched call (size B) the two merge into one axis of V·B items.
            V, B = info.batch_size, meta.call.size
            moved = []
            for t, dim, batched in zip(tensors, in_dims[3:], meta.call.batched):
                if dim is None and not batched:
                    moved.append(t)
                    continue
                t = t.unsqueeze(0).expand(V, *t.shape) if dim is None else t.movedim(dim, 0)
                if B is not None:
                    if not batched:
                        t = t.unsqueeze(1).expand(V, B, *t.shape[1:])
                    t = t.reshape(V * B, *t.shape[2:])
                moved.append(t)
            flags = tuple(d is not None or b for d, b in zip(in_dims[3:], meta.call.batched))
            call = Call(meta.call.names, flags, V if B is None else V * B)
            outs = SolveFunction.apply(core, _Meta(call, meta.device, meta.dtype), _Carry(),
                                       *moved)
            if B is not None:
                outs = tuple(o.reshape(V, B, *o.shape[1:]) for o in outs)
            return tuple(outs), (0,) * len(outs)

    class Layer(torch.nn.Module):  # type: ignore[misc]
        """A differentiable QP as a ``torch.nn.Module``.

        Parameters
        ----------
        model : Model
            The model to solve; its compiled problem is shared, not copied.
        outputs : str or sequence of str, optional
            Names of the variables, and of constraints for their duals, to
            return (default: every variable).
        n_jobs : int, default 1
            Threads over which a batch is split in chunks (each chunk one
            ``model.solve_batch``); 1 solves on the calling thread. See
            docs/layers.md for when more helps.
        blas_threads : int or None, default 1
            Threads of the BLAS libraries while a call solves or
            differentiates (process-wide, restored afterwards; needs
            threadpoolctl, which the extra installs). None leaves them alone.

        Raises
        ------
        ModelError
            If ``model`` is not a :class:`Model`, an output name is unknown,
            or ``n_jobs`` or ``blas_threads`` is not a positive integer.

        Notes
        -----
        Call with keyword tensors (or array-likes) by parameter name:
        ``layer(A=tA, b=tb)``. Parameters not given use their current
        ``Parameter.value``, which a call never changes. A value of shape
        (B, *parameter.shape) is a batch; the others are shared by every
        item and their gradients are summed over the batch. The result is a
        dict of tensors by output name, shape (B, *shape) for a batched call.

        Inputs are solved in float64 on the CPU. Outputs take the dtype of
        the inputs (float32 in, float32 out; float64 without tensor inputs)
        and the device of the first input tensor; gradients take each
        input's own dtype and device. Gradients are those of
        :meth:`BatchSolution.backward`: exact, one adjoint solve per item
        with the item's own factorization; they are not themselves
        differentiable (no double backward). ``torch.func.vmap`` over a
        layer is one batched call.

        Errors: :class:`ModelError` for bad names, shapes or values, or
        batch sizes that differ; :class:`SolverError` if an item cannot be
        solved (the message names it); :class:`DerivativeError` in backward.

        Examples
        --------
        ::

            layer = Layer(model)                  # model: a dm.Model with parameter q
            q = torch.zeros(32, 5, requires_grad=True)
            out = layer(q=q)                      # {"x": tensor of shape (32, 5)}
            out["x"].sum().backward()             # q.grad: shape (32, 5)

        docs/layers.md has runnable examples.
        """

        def __init__(self, model: Model, outputs: str | Sequence[str] | None = None, *,
                     n_jobs: int = 1, blas_threads: int | None = 1) -> None:
            super().__init__()
            self.core = NumpyLayer(model, outputs, n_jobs, blas_threads)

        @property
        def model(self) -> Model:
            """The model this layer solves."""
            return self.core.model

        @property
        def outputs(self) -> tuple[str, ...]:
            """Names of the returned variables and constraint duals."""
            return self.core.outputs

        def forward(self, **values: _torch.Tensor | ArrayLike) -> dict[str, _torch.Tensor]:
            """Solve for parameter values by name; see the class docstring."""
            tensors = {name: v if isinstance(v, torch.Tensor) else
                       torch.as_tensor(v, dtype=torch.float64) for name, v in values.items()}
            call = self.core.plan({name: tuple(t.shape) for name, t in tensors.items()})
            floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
            dtype = torch.float64
            if floats:
                dtype = floats[0]
                for other in floats[1:]:
                    dtype = torch.promote_types(dtype, other)
            device = next((t.device for t in tensors.values()), torch.device("cpu"))
            outs = SolveFunction.apply(self.core, _Meta(call, device, dtype), _Carry(),
                                       *tensors.values())
            return dict(zip(self.core.outputs, outs))

        def extra_repr(self) -> str:
            core = self.core
            text = f"outputs={list(core.outputs)}, n_jobs={core.n_jobs}"
            return text + ("" if core.blas_threads == 1 else
                           f", blas_threads={core.blas_threads}")

    for cls in (Layer, SolveFunction, AdjointFunction):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return SimpleNamespace(Layer=Layer, SolveFunction=SolveFunction,
                           AdjointFunction=AdjointFunction)


_DEFINED: SimpleNamespace | None = None


def __getattr__(name: str) -> Any:
    """``Layer`` (and the autograd functions behind it), defined on first use (PEP 562)."""
    global _DEFINED
    if name in ("Layer", "SolveFunction", "AdjointFunction"):
        if _DEFINED is None:
            _DEFINED = _define()
        value = getattr(_DEFINED, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
