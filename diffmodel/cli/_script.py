"""Loading ``MODEL.py`` for ``diffmodel report``: run it, find its model and labels."""

from __future__ import annotations

import runpy
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

import diffmodel as dm

from ._common import CommandError, clip, one_line, shorten
from .values import Labels, check_labels

__all__ = ["RUN_NAME", "find_model", "load_script", "script_labels"]

RUN_NAME = "__diffmodel_model__"
"""``__name__`` of MODEL.py while it runs, so its ``__main__`` block does not."""


def load_script(path: Path) -> dict[str, object]:
    """Run MODEL.py with its folder on ``sys.path`` and return its globals.

    Parameters
    ----------
    path : Path
        The script.

    Returns
    -------
    dict of str to object
        The script's global names.

    Raises
    ------
    CommandError
        If the file is missing or not a file, has a syntax error, or raises
        anything while it runs: an exception, ``SystemExit``,
        ``KeyboardInterrupt`` or any other ``BaseException`` (an error of
        the script, reported with the script's line).
    """
    try:
        is_file, exists = path.is_file(), path.exists()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise CommandError(f"cannot open {shorten(str(path))}: {_reason(exc)}") from None
    if not exists:
        raise CommandError(f"no such file: '{path}'")
    if not is_file:
        raise CommandError(f"'{path}' is not a file")
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        return runpy.run_path(str(path), run_name=RUN_NAME)
    except SyntaxError as exc:  # IndentationError and TabError too
        raise CommandError(_syntax_message(path, exc)) from None
    except BaseException as exc:  # noqa: BLE001 - whatever the user's script raises
        raise CommandError(_failure_message(path, exc)) from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:  # the script removed it itself
            pass


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return strerror if isinstance(strerror, str) and strerror else str(exc)


def _syntax_message(path: Path, exc: SyntaxError) -> str:
    """``"MODEL.py: syntax error at line 2: '(' was never closed"``.

    A syntax error in a module the script imports names that module.
    """
    where = str(path)
    if exc.filename and not _same_file(exc.filename, path):
        where = exc.filename
    return f"{where}: syntax error at line {exc.lineno}: {exc.msg}"


def _failure_message(path: Path, exc: BaseException) -> str:
    """The one-line message for a script that raised ``exc`` while loading."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if _same_file(frame.filename, path)]
    where = f" at line {frames[-1].lineno}" if frames else ""
    if isinstance(exc, OSError) and exc.filename is not None and _same_file(exc.filename, path):
        return f"cannot read '{path}': {_reason(exc)}"
    if isinstance(exc, SystemExit):
        code = exc.code
        status = (f"status {code}" if code is None or isinstance(code, int)
                  else f"message {shorten(one_line(str(code)))}")
        return f"{path} exited ({status}){where} while being loaded"
    text = clip(one_line(str(exc)), 300)
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{path} failed{where} while being loaded: {detail}"


def _same_file(name: str, path: Path) -> bool:
    try:
        return Path(name).resolve() == path.resolve()
    except (OSError, ValueError, RuntimeError):
        return False


def find_model(namespace: Mapping[str, object], name: str, path: Path) -> dm.Model:
    """The :class:`diffmodel.Model` named ``name`` in the script's globals.

    Parameters
    ----------
    namespace : mapping
        The script's globals.
    name : str
        The name given with ``--model`` (default ``model``).
    path : Path
        The script, for messages.

    Returns
    -------
    diffmodel.Model
        The model.

    Raises
    ------
    CommandError
        If there is no such name (the message lists the models the script
        does define) or it is not a Model.
    """
    if name not in namespace:
        found = [key for key, value in namespace.items()
                 if isinstance(value, dm.Model) and not key.startswith("_")]
        hint = (f"; it defines Model objects named {', '.join(found)}: choose one with --model"
                if found else "")
        raise CommandError(f"{path} defines no object named '{name}'{hint}")
    obj = namespace[name]
    if not isinstance(obj, dm.Model):
        raise CommandError(f"'{name}' in {path} is a {type(obj).__name__}, not a diffmodel Model")
    return obj


def script_labels(namespace: Mapping[str, object]) -> Labels | None:
    """The script's ``labels`` dict, if it defines one.

    Parameters
    ----------
    namespace : mapping
        The script's globals.

    Returns
    -------
    dict of str to list, or None
        The checked labels, or None if ``labels`` is missing or not a mapping.
    """
    labels = namespace.get("labels")
    if not isinstance(labels, Mapping):
        return None
    return check_labels(labels, "'labels' in MODEL.py")
