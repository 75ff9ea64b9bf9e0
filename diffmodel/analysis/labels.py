"""Display labels of entries, and readable sides of constraints.

An entry of a named object reads ``x[0]`` (vector), ``A[0, 2]`` (matrix,
row and column) or ``b`` (scalar), or with user labels ``x[north]`` and
``A[r0, c2]``. Entries are numbered in column-major order, as everywhere in
diffmodel.

Examples
--------
>>> entry_labels("A", (2, 2), None)
('A[0, 0]', 'A[1, 0]', 'A[0, 1]', 'A[1, 1]')
>>> entry_labels("A", (2, 2), (["r0", "r1"], ["c0", "c1"]))[2]
'A[r0, c1]'
>>> constraint_sides("[[1.00 2.00]\\n [3.00 4.00]] @ x == b")
('C @ x', 'b', '==')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Union

import numpy as np

from ..compiled import Layout
from ..errors import ModelError

__all__ = ["Labels", "entry_index", "entry_labels", "label_table", "check_labels",
           "constraint_sides", "short"]

#: Labels by name: one label per entry (column-major), or for a matrix a pair
#: (row labels, column labels).
Labels = Mapping[str, Union[Sequence[str], tuple[Sequence[str], Sequence[str]]]]

#: Sides of a constraint text longer than this are cut, with "...".
SIDE_LIMIT = 60

# An array literal as CVXPY prints it: starts after a space, "(", "," or "["
# (not an index like x[0]) and holds only numbers, spaces, commas and ellipses.
_LITERAL = re.compile(r"(?<![\w\]\)])\[[-+0-9.eE ,…◦]*(?:\.\.\.)?[-+0-9.eE ,…◦]*\]")
# The start of a literal cut off by a truncated text ("[[0.00 -1.00 ...").
_CUT_LITERAL = re.compile(r"(?<![\w\]\)])\[[-+0-9.eE ,…◦\[\]]*$")
_RELATIONS = (" == ", " <= ", " >= ")


def entry_index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index in ``shape`` of entry number ``flat`` in column-major order.

    >>> entry_index(5, (2, 3))
    (1, 2)
    """
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(flat, shape, order="F"))


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _default_labels(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    if not shape:
        return (name,)
    if len(shape) == 1:
        return tuple(f"{name}[{i}]" for i in range(shape[0]))
    return tuple(f"{name}[{', '.join(map(str, entry_index(k, shape)))}]"
                 for k in range(_size(shape)))


def entry_labels(name: str, shape: tuple[int, ...], given: object) -> tuple[str, ...]:
    """Display labels of the entries of ``name``, in column-major order.

    Parameters
    ----------
    name : str
        The object's name.
    shape : tuple of int
        The object's shape.
    given : sequence of str, pair of sequences, or None
        None for the default labels; one label per entry (column-major); or,
        for a matrix, a pair (row labels, column labels).

    Returns
    -------
    tuple of str
        One label per entry.

    Raises
    ------
    ModelError
        If ``given`` has the wrong number of labels or is not a sequence.
    """
    if given is None:
        return _default_labels(name, shape)
    size = _size(shape)
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise ModelError(f"labels[{name!r}]: expected a list of {size} labels, got "
                         f"{type(given).__name__}")
    items = list(given)
    if len(shape) == 2 and len(items) == 2 and all(
            isinstance(part, Sequence) and not isinstance(part, str) for part in items):
        rows, cols = ([str(label) for label in part] for part in items)
        if (len(rows), len(cols)) != shape:
            raise ModelError(f"labels[{name!r}]: expected {shape[0]} row labels and "
                             f"{shape[1]} column labels, got {len(rows)} and {len(cols)}")
        return tuple(f"{name}[{rows[i]}, {cols[j]}]"
                     for i, j in (entry_index(k, shape) for k in range(size)))
    if len(items) != size:
        hint = (" (one per entry in column-major order, or a pair (row labels, column labels))"
                if len(shape) == 2 else "")
        raise ModelError(f"labels[{name!r}]: expected {size} labels{hint}, got {len(items)}")
    return tuple(f"{name}[{item}]" for item in items)


def label_table(layout: Layout, names: Iterable[str], given: Mapping[str, object]
                ) -> dict[str, tuple[str, ...]]:
    """Entry labels of each of ``names`` (variables, constraints or parameters).

    Parameters
    ----------
    layout : Layout
        Where the shapes of the names are.
    names : iterable of str
        Known names, in order (repeats are ignored).
    given : dict of str to labels
        The caller's labels, by name (see :func:`entry_labels`). The rows of a
        variable's bounds (``x.lower``, ``x.upper``) take the variable's
        labels unless labels are given for them.

    Returns
    -------
    dict of str to tuple of str

    Raises
    ------
    ModelError
        For labels that do not fit their object.
    """
    shapes = {name: block.shape for blocks in (layout.variables, layout.constraints,
                                               layout.parameters)
              for name, block in blocks.items()}
    return {name: entry_labels(name, shapes[name], _given(name, shapes, given))
            for name in dict.fromkeys(names)}


def _given(name: str, shapes: Mapping[str, tuple[int, ...]], given: Mapping[str, object]
           ) -> object:
    """The labels given for ``name``; for the bound rows ``x.lower`` / ``x.upper`` of
    a variable, those of the variable when none are given and the shapes agree."""
    if name in given:
        return given[name]
    base, dot, side = name.rpartition(".")
    if dot and side in ("lower", "upper") and base in given and shapes.get(base) == \
            shapes[name]:
        return given[base]
    return None


def check_labels(labels: object, known: Iterable[str], call: str) -> dict[str, object]:
    """The labels given by the caller, by name, after checking the names.

    Parameters
    ----------
    labels : dict of str to labels, or None
    known : iterable of str
        The model's variables, constraints and parameters.
    call : str
        The public call, for error messages.

    Returns
    -------
    dict of str to object
        The given labels by name (not yet checked against the shapes).

    Raises
    ------
    ModelError
        If ``labels`` is not a dict or names an unknown object.
    """
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ModelError(f"{call}: labels must be a dict of name to list of labels")
    names = list(known)
    for name in labels:
        if name not in names:
            choices = ", ".join(repr(n) for n in names) or "none"
            raise ModelError(f"{call}: labels given for unknown name {name!r} (the model's "
                             f"variables, constraints and parameters: {choices})")
    return dict(labels)


def short(text: str, limit: int = SIDE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, ending with "..." when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _abbreviate(text: str) -> str:
    """One line, with numeric array literals shown as ``C``.

    CVXPY prints constant matrices in full, over several lines; a report only
    needs the structure, e.g. ``C @ p + -(C @ f)``.
    """
    text = " ".join(text.split())
    while True:
        shorter = _LITERAL.sub("◦", text)
        if shorter == text:
            break
        text = shorter
    if text.endswith("..."):  # a text cut inside a literal
        text = _CUT_LITERAL.sub("C...", text)
    return re.sub(r"◦( ◦)*", "C", text)


def _top_level(text: str, relation: str) -> int:
    """Position of ``relation`` in ``text`` outside brackets, or -1."""
    depth = 0
    for pos, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and text.startswith(relation, pos):
            return pos
    return -1


def constraint_sides(text: str, kind: str = "eq") -> tuple[str, str, str]:
    """The two sides and the relation of a constraint, from its text.

    Parameters
    ----------
    text : str
        The constraint as CVXPY prints it (``lhs == rhs``, in the order CVXPY
        stores its sides), possibly cut short with "...".
    kind : {"eq", "ineq"}, default "eq"
        The constraint's kind: the relation when the text shows none.

    Returns
    -------
    (lhs, rhs, relation)
        Each side on one line, array literals shown as ``C``, cut to
        :data:`SIDE_LIMIT` characters; ``relation`` is ``"=="`` or ``"<="``.
        ``a >= b`` reads ``b <= a``, the order of CVXPY's duals (Lagrangian
        f + λᵀ(lhs − rhs), λ ≥ 0). A side that the text does not show (it
        was cut before the relation) reads ``"..."``.

    Examples
    --------
    >>> constraint_sides("y == B.T @ w")
    ('y', 'B.T @ w', '==')
    >>> constraint_sides("x >= 0.0", "ineq")
    ('0.0', 'x', '<=')
    """
    flat = _abbreviate(text)
    for relation in _RELATIONS:
        pos = _top_level(flat, relation)
        if pos >= 0:
            left, right = short(flat[:pos]), short(flat[pos + len(relation):])
            if relation == " >= ":
                return right, left, "<="
            return left, right, relation.strip()
    return short(flat) or "...", "...", "==" if kind == "eq" else "<="
