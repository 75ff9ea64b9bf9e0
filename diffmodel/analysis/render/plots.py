"""The report's plots, drawn with matplotlib (the ``report`` extra).

A tornado chart of ∂f*/∂θ, a heatmap per stored ∂output/∂parameter block
and one figure per sweep. Figures are drawn off-screen (Agg canvas, no
pyplot state) and written as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import require
from .content import Plot, largest_first, report_plots

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..results import BlockSensitivity, SensitivityReport, Sweep

__all__ = ["MAX_TICKS", "draw", "png", "save_plots"]

#: Tick labels are drawn on heatmap axes of at most this many entries.
MAX_TICKS = 30


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


def _sweep_figure(sw: Sweep) -> Figure:
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
    if plot.kind == "sweep" and plot.sweep is not None:
        return _sweep_figure(plot.sweep)
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
