"""The command line: ``python -m diffmodel report`` and ``demo``.

Outputs, options, one-line errors for bad input (never a traceback or a
warning on the terminal), all-or-nothing output files, and the rule that
:mod:`diffmodel.cli` uses only diffmodel's public API.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import diffmodel as dm
from diffmodel.cli import main
from diffmodel.cli._parser import build_parser
from diffmodel.cli.values import MAX_DEPTH, MAX_LITERAL_CHARS, parse_value

ROOT = Path(__file__).resolve().parents[1]
PORTFOLIO = ROOT / "examples" / "portfolio.py"
DC = ROOT / "examples" / "dc_power_flow.py"

REPORT_OPTIONS = ["--model", "--set", "--of", "--wrt", "--labels", "--top", "--solver",
                  "--html", "--md", "--json", "--plots", "--quiet"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, match: str,
                          command: str = "report") -> None:
    assert code == expected_code, err
    assert "Traceback" not in err and "Warning" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"diffmodel {command}: error: "), err
    assert re.search(match, lines[0]), lines[0]


def run_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m diffmodel ARGS``, with warnings shown as Python shows them by default."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "diffmodel", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_subprocess_error(result: subprocess.CompletedProcess[str], expected: str,
                            code: int = 2) -> None:
    """Exit ``code``, nothing on stdout, and exactly the line ``expected`` on stderr."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [expected], result.stderr


# ------------------------------------------------------------------ success


@pytest.mark.parametrize("script", [PORTFOLIO, DC], ids=["portfolio", "dc_power_flow"])
def test_subprocess_writes_every_output(script: Path, tmp_path: Path) -> None:
    html, md, js = tmp_path / "r.html", tmp_path / "r.md", tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "diffmodel", "report", str(script),
         "--html", str(html), "--md", str(md), "--json", str(js)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Sensitivity report" in result.stdout
    # One self-contained HTML file: nothing beside it, nothing fetched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json", "r.md"]
    page = html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page.lower()
    data = json.loads(js.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data
    text = md.read_text(encoding="utf-8")
    assert re.search(r"^\|.*\|\s*$", text, flags=re.M)           # table rows
    assert re.search(r"^\|(\s*:?-+:?\s*\|)+\s*$", text, flags=re.M)  # header rules


def test_in_process_report_uses_labels_and_set_values(tmp_path: Path, capsys) -> None:
    js = tmp_path / "r.json"
    code, out, err = run(["report", str(PORTFOLIO), "--set", "gamma=6", "--of", "w",
                          "--wrt", "mu", "gamma", "--top", "3", "--json", str(js)], capsys)
    assert code == 0, err
    assert err == ""
    assert "w[US large cap]" in out  # the module's labels dict
    assert f"wrote {js}" in out
    text = js.read_text(encoding="utf-8")
    # The reported optimum is the model's at gamma = 6, the other values from the file.
    ns: dict[str, object] = {}
    exec(compile(PORTFOLIO.read_text(encoding="utf-8"), str(PORTFOLIO), "exec"), ns)  # noqa: S102
    model = ns["model"]
    assert isinstance(model, dm.Model)
    value = model.solve(gamma=6.0).value
    assert f"{value:.6g}" in out
    assert "B[" not in text  # --wrt mu gamma
    assert "exposure" not in out.split("Solution sensitivities")[1]  # --of w


def test_set_accepts_numbers_lists_and_npy(tmp_path: Path, capsys) -> None:
    ns: dict[str, object] = {}
    exec(compile(DC.read_text(encoding="utf-8"), str(DC), "exec"), ns)  # noqa: S102
    model = ns["model"]
    assert isinstance(model, dm.Model)
    demand = np.array([10.0, 310.0, 290.0, 420.0, 5.0])
    costs = [15.0, 15.0, 29.0, 36.0, 11.0]
    np.save(tmp_path / "d.npy", demand)
    expected = model.solve(d=demand, c=costs).value
    md = tmp_path / "r.md"
    code, out, err = run(["report", str(DC), "--set", f"d={tmp_path / 'd.npy'}",
                          "--set", json.dumps(costs).join(["c=", ""]), "--md", str(md),
                          "--quiet"], capsys)
    assert code == 0, err
    assert out == "" and err == ""  # --quiet
    assert f"{expected:.6g}" in md.read_text(encoding="utf-8")


def test_set_matrix_literal_and_labels_file(tmp_path: Path, capsys) -> None:
    B = np.round(np.random.default_rng(1).uniform(-0.05, 0.2, (8, 3)), 3)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"w": [f"asset {i}" for i in range(8)]}), encoding="utf-8")
    code, out, err = run(["report", str(PORTFOLIO), "--set", f"B={B.tolist()}",
                          "--labels", str(labels), "--of", "w", "--wrt", "B"], capsys)
    assert code == 0, err
    assert "w[asset " in out
    assert "w[Treasuries]" not in out  # --labels replaces the module's labels
    assert re.search(r"B\[\d, \d\]", out)  # B is not labelled by the file
    ns: dict[str, object] = {}
    exec(compile(PORTFOLIO.read_text(encoding="utf-8"), str(PORTFOLIO), "exec"), ns)  # noqa: S102
    model = ns["model"]
    assert isinstance(model, dm.Model)
    assert f"f* = {model.solve(B=B).value:.6g}" in out


