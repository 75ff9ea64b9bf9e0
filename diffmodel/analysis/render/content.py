"""The content of a report, built once for every format.

A report is a list of :class:`Section` objects: a title, paragraphs, tables
(:class:`Table`: headers, rows of formatted cells, a caption) and plots
(:class:`Plot`: what to draw, not a drawing), defined in :mod:`.tables`.
:mod:`.text`, :mod:`.markdown` and :mod:`.html` write these sections;
:mod:`.plots` draws the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .tables import (
    NOTES, Plot, Section, Table, floor_text, largest_first, nonzero_first, num,
    ranked_caption, slug, tol,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..ranging import ParameterRange, RangeLimit
    from ..results import BlockSensitivity, Influence, SensitivityReport, ShadowPrice
    from ..whatif import Sweep

__all__ = ["Table", "Plot", "Section", "num", "tol", "largest_first", "nonzero_first",
           "ranked_caption", "floor_text", "nonzero_count", "significance_text", "slug",
           "sections", "report_plots", "sweep_table", "range_table", "ranged_entries",
           "row_status", "limit_text", "has_inequalities", "NOTES"]


# ---------------------------------------------------------------- tables


def _objective_table(report: SensitivityReport) -> Table:
    items = []
    for p, obj in report.objective.items():
        labels = report.labels[p]
        for j, (t, g, e) in enumerate(zip(obj.value.ravel(order="F"),
                                          obj.gradient.ravel(order="F"),
                                          obj.elasticity.ravel(order="F"))):
            items.append((labels[j], float(t), float(g), float(e)))
    order, nonzero = nonzero_first(np.array([g for _, _, g, _ in items]), report.k)
    rows = [[items[i][0], num(items[i][1]), num(items[i][2]), num(items[i][3])]
            for i in order]
    caption = ranked_caption(len(items), nonzero, len(order), "parameter entries",
                             "|∂f*/∂θ|", "by position")
    return Table(["parameter entry", "θ", "∂f*/∂θ", "elasticity"], rows,
                 f"{caption}; elasticity = ∂f*/∂θ · θ / f*", (False, True, True, True))


def _objective_floors(report: SensitivityReport) -> str:
    """The thresholds of ∂f*/∂θ, in words: once if every parameter has the same."""
    thresholds = {p: obj.threshold for p, obj in report.objective.items()}
    if len({tol(t) for t in thresholds.values()}) == 1:
        return "Significance: " + floor_text("|∂f*/∂θ|", next(iter(thresholds.values()))) + "."
    return ("Significance: |∂f*/∂θ| at or below the threshold of its parameter counts as 0: "
            + ", ".join(f"{p} {tol(t)}" for p, t in thresholds.items()) + ".")


def row_status(report: SensitivityReport, c: str) -> list[str]:
    """The status of each row of constraint ``c`` (column-major): see
    :attr:`~diffmodel.analysis.ShadowPrice.status`."""
    sp = report.shadow_prices[c]
    return list(sp.status) if sp.status else ["equality"] * sp.dual.size


def _shadow_table(report: SensitivityReport, c: str, sp: ShadowPrice) -> Table:
    labels = report.labels[c]
    nu = sp.dual.ravel(order="F")
    price = sp.price.ravel(order="F")
    rest = None if sp.slack is None else sp.slack.ravel(order="F")
    order, nonzero = nonzero_first(price, report.k, rest)
    caption = f"{c}: {sp.lhs} {sp.relation} {sp.rhs}"
    if nonzero < nu.shape[0] or nu.shape[0] > report.k:
        caption += "; " + ranked_caption(nu.shape[0], nonzero, len(order), "entries",
                                         "|price|", "by position" if rest is None
                                         else "smallest slack first")
    caption += "; " + floor_text("|ν|", sp.threshold)
    if sp.slack is None:
        rows = [[labels[i], num(float(nu[i])), num(float(price[i]))] for i in order]
        return Table(["constraint entry", "dual ν", "∂f*/∂rhs (price)"], rows, caption,
                     (False, True, True))
    slack, status = sp.slack.ravel(order="F"), row_status(report, c)
    rows = [[labels[i], num(float(slack[i])), num(float(nu[i])), num(float(price[i])),
             status[i]] for i in order]
    return Table(["constraint entry", "slack", "dual ν", "∂f*/∂rhs (price)", "status"], rows,
                 caption, (False, True, True, True, False))


def _shadow_tables(report: SensitivityReport) -> tuple[list[str], list[Table]]:
    sense = "maximized" if report.sense == "maximize" else "minimized"
    sign = "+ν" if report.sense == "maximize" else "−ν"
    paragraphs = [
        f"The price of a constraint's row is the change of the optimal ({sense}) objective "
        f"per unit increase of its right-hand side: ∂f*/∂ε for lhs == rhs + ε (or lhs <= "
        f"rhs + ε), which equals {sign} (ν: CVXPY's dual, Lagrangian f + νᵀ(lhs − rhs)). "
        f"The sides are those CVXPY stores, shown above each table (a >= b is stored as "
        f"b <= a)."]
    if has_inequalities(report):
        paragraphs.append("Inequalities: slack = rhs − lhs ≥ 0; a row that does not bind "
                          "has a zero dual and a zero price.")
    tables = [_shadow_table(report, c, sp) for c, sp in report.shadow_prices.items()]
    return paragraphs, tables


def has_inequalities(report: SensitivityReport) -> bool:
    """Whether the model has an inequality constraint (or a bounded variable)."""
    return any(sp.relation == "<=" for sp in report.shadow_prices.values())


def _listing(labels: Sequence[str], k: int) -> str:
    shown = ", ".join(labels[:k])
    return shown + (f" (+{len(labels) - k} more)" if len(labels) > k else "") if labels \
        else "none"


def _active_table(report: SensitivityReport) -> Table:
    rows = []
    for c, sp in report.shadow_prices.items():
        if sp.relation != "<=":
            continue
        status = row_status(report, c)
        binding = [lab for lab, s in zip(report.labels[c], status) if s != "not binding"]
        degenerate = [lab for lab, s in zip(report.labels[c], status)
                      if s in ("weakly active", "dependent")]
        rows.append([c, f"{sp.lhs} <= {sp.rhs}", str(len(status)), str(len(binding)),
                     _listing(binding, report.k), _listing(degenerate, report.k)])
    return Table(["constraint", "as stored", "rows", "binding", "binding rows",
                  "degenerate rows"], rows, "inequality constraints and variable bounds",
                 (False, False, True, True, False, False))


def _active_section(report: SensitivityReport) -> Section:
    table = _active_table(report)
    total = sum(int(r[2]) for r in table.rows)
    binding = sum(int(r[3]) for r in table.rows)
    degenerate = sum(1 for c in report.degenerate for f in np.ravel(report.degenerate[c]) if f)
    text = (f"{binding} of {total} inequality rows bind (hold with equality). Every other "
            f"row has a zero dual; the solution stays a smooth function of the parameters "
            f"while the same rows bind (see the ranges below).")
    if degenerate:
        text += (f" {degenerate} binding rows are degenerate (a zero multiplier, or a "
                 f"linear dependence on other binding rows): there the solution is only "
                 f"directionally differentiable.")
    return Section("Active set", paragraphs=[text], tables=[table])


def limit_text(limit: RangeLimit | None) -> str:
    """What ends a range on one side ("none" for an infinite end)."""
    return "none" if limit is None else str(limit)


def range_table(rng: ParameterRange, k: int | None = None) -> Table:
    """The ranges of one parameter's entries: all of them, or the ``k`` nearest an
    end of their range (relative to |θ|)."""
    value = rng.value.ravel(order="F")
    low, high = rng.low.ravel(order="F"), rng.high.ravel(order="F")
    exact = rng.exact.ravel(order="F")
    size = value.shape[0]
    if k is None or size <= k:
        order: Sequence[int] = range(size)
        caption = f"{rng.parameter}: all {size} entries"
    else:
        domain_low = np.array([lim is not None and lim.event == "domain" for lim in rng.at_low])
        domain_high = np.array([lim is not None and lim.event == "domain"
                                for lim in rng.at_high])
        below = np.where(domain_low, np.inf, value - low)
        above = np.where(domain_high, np.inf, high - value)
        near = np.minimum(below, above) / np.where(value != 0, np.abs(value), 1.0)
        order = np.argsort(near, kind="stable")[:k].tolist()
        caption = (f"{rng.parameter}: the {k} of {size} entries nearest a change of the "
                   f"active set (relative to |θ|)")
    rows = [[rng.labels[i], num(float(value[i])), num(float(low[i])), num(float(high[i])),
             limit_text(rng.at_low[i]), limit_text(rng.at_high[i]),
             "exact" if exact[i] else "first order"] for i in order]
    return Table(["parameter entry", "θ", "low", "high", "at low", "at high", "range"],
                 rows, caption, (False, True, True, True, False, False, False))


def _ranges_section(report: SensitivityReport) -> Section:
    sec = Section("Ranges: how far each entry can move before the active set changes",
                  paragraphs=[
                      "For each parameter entry, the others fixed: the interval [low, high] "
                      "over which the same inequality rows bind, and the row that enters "
                      "(its slack reaches zero) or leaves (its multiplier reaches zero) at "
                      "each end; inf: nothing ends it on that side. From the derivatives of "
                      "the slacks and multipliers "
                      f"({report.range_solves} solves with the stored factorization)."])
    exact = [bool(r.exact.all()) for r in report.ranges_detail.values()]
    what = ("The solution is affine in an entry that enters only the linear term or the "
            "right-hand sides (q, b, h), or only rows that do not bind, while the active "
            "set holds: its range is exact.")
    if not all(exact):
        what += (" Entries of P or of binding rows of A and G (marked first order) move "
                 "the KKT matrix, so the solution is not affine in them: their range is "
                 "that of the first-order path, an estimate.")
    sec.paragraphs.append(what)
    for rng in report.ranges_detail.values():
        sec.tables.append(range_table(rng, report.k))
    if ranged_entries(report, report.k):
        sec.plots.append(Plot("ranges", "Ranges relative to the parameters' values", "ranges"))
    return sec


def ranged_entries(report: SensitivityReport, k: int
                   ) -> list[tuple[str, float, float, bool, tuple[bool, bool]]]:
    """The ``k`` entries of nonzero value nearest a change of the active set, as
    (label, (low − θ)/|θ|, (high − θ)/|θ|, exact, (low, high) at the domain),
    nearest first; entries whose range is unbounded on both sides are left out."""
    items = []
    for rng in report.ranges_detail.values():
        value = rng.value.ravel(order="F")
        low, high = rng.low.ravel(order="F"), rng.high.ravel(order="F")
        exact = rng.exact.ravel(order="F")
        for j, label in enumerate(rng.labels):
            if value[j] == 0 or not (np.isfinite(low[j]) or np.isfinite(high[j])):
                continue
            scale = abs(float(value[j]))
            lo, hi = (float(low[j]) - value[j]) / scale, (float(high[j]) - value[j]) / scale
            domain = tuple(lim is not None and lim.event == "domain"
                           for lim in (rng.at_low[j], rng.at_high[j]))
            changes = [d for d, at_domain, lim in ((-lo, domain[0], rng.at_low[j]),
                                                   (hi, domain[1], rng.at_high[j]))
                       if lim is not None and not at_domain]
            items.append((min(changes, default=np.inf), label, lo, hi, bool(exact[j]),
                          (bool(domain[0]), bool(domain[1]))))
    items.sort(key=lambda item: item[0])
    return [(label, lo, hi, ex, dom) for _, label, lo, hi, ex, dom in items[:k]]


def _block_summary(report: SensitivityReport) -> Table:
    rows = []
    for (o, p), blk in report.blocks.items():
        big = blk.largest[0] if blk.largest else None
        rows.append([f"∂{o}/∂{p}", blk.kind, f"{blk.shape[0]} × {blk.shape[1]}",
                     num(blk.norm), num(blk.max_abs),
                     f"{big.output_label} w.r.t. {big.parameter_label}" if big else "none",
                     tol(blk.threshold), "yes" if blk.jacobian is not None else "no (capped)"])
    return Table(["block", "output", "shape", "norm (Frobenius)", "max |entry|",
                  "largest entry", "threshold", "stored"], rows,
                 "one row per (output, parameter) block of dz/dθ; entries at or below the "
                 "block's threshold count as 0",
                 (False, False, False, True, True, False, True, False))


def nonzero_count(blk: BlockSensitivity) -> int | None:
    """How many entries of a block are nonzero (None for a capped block)."""
    return None if blk.jacobian is None else int(np.count_nonzero(blk.jacobian))


def _block_table(blk: BlockSensitivity, k: int) -> Table:
    rows = [[f"{e.output_label} w.r.t. {e.parameter_label}", num(e.derivative),
             num(e.elasticity)] for e in blk.largest]
    total, nonzero = blk.shape[0] * blk.shape[1], nonzero_count(blk)
    name = f"∂{blk.output}/∂{blk.parameter}"
    if nonzero is None:
        caption = f"{name}: the {len(rows)} largest nonzero of {total} entries"
    else:
        caption = f"{name}: " + ranked_caption(total, nonzero, len(rows), "entries",
                                               "|derivative|")
    return Table(["entry", "derivative", "elasticity"], rows,
                 f"{caption}; {floor_text('|derivative|', blk.threshold)}; "
                 f"elasticity = derivative · θ / output", (False, True, True))


def _ranking_table(items: Sequence[Influence], caption: str, score: str) -> Table:
    rows = [[str(i + 1), inf.label, num(inf.score)] for i, inf in enumerate(items)]
    if not items:
        caption += " (no entry: every number is 0)"
    return Table(["rank", "parameter entry", score], rows, caption, (True, False, True))


def _ranking_tables(report: SensitivityReport) -> list[Table]:
    tables = [_ranking_table(report.top.objective, "objective: by |∂f*/∂θ|", "|∂f*/∂θ|")]
    if report.top.overall:
        tables.append(_ranking_table(
            report.top.overall, "all reported outputs: by the norm of the column ∂z/∂θⱼ",
            "column norm"))
    for o, items in report.top.per_output.items():
        tables.append(_ranking_table(items, f"{o}: by the norm of ∂{o}/∂θⱼ", "column norm"))
    return tables


def sweep_table(sw: Sweep) -> Table:
    """The steps of a sweep: re-solved and predicted values, and their errors."""
    head = {"multiplier": "multiplier t", "value": sw.parameter, "index": "step"}[sw.step_kind]
    rows = [[num(float(s)), num(float(v)), num(float(pv)), num(float(ve)), num(float(e))]
            for s, v, pv, ve, e in zip(sw.steps, sw.value, sw.predicted_value,
                                       sw.value_error, sw.error)]
    return Table([head, "f* (re-solved)", "f* (first order)", "|value error|",
                  "max |solution error|"], rows,
                 f"sweep of {sw.parameter}: first-order prediction against re-solves",
                 (True, True, True, True, True))


# ---------------------------------------------------------------- sections


def significance_text(report: SensitivityReport) -> str:
    """The significance rule of a report, with its numbers."""
    return (f"Significance: the solution's accuracy estimate is {tol(report.accuracy)}, "
            f"so the numbers below are known to a relative {tol(report.resolution)} (the "
            f"resolution, max(10 × accuracy, 1e-11)) of the scale of their group in the "
            f"solver's equilibrated units: a constraint's duals, one parameter's ∂f*/∂θ, "
            f"one block ∂output/∂parameter. A number at or below its group's threshold "
            f"(stated with each table) is within that error: it counts as 0, is shown as "
            f"0 and is never ranked.")


def _head(report: SensitivityReport) -> Section:
    sense = "maximized" if report.sense == "maximize" else "minimized"
    blocks = (f"Blocks by {report.mode} passes ({report.solves} solves with the stored "
              f"factorization)" if report.mode != "none" else "No Jacobian blocks")
    return Section("Sensitivity report", level=1, paragraphs=[
        f"Optimal value f* = {num(report.value)} ({sense}). Outputs: "
        f"{', '.join(report.outputs) or 'none'}; parameters: "
        f"{', '.join(report.parameters) or 'none'}. {blocks}, {report.seconds:.2f} s.",
        significance_text(report)])


def _objective_section(report: SensitivityReport) -> Section:
    sec = Section("Objective sensitivity ∂f*/∂θ", paragraphs=[
        "From the Lagrangian at the optimum (envelope theorem); no solve."])
    if not report.objective:
        sec.paragraphs.append("No parameters reported.")
    else:
        sec.paragraphs.append(_objective_floors(report))
        sec.tables.append(_objective_table(report))
        sec.plots.append(Plot("tornado", "Objective sensitivity", "tornado"))
    return sec


def _block_sections(report: SensitivityReport) -> list[Section]:
    summary = Section("Solution sensitivities dz/dθ", paragraphs=[
        "Rows follow the output, columns the parameter, both in column-major order; "
        "a constraint's output is its dual ν (CVXPY's sign)."], tables=[_block_summary(report)])
    out = [summary]
    for (o, p), blk in report.blocks.items():
        nonzero = nonzero_count(blk)
        count = ("" if nonzero is None else
                 f", {nonzero} nonzero {'entry' if nonzero == 1 else 'entries'}")
        sub = Section(f"∂{o}/∂{p}", level=3, paragraphs=[
            f"norm {num(blk.norm)}, max |entry| {num(blk.max_abs)}, "
            f"shape {blk.shape[0]} × {blk.shape[1]}{count}, threshold {tol(blk.threshold)}"],
            tables=[_block_table(blk, report.k)])
        if blk.jacobian is not None:
            sub.plots.append(Plot(f"heatmap-{slug(o)}-{slug(p)}", f"∂{o}/∂{p}", "heatmap",
                                  block=blk))
        out.append(sub)
    return out


def _sweep_section(report: SensitivityReport) -> Section:
    sec = Section("Sweeps: first-order prediction against re-solves")
    for p, sw in report.sweeps.items():
        sec.tables.append(sweep_table(sw))
        sec.plots.append(Plot(f"sweep-{slug(p)}", f"sweep of {p}", "sweep", sweep=sw))
    return sec


def sections(report: SensitivityReport) -> list[Section]:
    """The report's content, in order: title and summary, objective sensitivity,
    active set, shadow prices, ranges, blocks, rankings, sweeps and notes (empty
    parts left out; the active set and the ranges only for a model with
    inequalities)."""
    out = [_head(report), _objective_section(report)]
    inequalities = has_inequalities(report)
    if inequalities:
        out.append(_active_section(report))
    if report.shadow_prices:
        paragraphs, tables = _shadow_tables(report)
        out.append(Section("Shadow prices", paragraphs=paragraphs, tables=tables))
    if inequalities and report.ranges_detail:
        out.append(_ranges_section(report))
    if report.blocks:
        out.extend(_block_sections(report))
    if report.parameters:
        out.append(Section("Most influential parameter entries", paragraphs=[
            "An entry whose numbers are all 0 (at or below their thresholds) moves nothing "
            "that the solution resolves: it is not ranked."], tables=_ranking_tables(report)))
    if report.sweeps:
        out.append(_sweep_section(report))
    if report.notes:
        out.append(Section(NOTES, paragraphs=list(report.notes)))
    return out


def report_plots(report: SensitivityReport) -> list[Plot]:
    """Every plot of the report, in the order of the sections."""
    return [plot for sec in sections(report) for plot in sec.plots]
