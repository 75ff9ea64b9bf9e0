"""Parsing of ``--set NAME=VALUE`` values and of ``--labels`` files.

A value is a number, a JSON or Python list literal (nested for matrices) or
the path of a ``.npy`` file. Parsing is bounded: a literal may have at most
:data:`MAX_LITERAL_CHARS` characters and :data:`MAX_DEPTH` levels of
brackets (checked by a linear scan before any parser runs, so deeply nested
input cannot exhaust the stack), integers are read as floats (so no
int-string conversion limit applies), and every entry must be a finite real
number. Every failure is a :class:`~diffmodel.cli._common.CommandError`
whose message starts with the option and the name (``--set b: ...``).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ._common import CommandError, clip, shorten

__all__ = ["MAX_DEPTH", "MAX_LITERAL_CHARS", "Labels", "check_labels", "parse_assignments",
           "parse_value", "read_labels"]

FloatArray = NDArray[np.float64]
Labels = dict[str, list[str | list[str]]]
"""Entry labels by name: one label per entry, or ``[row labels, column labels]``."""
Nested = float | list["Nested"]

MAX_DEPTH = 32
"""Most levels of brackets in a ``--set`` literal (NumPy allows 64 dimensions)."""
MAX_LITERAL_CHARS = 1_000_000
"""Longest ``--set`` literal; larger values belong in a ``.npy`` file."""

_EXPECTED = ("expected a number, a list literal such as [1, 2] or [[1, 0], [0, 1]], "
             "or a .npy file")


def parse_assignments(items: Iterable[str], known: Sequence[str]) -> dict[str, FloatArray]:
    """``--set NAME=VALUE`` items as parameter values by name.

    Parameters
    ----------
    items : iterable of str
        The ``NAME=VALUE`` arguments, in order.
    known : sequence of str
        The model's parameter names.

    Returns
    -------
    dict of str to ndarray
        Float64 arrays (0-d for a number), one per name.

    Raises
    ------
    CommandError
        For an item without ``=``, an unknown name, a name set twice or a
        bad value (see :func:`parse_value`).
    """
    values: dict[str, FloatArray] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise CommandError(f"--set {shorten(item)}: expected NAME=VALUE")
        if name not in known:
            names = ", ".join(known) or "none"
            shown = name if len(name) <= 40 else name[:40] + "…"
            raise CommandError(f"--set {shown}: unknown parameter '{shown}' "
                               f"(the model's parameters: {names})")
        if name in values:
            raise CommandError(f"--set {name}: parameter '{name}' is set twice")
        values[name] = parse_value(name, text)
    return values


def parse_value(name: str, text: str) -> FloatArray:
    """One ``--set`` value: a number, a list literal, or a ``.npy`` file.

    Parameters
    ----------
    name : str
        The parameter's name, for messages.
    text : str
        The value as given on the command line.

    Returns
    -------
    ndarray
        A float64 array of finite entries.

    Raises
    ------
    CommandError
        If the text cannot be read, is not a rectangular array of real
        numbers, or has a NaN or infinite entry.

    Examples
    --------
    >>> parse_value("b", "[1, 2e3]").tolist()
    [1.0, 2000.0]
    >>> parse_value("A", "((1, 0), (0, 1))").shape
    (2, 2)
    """
    if _is_npy(text):
        arr, shown = _load_npy(name, text), f"the array in '{text}'"
    else:
        arr, shown = _array(name, text, _parse_literal(name, text)), shorten(text)
    if not np.isfinite(arr).all():
        raise CommandError(
            f"--set {name}: {shown} is not finite (it has a NaN or infinite entry, "
            "or a number beyond ±1.8e308): values must be finite numbers"
        )
    return arr


def _is_npy(text: str) -> bool:
    if text.lower().endswith(".npy"):
        return True
    if len(text) > 4096 or text.lstrip().startswith(("[", "(")):
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # not a valid file name (too long, NUL byte)
        return False


def _load_npy(name: str, text: str) -> FloatArray:
    try:
        raw: object = np.load(Path(text), allow_pickle=False)
    except FileNotFoundError:
        raise CommandError(f"--set {name}: no such file: '{text}'") from None
    except IsADirectoryError:
        raise CommandError(f"--set {name}: '{text}' is a folder, not a .npy file") from None
    except (OSError, ValueError, EOFError, MemoryError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CommandError(f"--set {name}: cannot read '{text}' as a .npy file: {reason}") from None
    if not isinstance(raw, np.ndarray):  # an .npz archive
        raise CommandError(f"--set {name}: '{text}' does not hold one array")
    if raw.dtype.kind not in "iuf":
        raise CommandError(f"--set {name}: '{text}' holds {raw.dtype} data, not real numbers")
    return np.asarray(raw, dtype=np.float64)


def _bracket_depth(text: str) -> int:
    """The deepest nesting of ``[``/``(`` in ``text``: a linear scan, no recursion."""
    depth = deepest = 0
    for char in text:
        if char in "[(":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "])":
            depth -= 1
    return deepest


def _parse_literal(name: str, text: str) -> object:
    """The Python object of a number or list literal, with bounded work."""
    if len(text) > MAX_LITERAL_CHARS:
        raise CommandError(
            f"--set {name}: the value has {len(text)} characters, more than the "
            f"{MAX_LITERAL_CHARS} allowed in a literal: save it with numpy.save and "
            f"pass the .npy file"
        )
    depth = _bracket_depth(text)
    if depth > MAX_DEPTH:
        raise CommandError(f"--set {name}: the value nests brackets {depth} levels deep, "
                           f"more than the {MAX_DEPTH} allowed")
    try:  # integers as floats: no int-string conversion limit, huge ones become inf
        return json.loads(text, parse_int=float)
    except (ValueError, RecursionError, MemoryError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        pass
    try:
        return float(text)  # "inf", "nan", "1_000": refused or accepted below
    except ValueError:
        raise CommandError(f"--set {name}: cannot parse {shorten(text)}: {_EXPECTED}") from None


def _array(name: str, text: str, obj: object) -> FloatArray:
    """A float64 array of ``obj``, a number or nested lists/tuples of numbers."""
    try:
        nested = _floats(obj, MAX_DEPTH)
    except TypeError:
        raise CommandError(f"--set {name}: {shorten(text)} is not numeric: {_EXPECTED}") from None
    try:
        return np.array(nested, dtype=np.float64)
    except ValueError:  # ragged nested lists
        raise CommandError(f"--set {name}: {shorten(text)} is not a rectangular array (rows "
                           "of different lengths)") from None


def _floats(obj: object, depth: int) -> Nested:
    """``obj`` with every number made a float; TypeError for anything else.

    Integers too large for a float become ``inf`` (refused as not finite).
    """
    if isinstance(obj, bool) or depth < 0:
        raise TypeError(obj)
    if isinstance(obj, int):
        try:
            return float(obj)
        except OverflowError:
            return math.copysign(math.inf, obj)
    if isinstance(obj, float):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_floats(item, depth - 1) for item in obj]
    raise TypeError(obj)


def read_labels(path: Path) -> Labels:
    """The labels of a ``--labels`` JSON file.

    Parameters
    ----------
    path : Path
        A JSON object of name → list of entry labels (for a matrix, also
        ``[row labels, column labels]``).

    Returns
    -------
    dict of str to list
        The labels, as strings.

    Raises
    ------
    CommandError
        If the file cannot be read, is not JSON, or does not have that form.
    """
    where = f"--labels: '{path}'"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"--labels: no such file: '{path}'") from None
    except IsADirectoryError:
        raise CommandError(f"{where} is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise CommandError(f"--labels: cannot read '{path}': {exc.strerror or exc}") from None
    try:
        data = json.loads(text, parse_int=str, parse_float=str)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError, MemoryError):
        raise CommandError(f"{where} is too large or nested too deeply") from None
    if not isinstance(data, dict):
        raise CommandError(f"{where} must hold a JSON object of name -> list of labels, "
                           f"got a {type(data).__name__}")
    return check_labels(data, f"--labels {path}")


def check_labels(labels: Mapping[object, object], what: str) -> Labels:
    """Validate the form of a labels mapping and make every label a string.

    Parameters
    ----------
    labels : mapping
        Name → list (or tuple, or 1-d array) of labels; an entry may itself
        be a list (a matrix's ``[row labels, column labels]``).
    what : str
        Where the labels come from, for messages.

    Returns
    -------
    dict of str to list
        The labels (the report checks their number against the shapes).

    Raises
    ------
    CommandError
        If a key is not a string, a value not a list, or a label a mapping
        or a list nested in a list.
    """
    out: Labels = {}
    for key, given in labels.items():
        value = given.tolist() if isinstance(given, np.ndarray) else given
        if not isinstance(key, str) or not isinstance(value, (list, tuple)):
            raise CommandError(f"{what}: expected name -> list of labels, got "
                               f"{clip(repr(key), 40)} -> {type(value).__name__}")
        out[key] = [_label(item, f"{what}: labels of '{key}'") for item in value]
    return out


def _label(item: object, where: str) -> str | list[str]:
    """One label as a string, or a matrix's list of row (or column) labels."""
    inner = item if isinstance(item, (list, tuple)) else [item]
    if any(isinstance(u, (list, tuple, dict)) for u in inner) or isinstance(item, dict):
        raise CommandError(f"{where} must be strings or [row labels, column labels]")
    return [str(u) for u in inner] if isinstance(item, (list, tuple)) else str(item)
