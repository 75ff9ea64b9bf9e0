"""Input validation at the public boundary. Inside the core, data is trusted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import ModelError

__all__ = ["check_array", "check_names", "check_parameter_value", "has_checked_attributes"]

# Parameter attributes whose validity CVXPY checks on assignment.
_CHECKED_ATTRS = ("nonneg", "nonpos", "pos", "neg", "PSD", "NSD", "symmetric",
                  "diag", "boolean", "integer", "bounds")


def check_array(value: ArrayLike, shape: tuple[int, ...], what: str) -> NDArray[np.float64]:
    """Convert ``value`` to a float array of ``shape`` with finite entries.

    Parameters
    ----------
    value : array_like
        The value given by the caller.
    shape : tuple of int
        The expected shape. A value with the same entries but a shape that
        differs only by axes of length one (a (3,) value for a (3, 1) object,
        a 1-element array for a scalar) is accepted and reshaped.
    what : str
        How to name the value in error messages, e.g. ``"parameter 'b'"``.

    Raises
    ------
    ModelError
        For a non-numeric value, a wrong shape, or NaN/inf entries.
    """
    if value is None:
        raise ModelError(f"{what}: no value (got None); expected an array of shape {shape}")
    try:
        raw = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ModelError(f"{what}: expected a numeric array of shape {shape}: {exc}") from None
    if np.iscomplexobj(raw):
        raise ModelError(f"{what}: complex values are not supported")
    if raw.dtype.kind not in "biuf":
        raise ModelError(
            f"{what}: expected a numeric array of shape {shape}, got values of type "
            f"{raw.dtype} ({type(value).__name__})"
        )
    arr = raw.astype(np.float64, copy=False)
    if arr.shape != shape:
        squeezed = tuple(d for d in arr.shape if d != 1)
        if squeezed == tuple(d for d in shape if d != 1):
            arr = arr.reshape(shape)
        else:
            raise ModelError(f"{what}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        where = np.argwhere(~np.isfinite(arr))[0]
        index = tuple(int(i) for i in where)
        raise ModelError(f"{what}: value contains {bad} (first at index {index})")
    return arr


def check_parameter_value(param: cp.Parameter, name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Validate a parameter value, including the attributes it was declared with."""
    arr = check_array(value, tuple(param.shape), f"parameter '{name}'")
    if has_checked_attributes(param):
        try:
            param._validate_value(arr)  # CVXPY's own check of nonneg, PSD, ...
        except ValueError as exc:
            raise ModelError(f"parameter '{name}': {exc}") from None
    return arr


def has_checked_attributes(param: cp.Parameter) -> bool:
    """Whether CVXPY must validate values of ``param`` (nonneg, PSD, ...)."""
    return any(param.attributes.get(attr) for attr in _CHECKED_ATTRS)


def check_names(given: Iterable[str], known: Mapping[str, object], kind: str,
                call: str) -> None:
    """Raise a ModelError naming the first name in ``given`` not in ``known``."""
    for name in given:
        if name not in known:
            choices = ", ".join(repr(k) for k in known) or "none"
            raise ModelError(
                f"{call}: unknown {kind} name {name!r} (the model's {kind}s: {choices})"
            )