def test_model_option_and_solver(tmp_path: Path, capsys) -> None:
    script = tmp_path / "two.py"
    script.write_text(
        "import cvxpy as cp, diffmodel as dm\n"
        "x = cp.Variable(2, name='x')\n"
        "b = cp.Parameter(name='b', value=2.0)\n"
        "first = dm.Model(cp.Minimize(cp.sum_squares(x)), {'total': cp.sum(x) == b})\n"
        "if __name__ == '__main__':\n"
        "    raise SystemExit('the main block must not run')\n",
        encoding="utf-8",
    )
    code, out, err = run(["report", str(script), "--model", "first", "--solver", "osqp"],
                         capsys)
    assert code == 0, err
    assert "total" in out


def test_help_documents_every_option(capsys) -> None:
    code, out, err = run(["report", "--help"], capsys)
    assert code == 0
    for option in REPORT_OPTIONS:
        assert option in out, option
    assert "MODEL.py" in out and "exit status" in out
    # ... and the list above is complete.
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    report = sub.choices["report"]  # type: ignore[attr-defined]
    declared = {s for a in report._actions for s in a.option_strings if s.startswith("--")}
    assert declared == set(REPORT_OPTIONS) | {"--help"}
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "report" in out


# ------------------------------------------------------------------- errors


