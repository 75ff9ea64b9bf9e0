"""Scaling plot from benchmarks/results.json: time vs n, log–log, per tool.

    python benchmarks/plot.py [results.json] [out.png]

Uses the banded family (m = n/2, q and b parameters) and plots re-solve +
backward and the first solve; needs matplotlib (``pip install "diffmodel[bench]"``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else HERE / "results.json"
    out = Path(argv[1]) if len(argv) > 1 else HERE.parent / "docs" / "img" / "scaling.png"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = json.loads(source.read_text())
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for fam in data["families"]:
        if not re.match(r"(dense|banded) n=", fam["family"]):
            continue
        for row in fam["rows"]:
            if row.get("status") != "ok":
                continue
            for phase in ("resolve_backward", "first"):
                series.setdefault(phase, {}).setdefault(row["tool"], []).append(
                    (fam["n"], row[phase]))
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    titles = {"resolve_backward": "re-solve + backward", "first": "first solve (compile included)"}
    for k, phase in enumerate(("resolve_backward", "first")):
        ax = fig.add_subplot(1, 2, k + 1)
        for tool, points in sorted(series.get(phase, {}).items()):
            points.sort()
            xs, ys = zip(*points)
            style = "-" if tool.startswith("diffmodel") else ":" if tool.startswith("limit") else "--"
            ax.loglog(xs, ys, style, marker="o", label=tool)
        ax.set_xlabel("n (variables; m = n/2)")
        ax.set_ylabel("seconds (median)")
        ax.set_title(titles[phase])
        ax.grid(True, which="both", alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle(f"Equality QPs, dense (n ≤ 50) and banded (n ≥ 1000): {data['machine']}",
                 fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
