"""Command line: ``python -m diffmodel <command>`` (also installed as ``diffmodel``).

Commands
--------
demo
    Solve and differentiate a small random model, with a finite-difference
    check (:func:`diffmodel.cli.demo.run_demo`).
report
    Load a model from a Python file, solve it and write its sensitivity
    report (terminal table, Markdown, HTML, JSON, plots):
    :func:`diffmodel.cli.report.run_report`.

:func:`main` takes the argument list and returns the exit code, so the
command line can be driven in-process (tests do). Errors are reported as one
line, ``diffmodel report: error: ...``, on stderr, never a traceback or a
warning: exit status 2 for bad input (a missing or broken model file, an
unknown name, an unparsable, non-finite or misshapen value, values that
overflow double precision, an unreadable or unwritable file, a missing
optional dependency), 1 when the model cannot be solved or differentiated at
the given values, and 130 when interrupted with Ctrl-C.

The package uses only diffmodel's public API (``import diffmodel as dm``).
Modules: :mod:`~diffmodel.cli.values` (``--set`` values, label files),
:mod:`~diffmodel.cli.report`, :mod:`~diffmodel.cli.demo`, and the private
helpers ``_parser`` (options and help), ``_script`` (running MODEL.py),
``_io`` (all-or-nothing output files), ``_guard`` (warnings and
floating-point errors), ``_common`` (the one-line error).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._common import EXIT_INTERRUPTED, EXIT_USAGE, CommandError, one_line
from ._parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 2 for a usage error or bad input; 1 if the model
        cannot be solved or differentiated (``report``) or the gradient check
        fails (``demo``); 130 if interrupted. ``--help`` returns 0.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    name = f"diffmodel {args_list[0]}" if args_list[:1] in (["report"], ["demo"]) else "diffmodel"
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version (status 0)
            return exc.code if isinstance(exc.code, int) else 0
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(seed=args.seed)
        if args.command == "report":
            from .report import run_report

            return run_report(args)
    except CommandError as exc:
        print(f"{name}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # Ctrl-C (one raised by MODEL.py is a CommandError)
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    parser.print_help()
    return EXIT_USAGE
