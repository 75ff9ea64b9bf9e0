"""The report's plots, drawn with matplotlib (the ``report`` extra).

A tornado chart of ∂f*/∂θ, a chart of the ranges of the parameter entries
nearest a change of the active set, a heatmap per stored
∂output/∂parameter block and one figure per sweep. Figures are drawn off-screen (Agg canvas, no
pyplot state) and written as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import require
from .content import Plot, largest_first, ranged_entries, report_plots

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..results import BlockSensitivity, SensitivityReport
    from ..whatif import Sweep

__all__ = ["MAX_TICKS", "draw", "png", "save_plots"]

#: Tick labels are drawn on heatmap axes of at most this many entries.
MAX_TICKS = 30
#: The ranges chart shows relative changes within ± this (beyond: an arrow), on a
#: scale that is logarithmic beyond ± RANGE_LINEAR.
RANGE_CLIP = 1.0
RANGE_LINEAR = 0.01


def _figure(width: float, height: float) -> Figure:
    require("matplotlib", "plotting a sensitivity report")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi).

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    bytes
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _heatmap(report: SensitivityReport, blk: BlockSensitivity) -> Figure:
    J = blk.jacobian
    if J is None:  # pragma: no cover - only stored blocks get a heatmap
        raise ValueError(f"the block ∂{blk.output}/∂{blk.parameter} is not stored")
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


def _tornado(report: SensitivityReport) -> Figure:
    labels: list[str] = []
    values: list[float] = []
    for p, obj in report.objective.items():
        labels.extend(report.labels[p])
        values.extend(obj.gradient.ravel(order="F").tolist())
    vals = np.array(values, dtype=np.float64)
    order = largest_first(vals, report.k)[::-1]  # largest at the top
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


def _ranges_figure(report: SensitivityReport) -> Figure:
    from matplotlib.patches import Patch

    items = ranged_entries(report, report.k)[::-1]  # nearest at the top
    fig = _figure(7.5, 1.5 + 0.32 * max(len(items), 1))
    ax = fig.add_subplot()
    clip, colors = RANGE_CLIP, {True: "#4c72b0", False: "#dd8452"}
    for y, (_, lo, hi, exact, domain) in enumerate(items):
        a, b = max(lo, -clip), min(hi, clip)
        ax.barh(y, b - a, left=a, height=0.55, color=colors[exact], alpha=0.9)
        for end, edge, side, marker in ((lo, -clip, -1, "<"), (hi, clip, 1, ">")):
            if side * (end - edge) > 0:
                ax.plot(edge, y, marker=marker, color="#444444", markersize=7)
            elif domain[(side + 1) // 2]:
                ax.plot(end, y, marker="|", color="#444444", markersize=14, mew=2)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(np.arange(len(items)), labels=[item[0] for item in items])
    ax.set_xscale("symlog", linthresh=RANGE_LINEAR)
    ax.set_xlim(-clip * 1.3, clip * 1.3)
    ticks = [-1.0, -0.1, -0.01, 0.0, 0.01, 0.1, 1.0]
    ax.set_xticks(ticks, labels=[f"{100 * v:+g}%" if v else "0" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel("change of the entry relative to its value\n(arrow: beyond ±100 % or "
                  "unbounded; end mark: the parameter's domain)")
    kinds = sorted({item[3] for item in items}, reverse=True)
    ax.legend(handles=[Patch(color=colors[k], label="exact" if k else "first order")
                       for k in kinds], loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize="small")
    ax.set_title(f"How far {len(items)} entries can move before the active set changes")
    return fig


def _sweep_figure(sw: Sweep, report: SensitivityReport | None = None) -> Figure:
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    rng = None if report is None else report.ranges_detail.get(sw.parameter)
    if rng is not None and sw.step_kind == "value" and rng.value.size == 1:
        # A scalar parameter: where the active set of the solution holds.
        low, high = float(rng.low.ravel()[0]), float(rng.high.ravel()[0])
        kind = "exact" if bool(rng.exact.ravel()[0]) else "first-order"
        for ax in (left, right):
            lo, hi = max(low, float(sw.steps.min())), min(high, float(sw.steps.max()))
            if lo < hi:
                ax.axvspan(lo, hi, color="#dddddd", alpha=0.6, zorder=0,
                           label=f"active set holds ({kind} range)" if ax is left else None)
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


def draw(plot: Plot, report: SensitivityReport) -> Figure:
    """Draw one plot of the report.

    Parameters
    ----------
    plot : Plot
        From :func:`.content.report_plots`.
    report : SensitivityReport

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        If matplotlib is missing (``pip install "diffmodel[report]"``).
    ValueError
        For a heatmap without its block or a sweep plot without its sweep.
    """
    if plot.kind == "tornado":
        return _tornado(report)
    if plot.kind == "heatmap" and plot.block is not None:
        return _heatmap(report, plot.block)
    if plot.kind == "ranges":
        return _ranges_figure(report)
    if plot.kind == "sweep" and plot.sweep is not None:
        return _sweep_figure(plot.sweep, report)
    raise ValueError(f"plot {plot.key!r}: nothing to draw")


def save_plots(report: SensitivityReport, folder: Path) -> list[Path]:
    """Write every plot of the report as ``<key>.png`` in ``folder``.

    Parameters
    ----------
    report : SensitivityReport
    folder : Path
        Created if needed.

    Returns
    -------
    list of Path
        The files written, in the order of the report's sections.

    Raises
    ------
    ImportError
        If matplotlib is missing (``pip install "diffmodel[report]"``).
    """
    require("matplotlib", "plotting a sensitivity report")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in report_plots(report):
        path = folder / f"{plot.key}.png"
        path.write_bytes(png(draw(plot, report)))
        paths.append(path)
    return paths
