"""Renderings of :class:`~diffmodel.report.SensitivityReport`: text, Markdown,
self-contained HTML with plots, pandas and JSON.

The content is built once as a list of sections (titles, paragraphs, tables,
plots) and then written in each format, so every rendering shows the same
tables. matplotlib (plots) and pandas (DataFrames) are imported lazily and
belong to the ``report`` extra.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    from matplotlib.figure import Figure

    from .report import BlockSensitivity, SensitivityReport, Sweep

__all__ = ["report_text", "report_markdown", "report_html", "report_dataframe",
           "report_json", "save_plots", "sweep_text", "require"]

EXTRA_HINT = 'pip install "diffmodel[report]"'
#: Tick labels are drawn on heatmap axes of at most this many entries.
MAX_TICKS = 30


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the ``report`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, which is not installed: "
            f"install the report extra with {EXTRA_HINT}") from exc


# ---------------------------------------------------------------- content


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.6g}"


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: Sequence[bool] = ()


@dataclass
class _Plot:
    key: str  # file stem and HTML data-plot attribute
    title: str
    draw: Callable[[], "Figure"]


@dataclass
class _Section:
    title: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    tables: list[_Table] = field(default_factory=list)
    plots: list[_Plot] = field(default_factory=list)


def _top_flat(values: np.ndarray, k: int) -> np.ndarray:
    flat = np.abs(values)
    if flat.shape[0] > k:
        idx = np.argpartition(flat, flat.shape[0] - k)[-k:]
    else:
        idx = np.arange(flat.shape[0])
    return idx[np.lexsort((idx, -flat[idx]))]


def _objective_table(report: "SensitivityReport") -> _Table:
    items = []
    for p, obj in report.objective.items():
        labels = report.labels[p]
        for j, (t, g, e) in enumerate(zip(obj.value.ravel(order="F"),
                                          obj.gradient.ravel(order="F"),
                                          obj.elasticity.ravel(order="F"))):
            items.append((labels[j], float(t), float(g), float(e)))
    total = len(items)
    order = _top_flat(np.array([g for _, _, g, _ in items]), report.k) if items else []
    rows = [[items[i][0], _num(items[i][1]), _num(items[i][2]), _num(items[i][3])]
            for i in order]
    caption = (f"all {total} parameter entries" if total <= report.k else
               f"the {report.k} largest of {total} parameter entries by |∂f*/∂θ|")
    return _Table(["parameter entry", "θ", "∂f*/∂θ", "elasticity"], rows,
                  caption + "; elasticity = ∂f*/∂θ · θ / f*", (False, True, True, True))


def _shadow_tables(report: "SensitivityReport") -> tuple[list[str], list[_Table]]:
    paragraphs, tables = [], []
    for c, sp in report.shadow_prices.items():
        paragraphs.append(f"{c}: {sp.meaning}.")
        labels = report.labels[c]
        nu = sp.dual.ravel(order="F")
        price = sp.price.ravel(order="F")
        order = _top_flat(price, report.k)
        caption = (f"{c}: {sp.lhs} == {sp.rhs}" if nu.shape[0] <= report.k else
                   f"{c}: the {report.k} largest of {nu.shape[0]} entries by |price|")
        rows = [[labels[i], _num(float(nu[i])), _num(float(price[i]))] for i in order]
        tables.append(_Table(["constraint entry", "dual ν", "∂f*/∂rhs (price)"], rows,
                             caption, (False, True, True)))
    return paragraphs, tables


def _block_summary(report: "SensitivityReport") -> _Table:
    rows = []
    for (o, p), blk in report.blocks.items():
        big = blk.largest[0] if blk.largest else None
        rows.append([f"∂{o}/∂{p}", blk.kind, f"{blk.shape[0]} × {blk.shape[1]}",
                     _num(blk.norm), _num(blk.max_abs),
                     f"{big.output_label} w.r.t. {big.parameter_label}" if big else "",
                     "yes" if blk.jacobian is not None else "no (capped)"])
    return _Table(["block", "output", "shape", "norm (Frobenius)", "max |entry|",
                   "largest entry", "stored"], rows,
                  "one row per (output, parameter) block of dz/dθ",
                  (False, False, False, True, True, False, False))


def _block_table(blk: "BlockSensitivity", k: int) -> _Table:
    rows = [[f"{e.output_label} w.r.t. {e.parameter_label}", _num(e.derivative),
             _num(e.elasticity)] for e in blk.largest]
    total = blk.shape[0] * blk.shape[1]
    caption = (f"∂{blk.output}/∂{blk.parameter}: all {total} entries" if total <= k else
               f"∂{blk.output}/∂{blk.parameter}: the {len(blk.largest)} largest of "
               f"{total} entries")
    return _Table(["entry", "derivative", "elasticity"], rows,
                  caption + "; elasticity = derivative · θ / output", (False, True, True))


def _ranking_tables(report: "SensitivityReport") -> list[_Table]:
    def table(items: Sequence[Any], caption: str, score: str) -> _Table:
        rows = [[str(i + 1), inf.label, _num(inf.score)] for i, inf in enumerate(items)]
        return _Table(["rank", "parameter entry", score], rows, caption, (True, False, True))

    tables = [table(report.top.objective, "objective: by |∂f*/∂θ|", "|∂f*/∂θ|")]
    if report.top.overall:
        tables.append(table(report.top.overall,
                            "all reported outputs: by the norm of the column ∂z/∂θⱼ",
                            "column norm"))
    for o, items in report.top.per_output.items():
        tables.append(table(items, f"{o}: by the norm of ∂{o}/∂θⱼ", "column norm"))
    return tables


def sweep_table(sw: "Sweep") -> _Table:
    head = {"multiplier": "multiplier t", "value": sw.parameter, "index": "step"}[sw.step_kind]
    rows = [[_num(float(s)), _num(float(v)), _num(float(pv)), _num(float(ve)), _num(float(e))]
            for s, v, pv, ve, e in zip(sw.steps, sw.value, sw.predicted_value,
                                       sw.value_error, sw.error)]
    return _Table([head, "f* (re-solved)", "f* (first order)", "|value error|",
                   "max |solution error|"], rows,
                  f"sweep of {sw.parameter}: first-order prediction against re-solves",
                  (True, True, True, True, True))


def _sections(report: "SensitivityReport") -> list[_Section]:
    sense = "maximized" if report.sense == "maximize" else "minimized"
    head = _Section("Sensitivity report", level=1)
    head.paragraphs.append(
        f"Optimal value f* = {_num(report.value)} ({sense}). Outputs: "
        f"{', '.join(report.outputs) or 'none'}; parameters: "
        f"{', '.join(report.parameters) or 'none'}. "
        + (f"Blocks by {report.mode} passes ({report.solves} solves with the stored "
           f"factorization)" if report.mode != "none" else "No Jacobian blocks")
        + f", {report.seconds:.2f} s.")
    sections = [head]

    obj = _Section("Objective sensitivity ∂f*/∂θ")
    obj.paragraphs.append("From the Lagrangian at the optimum (envelope theorem); no solve.")
    if not report.objective:
        obj.paragraphs.append("No parameters reported.")
    else:
        obj.tables.append(_objective_table(report))
        obj.plots.append(_Plot("tornado", "Objective sensitivity",
                               lambda: _tornado(report)))
    sections.append(obj)

    if report.shadow_prices:
        sp = _Section("Shadow prices")
        paragraphs, tables = _shadow_tables(report)
        sp.paragraphs.extend(paragraphs)
        sp.tables.extend(tables)
        sections.append(sp)

    if report.blocks:
        bl = _Section("Solution sensitivities dz/dθ")
        bl.paragraphs.append(
            "Rows follow the output, columns the parameter, both in column-major order; "
            "a constraint's output is its dual ν (CVXPY's sign).")
        bl.tables.append(_block_summary(report))
        sections.append(bl)
        for (o, p), blk in report.blocks.items():
            sub = _Section(f"∂{o}/∂{p}", level=3)
            sub.paragraphs.append(f"norm {_num(blk.norm)}, max |entry| {_num(blk.max_abs)}, "
                                  f"shape {blk.shape[0]} × {blk.shape[1]}")
            sub.tables.append(_block_table(blk, report.k))
            if blk.jacobian is not None:
                sub.plots.append(_Plot(f"heatmap-{_slug(o)}-{_slug(p)}", f"∂{o}/∂{p}",
                                       lambda blk=blk: _heatmap(report, blk)))
            sections.append(sub)

    if report.parameters:
        rank = _Section("Most influential parameter entries")
        rank.tables.extend(_ranking_tables(report))
        sections.append(rank)

    if report.sweeps:
        sw_sec = _Section("Sweeps: first-order prediction against re-solves")
        for p, sw in report.sweeps.items():
            sw_sec.tables.append(sweep_table(sw))
            sw_sec.plots.append(_Plot(f"sweep-{_slug(p)}", f"sweep of {p}",
                                      lambda sw=sw: _sweep_figure(sw)))
        sections.append(sw_sec)

    if report.notes:
        notes = _Section("Notes")
        notes.paragraphs.extend(report.notes)
        sections.append(notes)
    return sections


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---------------------------------------------------------------- text


def _text_table(table: _Table) -> str:
    cols = list(zip(table.headers, *table.rows)) if table.rows else [(h,) for h in table.headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    numeric = list(table.numeric) + [False] * (len(table.headers) - len(table.numeric))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = []
    if table.caption:
        out.append(table.caption)
    out.append(line(table.headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in table.rows)
    return "\n".join(out)


def report_text(report: "SensitivityReport") -> str:
    """The report as plain text for a terminal."""
    parts = []
    for sec in _sections(report):
        mark = {1: "=", 2: "-", 3: "·"}[sec.level]
        parts.append(f"{sec.title}\n{mark * len(sec.title)}")
        bullets = sec.title == "Notes"
        parts.extend(f"- {p}" if bullets else p for p in sec.paragraphs)
        parts.extend(_text_table(t) for t in sec.tables)
    return "\n\n".join(parts) + "\n"


def sweep_text(sw: "Sweep") -> str:
    text = _text_table(sweep_table(sw))
    if sw.failures:
        text += "\n" + "\n".join(f"step {i} failed: {msg}" for i, msg in sw.failures)
    return text


# ---------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    """Escape Markdown's emphasis and table characters (f* would start italics)."""
    for ch in ("\\", "*", "_", "|"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def _md_table(table: _Table) -> str:
    numeric = list(table.numeric) + [False] * (len(table.headers) - len(table.numeric))
    out = []
    if table.caption:
        out.append(f"*{_md_cell(table.caption)}*\n")
    out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    out.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(out)


def report_markdown(report: "SensitivityReport") -> str:
    """The report as Markdown: headings, paragraphs and pipe tables."""
    parts = []
    for sec in _sections(report):
        parts.append(f"{'#' * sec.level} {_md_cell(sec.title)}")
        bullets = sec.title == "Notes"
        parts.extend(f"- {_md_cell(p)}" if bullets else _md_cell(p) for p in sec.paragraphs)
        parts.extend(_md_table(t) for t in sec.tables)
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- plots


def _figure(width: float, height: float) -> "Figure":
    require("matplotlib", "plotting a sensitivity report")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig: "Figure") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _heatmap(report: "SensitivityReport", blk: "BlockSensitivity") -> "Figure":
    J = blk.jacobian
    assert J is not None
    rows, cols = J.shape
    fig = _figure(min(4.0 + 0.25 * cols, 11.0), min(3.0 + 0.25 * rows, 9.0))
    ax = fig.add_subplot()
    vmax = float(np.abs(J).max(initial=0.0)) or 1.0
    image = ax.imshow(J, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, label="derivative")
    ax.set_title(f"∂{blk.output}/∂{blk.parameter}")
    if rows <= MAX_TICKS:
        ax.set_yticks(np.arange(rows), labels=list(report.labels[blk.output]))
    else:
        ax.set_ylabel(f"{blk.output} entry (column-major)")
    if cols <= MAX_TICKS:
        ax.set_xticks(np.arange(cols), labels=list(report.labels[blk.parameter]),
                      rotation=90)
    else:
        ax.set_xlabel(f"{blk.parameter} entry (column-major)")
    return fig


