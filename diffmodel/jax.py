"""A JAX layer over a :class:`~diffmodel.Model`: a function of arrays by parameter
name, with exact reverse-mode derivatives, under ``jit``, ``vmap`` and ``grad``.

``layer(model)`` returns a function ``f(**values) -> dict`` with the rules of
:class:`diffmodel.torch.Layer`: arrays by parameter name (any subset; the
others keep ``Parameter.value``), one optional leading batch axis shared by
the batched parameters (the others are broadcast), a dict of arrays by
output name. The solve runs on the host through ``jax.pure_callback``, so
``f`` works under ``jax.jit``; ``jax.vmap`` over ``f`` is one batched solve
in one callback; ``jax.grad``, ``jax.vjp`` and ``jax.jacrev`` use
diffmodel's exact reverse mode through ``jax.custom_vjp``. Forward mode
(``jax.jvp``, ``jax.jacfwd``) is not available: JAX does not define it for
``custom_vjp`` functions (see docs/layers.md).

JAX is imported when :func:`layer` is called, not when this module is
imported; without it, :func:`layer` raises an ImportError that names the
extra: ``pip install "diffmodel[jax]"``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ._layer import Call, NumpyLayer, Solved, require
from ._typing import FloatArray
from .errors import DiffModelError
from .model import Model

if TYPE_CHECKING:
    import jax as _jax

__all__ = ["layer"]

#: The ``pip install`` argument that brings JAX for this module.
EXTRA = 'pip install "diffmodel[jax]"'

Shape = tuple[int, ...]

#: Solutions kept per call structure between a forward and its backward pass
#: (the oldest beyond this are dropped; their backward pass solves again).
KEPT = 8


def layer(model: Model, outputs: str | Sequence[str] | None = None, *, n_jobs: int = 1,
          blas_threads: int | None = 1) -> Callable[..., dict[str, _jax.Array]]:
    """A differentiable QP as a JAX function of keyword arrays.

    Parameters
    ----------
    model : Model
        The model to solve.
    outputs : str or sequence of str, optional
        Names of the variables, and of constraints for their duals, to
        return (default: every variable).
    n_jobs : int, default 1
        Threads over which a batch is split in chunks, as for
        :class:`diffmodel.torch.Layer`.
    blas_threads : int or None, default 1
        Threads of the BLAS libraries while the host solves, as for
        :class:`diffmodel.torch.Layer`.

    Returns
    -------
    callable
        ``f(**values) -> dict of str to jax.Array``. A value of shape
        (B, *parameter.shape) is a batch; other values are shared by every
        item; parameters not given use their ``Parameter.value``. Outputs
        have shape (B, *shape) for a batched call, (*shape) otherwise.

    Raises
    ------
    ImportError
        If JAX is not installed (the message names the extra).
    ModelError
        If ``model`` is not a :class:`Model`, an output name is unknown or
        ``n_jobs`` or ``blas_threads`` is not a positive integer; when ``f``
        is called (or traced), for bad names, shapes or values and batch
        sizes that differ.
    SolverError
        When ``f`` runs, if an item cannot be solved. Under ``jax.jit``,
        errors raised in the callback reach the caller wrapped by JAX, with
        diffmodel's message in the text.

    Notes
    -----
    Precision: the QP is solved in float64 on the host. With
    ``jax_enable_x64`` on, float64 inputs give float64 outputs; without it
    JAX arrays are float32, so inputs and outputs are float32 (the solve is
    still float64; the results are rounded to float32). Outputs take the
    dtype of the inputs, gradients each input's own dtype.

    Transformations: ``jax.jit``; ``jax.vmap`` (any number of nested
    levels, merged with the call's own batch axis into one batched solve);
    ``jax.grad``, ``jax.vjp``, ``jax.jacrev`` (first order). Not
    ``jax.jvp``/``jax.jacfwd`` (a ``custom_vjp`` function has no forward
    mode) nor second derivatives.

    Examples
    --------
    ::

        jax.config.update("jax_enable_x64", True)
        f = layer(model)                        # model: a dm.Model with parameter q
        loss = lambda q: jnp.sum(f(q=q)["x"] ** 2)
        jax.jit(jax.grad(loss))(jnp.zeros(5))

    docs/layers.md has runnable examples.
    """
    jax: Any = require("jax", EXTRA)
    jnp: Any = require("jax.numpy", EXTRA)
    core = NumpyLayer(model, outputs, n_jobs, blas_threads)
    functions: dict[tuple[Any, ...], Callable[..., tuple[Any, ...]]] = {}
    errors = _Errors()

    def solve(**values: _jax.Array | ArrayLike) -> dict[str, _jax.Array]:
        arrays = [_as_float(jnp, v) for v in values.values()]
        call = core.plan({name: tuple(a.shape) for name, a in zip(values, arrays)})
        dtypes = tuple(a.dtype for a in arrays)
        key = (call, dtypes)
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = _function(jax, jnp, core, call,
                                            [tuple(a.shape) for a in arrays], dtypes, errors)
        errors.clear()
        try:
            return dict(zip(core.outputs, fn(*arrays)))
        except RuntimeError as exc:  # JAX wraps errors raised in callbacks
            found = errors.pop()
            if found is None:
                raise
            raise found from exc

    solve.__doc__ = (f"Solve {model!r} for parameter values by name; returns "
                     f"{', '.join(core.outputs)} (see diffmodel.jax.layer).")
    return solve


def _as_float(jnp: Any, value: Any) -> Any:
    """A JAX array of a floating dtype (integers become JAX's default float)."""
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


class _Errors(threading.local):
    """The diffmodel error a callback raised on this thread, so that an eager call
    re-raises it as itself rather than wrapped by JAX."""

    error: DiffModelError | None = None

    def clear(self) -> None:
        self.error = None

    def pop(self) -> DiffModelError | None:
        error, self.error = self.error, None
        return error


def _recorded(errors: _Errors, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, recording a DiffModelError it raises before raising it."""

    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except DiffModelError as exc:
            errors.error = exc
            raise

    return wrapper


def _function(jax: Any, jnp: Any, core: NumpyLayer, call: Call, shapes: list[Shape],
              dtypes: tuple[Any, ...], errors: _Errors) -> Callable[..., tuple[Any, ...]]:
    """The custom_vjp function of one call structure (names, batch axes, dtypes)."""
    out_dtype = jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)
    lead = () if call.size is None else (call.size,)
    out_specs = tuple(jax.ShapeDtypeStruct(lead + core.output_shapes[name], out_dtype)
                      for name in core.outputs)
    in_specs = tuple(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in zip(shapes, dtypes))
    host = _Host(core, call, shapes, out_dtype, dtypes)

    def primal(*arrays: Any) -> tuple[Any, ...]:
        return tuple(jax.pure_callback(_recorded(errors, host.solve), out_specs, *arrays,
                                       vmap_method="expand_dims"))

    fn = jax.custom_vjp(primal)

    def fwd(*arrays: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        # The residuals: the inputs, and a token under which the host keeps the
        # solution (with its factorizations) for the backward pass.
        *outs, token = jax.pure_callback(_recorded(errors, host.solve_and_keep),
                                         (*out_specs, jax.ShapeDtypeStruct((), jnp.int32)),
                                         *arrays, vmap_method="expand_dims")
        return tuple(outs), (arrays, token)

    def bwd(residuals: tuple[Any, ...], cotangents: tuple[Any, ...]) -> tuple[Any, ...]:
        arrays, token = residuals
        return tuple(jax.pure_callback(_recorded(errors, host.backward), in_specs, *arrays,
                                       token, *cotangents, vmap_method="expand_dims"))

    fn.defvjp(fwd, bwd)
    return fn  # type: ignore[no-any-return]


class _Host:
    """The callbacks of one call structure: NumPy arrays in and out.

    Under ``jax.vmap`` with ``vmap_method="expand_dims"`` every argument
    arrives with the vmapped axes in front (of length 1 where it is not
    vmapped); they are merged with the call's own batch axis into one
    batch, solved by one :meth:`NumpyLayer.solve`, and split again.

    The forward pass of reverse mode keeps its solution (which holds the
    factorizations) under a token, a residual of the ``custom_vjp``; the
    backward pass takes it back, or solves again from the inputs when it is
    gone (at most ``KEPT`` are kept) or the batch structure differs (a
    ``jax.jacrev``, whose cotangents carry an axis the inputs do not).
    """

    def __init__(self, core: NumpyLayer, call: Call, shapes: list[Shape], out_dtype: Any,
                 dtypes: tuple[Any, ...]) -> None:
        self.core, self.call, self.shapes = core, call, shapes
        self.out_dtype, self.dtypes = np.dtype(out_dtype), [np.dtype(d) for d in dtypes]
        lead = () if call.size is None else (call.size,)
        self.out_shapes = [lead + core.output_shapes[name] for name in core.outputs]
        self._kept: OrderedDict[int, tuple[Shape, Solved]] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0

    def _merge(self, arrays: Sequence[Any], extra: Shape, every: bool
               ) -> tuple[Call, list[FloatArray]]:
        """One flat batch for vmapped axes ``extra`` and the call's own batch axis.

        ``every``: give every input the batch axis (for per-item gradients).
        """
        call, size = self.call, self.call.size
        count = math.prod(extra)
        merged, flags = [], []
        for arr, shape, batched in zip(arrays, self.shapes, call.batched):
            arr = np.asarray(arr, dtype=np.float64)
            own = arr.shape[arr.ndim - len(shape):]
            vmapped = math.prod(arr.shape[:arr.ndim - len(shape)]) > 1
            if not (vmapped or batched or every):
                merged.append(arr.reshape(own))  # shared by every item
                flags.append(False)
                continue
            arr = np.broadcast_to(arr, extra + own)
            if size is not None:
                if not batched:  # broadcast along the call's own batch axis
                    arr = np.broadcast_to(np.expand_dims(arr, len(extra)),
                                          extra + (size,) + own)
                merged.append(arr.reshape((count * size,) + arr.shape[len(extra) + 1:]))
            else:
                merged.append(arr.reshape((count,) + own))
            flags.append(True)
        if not any(flags) and (count > 1 or size is not None) and merged:
            merged[0] = np.broadcast_to(merged[0], (count * (size or 1),) + merged[0].shape)
            flags[0] = True
        total = None if not any(flags) else count * (size or 1)
        return Call(call.names, tuple(flags), total), merged

    def _extra(self, *groups: tuple[Sequence[Any], Sequence[Shape]]) -> Shape:
        leads = [tuple(arr.shape[:np.ndim(arr) - len(shape)])
                 for arrays, shapes in groups for arr, shape in zip(arrays, shapes)]
        return tuple(np.broadcast_shapes(*leads)) if leads else ()

    def _solve(self, arrays: Sequence[Any], extra: Shape) -> Solved:
        if not extra:
            return self.core.solve(self.call, [np.asarray(a, dtype=np.float64) for a in arrays])
        return self.core.solve(*self._merge(arrays, extra, every=False))

    def solve(self, *arrays: Any) -> tuple[FloatArray, ...]:
        extra = self._extra((arrays, self.shapes))
        return self._outputs(self._solve(arrays, extra), extra)

    def _outputs(self, solved: Solved, extra: Shape) -> tuple[FloatArray, ...]:
        return tuple(np.asarray(solved.outputs[name], dtype=self.out_dtype)
                     .reshape(extra + shape)
                     for name, shape in zip(self.core.outputs, self.out_shapes))

    def solve_and_keep(self, *arrays: Any) -> tuple[FloatArray, ...]:
        """:meth:`solve`, keeping the solution for :meth:`backward` under a token."""
        extra = self._extra((arrays, self.shapes))
        solved = self._solve(arrays, extra)
        with self._lock:
            self._count = token = (self._count + 1) % 2**31
            self._kept[token] = (extra, solved)
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return (*self._outputs(solved, extra), np.full(extra, token, dtype=np.int32))

    def _kept_solution(self, token: Any, extra: Shape) -> Solved | None:
        """The solution kept under ``token`` for the same batch structure, if any."""
        token = np.asarray(token)
        if token.size == 0 or not np.all(token == token.flat[0]):
            return None
        with self._lock:
            entry = self._kept.pop(int(token.flat[0]), None)
        return entry[1] if entry is not None and entry[0] == extra else None

    def backward(self, *args: Any) -> tuple[FloatArray, ...]:
        count = len(self.shapes)
        arrays, token, cotangents = args[:count], args[count], args[count + 1:]
        extra = self._extra((arrays, self.shapes), (cotangents, self.out_shapes))
        wanted = [True] * count
        # The forward pass's solution if it is still kept (else solve again: the
        # same data give the same solution).
        solved = self._kept_solution(token, extra) or self._solve(arrays, extra)
        if not extra:
            grads = self.core.backward(
                solved, {name: np.asarray(c, dtype=np.float64)
                         for name, c in zip(self.core.outputs, cotangents)}, wanted)
            return tuple(np.asarray(g, dtype=d) for g, d in zip(grads, self.dtypes))
        total = solved.call.size or 1
        flat = {name: np.broadcast_to(np.asarray(c, dtype=np.float64), extra + shape)
                .reshape((total,) + self.core.output_shapes[name])
                for name, c, shape in zip(self.core.outputs, cotangents, self.out_shapes)}
        per_item = self.core.backward(solved, flat, wanted, per_item=True)
        out = []
        for grad, shape, batched, dtype in zip(per_item, self.shapes, self.call.batched,
                                               self.dtypes):
            assert grad is not None
            if self.call.size is None:
                grad = grad.reshape(extra + shape)
            else:
                own = shape[1:]
                grad = grad.reshape(extra + (self.call.size,) + own)
                if not batched:
                    grad = grad.sum(axis=len(extra))
            out.append(np.asarray(grad, dtype=dtype))
        return tuple(out)
