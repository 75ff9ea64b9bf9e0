"""Shared pieces of the command line: the one-line error and text helpers."""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "clip",
    "one_line",
    "shorten",
]

EXIT_OK = 0
"""Success."""
EXIT_FAILURE = 1
"""The model cannot be solved or differentiated at the given values."""
EXIT_USAGE = 2
"""Bad input: usage, files, names, values, or a missing optional dependency."""
EXIT_INTERRUPTED = 130
"""The user interrupted the command (Ctrl-C), as shells report SIGINT."""

REPORT_EXTRA = "pip install 'diffmodel[report]'"
"""How to install the optional dependencies of HTML reports and plots."""


class CommandError(Exception):
    """A failure to report as one line on stderr, with an exit status.

    Parameters
    ----------
    message : str
        What went wrong; newlines are folded when it is printed.
    status : int, optional
        The exit status of the command (default :data:`EXIT_USAGE`).
    """

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    r"""Fold all whitespace runs (newlines included) of ``text`` into single spaces.

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    str
        The text on one line.

    Examples
    --------
    >>> one_line("a\n  b\tc ")
    'a b c'
    """
    return " ".join(text.split())


def shorten(text: str, limit: int = 60) -> str:
    """``repr(text)`` for a message, cut to about ``limit`` characters.

    User input is echoed in error messages; a 100 kB literal must not
    become a 100 kB line.

    Parameters
    ----------
    text : str
        The user's text.
    limit : int, optional
        The largest number of characters of ``text`` shown (default 60).

    Returns
    -------
    str
        The quoted text, with ``…`` and its length if it was cut.

    Examples
    --------
    >>> shorten("four")
    "'four'"
    >>> shorten("9" * 100, limit=5)
    "'99999…' (100 characters)"
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '…'!r} ({len(text)} characters)"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with ``…`` if it was longer.

    Parameters
    ----------
    text : str
        Any text.
    limit : int
        The largest number of characters kept.

    Returns
    -------
    str
        The text, or its start followed by ``…``.

    Examples
    --------
    >>> clip("abcdef", 3)
    'abc…'
    """
    return text if len(text) <= limit else text[:limit] + "…"
