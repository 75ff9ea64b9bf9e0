"""Command line: ``python -m diffmodel <command>``.

Commands
--------
demo
    Solve and differentiate a small random model, with a finite-difference
    check (:func:`diffmodel._demo.run_demo`).
report
    Load a model from a Python file, solve it and write its sensitivity
    report (terminal table, Markdown, HTML, JSON, plots).

:func:`main` takes the argument list and returns the exit code, so the
command line can be driven in-process (tests do). Errors are reported as one
line, ``diffmodel report: error: ...``, on stderr: exit status 2 for bad
input (a missing or broken model file, an unknown name, an unparsable or
misshapen value, a missing optional dependency) and 1 when the model cannot
be solved or differentiated at the given values.
"""

from __future__ import annotations

import argparse
import ast
import json
import runpy
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
from numpy.typing import NDArray

from .errors import DerivativeError, DiffModelError, SolverError
from .model import Model

__all__ = ["main"]

_REPORT_EXTRA = "pip install 'diffmodel[report]'"

_REPORT_EPILOG = """\
MODEL.py is run as a script (with its folder on sys.path, and __name__ set to
'__diffmodel_model__', so an `if __name__ == "__main__":` block does not run).
It must define a diffmodel Model, named `model` unless --model says otherwise,
whose parameters have values (Parameter.value), or get them from --set.
If it defines a dict `labels` (name -> list of entry labels), the report uses
it unless --labels is given.

examples:
  python -m diffmodel report examples/portfolio.py
  python -m diffmodel report examples/portfolio.py --set gamma=6 --of w --wrt mu
  python -m diffmodel report examples/dc_power_flow.py --set d=d.npy \\
      --html report.html --md report.md --json report.json --plots img/

exit status: 0 on success; 2 for bad input (missing or broken MODEL.py, no
model, unknown name, bad value or shape, unreadable file, missing optional
dependency: the report needs pandas and matplotlib, """ + _REPORT_EXTRA + """);
1 if the model cannot be solved or differentiated at these values."""


class _CommandError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one-line :class:`_CommandError`s."""

    def error(self, message: str) -> NoReturn:
        raise _CommandError(f"{message} (see '{self.prog} --help')")


def _display_name(prog: str) -> str:
    """``"python -m diffmodel report"`` → ``"diffmodel report"``."""
    return prog.removeprefix("python -m ").strip()


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m diffmodel",
        description="Exact derivatives of CVXPY quadratic programs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="solve and differentiate a small model, with a finite-difference check",
        description="Solve a small equality-constrained QP, print its solution, "
        "the gradients of a loss by parameter name, and a finite-difference check.",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")

    report = sub.add_parser(
        "report",
        help="solve a model defined in a Python file and write its sensitivity report",
        description="Solve the model defined in MODEL.py and print its sensitivity report "
        "(objective sensitivities, solution sensitivities, shadow prices); optionally "
        "write it as HTML, Markdown, JSON and PNG plots.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    report.add_argument("--top", metavar="K", type=_positive_int, default=10,
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
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
        fails (``demo``). ``--help`` returns 0.
    """
    parser = _parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    name = "diffmodel report" if args_list[:1] == ["report"] else "diffmodel"
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help (status 0)
            return exc.code if isinstance(exc.code, int) else 0
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(seed=args.seed)
        if args.command == "report":
            return _report(args)
    except _CommandError as exc:
        print(f"{name}: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.status
    parser.print_help()
    return 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------- report

def _report(args: argparse.Namespace) -> int:
    """``python -m diffmodel report``; raises :class:`_CommandError` on failure."""
    path = Path(args.model_file)
    outputs = {flag: getattr(args, flag) for flag in ("html", "md", "json")}
    for flag, out in outputs.items():
        if out is not None:
            _check_writable(Path(out), f"--{flag}")
    namespace = _load_script(path)
    model = _find_model(namespace, args.model, path)
    labels = _read_labels(Path(args.labels)) if args.labels else _script_labels(namespace)
    values = _parse_values(args.values, model)
    for pname, param in model.parameters.items():
        if pname not in values and param.value is None:
            raise _CommandError(
                f"parameter '{pname}' has no value: set {pname}.value in {path} "
                f"or pass --set {pname}=VALUE"
            )
    try:
        model.solve(solver=args.solver, **values)
        report = model.sensitivity(of=args.of, wrt=args.wrt, labels=labels, top=args.top)
        text = None if args.quiet else str(report)
        written: list[Path] = []
        # Outputs that need the optional plotting dependency first, so that a
        # missing one fails before anything is written.
        if outputs["html"] is not None:
            written.append(Path(report.to_html(Path(outputs["html"]))))
        if args.plots is not None:
            written.extend(Path(p) for p in report.save_plots(Path(args.plots)))
        if outputs["md"] is not None:
            written.append(_write_text(Path(outputs["md"]), report.to_markdown()))
        if outputs["json"] is not None:
            written.append(_write_text(Path(outputs["json"]), report.to_json()))
    except (SolverError, DerivativeError) as exc:
        raise _CommandError(str(exc), status=1) from None
    except (DiffModelError, ValueError, KeyError, TypeError) as exc:
        raise _CommandError(_describe(exc)) from None
    except ImportError as exc:
        raise _CommandError(_missing_dependency(exc)) from None
    except OSError as exc:
        raise _CommandError(f"cannot write {exc.filename or 'output'}: "
                            f"{exc.strerror or exc}") from None
    if text is not None:
        print(text)
        for out in written:
            print(f"wrote {out}")
    return 0


def _describe(exc: BaseException) -> str:
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, DiffModelError):
        return message
    return f"{type(exc).__name__}: {message}"