def write(tmp_path: Path, name: str, text: str | bytes, **modules: str) -> str:
    """Write ``tmp_path / name`` (and the modules ``NAME.py`` given); return its path."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    for module, source in modules.items():
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    return str(path)


BAD: dict[str, tuple[Callable[[Path], list[str]], int, str]] = {
    "missing file": (lambda t: ["report", str(t / "nope.py")], 2, r"no such file"),
    "folder": (lambda t: ["report", str(t)], 2, r"is not a file"),
    "syntax error": (
        lambda t: ["report", write(t, "bad.py", "model = (\n")], 2, r"syntax error at line 1"),
    "script raises": (
        lambda t: ["report", write(t, "boom.py", "x = 1\nraise RuntimeError('boom')\n")],
        2, r"failed at line 2 .*RuntimeError: boom"),
    "script exits": (
        lambda t: ["report", write(t, "ex.py", "import sys\nsys.exit(3)\n")], 2, r"exited"),
    "no model": (
        lambda t: ["report", write(t, "empty.py", "x = 1\n")], 2,
        r"defines no object named 'model'"),
    "--model missing": (
        lambda t: ["report", str(PORTFOLIO), "--model", "other"], 2,
        r"no object named 'other'; it defines Model objects named model"),
    "not a model": (
        lambda t: ["report", write(t, "three.py", "model = 3\n")], 2,
        r"'model' .* is a int, not a diffmodel Model"),
    "unknown parameter": (
        lambda t: ["report", str(PORTFOLIO), "--set", "sigma=1"], 2,
        r"unknown parameter 'sigma' \(the model's parameters: mu, B, gamma, cap\)"),
    "no equals sign": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma"], 2, r"expected NAME=VALUE"),
    "set twice": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=1", "--set", "gamma=2"], 2,
        r"set twice"),
    "unparsable value": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=four"], 2, r"cannot parse 'four'"),
    "string value": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma='4'"], 2, r"is not numeric"),
    "ragged list": (
        lambda t: ["report", str(PORTFOLIO), "--set", "B=[[1, 2], [3]]"], 2,
        r"not a rectangular array"),
    "wrong shape": (
        lambda t: ["report", str(PORTFOLIO), "--set", "mu=[0.1, 0.2]"], 2,
        r"parameter 'mu': expected shape \(8,\), got \(2,\)"),
    "NaN": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=NaN"], 2, r"NaN"),
    "attribute violated": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=-1"], 2,
        r"parameter 'gamma'.*nonnegative"),
    "missing npy": (
        lambda t: ["report", str(PORTFOLIO), "--set", f"mu={t / 'mu.npy'}"], 2,
        r"--set mu: no such file"),
    "corrupt npy": (
        lambda t: ["report", str(PORTFOLIO), "--set", f"mu={write(t, 'mu.npy', 'junk')}"], 2,
        r"cannot read .* as a \.npy file"),
    "no value": (
        lambda t: ["report", write(t, "novalue.py",
                                   "import cvxpy as cp, diffmodel as dm\n"
                                   "x = cp.Variable(2, name='x')\n"
                                   "b = cp.Parameter(name='b')\n"
                                   "model = dm.Model(cp.Minimize(cp.sum_squares(x)),"
                                   " {'total': cp.sum(x) == b})\n")], 2,
        r"parameter 'b' has no value: set b.value in .* or pass --set b=VALUE"),
    "solver failure": (  # caps adding up to 0.8: no portfolio meets the budget
        lambda t: ["report", str(PORTFOLIO), "--set", "cap=[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]"],
        1, r"infeasible"),
    "infeasible": (
        lambda t: ["report", write(t, "infeasible.py",
                                   "import cvxpy as cp, diffmodel as dm\n"
                                   "x = cp.Variable(2, name='x')\n"
                                   "b = cp.Parameter(2, name='b', value=[1.0, 2.0])\n"
                                   "model = dm.Model(cp.Minimize(cp.sum_squares(x)),"
                                   " {'c': cp.hstack([cp.sum(x), cp.sum(x)]) == b})\n")],
        1, r"infeasible|inconsistent"),
    "unknown --of": (
        lambda t: ["report", str(PORTFOLIO), "--of", "weights"], 2, r"'weights'"),
    "unknown --wrt": (
        lambda t: ["report", str(PORTFOLIO), "--wrt", "w"], 2, r"'w'"),
    "labels not JSON": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", "{w: 1")], 2,
        r"--labels: .* is not valid JSON"),
    "labels not a dict": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", "[1, 2]")], 2,
        r"JSON object"),
    "labels missing": (
        lambda t: ["report", str(PORTFOLIO), "--labels", str(t / "l.json")], 2,
        r"--labels: no such file"),
    "labels wrong length": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", '{"w": ["a"]}')],
        2, r"labels\['w'\]: expected 8 labels"),
    "labels unknown name": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", '{"z": ["a"]}')],
        2, r"'z'"),
    "output folder missing": (
        lambda t: ["report", str(PORTFOLIO), "--md", str(t / "no" / "r.md")], 2,
        r"--md .*: the folder .* does not exist"),
    "top zero": (
        lambda t: ["report", str(PORTFOLIO), "--top", "0"], 2,
        r"--top: expected a positive integer"),
    "unknown solver": (
        lambda t: ["report", str(PORTFOLIO), "--solver", "gurobi"], 2, r"invalid choice"),
    "no MODEL.py": (lambda t: ["report"], 2, r"required: MODEL.py"),
    "unknown option": (
        lambda t: ["report", str(PORTFOLIO), "--pdf", "x.pdf"], 2, r"unrecognized"),
}


def exact(message: str) -> str:
    """A pattern matching the whole error line ``diffmodel report: error: MESSAGE``."""
    return "^diffmodel report: error: " + re.escape(message) + "$"


def not_finite(shown: str, name: str = "gamma") -> str:
    return exact(f"--set {name}: {shown} is not finite (it has a NaN or infinite entry, "
                 "or a number beyond ±1.8e308): values must be finite numbers")


NESTED = "[" * 3000 + "1" + "]" * 3000
DIGITS = "9" * 5000
CANNOT_PARSE = ("expected a number, a list literal such as [1, 2] or [[1, 0], [0, 1]], "
                "or a .npy file")


def save(tmp_path: Path, name: str, array: object) -> str:
    path = tmp_path / name
    with open(path, "wb") as handle:
        np.save(handle, array)
    return str(path)


# Regression cases: each was a traceback, a warning or a vague message before.
BAD_PINNED: dict[str, tuple[Callable[[Path], list[str]], int, Callable[[Path], str]]] = {
    "3000 nested brackets": (
        lambda t: ["report", str(PORTFOLIO), "--set", f"B={NESTED}"], 2,
        lambda t: exact("--set B: the value nests brackets 3000 levels deep, more than the "
                        "32 allowed")),
    "5000-digit integer": (
        lambda t: ["report", str(PORTFOLIO), "--set", f"gamma={DIGITS}"], 2,
        lambda t: not_finite(f"'{'9' * 60}…' (5000 characters)")),
    "5000-digit integer in a list": (
        lambda t: ["report", str(PORTFOLIO), "--set", f"mu=[{DIGITS}, 1]"], 2,
        lambda t: not_finite(f"'[{'9' * 59}…' (5005 characters)", "mu")),
    "literal too long": (
        lambda t: ["report", str(PORTFOLIO), "--set",
                   "mu=[" + "1," * (MAX_LITERAL_CHARS // 2) + "1]"], 2,
        lambda t: exact(f"--set mu: the value has {MAX_LITERAL_CHARS + 3} characters, more "
                        "than the "
              f"{MAX_LITERAL_CHARS} allowed in a literal: save it with numpy.save and pass "
              "the .npy file")),
    "inf": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=inf"], 2,
            lambda t: not_finite("'inf'")),
    "-Infinity": (
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=-Infinity"], 2,
        lambda t: not_finite("'-Infinity'")),
    "nan": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=nan"], 2,
            lambda t: not_finite("'nan'")),
    "1e999": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=1e999"], 2,
              lambda t: not_finite("'1e999'")),
    "NaN in a list": (
        lambda t: ["report", str(PORTFOLIO), "--set", "mu=[1, 2, NaN, 4, 5, 6, 7, 8]"], 2,
        lambda t: not_finite("'[1, 2, NaN, 4, 5, 6, 7, 8]'", "mu")),
    "inf in a .npy file": (
        lambda t: ["report", str(PORTFOLIO), "--set",
                   f"gamma={save(t, 'g.npy', np.array(np.inf))}"], 2,
        lambda t: not_finite(f"the array in '{t / 'g.npy'}'")),
    "boolean": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=True"], 2,
                lambda t: exact(f"--set gamma: 'True' is not numeric: {CANNOT_PARSE}")),
    "complex": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=1+2j"], 2,
                lambda t: exact(f"--set gamma: '1+2j' is not numeric: {CANNOT_PARSE}")),
    "unclosed bracket": (lambda t: ["report", str(PORTFOLIO), "--set", "gamma=[1"], 2,
                         lambda t: exact(f"--set gamma: cannot parse '[1': {CANNOT_PARSE}")),
    "text .npy": (
        lambda t: ["report", str(PORTFOLIO), "--set",
                   f"mu={save(t, 's.npy', np.array(['a', 'b']))}"], 2,
        lambda t: exact(f"--set mu: '{t / 's.npy'}' holds <U1 data, not real numbers")),
    "unknown parameter (pinned)": (
        lambda t: ["report", str(PORTFOLIO), "--set", "lam=1"], 2,
        lambda t: exact("--set lam: unknown parameter 'lam' (the model's parameters: "
                        "mu, B, gamma, cap)")),
    "wrong shape (pinned)": (
        lambda t: ["report", str(PORTFOLIO), "--set", "mu=[[1, 2], [3, 4]]"], 2,
        lambda t: exact("parameter 'mu': expected shape (8,), got (2, 2)")),
    "missing MODEL.py (pinned)": (
        lambda t: ["report", str(t / "nope.py")], 2,
        lambda t: exact(f"no such file: '{t / 'nope.py'}'")),
    "syntax error (pinned)": (
        lambda t: ["report", write(t, "bad.py", "x = 1\nmodel = [\n")], 2,
        lambda t: exact(f"{t / 'bad.py'}: syntax error at line 2: '[' was never closed")),
    "syntax error in an imported module": (
        lambda t: ["report", write(t, "main.py", "import _dm_cli_test_helper\n",
                                   _dm_cli_test_helper="x = (\n")], 2,
        lambda t: exact(f"{t / '_dm_cli_test_helper.py'}: syntax error at line 1: "
              "'(' was never closed")),
    "no model (pinned)": (
        lambda t: ["report", write(t, "empty.py", "x = 1\n")], 2,
        lambda t: exact(f"{t / 'empty.py'} defines no object named 'model'")),
    "script raises KeyboardInterrupt": (
        lambda t: ["report", write(t, "ki.py", "x = 1\nraise KeyboardInterrupt\n")], 2,
        lambda t: exact(f"{t / 'ki.py'} failed at line 2 while being loaded: KeyboardInterrupt")),
    "script raises SystemExit(3)": (
        lambda t: ["report", write(t, "se.py", "x = 1\nraise SystemExit(3)\n")], 2,
        lambda t: exact(f"{t / 'se.py'} exited (status 3) at line 2 while being loaded")),
    "script exits with a message": (
        lambda t: ["report", write(t, "sm.py", "import sys\nsys.exit('no data')\n")], 2,
        lambda t: exact(f"{t / 'sm.py'} exited (message 'no data') at line 2 while being loaded")),
    "script raises a BaseException subclass": (
        lambda t: ["report", write(t, "be.py", "class Halt(BaseException):\n    pass\n\n"
                                               "raise Halt('stop here')\n")], 2,
        lambda t: exact(f"{t / 'be.py'} failed at line 4 while being loaded: Halt: stop here")),
    "labels file is a folder": (
        lambda t: ["report", str(PORTFOLIO), "--labels", str(t)], 2,
        lambda t: exact(f"--labels: '{t}' is a folder, not a JSON file")),
    "labels file not UTF-8": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", b'{"w": ["\xff"]}')],
        2,
        lambda t: exact(f"--labels: '{t / 'l.json'}' is not UTF-8 text: invalid start byte "
                        "at byte 8")),
    "labels file nested too deeply": (
        lambda t: ["report", str(PORTFOLIO), "--labels", write(t, "l.json", NESTED)], 2,
        lambda t: exact(f"--labels: '{t / 'l.json'}' is too large or nested too deeply")),
    "labels of labels of labels": (
        lambda t: ["report", str(PORTFOLIO), "--labels",
                   write(t, "l.json", '{"w": [[["a"]]]}')], 2,
        lambda t: exact(f"--labels {t / 'l.json'}: labels of 'w' must be strings or "
              "[row labels, column labels]")),
    "top not a number": (
        lambda t: ["report", str(PORTFOLIO), "--top", "ten"], 2,
        lambda t: exact("argument --top: expected a positive integer, got 'ten' "
              "(see 'python -m diffmodel report --help')")),
    "top negative": (
        lambda t: ["report", str(PORTFOLIO), "--top", "-3"], 2,
        lambda t: exact("argument --top: expected a positive integer, got '-3' "
              "(see 'python -m diffmodel report --help')")),
    "top 5000 digits": (
        lambda t: ["report", str(PORTFOLIO), "--top", DIGITS], 2,
        lambda t: exact(f"argument --top: expected a positive integer, got '{'9' * 20}…' "
              "(5000 characters): too large (see 'python -m diffmodel report --help')")),
    "same output twice": (
        lambda t: ["report", str(PORTFOLIO), "--md", str(t / "r.txt"), "--json",
                   str(t / "r.txt")], 2,
        lambda t: exact(f"--md and --json both name '{t / 'r.txt'}': give each output its "
                        "own file")),
    "output is a folder": (
        lambda t: ["report", str(PORTFOLIO), "--html", str(t)], 2,
        lambda t: exact(f"--html {t}: is a folder, not a file")),
    "empty output name": (
        lambda t: ["report", str(PORTFOLIO), "--json", ""], 2,
        lambda t: exact("--json: the file name is empty")),
    "plots folder is a file": (
        lambda t: ["report", str(PORTFOLIO), "--plots", write(t, "img", "")], 2,
        lambda t: exact(f"--plots {t / 'img'}: is a file, not a folder")),
}


@pytest.mark.parametrize("case", list(BAD_PINNED), ids=list(BAD_PINNED))
def test_bad_input_pinned_message(case: str, tmp_path: Path, capsys) -> None:
    build, expected_code, match = BAD_PINNED[case]
    code, out, err = run(build(tmp_path), capsys)
    assert_one_line_error(code, err, expected_code, match(tmp_path))
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_error(case: str, tmp_path: Path, capsys) -> None:
    build, expected_code, match = BAD[case]
    code, out, err = run(build(tmp_path), capsys)
    assert_one_line_error(code, err, expected_code, match)


def test_model_still_usable_after_bad_value(capsys) -> None:
    """The script is re-run for each command: a failed run leaves nothing behind."""
    code, _, err = run(["report", str(PORTFOLIO), "--set", "mu=[1]"], capsys)
    assert code == 2
    code, _, err = run(["report", str(PORTFOLIO), "--quiet"], capsys)
    assert code == 0, err
    assert str(ROOT / "examples") not in sys.path


def test_missing_optional_extra(tmp_path: Path, capsys, monkeypatch) -> None:
    """Without matplotlib, --html fails with the extra's name, before writing anything."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    code, _, err = run(["report", str(PORTFOLIO), "--html", str(html), "--md", str(md)],
                       capsys)
    assert_one_line_error(code, err, 2, r"matplotlib.*diffmodel\[report\]")
    assert not html.exists() and not md.exists()


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    script = write(tmp_path, "bad.py", "import numpy as np\nmodel = np.zeros(\n")
    result = subprocess.run([sys.executable, "-m", "diffmodel", "report", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"diffmodel report: error: {script}: syntax error at line 2: '(' was never closed"
    ]


# ------------------------------------------------------- tracebacks, warnings

LAM_MODEL = """\
import cvxpy as cp
import diffmodel as dm

x = cp.Variable(2, name="x")
lam = cp.Parameter(name="lam", nonneg=True, value=1.0)
b = cp.Parameter(2, name="b", value=[1.0, 2.0])
model = dm.Model(cp.Minimize(lam * cp.sum_squares(x) + cp.sum(x)),
                 {"c": x[0] + x[1] == b[0] + b[1]})
"""


def test_subprocess_deep_nesting_and_huge_integer(tmp_path: Path) -> None:
    """Were a RecursionError and a ValueError (int-string conversion limit) traceback."""
    result = run_subprocess(["report", str(PORTFOLIO), "--set", f"B={NESTED}"], tmp_path)
    assert_subprocess_error(result, "diffmodel report: error: --set B: the value nests "
                                    "brackets 3000 levels deep, more than the 32 allowed")
    result = run_subprocess(["report", str(PORTFOLIO), "--set", f"gamma={DIGITS}"], tmp_path)
    assert_subprocess_error(
        result, f"diffmodel report: error: --set gamma: '{'9' * 60}…' (5000 characters) is not "
        "finite (it has a NaN or infinite entry, or a number beyond ±1.8e308): values must be "
        "finite numbers")


@pytest.mark.parametrize("raise_", ["KeyboardInterrupt", "SystemExit(3)",
                                    "type('Halt', (BaseException,), {})('stop')"],
                         ids=["KeyboardInterrupt", "SystemExit", "BaseException"])
def test_subprocess_script_base_exception(raise_: str, tmp_path: Path) -> None:
    """A KeyboardInterrupt raised by MODEL.py is the script's error (2), not Ctrl-C (130)."""
    script = write(tmp_path, "m.py", f"x = 1\nraise {raise_}\n")
    result = run_subprocess(["report", script], tmp_path)
    expected = {
        "KeyboardInterrupt": f"{script} failed at line 2 while being loaded: KeyboardInterrupt",
        "SystemExit(3)": f"{script} exited (status 3) at line 2 while being loaded",
    }.get(raise_, f"{script} failed at line 2 while being loaded: Halt: stop")
    assert_subprocess_error(result, f"diffmodel report: error: {expected}")


@pytest.mark.parametrize("value", ["lam=1e308", "b=[1e200,1]"])
def test_subprocess_overflow_is_one_line_error(value: str, tmp_path: Path) -> None:
    """Were 9 and 10 lines of NumPy RuntimeWarnings (and exit 0 with an inf report).

    Policy: values too large for double precision are bad input, exit 2. The
    line is the CLI's (an overflow while solving, or a solution that is not
    finite) or the core's own overflow error; either way it says "overflow".
    """
    script = write(tmp_path, "lam.py", LAM_MODEL)
    out = tmp_path / "r.md"
    result = run_subprocess(["report", script, "--set", value, "--md", str(out)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("diffmodel report: error: ") and "overflow" in lines[0], lines[0]
    assert result.stdout == "" and not out.exists()


def test_large_but_finite_values_are_a_clean_success(tmp_path: Path) -> None:
    script = write(tmp_path, "lam.py", LAM_MODEL)
    result = run_subprocess(["report", script, "--set", "lam=1e3", "--set", "b=[1e6, 2]"],
                            tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Sensitivity report" in result.stdout


def overflowing_solve(self: dm.Model, *args: object, **kwargs: object) -> object:
    """A solve whose arithmetic overflows (as NumPy reports it) and then fails."""
    _ = np.float64(1e308) * np.float64(10.0)
    raise dm.SolverError("the KKT system could not be solved")


def failing_solve(self: dm.Model, *args: object, **kwargs: object) -> object:
    raise dm.SolverError("the KKT system could not be solved")


def infinite_solve(self: dm.Model, *args: object, **kwargs: object) -> object:
    """A stand-in for a Solution whose optimal value overflowed (the CLI reads these)."""
    return SimpleNamespace(status="optimal", value=float("inf"), primal={}, dual={})


@pytest.mark.parametrize(("solve", "code", "message"), [
    (overflowing_solve, 2, "floating-point overflow at these parameter values (the largest "
                           "value set is |b| = 1e+200): the KKT system could not be solved"),
    (infinite_solve, 2, "floating-point overflow at these parameter values (the largest value "
                        "set is |b| = 1e+200): the optimal value is inf; use values of a "
                        "smaller magnitude (rescale the model)"),
    (failing_solve, 1, "the KKT system could not be solved"),
], ids=["overflow then failure", "infinite optimum", "failure without overflow"])
def test_overflow_policy(solve: Callable[..., object], code: int, message: str,
                         tmp_path: Path, capsys, monkeypatch) -> None:
    """The CLI's own rule, whatever the core does: an overflow while solving, or a
    solution that is not finite, is exit 2 naming the largest value set."""
    monkeypatch.setattr(dm.Model, "solve", solve)
    script = write(tmp_path, "lam.py", LAM_MODEL)
    got, out, err = run(["report", script, "--set", "lam=2", "--set", "b=[1e200, 1]"], capsys)
    assert_one_line_error(got, err, code, exact(message))
    assert out == ""


def test_warnings_become_one_note(tmp_path: Path, capsys) -> None:
    script = write(tmp_path, "w.py", "import warnings\nwarnings.warn('check the data')\n"
                   "warnings.warn(UserWarning('and the units'))\n" + LAM_MODEL)
    code, out, err = run(["report", script], capsys)
    assert code == 0, err
    assert "Sensitivity report" in out
    assert err.splitlines() == [
        "diffmodel report: note: 2 warnings silenced; the first: check the data"]
    code, out, err = run(["report", script, "--quiet"], capsys)
    assert (code, out, err) == (0, "", "")


def test_ctrl_c_is_status_130(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(dm.Model, "solve", interrupted)
    code, out, err = run(["report", write(tmp_path, "lam.py", LAM_MODEL)], capsys)
    assert code == 130
    assert err.splitlines() == ["diffmodel report: interrupted"]


def test_unexpected_exception_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(dm.Model, "sensitivity", broken)
    code, out, err = run(["report", write(tmp_path, "lam.py", LAM_MODEL)], capsys)
    assert_one_line_error(code, err, 1, exact("unexpected ZeroDivisionError: division by zero"))


# -------------------------------------------------------------- atomic output

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(),
                                    reason="needs /dev/full (Linux)")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".diffmodel-*"))


@needs_dev_full
def test_failed_output_writes_nothing(tmp_path: Path, capsys) -> None:
    """Was: ok.html written, then an error naming no file."""
    html = tmp_path / "ok.html"
    code, out, err = run(["report", str(PORTFOLIO), "--html", str(html), "--json", "/dev/full"],
                         capsys)
    assert_one_line_error(code, err, 2,
                          exact("cannot write /dev/full: No space left on device"))
    assert out == ""
    assert not html.exists()
    assert list(tmp_path.iterdir()) == []


@needs_dev_full
def test_failed_output_subprocess(tmp_path: Path) -> None:
    result = run_subprocess(["report", str(PORTFOLIO), "--html", "ok.html", "--md", "ok.md",
                             "--plots", "img/new", "--json", "/dev/full"], tmp_path)
    assert_subprocess_error(result, "diffmodel report: error: cannot write /dev/full: "
                                    "No space left on device")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary, no plot folder


@needs_dev_full
def test_failed_output_keeps_existing_files(tmp_path: Path, capsys) -> None:
    md = tmp_path / "r.md"
    md.write_text("old report\n", encoding="utf-8")
    code, _, err = run(["report", str(PORTFOLIO), "--md", str(md), "--json", "/dev/full"],
                       capsys)
    assert code == 2, err
    assert md.read_text(encoding="utf-8") == "old report\n"
    assert leftovers(tmp_path) == []


def test_staging_failure_removes_temporaries(tmp_path: Path, capsys, monkeypatch) -> None:
    """A disk that fills up while the second file is written: nothing is left behind."""
    import diffmodel.cli._io as cli_io

    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli_io.os, "fsync", fsync)
    md, js = tmp_path / "r.md", tmp_path / "sub" / "r.json"
    js.parent.mkdir()
    code, _, err = run(["report", str(PORTFOLIO), "--md", str(md), "--json", str(js),
                        "--plots", str(tmp_path / "a" / "b")], capsys)
    assert_one_line_error(code, err, 2, r"^diffmodel report: error: cannot write "
                                        r".*: No space left on device$")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]


