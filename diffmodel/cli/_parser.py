"""The argument parser of ``python -m diffmodel``: commands, options, help texts."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ._common import REPORT_EXTRA, CommandError, shorten
from .values import MAX_DEPTH, MAX_LITERAL_CHARS

__all__ = ["CliParser", "build_parser", "positive_int", "seed_int"]

_REPORT_EPILOG = f"""\
MODEL.py is run as a script (with its folder on sys.path, and __name__ set to
'__diffmodel_model__', so an `if __name__ == "__main__":` block does not run).
It must define a diffmodel Model, named `model` unless --model says otherwise,
whose parameters have values (Parameter.value), or get them from --set.
If it defines a dict `labels` (name -> list of entry labels), the report uses
it unless --labels is given.

--set values must be finite real numbers; a literal has at most
{MAX_LITERAL_CHARS:,} characters and {MAX_DEPTH} levels of brackets (beyond that, use a .npy file).
Output files are written all or nothing: nothing is created or changed unless
every output was produced (existing special files such as /dev/stdout or a
pipe are written in place, once everything else is ready).

examples:
  python -m diffmodel report examples/portfolio.py
  python -m diffmodel report examples/portfolio.py --set gamma=6 --of w --wrt mu
  python -m diffmodel report examples/dc_power_flow.py --set d=d.npy \\
      --html report.html --md report.md --json report.json --plots img/

exit status: 0 on success; 2 for bad input (missing or broken MODEL.py, no
model, unknown name, bad value or shape, values that overflow double
precision, an unreadable or unwritable file, a missing optional dependency:
HTML and plots need pandas and matplotlib, {REPORT_EXTRA});
1 if the model cannot be solved or differentiated at these values;
130 if interrupted (Ctrl-C). Errors are one line on stderr. Warnings are never
printed: after a successful report, one note line on stderr says how many were
silenced, and the first one."""


class CliParser(argparse.ArgumentParser):
    r"""An ArgumentParser whose usage errors are one-line :class:`CommandError`\ s."""

    def error(self, message: str) -> NoReturn:
        """Raise the usage error instead of printing the usage and exiting.

        Parameters
        ----------
        message : str
            argparse's message.

        Raises
        ------
        CommandError
            Always, with exit status 2.
        """
        raise CommandError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    """An ``argparse`` type: a positive integer.

    Parameters
    ----------
    text : str
        The argument.

    Returns
    -------
    int
        Its value, at least 1.

    Raises
    ------
    argparse.ArgumentTypeError
        If it is not a positive integer (the message quotes at most 20
        characters of it).
    """
    digits = text.strip().lstrip("0")
    if not (digits.isascii() and digits.isdigit()):  # "", "-1", "ten", "1.5"
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {shorten(text, 20)}")
    if len(digits) > 18:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {shorten(text, 20)}: too large")
    return int(digits)


def seed_int(text: str) -> int:
    """An ``argparse`` type: a random seed, a nonnegative integer.

    Parameters
    ----------
    text : str
        The argument.

    Returns
    -------
    int
        Its value, at least 0.

    Raises
    ------
    argparse.ArgumentTypeError
        If it is not a nonnegative integer of at most 30 digits.
    """
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits.lstrip("0")) > 30:
        raise argparse.ArgumentTypeError(
            f"expected a nonnegative integer of at most 30 digits, got {shorten(text, 20)}")
    return int(digits.lstrip("0") or "0")


def build_parser() -> CliParser:
    """The parser of ``python -m diffmodel``, with its ``demo`` and ``report`` commands.

    Returns
    -------
    CliParser
        The parser; ``args.command`` is ``"demo"``, ``"report"`` or None.
    """
    parser = CliParser(prog="python -m diffmodel",
                       description="Exact derivatives of CVXPY quadratic programs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="solve and differentiate a small model, with a finite-difference check",
        description="Solve a small equality-constrained QP, print its solution, "
        "the gradients of a loss by parameter name, and a finite-difference check.",
    )
    demo.add_argument("--seed", type=seed_int, default=0,
                      help="seed of the random data, a nonnegative integer (default 0)")
    report = sub.add_parser(
        "report",
        help="solve a model defined in a Python file and write its sensitivity report",
        description="Solve the model defined in MODEL.py and print its sensitivity report "
        "(objective sensitivities, solution sensitivities, shadow prices); optionally "
        "write it as HTML, Markdown, JSON and PNG plots.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _report_arguments(report)
    return parser


def _report_arguments(report: argparse.ArgumentParser) -> None:
    """Declare the options of ``report``."""
    report.add_argument("model_file", metavar="MODEL.py",
                        help="Python file that defines the model")
    report.add_argument("--model", metavar="NAME", default="model",
                        help="name of the Model object in MODEL.py (default: model)")
    report.add_argument(
        "--set", metavar="NAME=VALUE", action="append", default=[], dest="values",
        help="set parameter NAME before solving; VALUE is a number, a Python/JSON list "
        "literal ('[1, 2]', nested for matrices) or the path of a .npy file. Repeatable; "
        "parameters not set keep the value given in MODEL.py",
    )
    report.add_argument("--of", metavar="NAME", nargs="+",
                        help="variables and constraints (duals) to report on (default: all)")
    report.add_argument("--wrt", metavar="NAME", nargs="+",
                        help="parameters to differentiate with respect to (default: all)")
    report.add_argument(
        "--labels", metavar="FILE.json",
        help="JSON object mapping names to lists of entry labels (default: the dict "
        "'labels' of MODEL.py, if it defines one)",
    )
    report.add_argument("--top", metavar="K", type=positive_int, default=10,
                        help="number of entries in each ranking (default: 10)")
    report.add_argument("--solver", choices=("kkt", "osqp"), default=None,
                        help="backend for the solve (default: the model's)")
    report.add_argument("--html", metavar="OUT.html",
                        help="write the report as one self-contained HTML file")
    report.add_argument("--md", metavar="OUT.md", help="write the report as Markdown")
    report.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    report.add_argument("--plots", metavar="FOLDER",
                        help="save the report's plots as PNG files in FOLDER (created if needed)")
    report.add_argument("--quiet", action="store_true",
                        help="print nothing on success (no terminal table)")
