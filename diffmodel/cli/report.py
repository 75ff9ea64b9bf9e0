"""``python -m diffmodel report``: solve a model from a file and write its report.

The steps, each failing with a one-line :class:`~diffmodel.cli._common.CommandError`:
check every output destination; run MODEL.py; find the model and labels;
parse the ``--set`` values; solve; build the report; produce every output in
memory; write them all or nothing (:mod:`diffmodel.cli._io`); print the
table and the files written.

Numerics: warnings and NumPy floating-point errors never reach the terminal
(:mod:`diffmodel.cli._guard`). A floating-point overflow while solving or
differentiating, or a solution that is not finite, means the values are too
large for double precision: an error with exit status 2, naming the largest
value set. Other warnings are summarized in one note on stderr after a
successful report (none with ``--quiet``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

import diffmodel as dm

from ._common import EXIT_FAILURE, EXIT_OK, REPORT_EXTRA, CommandError, one_line
from ._guard import Watch
from ._io import Destination, Outputs, check_file, check_folder
from ._script import find_model, load_script, script_labels
from .values import Labels, parse_assignments, read_labels

__all__ = ["run_report"]

FloatArray = NDArray[np.float64]
_FILE_FLAGS = ("html", "md", "json")


class Report(Protocol):
    """What the command uses of the report that ``Model.sensitivity`` returns.

    Besides these methods, ``str(report)`` is the terminal table.
    """

    def to_markdown(self) -> str:
        """The report as Markdown."""

    def to_html(self, path: Path) -> object:
        """Write the report as one self-contained HTML file at ``path``."""

    def to_json(self) -> str:
        """The report as a JSON document."""

    def save_plots(self, folder: Path) -> Iterable[str | os.PathLike[str]]:
        """Save the plots as PNG files in ``folder``; return the files written."""


def run_report(args: argparse.Namespace) -> int:
    """Run ``report`` with parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The arguments of :func:`diffmodel.cli._parser.build_parser`'s ``report``.

    Returns
    -------
    int
        0 (failures raise).

    Raises
    ------
    CommandError
        For any failure, with its exit status (see :mod:`diffmodel.cli`).
    """
    path = Path(args.model_file)
    files = _check_files(args)
    plots = check_folder("--plots", args.plots) if args.plots is not None else None
    watch = Watch()
    with watch.watching():
        namespace = load_script(path)
        model = find_model(namespace, args.model, path)
        labels = read_labels(Path(args.labels)) if args.labels else script_labels(namespace)
        values = parse_assignments(args.values, list(model.parameters))
        _require_values(model, values, path)
        report = _solve_and_report(model, values, labels, args, watch)
        text, outputs = _render(report, files, plots, quiet=args.quiet)
        written = outputs.commit()
    if text is not None:
        print(text)
        for out in written:
            print(f"wrote {out}")
        note = watch.note()
        if note is not None:
            print(f"diffmodel report: note: {note}", file=sys.stderr)
    return EXIT_OK


def _check_files(args: argparse.Namespace) -> dict[str, Destination]:
    """The checked destinations of ``--html``, ``--md`` and ``--json``."""
    files: dict[str, Destination] = {}
    for flag in _FILE_FLAGS:
        text = getattr(args, flag)
        if text is None:
            continue
        dest = check_file(f"--{flag}", text)
        for other in files.values():
            if _same_target(other.target, dest.target):
                raise CommandError(f"{other.flag} and {dest.flag} both name '{text}': "
                                   "give each output its own file")
        files[flag] = dest
    return files


def _same_target(a: Path, b: Path) -> bool:
    """Whether two regular destinations are the same file (special files may be shared)."""
    try:
        if a.exists() and b.exists():
            return a.samefile(b) and a.is_file()
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _require_values(model: dm.Model, values: Mapping[str, FloatArray], path: Path) -> None:
    """Every parameter needs a value, from MODEL.py or from ``--set``."""
    for name, param in model.parameters.items():
        if name not in values and param.value is None:
            raise CommandError(f"parameter '{name}' has no value: set {name}.value in {path} "
                               f"or pass --set {name}=VALUE")


def _solve_and_report(model: dm.Model, values: Mapping[str, FloatArray],
                      labels: Labels | None, args: argparse.Namespace,
                      watch: Watch) -> Report:
    """Solve and build the report, turning every failure into a :class:`CommandError`.

    A NumPy overflow recorded by ``watch`` during the solve or the report is
    an error (exit 2), also when the solve succeeded.
    """
    before = watch.overflows
    try:
        solution = model.solve(solver=args.solver, **values)
        _check_finite(solution, values)
        # A matrix's labels may be a pair [row labels, column labels].
        given = cast("Mapping[str, Sequence[str]] | None", labels)
        report: Report = model.sensitivity(of=args.of, wrt=args.wrt, labels=given,
                                           top=args.top)
    except (dm.SolverError, dm.DerivativeError) as exc:
        if watch.overflows > before:  # the failure comes from values too large
            raise CommandError(_overflow(values, one_line(str(exc)), advice=False)) from None
        raise CommandError(str(exc), status=EXIT_FAILURE) from None
    except CommandError:
        raise
    except (dm.DiffModelError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(_describe(exc)) from None
    except ImportError as exc:
        raise CommandError(_missing_dependency(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a failure inside the solver or a dependency
        raise CommandError(f"unexpected {_describe(exc)}", status=EXIT_FAILURE) from None
    if watch.overflows > before:  # (overflows while drawing plots do not count)
        raise CommandError(_overflow(values, "some sensitivities are not finite"))
    return report


def _check_finite(solution: dm.Solution, values: Mapping[str, FloatArray]) -> None:
    """A solution with an infinite or NaN entry comes from values that overflow."""
    if not math.isfinite(solution.value):
        raise CommandError(_overflow(values, f"the optimal value is {solution.value}"))
    for kind, arrays in (("variable", solution.primal), ("dual of", solution.dual)):
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise CommandError(_overflow(values, f"the {kind} '{name}' is not finite"))


def _overflow(values: Mapping[str, FloatArray], what: str, advice: bool = True) -> str:
    """The message for values too large for double precision.

    ``what`` says what overflowed; ``advice`` adds what to do about it.
    """
    sizes = {name: float(np.abs(v).max()) for name, v in values.items() if v.size}
    if sizes:
        name = max(sizes, key=lambda key: sizes[key])
        largest = f"the largest value set is |{name}| = {sizes[name]:.3g}"
    else:
        largest = "the values are those of MODEL.py"
    tail = "; use values of a smaller magnitude (rescale the model)" if advice else ""
    return f"floating-point overflow at these parameter values ({largest}): {what}{tail}"


def _render(report: Report, files: Mapping[str, Destination],
            plots: Path | None, quiet: bool) -> tuple[str | None, Outputs]:
    """The terminal table (None if ``quiet``) and every requested output, in memory.

    HTML and plots are drawn in a scratch folder and read back; nothing is
    written to a destination here (see :meth:`Outputs.commit`).
    """
    outputs = Outputs()
    try:
        text = None if quiet else str(report)
        with tempfile.TemporaryDirectory(prefix="diffmodel-") as scratch:
            if "html" in files:
                page = Path(scratch) / "report.html"
                report.to_html(page)
                outputs.add(files["html"], page.read_bytes())
            if plots is not None:
                for png in report.save_plots(Path(scratch) / "plots"):
                    dest = plots / Path(png).name
                    outputs.add(Destination("--plots", str(dest), dest), Path(png).read_bytes())
            if "md" in files:
                outputs.add(files["md"], report.to_markdown().encode("utf-8"))
            if "json" in files:
                outputs.add(files["json"], report.to_json().encode("utf-8"))
    except ImportError as exc:
        raise CommandError(_missing_dependency(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write a temporary copy of the report "
                           f"({exc.filename or tempfile.gettempdir()}): "
                           f"{exc.strerror or exc}") from None
    except (dm.DiffModelError, ValueError, TypeError) as exc:
        raise CommandError(_describe(exc)) from None
    return text, outputs


def _describe(exc: BaseException) -> str:
    """The message of ``exc``, prefixed by its type unless it is diffmodel's own."""
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, dm.DiffModelError):
        return message
    return f"{type(exc).__name__}: {message}"


def _missing_dependency(exc: ImportError) -> str:
    """The message for a missing optional dependency (or a broken installation)."""
    module = exc.name or ""
    if module == "diffmodel" or module.startswith("diffmodel."):
        return f"this installation of diffmodel is incomplete: {exc}"
    message = one_line(str(exc))
    if "diffmodel[report]" in message:  # the report's own message names the extra
        return message
    return f"the report needs an optional dependency: {message} ({REPORT_EXTRA})"
