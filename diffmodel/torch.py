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
ImportError that names the extra: ``pip install "diffmodel[torch]"``. The
classes are defined in ``diffmodel._torch_layer``; the framework-free half
of both layers is :class:`~diffmodel._layer.NumpyLayer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._layer import require

if TYPE_CHECKING:
    from ._torch_layer import Layer

__all__ = ["Layer"]

#: The ``pip install`` argument that brings PyTorch for this module.
EXTRA = 'pip install "diffmodel[torch]"'

_LAZY = ("Layer", "SolveFunction", "AdjointFunction")


def __getattr__(name: str) -> Any:
    """``Layer`` (and the autograd functions behind it), imported on first use (PEP 562)."""
    if name in _LAZY:
        require("torch", EXTRA)
        from . import _torch_layer

        value = getattr(_torch_layer, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