def _missing_dependency(exc: ImportError) -> str:
    module = exc.name or ""
    if module == "diffmodel" or module.startswith("diffmodel."):
        return f"this installation of diffmodel is incomplete: {exc}"
    message = _one_line(str(exc))
    if "diffmodel[report]" in message:  # the report's own message names the extra
        return message
    return f"the report needs an optional dependency: {message} ({_REPORT_EXTRA})"


def _check_writable(path: Path, flag: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise _CommandError(f"{flag} {path}: the folder '{folder}' does not exist")
    if path.is_dir():
        raise _CommandError(f"{flag} {path}: is a folder, not a file")


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _load_script(path: Path) -> dict[str, object]:
    """Run MODEL.py with its folder on sys.path and return its globals."""
    if not path.exists():
        raise _CommandError(f"no such file: '{path}'")
    if not path.is_file():
        raise _CommandError(f"'{path}' is not a file")
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        return runpy.run_path(str(path), run_name="__diffmodel_model__")
    except SyntaxError as exc:
        raise _CommandError(
            f"{path}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    except SystemExit as exc:
        raise _CommandError(f"{path} exited (status {exc.code}) while being loaded") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's script
        where = ""
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__)
                  if Path(fr.filename).resolve() == path.resolve()]
        if frames:
            where = f" at line {frames[-1].lineno}"
        raise _CommandError(
            f"{path} failed{where} while being loaded: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:  # the script removed it itself
            pass


def _find_model(namespace: Mapping[str, object], name: str, path: Path) -> Model:
    if name not in namespace:
        found = [k for k, v in namespace.items() if isinstance(v, Model) and not k.startswith("_")]
        hint = (f"; it defines Model objects named {', '.join(found)}: choose one with --model"
                if found else "")
        raise _CommandError(f"{path} defines no object named '{name}'{hint}")
    obj = namespace[name]
    if not isinstance(obj, Model):
        raise _CommandError(
            f"'{name}' in {path} is a {type(obj).__name__}, not a diffmodel Model"
        )
    return obj


def _script_labels(namespace: Mapping[str, object]) -> dict[str, list[object]] | None:
    """The script's ``labels`` dict, if it defines one."""
    labels = namespace.get("labels")
    if not isinstance(labels, Mapping):
        return None
    return _check_labels(labels, "'labels' in MODEL.py")


def _read_labels(path: Path) -> dict[str, list[object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _CommandError(f"--labels: no such file: '{path}'") from None
    except OSError as exc:
        raise _CommandError(f"--labels: cannot read '{path}': {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _CommandError(f"--labels: '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _CommandError(
            f"--labels: '{path}' must hold a JSON object of name -> list of labels, "
            f"got a {type(data).__name__}"
        )
    return _check_labels(data, f"--labels {path}")


def _check_labels(labels: Mapping[object, object], what: str) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, (list, tuple)):
            raise _CommandError(
                f"{what}: expected name -> list of labels, got {key!r} -> "
                f"{type(value).__name__}"
            )
        # One label per entry, or for a matrix a pair (row labels, column labels).
        out[key] = [[str(u) for u in v] if isinstance(v, (list, tuple)) else str(v)
                    for v in value]
    return out


def _parse_values(items: Sequence[str], model: Model) -> dict[str, NDArray[np.float64]]:
    """``--set NAME=VALUE`` items → parameter values by name."""
    params = model.parameters
    values: dict[str, NDArray[np.float64]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise _CommandError(f"--set {item!r}: expected NAME=VALUE")
        if name not in params:
            known = ", ".join(params) or "none"
            raise _CommandError(
                f"--set {name}: unknown parameter '{name}' (the model's parameters: {known})"
            )
        if name in values:
            raise _CommandError(f"--set {name}: parameter '{name}' is set twice")
        values[name] = _parse_value(name, text.strip())
    return values


def _parse_value(name: str, text: str) -> NDArray[np.float64]:
    """A number, a list literal, or the path of a .npy file, as a float array."""
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long list literal is not a valid file name
        is_file = False
    if text.lower().endswith(".npy") or is_file:
        try:
            raw = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise _CommandError(f"--set {name}: no such file: '{text}'") from None
        except (OSError, ValueError, EOFError) as exc:
            raise _CommandError(
                f"--set {name}: cannot read '{text}' as a .npy file: {exc}"
            ) from None
        if not isinstance(raw, np.ndarray):  # pragma: no cover - np.load of .npz
            raise _CommandError(f"--set {name}: '{text}' does not hold one array")
        obj: object = raw
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            try:
                obj = ast.literal_eval(text)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise _CommandError(
                    f"--set {name}: cannot parse {text!r}: expected a number, a list "
                    "literal such as [1, 2] or [[1, 0], [0, 1]], or a .npy file"
                ) from None
    try:
        arr = np.asarray(obj)
    except ValueError:  # ragged nested lists
        raise _CommandError(
            f"--set {name}: {text!r} is not a rectangular array (rows of different lengths)"
        ) from None
    if arr.dtype.kind not in "iuf":
        raise _CommandError(f"--set {name}: {text!r} is not numeric")
    return arr.astype(np.float64)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