def _tornado(report: "SensitivityReport") -> "Figure":
    labels, values = [], []
    for p, obj in report.objective.items():
        labels.extend(report.labels[p])
        values.extend(obj.gradient.ravel(order="F").tolist())
    vals = np.array(values, dtype=np.float64)
    order = _top_flat(vals, report.k)[::-1]  # largest at the top
    fig = _figure(7.0, 1.2 + 0.3 * max(len(order), 1))
    ax = fig.add_subplot()
    shown = vals[order]
    ax.barh(np.arange(len(order)), shown,
            color=["#b2182b" if v > 0 else "#2166ac" for v in shown])
    ax.set_yticks(np.arange(len(order)), labels=[labels[i] for i in order])
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("∂f*/∂θ (change of f* per unit of θ)")
    ax.set_title(f"Objective sensitivity: the {len(order)} largest entries")
    return fig


def _sweep_figure(sw: "Sweep") -> "Figure":
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    xlabel = {"multiplier": f"multiplier t ({sw.parameter} = t·{sw.parameter}₀)",
              "value": sw.parameter, "index": "step"}[sw.step_kind]
    left.plot(sw.steps, sw.value, "o", label="re-solved")
    left.plot(sw.steps, sw.predicted_value, "--", label="first order")
    left.set_xlabel(xlabel)
    left.set_ylabel("f*")
    left.set_title(f"Optimal value along the sweep of {sw.parameter}")
    left.legend()
    errors = np.concatenate([sw.value_error, sw.error])
    finite = errors[np.isfinite(errors)]
    positive = finite[finite > 0]
    if positive.shape[0]:
        floor = float(positive.min()) * 0.1
        right.semilogy(sw.steps, np.maximum(sw.value_error, floor), "o-", label="|value error|")
        right.semilogy(sw.steps, np.maximum(sw.error, floor), "s-",
                       label="max |solution error|")
    else:
        right.plot(sw.steps, sw.value_error, "o-", label="|value error|")
        right.plot(sw.steps, sw.error, "s-", label="max |solution error|")
    right.set_xlabel(xlabel)
    right.set_ylabel("error of the first-order prediction")
    right.set_title("How far the linearization holds")
    right.legend()
    return fig


