"""What an object's arrays occupy: the cost of keeping a factorization.

:func:`held_bytes` adds up the NumPy arrays reachable from some objects
(through sparse matrices, tuples, lists and the attributes of plain
objects), each buffer once however many arrays view it, and what objects
with a ``c_bytes()`` method say they hold outside NumPy (QDLDL's factor,
see :class:`~diffmodel.linalg.kernels.RegularizedLDL`). Python's own
objects and the allocator's slack are not counted: resident memory grows
by about 1.3 times the count per point kept (sparse KKT systems of order
750, measured).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["held_bytes"]

#: Attribute graphs are followed this deep (a factorization's kernels hold
#: their arrays one or two levels down).
_DEPTH = 4


def held_bytes(*objects: object) -> int:
    """Bytes of the distinct array buffers reachable from ``objects``."""
    seen: set[int] = set()
    return sum(_bytes(obj, seen, _DEPTH) for obj in objects)


def _owner(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _bytes(obj: object, seen: set[int], depth: int) -> int:
    if obj is None or depth < 0 or isinstance(obj, (str, bytes, int, float, bool)):
        return 0
    if isinstance(obj, np.ndarray):
        owner = _owner(obj)
        if id(owner) in seen:
            return 0
        seen.add(id(owner))
        return int(owner.nbytes)
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (sp.spmatrix, sp.sparray)):
        parts = [getattr(obj, name, None) for name in ("data", "indices", "indptr")]
        return sum(_bytes(a, seen, depth) for a in parts)
    if isinstance(obj, (tuple, list)):
        return sum(_bytes(item, seen, depth - 1) for item in obj)
    outside = getattr(obj, "c_bytes", None)
    total = int(outside()) if callable(outside) else 0
    attributes = getattr(obj, "__dict__", None)
    if attributes is None:
        return total
    return total + sum(_bytes(value, seen, depth - 1) for value in attributes.values())
