"""Input validation at the public boundary. Inside the core, data is trusted."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._typing import FloatArray
from .errors import ModelError

__all__ = ["ParamSpec", "batch_satisfies", "check_array", "check_names", "check_parameter_value"]


#: Relative tolerance of the symmetry and semidefiniteness checks of values.
_ATTR_TOL = 1e-10


@dataclass(frozen=True)
class ParamSpec:
    """What validating a parameter's value needs: its name, shape and attributes.

    ``attributes`` holds the CVXPY attributes that restrict values and are
    set (``nonneg``, ``PSD``, ``symmetric``, ``diag``, ``bounds`` ...).
    """

    name: str
    shape: tuple[int, ...]
    attributes: tuple[tuple[str, object], ...] = ()

    @property
    def strict(self) -> bool:
        return bool(self.attributes)

    def attribute(self, key: str) -> object:
        return dict(self.attributes).get(key)


#: Vectors up to this length are summed by a BLAS dot product (less dispatch);
#: longer ones by NumPy's pairwise sum (BLAS may spread them over busy threads).
_DOT_MAX = 4096


def all_finite(v: FloatArray) -> bool:
    """Whether a float64 array of at most one axis has no NaN or inf, cheaply.

    A NaN or inf survives a sum of squares; a sum that overflows from finite
    entries is rechecked entry by entry.
    """
    if v.ndim == 0 or (v.ndim == 1 and v.shape[0] <= _DOT_MAX):
        total = float(v.dot(v))  # (BLAS: no warning on overflow)
    else:
        with np.errstate(over="ignore"):
            total = float(np.add.reduce(v, axis=None))
    return math.isfinite(total) or bool(np.isfinite(v).all())


def check_array(value: ArrayLike, shape: tuple[int, ...], what: str) -> FloatArray:
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
    except (ValueError, TypeError, OverflowError) as exc:  # ragged or exotic sequences
        raise ModelError(f"{what}: expected a numeric array of shape {shape}: {exc}") from None
    if np.iscomplexobj(raw):
        raise ModelError(f"{what}: complex values are not supported")
    if raw.dtype.kind not in "biuf":
        raise ModelError(
            f"{what}: expected a numeric array of shape {shape}, got values of type "
            f"{raw.dtype} ({type(value).__name__})")
    arr = raw.astype(np.float64, copy=False)
    if arr.shape != shape:
        squeezed = tuple(d for d in arr.shape if d != 1)
        if squeezed == tuple(d for d in shape if d != 1):
            arr = arr.reshape(shape)
        else:
            raise ModelError(f"{what}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ModelError(f"{what}: value contains {bad} (first at index {index})")
    return arr


def check_parameter_value(spec: ParamSpec, value: ArrayLike, what: str | None = None
                          ) -> FloatArray:
    """Validate a parameter value: shape, finiteness and declared attributes."""
    label = what or f"parameter '{spec.name}'"
    arr = check_array(value, spec.shape, label)
    if spec.strict:
        _check_attributes(spec, arr, label)
    return arr


def _check_attributes(spec: ParamSpec, arr: FloatArray, label: str) -> None:
    """Raise a ModelError if ``arr`` breaks an attribute the parameter was declared with."""
    attr = spec.attribute
    scale = float(np.max(np.abs(arr), initial=0.0))
    signs = (("nonneg", arr < 0, "nonnegative"), ("pos", arr <= 0, "positive"),
             ("nonpos", arr > 0, "nonpositive"), ("neg", arr >= 0, "negative"))
    for key, bad, word in signs:
        if attr(key) and bad.any():
            raise ModelError(f"{label}: declared {key}=True, but the value is not {word} "
                             f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    if (attr("boolean") or attr("integer")) and np.any(arr != np.round(arr)):
        raise ModelError(f"{label}: declared integer, but the value has a fractional entry")
    if attr("boolean") and np.any((arr != 0) & (arr != 1)):
        raise ModelError(f"{label}: declared boolean, but the value has an entry other than "
                         "0 or 1")
    bounds = attr("bounds")
    if bounds is not None:
        low, high = (None if b is None else np.broadcast_to(np.asarray(b, dtype=float), arr.shape)
                     for b in _pair(bounds))  # type: FloatArray | None, FloatArray | None
        if (low is not None and np.any(arr < low)) or (high is not None and np.any(arr > high)):
            raise ModelError(f"{label}: the value lies outside the declared bounds")
    if arr.ndim == 2 and any(attr(k) for k in ("symmetric", "PSD", "NSD", "diag")):
        if attr("diag") and np.any(arr - np.diag(np.diag(arr))):
            raise ModelError(f"{label}: declared diag=True, but the value has off-diagonal "
                             "entries")
        if np.max(np.abs(arr - arr.T), initial=0.0) > _ATTR_TOL * max(scale, 1e-300):
            raise ModelError(f"{label}: declared symmetric (or PSD/NSD), but the value is not "
                             "symmetric")
        if attr("PSD") or attr("NSD"):
            sign = 1.0 if attr("PSD") else -1.0
            if _semidefinite(sign * 0.5 * (arr + arr.T), _ATTR_TOL * max(scale, 1e-300)):
                return
            low_eig = np.linalg.eigvalsh(0.5 * (arr + arr.T))
            worst = float(np.min(sign * low_eig, initial=0.0))
            if worst < -_ATTR_TOL * max(scale, 1e-300):
                kind = "positive" if attr("PSD") else "negative"
                raise ModelError(
                    f"{label}: declared {'PSD' if attr('PSD') else 'NSD'}=True, but the value "
                    f"is not {kind} semidefinite (eigenvalue {sign * worst:.3g})")


#: Entries per chunk of a batch whose attributes are checked together.
_CHUNK_ENTRIES = 2**17


def batch_satisfies(spec: ParamSpec, batch: FloatArray) -> bool:
    """Whether every item of a finite float64 batch (B, *shape) satisfies the
    parameter's declared attributes, decided for the whole batch at once
    (one batched Cholesky factorization for PSD/NSD). True only where
    :func:`check_parameter_value` accepts every item; False means "check
    item by item" (which names the first bad item, or accepts an item a
    Cholesky factorization alone could not).
    """
    step = max(1, _CHUNK_ENTRIES // max(batch[:1].size, 1))
    if batch.shape[0] > step:  # (in cache-sized chunks: 2× faster than whole)
        return all(batch_satisfies(spec, batch[i: i + step])
                   for i in range(0, batch.shape[0], step))
    attr = spec.attribute
    signs = (("nonneg", np.less), ("pos", np.less_equal), ("nonpos", np.greater),
             ("neg", np.greater_equal))
    for key, bad in signs:
        if attr(key) and bad(batch, 0).any():
            return False
    if (attr("boolean") or attr("integer")) and np.any(batch != np.round(batch)):
        return False
    if attr("boolean") and np.any((batch != 0) & (batch != 1)):
        return False
    bounds = attr("bounds")
    if bounds is not None:
        for bound, outside in zip(_pair(bounds), (np.less, np.greater)):
            if bound is not None and np.any(outside(batch, np.asarray(bound, dtype=float))):
                return False
    if batch.ndim != 3 or not any(attr(k) for k in ("symmetric", "PSD", "NSD", "diag")):
        return True
    scale = np.maximum(np.max(np.abs(batch), axis=(1, 2), initial=0.0), 1e-300)
    eye = np.eye(batch.shape[1])
    if attr("diag") and np.any(batch * (1.0 - eye)):
        return False
    if np.any(np.max(np.abs(batch - batch.transpose(0, 2, 1)), axis=(1, 2), initial=0.0)
              > _ATTR_TOL * scale):
        return False
    if attr("PSD") or attr("NSD"):
        sign = 1.0 if attr("PSD") else -1.0
        shifted = sign * 0.5 * (batch + batch.transpose(0, 2, 1))
        shifted += (_ATTR_TOL * scale)[:, None, None] * eye
        try:
            np.linalg.cholesky(shifted)
        except np.linalg.LinAlgError:
            return False
    return True


def _semidefinite(sym: FloatArray, tol: float) -> bool:
    """Whether a Cholesky factorization of ``sym + tol·I`` exists: then no
    eigenvalue of ``sym`` is below −tol (to rounding far below tol). A tenth
    of an eigendecomposition's cost; when it fails, the eigenvalues decide."""
    try:
        np.linalg.cholesky(sym + tol * np.eye(sym.shape[0]))
    except np.linalg.LinAlgError:
        return False
    return True


def _pair(bounds: object) -> tuple[object, object]:
    """CVXPY's ``bounds`` attribute: a pair (lower, upper), either possibly None."""
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise ModelError(f"unsupported parameter bounds {bounds!r}: expected (lower, upper)")
    return bounds[0], bounds[1]


def check_names(given: Iterable[str], known: Mapping[str, object], kind: str,
                call: str) -> None:
    """Raise a ModelError naming the first name in ``given`` not in ``known``."""
    for name in given:
        if name not in known:
            choices = ", ".join(repr(k) for k in known) or "none"
            raise ModelError(f"{call}: unknown {kind} name {name!r} (the model's {kind}s: "
                             f"{choices})")
