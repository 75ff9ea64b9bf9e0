"""The report's numbers as data: a long-format pandas DataFrame, or JSON.

pandas belongs to the ``report`` extra; JSON needs nothing more than the
standard library.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import require
from .._common import elasticity
from ..labels import entry_index
from ..significance import RULE
from .content import row_status

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from ..ranging import ParameterRange, RangeLimit
    from ..results import BlockSensitivity, Entry, Influence, SensitivityReport
    from ..whatif import Sweep

__all__ = ["COLUMNS", "TABLES", "report_dataframe", "report_json", "significance"]

#: The columns of :func:`report_dataframe` (the ``"derivatives"`` table).
COLUMNS = ["kind", "output", "output_index", "output_label", "parameter", "parameter_index",
           "parameter_label", "derivative", "elasticity", "threshold"]
#: The columns of each table of :func:`report_dataframe`.
TABLES = {
    "derivatives": COLUMNS,
    "constraints": ["constraint", "index", "label", "relation", "slack", "dual", "price",
                    "active", "degenerate", "status", "threshold"],
    "ranges": ["parameter", "index", "label", "value", "low", "high", "exact", "low_event",
               "low_constraint", "low_index", "low_label", "high_event", "high_constraint",
               "high_index", "high_label"],
}


def _objective_frame(pd: Any, report: SensitivityReport, p: str) -> pandas.DataFrame:
    obj = report.objective[p]
    size, shape = obj.gradient.size, obj.gradient.shape
    frame: pandas.DataFrame = pd.DataFrame({
        "kind": "objective", "output": "f*", "output_index": [()] * size,
        "output_label": "f*", "parameter": p,
        "parameter_index": [entry_index(j, shape) for j in range(size)],
        "parameter_label": list(report.labels[p]),
        "derivative": obj.gradient.ravel(order="F"),
        "elasticity": obj.elasticity.ravel(order="F"), "threshold": obj.threshold,
    }, columns=COLUMNS)
    return frame


def _block_frame(pd: Any, report: SensitivityReport, blk: BlockSensitivity
                 ) -> pandas.DataFrame:
    o, p, J = blk.output, blk.parameter, blk.jacobian
    frame: pandas.DataFrame
    if J is None:  # capped: the largest entries only
        frame = pd.DataFrame([_entry(en) | {"kind": blk.kind, "threshold": blk.threshold}
                              for en in blk.largest], columns=COLUMNS)
        return frame
    rows, cols = J.shape
    ii, jj = np.repeat(np.arange(rows), cols), np.tile(np.arange(cols), rows)
    d = J.ravel()
    y = report.output_values[o]
    t = report.objective[p].value.ravel(order="F")
    oidx = [entry_index(i, blk.output_shape) for i in range(rows)]
    pidx = [entry_index(j, blk.parameter_shape) for j in range(cols)]
    frame = pd.DataFrame({
        "kind": blk.kind, "output": o, "output_index": [oidx[i] for i in ii],
        "output_label": np.array(report.labels[o], dtype=object)[ii],
        "parameter": p, "parameter_index": [pidx[j] for j in jj],
        "parameter_label": np.array(report.labels[p], dtype=object)[jj], "derivative": d,
        "elasticity": elasticity(d, t[jj], y[ii], float(np.abs(y).max(initial=0.0))),
        "threshold": blk.threshold,
    }, columns=COLUMNS)
    return frame


def _derivatives(pd: Any, report: SensitivityReport) -> pandas.DataFrame:
    frames = [_objective_frame(pd, report, p) for p in report.objective]
    frames += [_block_frame(pd, report, blk) for blk in report.blocks.values()]
    frames = [f for f in frames if len(f)]
    out: pandas.DataFrame = (pd.concat(frames, ignore_index=True) if frames
                             else pd.DataFrame(columns=COLUMNS))
    return out


def _constraints(pd: Any, report: SensitivityReport) -> pandas.DataFrame:
    rows = []
    for c, sp in report.shadow_prices.items():
        shape, size = sp.dual.shape, sp.dual.size
        slack = (np.full(size, np.nan) if sp.slack is None else sp.slack.ravel(order="F"))
        active = np.ravel(report.active.get(c, np.ones(shape, dtype=bool)), order="F")
        degenerate = np.ravel(report.degenerate.get(c, np.zeros(shape, dtype=bool)),
                              order="F")
        status = row_status(report, c)
        for i, (label, d, p) in enumerate(zip(report.labels[c], sp.dual.ravel(order="F"),
                                              sp.price.ravel(order="F"))):
            rows.append([c, entry_index(i, shape), label, sp.relation, float(slack[i]),
                         float(d), float(p), bool(active[i]), bool(degenerate[i]), status[i],
                         sp.threshold])
    frame: pandas.DataFrame = pd.DataFrame(rows, columns=TABLES["constraints"])
    return frame


def _limit(limit: RangeLimit | None) -> list[Any]:
    if limit is None:
        return [None, None, None, None]
    return [limit.event, limit.constraint, limit.index, limit.label]


def _ranges(pd: Any, report: SensitivityReport) -> pandas.DataFrame:
    rows = []
    for p, rng in report.ranges_detail.items():
        shape = rng.value.shape
        flat = [a.ravel(order="F") for a in (rng.value, rng.low, rng.high, rng.exact)]
        for i, label in enumerate(rng.labels):
            rows.append([p, entry_index(i, shape), label, float(flat[0][i]), float(flat[1][i]),
                         float(flat[2][i]), bool(flat[3][i]), *_limit(rng.at_low[i]),
                         *_limit(rng.at_high[i])])
    frame: pandas.DataFrame = pd.DataFrame(rows, columns=TABLES["ranges"])
    return frame


def report_dataframe(report: SensitivityReport, table: str = "derivatives"
                     ) -> pandas.DataFrame:
    """The report's numbers as a DataFrame.

    Parameters
    ----------
    report : SensitivityReport
    table : {"derivatives", "constraints", "ranges"}, default "derivatives"
        ``"derivatives"``: long format, one row per derivative, objective
        rows first; stored blocks contribute every entry, capped blocks their
        largest; ``threshold`` is that of the row's group (numbers at or
        below it are 0). ``"constraints"``: one row per constraint row (slack
        NaN for an equality), with the threshold of the constraint's duals.
        ``"ranges"``: one row per entry of the reported parameters (the
        event, constraint, index and label of an infinite end are missing:
        None or NaN).

    Returns
    -------
    pandas.DataFrame
        Columns ``TABLES[table]``; ``attrs`` holds the solution's
        ``accuracy``, the report's ``resolution`` and the significance
        ``rule`` (:mod:`diffmodel.analysis.significance`).

    Raises
    ------
    ValueError
        For an unknown ``table``.
    ImportError
        If pandas is missing (``pip install "diffmodel[report]"``).
    """
    if table not in TABLES:
        raise ValueError(f"to_dataframe(): table must be one of "
                         f"{', '.join(repr(k) for k in TABLES)}, got {table!r}")
    pd = require("pandas", "SensitivityReport.to_dataframe()")
    build = {"derivatives": _derivatives, "constraints": _constraints, "ranges": _ranges}
    frame = build[table](pd, report)
    frame.attrs.update(significance(report))
    return frame


def significance(report: SensitivityReport) -> dict[str, Any]:
    """The significance rule of a report and its numbers (DataFrame attrs, JSON)."""
    return {"accuracy": report.accuracy, "resolution": report.resolution, "rule": RULE}


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
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _entry(en: Entry) -> dict[str, Any]:
    return {"output": en.output, "output_index": en.output_index,
            "output_label": en.output_label, "parameter": en.parameter,
            "parameter_index": en.parameter_index, "parameter_label": en.parameter_label,
            "derivative": en.derivative, "elasticity": en.elasticity}


def _influence(inf: Influence) -> dict[str, Any]:
    return {"parameter": inf.parameter, "index": list(inf.index), "label": inf.label,
            "score": inf.score}


def _sweep(s: Sweep) -> dict[str, Any]:
    return {"steps": s.steps, "step_kind": s.step_kind, "thetas": s.thetas,
            "value": s.value, "predicted_value": s.predicted_value,
            "value_error": s.value_error, "error": s.error,
            "primal": dict(s.primal), "predicted_primal": dict(s.predicted_primal),
            "dual": dict(s.dual), "predicted_dual": dict(s.predicted_dual),
            "failures": [list(f) for f in s.failures]}


_CONVENTIONS = {
    "vectorization": "column-major (Fortran order), as CVXPY",
    "jacobian": "rows follow the output, columns the parameter",
    "dual": "CVXPY's sign: Lagrangian f + nu^T (lhs - rhs)",
    "shadow_price": "d f*/d eps for lhs == rhs + eps, or lhs <= rhs + eps (-nu for Minimize, "
                    "+nu for Maximize)",
    "elasticity": "derivative * theta / output; null where the output is zero",
    "slack": "rhs - lhs >= 0 for an inequality lhs <= rhs (a >= b is stored as b <= a); "
             "0 on binding rows",
    "ranges": "per parameter entry, the others fixed: [low, high] over which the active set "
              "holds; null ends are unbounded (-inf, +inf); exact where the entry enters only "
              "q, b, h, first order otherwise",
    "threshold": "numbers at or below the threshold of their group (objective: per "
                 "parameter; shadow_prices: per constraint; blocks: per block) are within "
                 "the error the solution's accuracy allows and are written as 0; see "
                 "significance",
}


def _range(rng: ParameterRange) -> dict[str, Any]:
    def limit(lim: RangeLimit | None) -> dict[str, Any] | None:
        return None if lim is None else {"event": lim.event, "constraint": lim.constraint,
                                         "index": list(lim.index), "label": lim.label}

    return {"shape": list(rng.value.shape), "value": rng.value, "low": rng.low,
            "high": rng.high, "exact": rng.exact, "labels": list(rng.labels),
            "at_low": [limit(lim) for lim in rng.at_low],
            "at_high": [limit(lim) for lim in rng.at_high]}


def report_json(report: SensitivityReport) -> str:
    """The report as a JSON document.

    Parameters
    ----------
    report : SensitivityReport

    Returns
    -------
    str
        Arrays as nested lists (column-major conventions stated in the
        document), NaN and inf as null.
    """
    doc = {
        "value": report.value, "sense": report.sense, "outputs": list(report.outputs),
        "parameters": list(report.parameters), "mode": report.mode,
        "solves": report.solves, "seconds": report.seconds, "top_k": report.k,
        "conventions": _CONVENTIONS, "significance": significance(report),
        "objective": {
            p: {"shape": list(o.value.shape), "value": o.value, "gradient": o.gradient,
                "elasticity": o.elasticity, "threshold": o.threshold,
                "labels": list(report.labels[p])}
            for p, o in report.objective.items()},
        "shadow_prices": {
            c: {"lhs": s.lhs, "rhs": s.rhs, "relation": s.relation, "dual": s.dual,
                "price": s.price, "slack": s.slack, "status": list(row_status(report, c)),
                "active": report.active.get(c), "degenerate": report.degenerate.get(c),
                "threshold": s.threshold, "meaning": s.meaning,
                "labels": list(report.labels[c])}
            for c, s in report.shadow_prices.items()},
        "ranges": {p: _range(r) for p, r in report.ranges_detail.items()},
        "range_solves": report.range_solves,
        "blocks": [
            {"output": b.output, "parameter": b.parameter, "kind": b.kind,
             "output_shape": list(b.output_shape), "parameter_shape": list(b.parameter_shape),
             "norm": b.norm, "max_abs": b.max_abs, "threshold": b.threshold,
             "largest": [_entry(en) for en in b.largest], "jacobian": b.jacobian}
            for b in report.blocks.values()],
        "top": {
            "objective": [_influence(i) for i in report.top.objective],
            "overall": [_influence(i) for i in report.top.overall],
            "per_output": {o: [_influence(i) for i in items]
                           for o, items in report.top.per_output.items()}},
        "sweeps": {p: _sweep(s) for p, s in report.sweeps.items()},
        "notes": list(report.notes),
    }
    return json.dumps(_clean(doc), allow_nan=False, ensure_ascii=False)
