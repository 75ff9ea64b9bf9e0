"""Names in, vectors out, and back: the one place where names meet the stacked vectors.

θ̃ = (1, θ) stacks the parameters, x the variables and y the multipliers of
all constraint rows (M = [A; G]); :class:`Packer` validates values given by
name, writes them into those vectors, and cuts vectors back into named
arrays shaped like their CVXPY objects (column-major, as CVXPY).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._typing import BoolArray, FloatArray, IntArray
from ._validation import (
    ParamSpec,
    all_finite,
    batch_satisfies,
    check_array,
    check_names,
    check_parameter_value,
)
from .compiled import Block, Layout
from .errors import ModelError

__all__ = ["Packer"]

_MISSING: Any = object()
_FLOAT64 = np.dtype(np.float64)
_SUM = np.add.reduce


class Packer:
    """Validation and (un)packing for one layout.

    Parameters
    ----------
    layout : Layout
    specs : dict of str to ParamSpec
        Per parameter: what validating its values needs.
    """

    def __init__(self, layout: Layout, specs: Mapping[str, ParamSpec]) -> None:
        self.layout = layout
        self.specs = dict(specs)
        self._slots = [(name, block, self.specs[name]) for name, block in
                       layout.parameters.items()]
        m_eq = layout.m_eq
        self._cons = [(name, block, 0 if block.kind == "eq" else m_eq)
                      for name, block in layout.constraints.items()]
        # The hot paths below read plain tuples: (name, start, stop, shape, ...)
        # with the start and stop in the stacked vector, and whether a reshape
        # (column-major) is needed.
        self._theta_slots = [(name, 1 + block.offset, 1 + block.stop, block.shape, spec,
                              len(block.shape) > 1) for name, block, spec in self._slots]
        self._x_slices = [(name, block.offset, block.stop, block.shape, len(block.shape) != 1)
                          for name, block in layout.variables.items()]
        self._y_slices = [(name, shift + block.offset, shift + block.stop, block.shape,
                           len(block.shape) != 1) for name, block, shift in self._cons]
        self._theta_size = layout.n_theta + 1

    # ------------------------------------------------------------ parameters

    def theta(self, values: Mapping[str, ArrayLike], current: Callable[[str], object],
              call: str) -> tuple[FloatArray, dict[str, FloatArray]]:
        """θ̃ from values by name, the others from ``current(name)``; validated first.

        Returns θ̃ and the validated given values.
        """
        if not values.keys() <= self.layout.parameters.keys():
            check_names(values, self.layout.parameters, "parameter", call)
        theta = np.empty(self._theta_size)
        theta[0] = 1.0
        given: dict[str, FloatArray] = {}
        for name, start, stop, shape, spec, fortran in self._theta_slots:
            value = values.get(name, _MISSING)
            if value is not _MISSING:
                if (type(value) is np.ndarray and value.dtype is _FLOAT64
                        and value.shape == shape and not spec.strict):
                    arr = value  # finiteness is checked once for all of θ below
                else:
                    arr = check_parameter_value(spec, value)
                given[name] = arr
            else:
                stored = current(name)
                if stored is None:
                    raise ModelError(f"parameter '{name}' has no value: pass {name}=... to "
                                     f"{call} or set {name}.value")
                if isinstance(stored, np.ndarray) and stored.shape == shape:
                    arr = stored
                else:  # whatever CVXPY stored: check_array says what is wrong with it
                    arr = check_array(stored, shape,  # type: ignore[arg-type]
                                      f"parameter '{name}'")
            theta[start:stop] = arr.ravel(order="F") if fortran else arr
        if not math.isfinite(_SUM(theta)):  # a NaN or inf makes the sum non-finite
            for name, block, _ in self._slots:
                check_array(block.take(theta, 1), block.shape, f"parameter '{name}'")
        return theta, given

    def theta_batch(self, values: Mapping[str, ArrayLike], current: Callable[[str], object],
                    call: str) -> tuple[FloatArray, dict[str, FloatArray]]:
        """θ̃ for a batch: shape (n_theta + 1, B), and the batched values by name.

        A value whose shape is (B, *shape) is batched; others are shared. The
        array is column-major: each scenario's θ̃ is a contiguous column.
        """
        check_names(values, self.layout.parameters, "parameter", call)
        batched: dict[str, FloatArray] = {}
        shared: dict[str, ArrayLike] = {}
        size: int | None = None
        for name, value in values.items():
            shape = self.layout.parameters[name].shape
            arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
            if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
                if size is not None and arr.shape[0] != size:
                    raise ModelError(f"{call}: parameter '{name}' has a batch of "
                                     f"{arr.shape[0]} values, others have {size}")
                size = arr.shape[0]
                batched[name] = arr
            else:
                shared[name] = value
        if size is None:
            raise ModelError(f"{call}: no batched value given; pass at least one parameter "
                             "with a leading batch axis, e.g. q of shape (B, *q.shape)")
        if size == 0:
            raise ModelError(f"{call}: the batch is empty (batch axis of length 0)")
        # Batched parameters need no current value: the base takes their first item.
        base, _ = self.theta({**shared, **{k: v[0] for k, v in batched.items()}}, current, call)
        rows = np.repeat(base[None, :], size, axis=0)  # scenario by scenario, contiguous
        for name, arr in batched.items():
            block, spec = self.layout.parameters[name], self.specs[name]
            checked = np.asarray(arr, dtype=np.float64) if arr.dtype.kind in "biuf" else arr
            if (checked.dtype != np.float64 or not np.isfinite(checked).all()
                    or (spec.strict and not batch_satisfies(spec, checked))):
                for i in range(size):  # name the first bad scenario
                    check_parameter_value(spec, checked[i], f"parameter '{name}[{i}]'")
            # Each item column-major: as a C-ordered array of the reversed shape,
            # its transpose (written in place: a view of the columns of rows).
            target = rows[:, 1 + block.offset: 1 + block.stop].reshape(
                (size, *block.shape[::-1]))
            target[...] = checked.transpose(0, *range(checked.ndim - 1, 0, -1))
            batched[name] = checked
        return rows.T, batched

    def direction(self, directions: Mapping[str, ArrayLike], call: str) -> FloatArray:
        """dθ̃ from directions by parameter name (the others do not move)."""
        check_names(directions, self.layout.parameters, "parameter", call)
        dtheta = np.zeros(self.layout.n_theta + 1)
        for name, value in directions.items():
            block = self.layout.parameters[name]
            block.put(dtheta, check_array(value, block.shape,
                                          f"{call}: direction for parameter '{name}'"), 1)
        return dtheta

    def params(self, vector: FloatArray) -> dict[str, FloatArray]:
        """A θ̃-shaped vector cut into arrays by parameter name (fresh arrays)."""
        return {name: (vector[a:b].reshape(shape, order="F") if fortran or not shape
                       else vector[a:b]).copy()
                for name, a, b, shape, _, fortran in self._theta_slots}

    def params_batch(self, block2d: FloatArray) -> dict[str, FloatArray]:
        """Columns of θ̃-shaped vectors: arrays of shape (B, *shape) by name."""
        return {name: np.ascontiguousarray(block.take_batch(block2d, 1))
                for name, block in self.layout.parameters.items()}

    def param_index(self, name: str, call: str) -> IntArray:
        """Indices in θ̃ of a parameter's entries (column-major)."""
        check_names([name], self.layout.parameters, "parameter", call)
        block = self.layout.parameters[name]
        return np.arange(1 + block.offset, 1 + block.stop)

    # --------------------------------------------------------------- outputs

    def solution(self, x: FloatArray, y: FloatArray
                 ) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        """Primal arrays by variable name and duals by constraint name: views of x
        and y, read-only whenever x and y are."""
        primal = {name: x[a:b].reshape(shape, order="F") if reshape else x[a:b]
                  for name, a, b, shape, reshape in self._x_slices}
        dual = {name: y[a:b].reshape(shape, order="F") if reshape else y[a:b]
                for name, a, b, shape, reshape in self._y_slices}
        return primal, dual

    def row_masks(self, ineq_rows: IntArray, equalities: bool) -> dict[str, BoolArray]:
        """Boolean masks by constraint name of the given inequality rows (indices
        among the inequalities); equality constraints are all ``equalities``."""
        layout = self.layout
        flags = np.zeros(layout.rows, dtype=bool)
        flags[: layout.m_eq] = equalities
        flags[layout.m_eq + ineq_rows] = True
        masks = {name: block.take(flags, shift).copy() for name, block, shift in self._cons}
        for mask in masks.values():
            mask.flags.writeable = False
        return masks

    def solution_batch(self, X: FloatArray, Y: FloatArray
                       ) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        """As :meth:`solution` for columns: arrays of shape (B, *shape)."""
        primal = {name: np.ascontiguousarray(block.take_batch(X)) for name, block in
                  self.layout.variables.items()}
        dual = {name: np.ascontiguousarray(block.take_batch(Y, shift))
                for name, block, shift in self._cons}
        return primal, dual

    def outputs(self, primal: Mapping[str, ArrayLike] | None,
                dual: Mapping[str, ArrayLike] | None, call: str,
                batch: int | None = None) -> tuple[FloatArray, FloatArray]:
        """(∂ℓ/∂x, ∂ℓ/∂y) from gradients by variable and constraint name, validated.

        With ``batch=B`` the gradients may carry a leading batch axis (or be
        shared by every item) and the result has B columns.
        """
        if primal is not None and type(primal) is not dict and not isinstance(primal, Mapping):
            raise ModelError(f"{call}: gradients must be a dict by variable name, e.g. "
                             f"{{'x': dl_dx}}; got {type(primal).__name__}")
        if dual is not None and type(dual) is not dict and not isinstance(dual, Mapping):
            raise ModelError(f"{call}: dual gradients must be a dict by constraint name; "
                             f"got {type(dual).__name__}")
        layout = self.layout
        if batch is None:
            gx, gy = np.zeros(layout.n), np.zeros(layout.rows)
        else:
            gx = np.zeros((layout.n, batch))
            gy = np.zeros((layout.rows, batch))
        for name, value in (primal or {}).items():
            block = layout.variables.get(name)
            if block is None:
                if name in layout.constraints:
                    raise ModelError(f"{call}: {name!r} is a constraint, not a variable: pass "
                                     f"the gradient for its dual as dual={{{name!r}: ...}}")
                check_names([name], layout.variables, "variable", call)
                continue
            self._put(gx, block, 0, value, (call, "gradient for variable", name), batch)
        for name, value in (dual or {}).items():
            cblock = layout.constraints.get(name)
            if cblock is None:
                check_names([name], layout.constraints, "constraint", call)
                continue
            shift = 0 if cblock.kind == "eq" else layout.m_eq
            self._put(gy, cblock, shift, value, (call, "gradient for the dual of", name), batch)
        return gx, gy

    @staticmethod
    def _put(target: FloatArray, block: Block, shift: int, value: ArrayLike,
             label: tuple[str, str, str], batch: int | None) -> None:
        what = "{}: {} '{}'"
        if batch is None:
            if (type(value) is np.ndarray and value.dtype is _FLOAT64
                    and value.shape == block.shape and value.ndim <= 1
                    and all_finite(value)):
                arr: FloatArray = value
            else:
                arr = check_array(value, block.shape, what.format(*label))
            block.put(target, arr, shift)
            return
        arr = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value
        if arr.shape == block.shape:
            arr = np.broadcast_to(arr, (batch, *block.shape))
        arr = check_array(arr, (batch, *block.shape), what.format(*label))
        target[shift + block.offset: shift + block.stop] = arr.reshape(
            batch, block.size, order="F").T

    def output_index(self, name: str, call: str) -> tuple[IntArray, tuple[int, ...]]:
        """Indices in the stacked (x, y) of a variable's entries, or of a constraint's duals."""
        layout = self.layout
        if name in layout.variables:
            block = layout.variables[name]
            return np.arange(block.offset, block.stop), block.shape
        if name in layout.constraints:
            start, stop = layout.constraint_rows(name)
            return layout.n + np.arange(start, stop), layout.constraints[name].shape
        names = ", ".join(repr(k) for k in [*layout.variables, *layout.constraints])
        raise ModelError(f"{call}: {name!r} is neither a variable nor a constraint "
                         f"(known: {names})")

    def unpack_outputs(self, dx: FloatArray, dy: FloatArray) -> dict[str, FloatArray]:
        """dx by variable name and dy by constraint name, in one dict (fresh arrays)."""
        out = {name: block.take(dx).copy() for name, block in self.layout.variables.items()}
        for name, block, shift in self._cons:
            out[name] = block.take(dy, shift).copy()
        return out
