"""All-or-nothing writing of the command's output files.

Destinations are checked before any work is done (:func:`check_file`,
:func:`check_folder`). Once every output has been produced in memory,
:meth:`Outputs.commit` writes them:

1. each regular destination is written to a temporary file in its own folder
   (``.diffmodel-<random>.tmp``, with the mode of the file it replaces);
2. destinations that exist and are not regular files (``/dev/null``,
   ``/dev/stdout``, a pipe such as ``>(gzip > r.json.gz)``) cannot be renamed
   into: they are written in place, only after step 1 succeeded;
3. the temporary files are renamed onto their destinations.

If anything fails before step 3, the temporary files (and any plot folder
created) are removed, so no output file is created or changed, and the error
names the destination that failed and why (``cannot write /dev/full: No
space left on device``). A rename failing half-way through step 3 (unlikely:
each is a rename within one folder) leaves the outputs renamed before it.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ._common import CommandError

__all__ = ["Destination", "Outputs", "check_file", "check_folder"]


@dataclass(frozen=True)
class Destination:
    """Where one output goes.

    Attributes
    ----------
    flag : str
        The option that asked for it (``"--html"``), for messages.
    shown : str
        The path as the user wrote it, for messages and ``wrote`` lines.
    target : Path
        The file written (a symbolic link is followed: its target is replaced).
    """

    flag: str
    shown: str
    target: Path


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_file(flag: str, text: str) -> Destination:
    """Check that ``text`` can receive the output of ``flag``.

    Parameters
    ----------
    flag : str
        The option (``"--html"``, ``"--md"``, ``"--json"``).
    text : str
        The path given.

    Returns
    -------
    Destination
        The checked destination.

    Raises
    ------
    CommandError
        If the name is empty, the folder does not exist or cannot be written
        to, the path is a folder, or an existing file is not writable.
    """
    if not text:
        raise CommandError(f"{flag}: the file name is empty")
    path = Path(text)
    try:
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        if target.is_dir():
            raise CommandError(f"{flag} {text}: is a folder, not a file")
        folder = target.parent
        if not folder.is_dir():
            raise CommandError(f"{flag} {text}: the folder '{folder}' does not exist")
        if target.exists() and not os.access(target, os.W_OK):
            raise CommandError(f"{flag} {text}: the file is not writable (permission denied)")
        if not _special(target) and not os.access(folder, os.W_OK | os.X_OK):
            raise CommandError(
                f"{flag} {text}: cannot create files in the folder '{folder}' (permission denied)")
    except OSError as exc:  # a name too long, a loop of links
        raise CommandError(f"{flag} {text}: {_reason(exc)}") from None
    return Destination(flag, text, target)


def check_folder(flag: str, text: str) -> Path:
    """Check that ``text`` is, or can be created as, a writable folder.

    Parameters
    ----------
    flag : str
        The option (``"--plots"``).
    text : str
        The path given.

    Returns
    -------
    Path
        The folder (not created yet: :meth:`Outputs.commit` creates it).

    Raises
    ------
    CommandError
        If the path is a file, or neither it nor its nearest existing parent
        is a folder that can be written to.
    """
    if not text:
        raise CommandError(f"{flag}: the folder name is empty")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise CommandError(f"{flag} {text}: is a file, not a folder")
        existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise CommandError(f"{flag} {text}: '{existing}' is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CommandError(
                f"{flag} {text}: cannot write to the folder '{existing}' (permission denied)")
    except OSError as exc:
        raise CommandError(f"{flag} {text}: {_reason(exc)}") from None
    return path


class Outputs:
    """The contents of every output, written all together by :meth:`commit`."""

    def __init__(self) -> None:
        self._items: list[tuple[Destination, bytes]] = []

    def add(self, destination: Destination, data: bytes) -> None:
        """Queue ``data`` for ``destination`` (nothing is written yet).

        Parameters
        ----------
        destination : Destination
            Where it goes; its folder is created by :meth:`commit` if needed.
        data : bytes
            The whole content.
        """
        self._items.append((destination, data))

    def commit(self) -> list[str]:
        """Write every queued output, all or nothing (see the module docstring).

        Returns
        -------
        list of str
            The destinations written, as the user named them, in order.

        Raises
        ------
        CommandError
            If a folder, a temporary file or a special file cannot be
            written; nothing is left behind.
        """
        created: list[Path] = []
        staged: list[tuple[Path, Destination]] = []
        try:
            for dest, data in self._items:
                if not _special(dest.target):
                    created += _make_folder(dest)
                    staged.append((_stage(dest, data), dest))
            for dest, data in self._items:
                if _special(dest.target):
                    _write_in_place(dest, data)
            while staged:
                temp, dest = staged[0]
                try:
                    os.replace(temp, dest.target)
                except OSError as exc:
                    raise CommandError(f"cannot write {dest.shown}: {_reason(exc)}") from None
                staged.pop(0)
        except BaseException:
            _remove(staged, created)
            raise
        return [dest.shown for dest, _ in self._items]


def _make_folder(dest: Destination) -> list[Path]:
    """Create the missing folders above ``dest.target``; return them, outermost first."""
    missing = [p for p in (dest.target.parent, *dest.target.parent.parents) if not p.exists()]
    made: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise CommandError(f"{dest.flag}: cannot create the folder '{folder}': "
                               f"{_reason(exc)}") from None
        made.append(folder)
    return made


def _stage(dest: Destination, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``dest.target``; return its path."""
    folder = dest.target.parent
    while True:
        temp = folder / f".diffmodel-{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        except OSError as exc:
            raise CommandError(f"cannot write {dest.shown}: {_reason(exc)}") from None
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if dest.target.exists():  # keep the mode of the file replaced
            os.chmod(temp, stat.S_IMODE(dest.target.stat().st_mode))
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CommandError(f"cannot write {dest.shown}: {_reason(exc)}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _write_in_place(dest: Destination, data: bytes) -> None:
    """Write ``data`` to an existing special file (a device or a pipe)."""
    try:
        with open(dest.target, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {dest.shown}: {_reason(exc)}") from None


def _remove(staged: list[tuple[Path, Destination]], created: list[Path]) -> None:
    """Remove leftover temporary files and the (then empty) folders created."""
    for temp, _ in staged:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty: an earlier output was renamed into it
            pass
