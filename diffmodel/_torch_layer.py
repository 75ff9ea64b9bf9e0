"""The PyTorch classes of :mod:`diffmodel.torch`; importing this imports PyTorch.

Import :mod:`diffmodel.torch` instead: it hands these out on first use, with
an ImportError naming the extra when PyTorch is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from numpy.typing import ArrayLike

from ._layer import Call, NumpyLayer, Solved
from .errors import DerivativeError
from .model import Model

__all__ = ["AdjointFunction", "Layer", "SolveFunction"]

# PyTorch declares ``torch.autograd.Function.apply`` without types: the calls
# below carry ``type: ignore[no-untyped-call]`` for that reason alone.


class _Carry:
    """Hands the solution from ``forward`` to ``setup_context``."""

    solved: Solved

@dataclass(frozen=True)
class _Meta:
    """A call's plan, with the device and dtype of its outputs."""

    call: Call
    device: Any
    dtype: Any

class AdjointFunction(torch.autograd.Function):
    """Output gradients → input gradients (reverse mode of :class:`SolveFunction`).

    A function of its own so that ``torch.func`` transforms see plain
    tensors, with a ``vmap`` rule (one adjoint pass per vmapped cotangent:
    ``torch.func.jacrev``). Not differentiable itself.
    """

    @staticmethod
    def forward(core: NumpyLayer, solved: Solved, wanted: tuple[bool, ...],
                targets: tuple[tuple[Any, Any], ...],
                *tensors: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
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
             *grads: torch.Tensor | None) -> tuple[Any, Any]:
        count = len(core.outputs)
        slices = [AdjointFunction.apply(  # type: ignore[no-untyped-call]
            core, solved, wanted, targets,
            *(g if g is None or d is None else g.select(d, i)
              for g, d in zip(grads[:count], in_dims[4:])), *grads[count:])
            for i in range(info.batch_size)]
        outs = tuple(torch.stack(parts) for parts in zip(*slices))
        return outs, (0,) * len(outs)

class SolveFunction(torch.autograd.Function):
    """θ (tensors by position) → solution tensors, with an exact backward and a
    ``vmap`` rule (a vmapped call is one batched call)."""

    @staticmethod
    def forward(core: NumpyLayer, meta: _Meta, carry: _Carry,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
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
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        wanted = tuple(ctx.needs_input_grad[3:])
        targets = tuple(io for io, want in zip(ctx.inputs, wanted) if want)
        found = iter(AdjointFunction.apply(ctx.core, ctx.solved, wanted, targets, *grads,  # type: ignore[no-untyped-call]
                                           *ctx.saved_tensors) if targets else ())
        return (None, None, None, *(next(found) if want else None for want in wanted))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], core: NumpyLayer, meta: _Meta,
             carry: _Carry, *tensors: torch.Tensor) -> tuple[Any, Any]:
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
        outs = SolveFunction.apply(core, _Meta(call, meta.device, meta.dtype), _Carry(),  # type: ignore[no-untyped-call]
                                   *moved)
        if B is not None:
            outs = tuple(o.reshape(V, B, *o.shape[1:]) for o in outs)
        return tuple(outs), (0,) * len(outs)

class Layer(torch.nn.Module):
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

    def forward(self, **values: torch.Tensor | ArrayLike) -> dict[str, torch.Tensor]:
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
        outs = SolveFunction.apply(self.core, _Meta(call, device, dtype), _Carry(),  # type: ignore[no-untyped-call]
                                   *tensors.values())
        return dict(zip(self.core.outputs, outs))

    def extra_repr(self) -> str:
        core = self.core
        text = f"outputs={list(core.outputs)}, n_jobs={core.n_jobs}"
        return text + ("" if core.blas_threads == 1 else
                       f", blas_threads={core.blas_threads}")


# Documented and pickled as members of diffmodel.torch, the public module.
for _cls in (Layer, SolveFunction, AdjointFunction):
    _cls.__module__ = "diffmodel.torch"
