"""The report's plots, drawn with matplotlib (the ``report`` extra).

A tornado chart of ∂f*/∂θ (nonzero entries only), a chart of the ranges of
the parameter entries nearest a change of the active set, a heatmap per
stored ∂output/∂parameter block and one figure per sweep. Figures are drawn
off-screen (Agg canvas, no pyplot state) and written as PNG.

Contrast. A heatmap's colours follow its data (:func:`colour_scale`): a
diverging map centred at 0 when signs differ, a sequential one over the
data's range when they do not (so that entries that differ in the third
digit still look different), and one colour with a note giving the value
when the block is uniform. Small blocks have their values in the cells. On
the log axis of a sweep's errors, an exact 0 is drawn at the axis bottom with
its own marker and legend entry, never on an arbitrary floor.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from . import require
from .._common import FloatArray
from .content import Plot, largest_first, ranged_entries, report_plots
from .tables import num, tol

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

    from ..results import BlockSensitivity, SensitivityReport
    from ..whatif import Sweep

__all__ = ["MAX_TICKS", "MAX_ANNOTATED", "ColourScale", "colour_scale", "draw", "png",
           "save_plots"]

#: Tick labels are drawn on heatmap axes of at most this many entries.
MAX_TICKS = 30
#: Heatmaps of at most this many rows and columns have their values in the cells.
MAX_ANNOTATED = 12
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


@dataclass(frozen=True)
class ColourScale:
    """How a heatmap maps values to colours, and what to say about it.

    ``kind`` is ``"diverging"`` (signs differ: a diverging map centred at 0,
    symmetric), ``"negative"`` or ``"positive"`` (one sign: a sequential map
    over the data's range, so that differences show however close the values
    are) or ``"uniform"`` (every entry equal to within the threshold: one
    colour, and a note with the value).
    """

    kind: Literal["diverging", "negative", "positive", "uniform"]
    cmap: str
    vmin: float
    vmax: float
    label: str


def colour_scale(values: FloatArray, threshold: float) -> ColourScale:
    """The colour scale of a heatmap of ``values`` (entries at or below ``threshold``
    in magnitude are already 0): see :class:`ColourScale`."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi - lo <= threshold:  # one light tint of the sign's colour
        value = 0.5 * (lo + hi)
        cmap = "Blues" if value < 0 else "Reds" if value > 0 else "Greys"
        return ColourScale("uniform", cmap, value - 0.25, value + 0.75,
                           f"uniform block: every entry is {num(value)}"
                           + (f"\n(equal to within the threshold {tol(threshold)})"
                              if threshold > 0 else ""))
    if lo < 0.0 < hi:
        top = max(-lo, hi)
        return ColourScale("diverging", "RdBu_r", -top, top,
                           "colours: diverging, centred at 0 (red > 0, blue < 0)")
    span = f"[{num(lo)}, {num(hi)}]"
    if hi <= 0.0:
        return ColourScale("negative", "Blues_r", lo, hi,
                           f"colours: every entry ≤ 0, the scale spans {span}")
    return ColourScale("positive", "Reds", lo, hi,
                       f"colours: every entry ≥ 0, the scale spans {span}")


def _annotate_cells(ax: Axes, image: AxesImage, J: FloatArray) -> None:
    """Write each entry in its cell, dark on light colours and light on dark."""
    rows, cols = J.shape
    size = "small" if max(rows, cols) <= 8 else "x-small"
    for i in range(rows):
        for j in range(cols):
            r, g, b, _ = image.cmap(image.norm(J[i, j]))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, "0" if J[i, j] == 0 else f"{J[i, j]:.3g}", ha="center",
                    va="center", fontsize=size, color="white" if dark else "#222222")


