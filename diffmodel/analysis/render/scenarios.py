"""Renderings of a :class:`~diffmodel.analysis.scenarios.ScenarioReport`.

The content is built once (:func:`sections`: titled paragraphs and tables,
with the plots each section shows) and written as text, Markdown or one
self-contained HTML page, with the tables, captions and styles of the
single-solution report (:mod:`.text`, :mod:`.markdown`, :mod:`.html`). The
plots, drawn with matplotlib off-screen: the distribution of ∂f*/∂θ across
the scenarios (box plots of the most influential entries), a histogram of
the optimal value, and the binding frequencies. The numbers as a pandas
DataFrame or JSON (:mod:`.frames`' conventions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._common import IntArray
from ..labels import entry_index
from . import require
from .content import NOTES, Section, Table, largest_first, num
from .frames import _clean
from .html import _CSS, section_html
from .markdown import sections_markdown
from .plots import png
from .text import sections_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    from matplotlib.figure import Figure

    from ..scenarios import ScenarioReport

__all__ = ["sections", "scenario_text", "scenario_markdown", "scenario_html",
           "save_scenario_plots", "draw", "scenario_dataframe", "scenario_json",
           "batch_dataframe", "PLOTS", "FAILURES_SHOWN"]

#: The plots, by key (the PNG file's name): what each shows.
PLOTS = {"distribution": "∂f*/∂θ across the scenarios",
         "values": "optimal value across the scenarios",
         "binding": "how often the inequality rows bind"}
#: Failed scenarios listed by name in the notes (the others are counted).
FAILURES_SHOWN = 5


@dataclass
class _Part:
    """A section and the keys of the plots drawn after it."""

    section: Section
    plots: list[str] = field(default_factory=list)


def _q(p: float) -> str:
    return f"q{p:g}"


# ---------------------------------------------------------------- content


def _entries(report: ScenarioReport) -> list[tuple[str, int]]:
    """(parameter, entry) of every reported entry, in order."""
    return [(p, j) for p in report.parameters for j in range(report.objective[p].mean.size)]


def _most_influential(report: ScenarioReport, items: list[tuple[str, int]]) -> IntArray:
    """Positions in ``items`` of the k entries of largest mean |∂f*/∂θ|, largest first."""
    scores = np.array([report.objective[p].mean_abs.ravel(order="F")[j] for p, j in items])
    return largest_first(np.nan_to_num(scores), report.k)


def _head(report: ScenarioReport) -> _Part:
    failed = report.scenarios - report.solved
    sense = "maximized" if report.sense == "maximize" else "minimized"
    qs = report.value_quantiles
    rows = [["mean", num(report.value_mean)]]
    rows += [[_q(p), num(float(v))] for p, v in zip(report.probabilities, qs)]
    table = Table(["statistic", "f*"], rows, f"optimal value ({sense}) over the "
                  f"{report.solved} solved scenarios", (False, True))
    text = (f"{report.solved} of {report.scenarios} scenarios solved"
            + (f", {failed} failed (see the notes)" if failed else "")
            + f". Parameters: {', '.join(report.parameters) or 'none'}; "
            f"built in {report.seconds:.2f} s.")
    return _Part(Section("Scenario sensitivity report", level=1, paragraphs=[text],
                         tables=[table]), ["values"] if report.solved else [])


def _objective_part(report: ScenarioReport) -> _Part:
    items = _entries(report)
    sec = Section("Objective sensitivity ∂f*/∂θ across scenarios", paragraphs=[
        "At each scenario's optimum, from the Lagrangian (envelope theorem; no solve). "
        "Statistics over the solved scenarios; elasticity = ∂f*/∂θ · θ / f*."])
    if not items:
        sec.paragraphs.append("No parameters reported.")
        return _Part(sec)
    order = _most_influential(report, items)
    rows = []
    for i in order:
        p, j = items[i]
        s = report.objective[p]
        qs = s.quantiles.reshape(len(report.probabilities), -1, order="F")[:, j]
        rows.append([report.labels[p][j], num(float(s.mean.ravel(order="F")[j])),
                     num(float(s.std.ravel(order="F")[j])),
                     *[num(float(v)) for v in qs],
                     num(float(s.elasticity_mean.ravel(order="F")[j]))])
    caption = (f"all {len(items)} parameter entries" if len(items) <= report.k else
               f"the {report.k} of {len(items)} parameter entries of largest mean |∂f*/∂θ|")
    headers = ["parameter entry", "mean", "std",
               *[_q(p) for p in report.probabilities], "mean elasticity"]
    sec.tables.append(Table(headers, rows, caption, [False] + [True] * (len(headers) - 1)))
    return _Part(sec, ["distribution"] if report.solved else [])


def _top_part(report: ScenarioReport) -> _Part:
    sec = Section("Scenarios where each parameter matters most", paragraphs=[
        "Ranked by ‖∂f*/∂θ‖₂ over the parameter's entries."])
    for p in report.parameters:
        rows = [[str(rank + 1), str(i), num(score), num(float(report.values[i]))]
                for rank, (i, score) in enumerate(report.objective[p].top)]
        sec.tables.append(Table(["rank", "scenario", f"‖∂f*/∂{p}‖", "f*"], rows, p,
                                (True, True, True, True)))
    return _Part(sec)


def _binding_part(report: ScenarioReport) -> _Part:
    items = [(c, j) for c in report.binding for j in range(report.binding[c].count.size)]
    freq = np.array([report.binding[c].frequency.ravel(order="F")[j] for c, j in items])
    order = largest_first(np.nan_to_num(freq), report.k)
    never = int(np.sum(np.nan_to_num(freq) == 0))
    rows = [[report.labels[c][j], str(int(report.binding[c].count.ravel(order="F")[j])),
             num(float(freq[i]))] for i in order for c, j in [items[i]]]
    caption = (f"all {len(items)} inequality rows" if len(items) <= report.k else
               f"the {report.k} of {len(items)} inequality rows that bind most often")
    sec = Section("Binding inequalities", paragraphs=[
        f"From each solved scenario's active set; {never} of {len(items)} rows never bind."],
        tables=[Table(["constraint entry", "scenarios binding", "frequency"], rows,
                      caption, (False, True, True))])
    return _Part(sec, ["binding"] if report.solved else [])


def _notes(report: ScenarioReport) -> list[str]:
    notes = [f"scenario {i} failed: {msg}" for i, msg in report.failures[:FAILURES_SHOWN]]
    if len(report.failures) > FAILURES_SHOWN:
        notes.append(f"{len(report.failures) - FAILURES_SHOWN} more scenarios failed "
                     "(report.failures lists them all)")
    return notes


def _parts(report: ScenarioReport) -> list[_Part]:
    parts = [_head(report), _objective_part(report)]
    if report.parameters:
        parts.append(_top_part(report))
    if report.binding:
        parts.append(_binding_part(report))
    notes = _notes(report)
    if notes:
        parts.append(_Part(Section(NOTES, paragraphs=notes)))
    return parts


def sections(report: ScenarioReport) -> list[Section]:
    """The report's content, in order: summary, objective sensitivity, the
    scenarios that matter most, binding inequalities, notes (empty parts left out)."""
    return [part.section for part in _parts(report)]


# ---------------------------------------------------------------- text formats


def scenario_text(report: ScenarioReport) -> str:
    """The report as plain text for a terminal."""
    return sections_text(sections(report))


def scenario_markdown(report: ScenarioReport) -> str:
    """The report as Markdown: headings, paragraphs and pipe tables (no plots)."""
    return sections_markdown(sections(report))


def scenario_html(report: ScenarioReport) -> str:
    """The report as one HTML page, plots embedded as PNG (needs matplotlib)."""
    require("matplotlib", "writing a scenario report as HTML")
    body = []
    for part in _parts(report):
        body.append(section_html(part.section, (
            (key, PLOTS[key], png(draw(key, report))) for key in part.plots)))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>diffmodel scenario report</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")


# ---------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    require("matplotlib", "plotting a scenario report")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _distribution(report: ScenarioReport) -> Figure:
    """Box plots of ∂f*/∂θ for the most influential entries, one panel per parameter
    (parameters have their own units)."""
    items = _entries(report)
    chosen = [items[i] for i in _most_influential(report, items)]
    groups = [(p, [j for q, j in chosen if q == p]) for p in report.parameters
              if any(q == p for q, _ in chosen)]
    fig = _figure(8.0, 1.0 + sum(0.6 + 0.38 * len(js) for _, js in groups))
    axes = fig.subplots(len(groups), 1, squeeze=False,
                        height_ratios=[0.6 + 0.38 * len(js) for _, js in groups])[:, 0]
    for ax, (p, js) in zip(axes, groups):
        js = js[::-1]  # the largest at the top
        G = report.gradients[p].reshape(report.scenarios, -1, order="F")
        data = [G[np.isfinite(G[:, j]), j] for j in js]
        positions = np.arange(len(js))
        ax.boxplot(data, positions=positions, orientation="horizontal", whis=(5, 95),
                   showfliers=False, widths=0.6)
        ax.plot(report.objective[p].mean.ravel(order="F")[js], positions, "D",
                color="#b2182b", markersize=4, label="mean")
        ax.set_yticks(positions, labels=[report.labels[p][j] for j in js])
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel(f"∂f*/∂{p}")
    axes[0].set_title(f"Objective sensitivity across {report.solved} scenarios "
                      "(box: quartiles; whiskers: 5% and 95%)")
    axes[0].legend(loc="best")
    return fig


def _values(report: ScenarioReport) -> Figure:
    f = report.values[np.isfinite(report.values)]
    fig = _figure(7.0, 3.2)
    ax = fig.add_subplot()
    ax.hist(f, bins=int(np.clip(np.sqrt(f.shape[0]), 5, 50)), color="#4d4d4d")
    ax.axvline(report.value_mean, color="#b2182b", linewidth=1.2, label="mean")
    ax.set_xlabel("optimal value f*")
    ax.set_ylabel("scenarios")
    ax.set_title(f"Optimal value across {report.solved} scenarios")
    ax.legend(loc="best")
    return fig


def _binding(report: ScenarioReport) -> Figure:
    items = [(c, j) for c in report.binding for j in range(report.binding[c].count.size)]
    freq = np.array([report.binding[c].frequency.ravel(order="F")[j] for c, j in items])
    order = largest_first(np.nan_to_num(freq), report.k)[::-1]
    fig = _figure(7.0, 1.2 + 0.3 * max(len(order), 1))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(order)), freq[order], color="#2166ac")
    ax.set_yticks(np.arange(len(order)),
                  labels=[report.labels[items[i][0]][items[i][1]] for i in order])
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("fraction of the solved scenarios in which the row binds")
    ax.set_title("Binding inequality rows")
    return fig


def draw(key: str, report: ScenarioReport) -> Figure:
    """Draw one plot of the report (a key of :data:`PLOTS`).

    Raises
    ------
    ImportError
        If matplotlib is missing (``pip install "diffmodel[report]"``).
    ValueError
        For an unknown key.
    """
    makers = {"distribution": _distribution, "values": _values, "binding": _binding}
    if key not in makers:
        raise ValueError(f"unknown plot {key!r}; the plots are {', '.join(PLOTS)}")
    return makers[key](report)


def save_scenario_plots(report: ScenarioReport, folder: Path) -> list[Path]:
    """Write every plot of the report as ``<key>.png`` in ``folder`` (created)."""
    require("matplotlib", "plotting a scenario report")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in _parts(report):
        for key in part.plots:
            path = folder / f"{key}.png"
            path.write_bytes(png(draw(key, report)))
            paths.append(path)
    return paths


# ---------------------------------------------------------------- data


def _stat_rows(kind: str, name: str, labels: tuple[str, ...], shape: tuple[int, ...],
               count: Any, mean: np.ndarray[Any, Any], std: np.ndarray[Any, Any],
               quantiles: np.ndarray[Any, Any], lo: np.ndarray[Any, Any],
               hi: np.ndarray[Any, Any], probs: tuple[float, ...]) -> list[dict[str, Any]]:
    flat = [np.asarray(a).reshape(-1, order="F") for a in (mean, std, lo, hi)]
    qs = np.asarray(quantiles).reshape(len(probs), -1, order="F")
    counts = np.broadcast_to(np.asarray(count), flat[0].shape)
    return [{"kind": kind, "name": name, "index": entry_index(j, shape), "label": labels[j],
             "count": int(counts[j]), "mean": flat[0][j], "std": flat[1][j], "min": flat[2][j],
             **{_q(p): qs[i, j] for i, p in enumerate(probs)}, "max": flat[3][j]}
            for j in range(flat[0].shape[0])]


def scenario_dataframe(report: ScenarioReport) -> pandas.DataFrame:
    """The statistics as a DataFrame; see :meth:`ScenarioReport.to_dataframe`."""
    pd = require("pandas", "a scenario report as a DataFrame")
    probs = report.probabilities
    f = report.values[np.isfinite(report.values)]
    nan = np.array(np.nan)
    rows = _stat_rows("value", "f*", ("f*",), (), f.shape[0], np.array(report.value_mean),
                      np.array(np.std(f)) if f.shape[0] else nan, report.value_quantiles,
                      np.array(f.min()) if f.shape[0] else nan,
                      np.array(f.max()) if f.shape[0] else nan, probs)
    for p in report.parameters:
        s, G = report.objective[p], report.gradients[p]
        shape = s.mean.shape
        solved = G[np.all(np.isfinite(G.reshape(G.shape[0], -1)), axis=1)]
        lo = solved.min(axis=0) if solved.shape[0] else np.full(shape, np.nan)
        hi = solved.max(axis=0) if solved.shape[0] else np.full(shape, np.nan)
        rows += _stat_rows("objective", p, report.labels[p], shape, report.solved, s.mean,
                           s.std, s.quantiles, lo, hi, probs)
        nans = np.full(shape, np.nan)
        rows += _stat_rows("elasticity", p, report.labels[p], shape, report.solved,
                           s.elasticity_mean, nans, s.elasticity_quantiles, nans, nans, probs)
    for c, b in report.binding.items():
        nans = np.full(b.count.shape, np.nan)
        rows += _stat_rows("binding", c, report.labels[c], b.count.shape, b.count.ravel(
            order="F"), b.frequency, nans, np.full((len(probs), *b.count.shape), np.nan),
            nans, nans, probs)
    columns = ["kind", "name", "index", "label", "count", "mean", "std", "min",
               *[_q(p) for p in probs], "max"]
    frame: pandas.DataFrame = pd.DataFrame(rows, columns=columns)
    return frame


def scenario_json(report: ScenarioReport) -> str:
    """The report as a JSON document (NaN as null); see :meth:`ScenarioReport.to_json`."""
    doc = {
        "scenarios": report.scenarios, "solved": report.solved,
        "failures": [[i, msg] for i, msg in report.failures], "sense": report.sense,
        "probabilities": list(report.probabilities), "seconds": report.seconds,
        "top_k": report.k,
        "conventions": {
            "vectorization": "column-major (Fortran order), as CVXPY",
            "objective": "d f*/d theta at each scenario's optimum (envelope theorem)",
            "elasticity": "d f*/d theta * theta / f*; null where f* is zero",
            "quantiles": "arrays of shape (len(probabilities), *parameter.shape)"},
        "value": {"mean": report.value_mean, "quantiles": report.value_quantiles},
        "objective": {
            p: {"shape": list(s.mean.shape), "labels": list(report.labels[p]),
                "mean": s.mean, "std": s.std, "quantiles": s.quantiles,
                "elasticity_mean": s.elasticity_mean,
                "elasticity_quantiles": s.elasticity_quantiles,
                "top": [{"scenario": i, "norm": v} for i, v in s.top]}
            for p, s in report.objective.items()},
        "binding": {
            c: {"shape": list(b.count.shape), "labels": list(report.labels[c]),
                "count": b.count, "frequency": b.frequency}
            for c, b in report.binding.items()},
    }
    return json.dumps(_clean(doc), allow_nan=False, ensure_ascii=False)


def batch_dataframe(columns: dict[str, object]) -> pandas.DataFrame:
    """A batch's results as a DataFrame, from its columns (one entry per scenario)."""
    pd = require("pandas", "a batch solution as a DataFrame")
    frame: pandas.DataFrame = pd.DataFrame(columns)
    frame.index.name = "scenario"
    return frame