def test_special_files_and_replaced_files(tmp_path: Path, capsys) -> None:
    """/dev/null is written in place; an existing file keeps its mode; a link its target."""
    md, target = tmp_path / "r.md", tmp_path / "real.json"
    md.write_text("old\n", encoding="utf-8")
    md.chmod(0o640)
    target.write_text("{}", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, out, err = run(["report", str(PORTFOLIO), "--md", str(md), "--json", str(link),
                          "--html", os.devnull], capsys)
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[-3:] == [f"wrote {os.devnull}", f"wrote {md}", f"wrote {link}"]
    assert stat.S_IMODE(md.stat().st_mode) == 0o640
    assert md.read_text(encoding="utf-8").startswith("#")
    assert link.is_symlink() and json.loads(target.read_text(encoding="utf-8"))
    assert leftovers(tmp_path) == []


def test_plots_folder_is_created(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "img" / "portfolio"
    code, out, err = run(["report", str(PORTFOLIO), "--plots", str(folder), "--quiet"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in folder.iterdir())
    assert "tornado.png" in names and all(n.endswith(".png") for n in names)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------- values and demo


@pytest.mark.parametrize(("text", "shape", "flat"), [
    ("3", (), [3.0]), ("-2.5e-3", (), [-2.5e-3]), (".5", (), [0.5]), ("1_000", (), [1000.0]),
    ("1e308", (), [1e308]), (str(2 ** 70), (), [2.0 ** 70]),
    ("[1, 2]", (2,), [1.0, 2.0]), ("(1, 2)", (2,), [1.0, 2.0]),
    ("[[1, 0], [2, 3]]", (2, 2), [1.0, 0.0, 2.0, 3.0]),
    ("[" * MAX_DEPTH + "7" + "]" * MAX_DEPTH, (1,) * MAX_DEPTH, [7.0]),
])
def test_parse_value_accepts(text: str, shape: tuple[int, ...], flat: list[float]) -> None:
    value = parse_value("p", text)
    assert value.dtype == np.float64 and value.shape == shape
    assert value.ravel().tolist() == flat


def test_demo_in_process(capsys) -> None:
    code, out, err = run(["demo", "--seed", "3"], capsys)
    assert code == 0, err
    assert err == ""
    for text in ("diffmodel demo:", "solve: status optimal", "dℓ/dA (2, 5)", "dℓ/dq (5,)",
                 "forward mode", "Jacobian dx/dA has shape (5, 10)", "OK: max relative error"):
        assert text in out, text


@pytest.mark.parametrize("seed", ["-1", "x", "9" * 40])
def test_demo_bad_seed(seed: str, capsys) -> None:
    code, out, err = run(["demo", "--seed", seed], capsys)
    assert_one_line_error(code, err, 2, r"argument --seed: expected a nonnegative integer",
                          command="demo")


def test_no_command_prints_usage(capsys) -> None:
    code, out, err = run([], capsys)
    assert code == 2 and "usage:" in out and "report" in out


def test_entry_point_is_main() -> None:
    """``[project.scripts] diffmodel = "diffmodel.cli:main"`` names this function."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    target = re.search(r'^diffmodel\s*=\s*"([\w.]+):(\w+)"', text, flags=re.M)
    assert target is not None
    module = __import__(target.group(1), fromlist=[target.group(2)])
    assert getattr(module, target.group(2)) is main


def test_cli_uses_only_public_api() -> None:
    """diffmodel.cli imports diffmodel only as ``import diffmodel as dm``, uses public names."""
    folder = ROOT / "diffmodel" / "cli"
    public = set(dm.__all__)
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert node.level == 1 or not module.startswith("diffmodel"), (path, module)
                if node.level > 1:
                    raise AssertionError(f"{path.name}: relative import beyond diffmodel.cli")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("diffmodel"):
                        assert (alias.name, alias.asname) == ("diffmodel", "dm"), path
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "dm"):
                assert node.attr in public, (path.name, node.attr)
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 320, path