def _heatmap(report: SensitivityReport, blk: BlockSensitivity) -> Figure:
    J = blk.jacobian
    if J is None:  # pragma: no cover - only stored blocks get a heatmap
        raise ValueError(f"the block ∂{blk.output}/∂{blk.parameter} is not stored")
    rows, cols = J.shape
    annotate = max(rows, cols) <= MAX_ANNOTATED
    cell = 0.55 if annotate else 0.25
    fig = _figure(min(4.5 + cell * cols, 12.0), min(3.0 + cell * rows, 10.0))
    ax = fig.add_subplot()
    scale = colour_scale(J, blk.threshold)
    image = ax.imshow(J, cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax, aspect="auto",
                      interpolation="nearest")
    zero = (f"entries with |derivative| ≤ {tol(blk.threshold)} are 0" if blk.threshold > 0
            else "exact: threshold 0")
    if scale.kind == "uniform":
        ax.text(0.5, 0.5, scale.label, transform=ax.transAxes, ha="center", va="center",
                fontsize="medium", bbox={"boxstyle": "round", "facecolor": "white",
                                         "edgecolor": "#888888"})
        parts = ["one colour: the block is uniform", zero]
    else:
        bar = fig.colorbar(image, ax=ax, fraction=0.08)
        bar.set_label("derivative")
        if annotate:
            _annotate_cells(ax, image, J)
        parts = [scale.label, zero]
    ax.set_title(f"∂{blk.output}/∂{blk.parameter}", fontsize="large")
    # The scale and the threshold in words, below the figure: one line if it fits.
    width = int(fig.get_figwidth() * 15)
    note = "; ".join(parts)
    if len(note) > width:
        note = "\n".join(line for part in parts for line in textwrap.wrap(part, width))
    fig.supxlabel(note, fontsize="small", color="#333333")
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
    nonzero = np.flatnonzero(vals != 0)
    order = nonzero[largest_first(vals[nonzero], report.k)][::-1]  # largest at the top
    fig = _figure(7.0, 1.6 + 0.3 * max(len(order), 1))
    ax = fig.add_subplot()
    shown = vals[order]
    ax.barh(np.arange(len(order)), shown,
            color=["#b2182b" if v > 0 else "#2166ac" for v in shown])
    ax.set_yticks(np.arange(len(order)), labels=[labels[i] for i in order])
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("∂f*/∂θ (change of f* per unit of θ)\n"
                  "entries at or below their threshold are 0 and not shown")
    if len(order):
        ax.set_title(f"Objective sensitivity: the {len(order)} largest nonzero of "
                     f"{vals.shape[0]} entries")
    else:
        ax.set_title("Objective sensitivity")
        ax.text(0.5, 0.5, f"every ∂f*/∂θ is 0 ({vals.shape[0]} entries)",
                transform=ax.transAxes, ha="center", va="center")
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
    fig = _figure(10.0, 4.4)
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
    _errors_panel(right, sw.steps, [("|value error|", sw.value_error, "o", "C0"),
                                     ("max |solution error|", sw.error, "s", "C1")])
    right.set_xlabel(xlabel)
    right.set_ylabel("error of the first-order prediction")
    right.set_title("How far the linearization holds")
    return fig


def _errors_panel(ax: Axes, steps: FloatArray,
                  series: list[tuple[str, FloatArray, str, str]]) -> None:
    """Errors on a log axis. An exact 0 has no place on it: it is drawn at the
    axis bottom as an open down-pointing triangle ("exact 0" in the legend),
    and lines break there instead of running to an arbitrary floor."""
    from matplotlib.lines import Line2D

    every = np.concatenate([v for _, v, _, _ in series])
    positive = every[np.isfinite(every) & (every > 0)]
    if not positive.shape[0]:
        for label, v, marker, colour in series:
            ax.plot(steps, v, marker + "-", label=label, color=colour)
        ax.text(0.5, 0.5, "every error is exactly 0", transform=ax.transAxes,
                ha="center", va="center")
        ax.legend()
        return
    low, high = float(positive.min()), float(positive.max())
    bottom, top = low / 10 ** 0.5, high * 10 ** 0.5
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    zeros = False
    for n, (label, v, marker, colour) in enumerate(series):
        ax.plot(steps, np.where(v > 0, v, np.nan), marker + "-", label=label, color=colour)
        at_zero = v == 0
        if at_zero.any():  # nested sizes: markers at the same step stay visible
            zeros = True
            ax.plot(steps[at_zero], np.full(int(at_zero.sum()), bottom), "v",
                    ms=12 - 4 * n, mfc="none", mec=colour, mew=1.6, clip_on=False,
                    zorder=4 + n)
    handles, _ = ax.get_legend_handles_labels()
    if zeros:
        handles.append(Line2D([], [], ls="none", marker="v", ms=9, mfc="none", mec="#444444",
                              mew=1.6, label="exact 0 (drawn at the axis bottom)"))
    ax.legend(handles=handles, fontsize="small", loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)


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
