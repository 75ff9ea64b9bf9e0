"""``python -m diffmodel report``: outputs, options, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffmodel as dm
from diffmodel.cli import _parser, main

ROOT = Path(__file__).resolve().parents[1]
PORTFOLIO = ROOT / "examples" / "portfolio.py"
DC = ROOT / "examples" / "dc_power_flow.py"

REPORT_OPTIONS = ["--model", "--set", "--of", "--wrt", "--labels", "--top", "--solver",
                  "--html", "--md", "--json", "--plots", "--quiet"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, match: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffmodel report: error: "), err
    assert re.search(match, lines[0]), lines[0]


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
    assert "w[Treasuries]" in out  # the module's labels dict
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
    sub = next(a for a in _parser()._actions if a.dest == "command")
    report = sub.choices["report"]  # type: ignore[attr-defined]
    declared = {s for a in report._actions for s in a.option_strings if s.startswith("--")}
    assert declared == set(REPORT_OPTIONS) | {"--help"}
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "report" in out


# ------------------------------------------------------------------- errors


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
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
        r"unknown parameter 'sigma' \(the model's parameters: mu, B, gamma\)"),
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
    "solver failure": (  # gamma = 0: a linear objective, unbounded on the budget plane
        lambda t: ["report", str(PORTFOLIO), "--set", "gamma=0"], 1, r"unbounded"),
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