def _plots(report: "SensitivityReport") -> list[_Plot]:
    return [plot for sec in _sections(report) for plot in sec.plots]


def save_plots(report: "SensitivityReport", folder: Path) -> list[Path]:
    """Write every plot of the report as ``<key>.png`` in ``folder``."""
    require("matplotlib", "plotting a sensitivity report")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in _plots(report):
        path = folder / f"{plot.key}.png"
        path.write_bytes(_png(plot.draw()))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-style: italic; color: #555;
          padding-bottom: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
         font-family: "DejaVu Sans Mono", monospace; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
ul.notes li { color: #7a4b00; }
"""


def _html_table(table: _Table) -> str:
    e = html.escape
    numeric = list(table.numeric) + [False] * (len(table.headers) - len(table.numeric))
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{e(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in table.headers)
               + "</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{e(c)}</td>' if num else f"<td>{e(c)}</td>"
            for c, num in zip(row, numeric)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def report_html(report: "SensitivityReport") -> str:
    """The report as one self-contained HTML page (inline CSS, PNG data URIs)."""
    require("matplotlib", "writing a sensitivity report as HTML")
    e = html.escape
    body = []
    for sec in _sections(report):
        body.append(f"<section><h{sec.level}>{e(sec.title)}</h{sec.level}>")
        if sec.title == "Notes":
            body.append('<ul class="notes">' + "".join(f"<li>{e(p)}</li>"
                                                       for p in sec.paragraphs) + "</ul>")
        else:
            body.extend(f"<p>{e(p)}</p>" for p in sec.paragraphs)
        body.extend(_html_table(t) for t in sec.tables)
        for plot in sec.plots:
            data = base64.b64encode(_png(plot.draw())).decode("ascii")
            body.append(f'<figure data-plot="{e(plot.key)}"><img alt="{e(plot.title)}" '
                        f'src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(plot.title)}</figcaption></figure>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>diffmodel sensitivity report</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")


# ---------------------------------------------------------------- pandas


def report_dataframe(report: "SensitivityReport") -> "pandas.DataFrame":
    """Long format: one row per derivative (objective rows first)."""
    pd = require("pandas", "SensitivityReport.to_dataframe()")
    from .report import _elasticity, _index

    frames = []
    columns = ["kind", "output", "output_index", "output_label", "parameter",
               "parameter_index", "parameter_label", "derivative", "elasticity"]
    for p, obj in report.objective.items():
        size = obj.gradient.size
        shape = obj.gradient.shape
        frames.append(pd.DataFrame({
            "kind": "objective", "output": "f*", "output_index": [()] * size,
            "output_label": "f*", "parameter": p,
            "parameter_index": [_index(j, shape) for j in range(size)],
            "parameter_label": list(report.labels[p]),
            "derivative": obj.gradient.ravel(order="F"),
            "elasticity": obj.elasticity.ravel(order="F"),
        }, columns=columns))
    for (o, p), blk in report.blocks.items():
        if blk.jacobian is not None:
            rows, cols = blk.jacobian.shape
            ii = np.repeat(np.arange(rows), cols)
            jj = np.tile(np.arange(cols), rows)
            d = blk.jacobian.ravel()
            y = report.output_values[o]
            t = report.objective[p].value.ravel(order="F")
            el = _elasticity(d, t[jj], y[ii], float(np.abs(y).max(initial=0.0)))
            oidx = [_index(i, blk.output_shape) for i in range(rows)]
            pidx = [_index(j, blk.parameter_shape) for j in range(cols)]
            olab = np.array(report.labels[o], dtype=object)
            plab = np.array(report.labels[p], dtype=object)
            frames.append(pd.DataFrame({
                "kind": blk.kind, "output": o,
                "output_index": [oidx[i] for i in ii], "output_label": olab[ii],
                "parameter": p, "parameter_index": [pidx[j] for j in jj],
                "parameter_label": plab[jj], "derivative": d, "elasticity": el,
            }, columns=columns))
        elif blk.largest:
            frames.append(pd.DataFrame([{
                "kind": blk.kind, "output": en.output, "output_index": en.output_index,
                "output_label": en.output_label, "parameter": en.parameter,
                "parameter_index": en.parameter_index, "parameter_label": en.parameter_label,
                "derivative": en.derivative, "elasticity": en.elasticity,
            } for en in blk.largest], columns=columns))
    if not frames:
        return pd.DataFrame(columns=columns)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- JSON


def _clean(value: Any) -> Any:
    """JSON-ready: arrays to lists, NaN/inf to None, tuples to lists."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            obj = value.astype(object)
            obj[~np.isfinite(value)] = None
            return obj.tolist()
        return value.tolist()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _entry(en: Any) -> dict[str, Any]:
    return {"output": en.output, "output_index": list(en.output_index),
            "output_label": en.output_label, "parameter": en.parameter,
            "parameter_index": list(en.parameter_index),
            "parameter_label": en.parameter_label, "derivative": en.derivative,
            "elasticity": en.elasticity}


def _influence(inf: Any) -> dict[str, Any]:
    return {"parameter": inf.parameter, "index": list(inf.index), "label": inf.label,
            "score": inf.score}


def report_json(report: "SensitivityReport") -> str:
    """The report as JSON (arrays as nested lists, NaN as null)."""
    doc = {
        "value": report.value,
        "sense": report.sense,
        "outputs": list(report.outputs),
        "parameters": list(report.parameters),
        "mode": report.mode,
        "solves": report.solves,
        "seconds": report.seconds,
        "top_k": report.k,
        "conventions": {
            "vectorization": "column-major (Fortran order), as CVXPY",
            "jacobian": "rows follow the output, columns the parameter",
            "dual": "CVXPY's sign: Lagrangian f + nu^T (lhs - rhs)",
            "shadow_price": "d f*/d eps for lhs == rhs + eps (-nu for Minimize, +nu for "
                            "Maximize)",
            "elasticity": "derivative * theta / output; null where the output is zero",
        },
        "objective": {
            p: {"shape": list(o.value.shape), "value": o.value, "gradient": o.gradient,
                "elasticity": o.elasticity, "labels": list(report.labels[p])}
            for p, o in report.objective.items()},
        "shadow_prices": {
            c: {"lhs": s.lhs, "rhs": s.rhs, "dual": s.dual, "price": s.price,
                "meaning": s.meaning, "labels": list(report.labels[c])}
            for c, s in report.shadow_prices.items()},
        "blocks": [
            {"output": b.output, "parameter": b.parameter, "kind": b.kind,
             "output_shape": list(b.output_shape), "parameter_shape": list(b.parameter_shape),
             "norm": b.norm, "max_abs": b.max_abs,
             "largest": [_entry(en) for en in b.largest],
             "jacobian": b.jacobian}
            for b in report.blocks.values()],
        "top": {
            "objective": [_influence(i) for i in report.top.objective],
            "overall": [_influence(i) for i in report.top.overall],
            "per_output": {o: [_influence(i) for i in items]
                           for o, items in report.top.per_output.items()}},
        "sweeps": {
            p: {"steps": s.steps, "step_kind": s.step_kind, "thetas": s.thetas,
                "value": s.value, "predicted_value": s.predicted_value,
                "value_error": s.value_error, "error": s.error,
                "primal": dict(s.primal), "predicted_primal": dict(s.predicted_primal),
                "dual": dict(s.dual), "predicted_dual": dict(s.predicted_dual),
                "failures": [list(f) for f in s.failures]}
            for p, s in report.sweeps.items()},
        "notes": list(report.notes),
    }
    return json.dumps(_clean(doc), allow_nan=False, ensure_ascii=False)
