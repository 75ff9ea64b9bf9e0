"""Regenerate the example reports shown in docs/reports.md, and their plots.

For each example model (examples/portfolio.py, examples/dc_power_flow.py)
this builds a sensitivity report, writes its Markdown between the markers

    <!-- BEGIN GENERATED: name -->
    <!-- END GENERATED: name -->

of docs/reports.md (headings demoted to fit the page, timings removed so
that the output is reproducible), and saves the plots it embeds as
docs/img/<name>-<plot>.png. It also writes the HTML report of the DC
power-flow example and saves what headless Chromium shows of it as
docs/img/report-screenshot.png (left as it is, with a warning, when no
Chromium is installed).

Run from anywhere::

    python docs/make_report_docs.py           # rewrite docs/reports.md and docs/img/
    python docs/make_report_docs.py --check   # exit 1 if docs/reports.md is stale

Needs the ``report`` extra (pandas, matplotlib).
"""

from __future__ import annotations

import argparse
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffmodel.analysis import SensitivityReport

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reports.md"
IMG = ROOT / "docs" / "img"
SCREENSHOT = IMG / "report-screenshot.png"
#: The example whose HTML report is shown in the screenshot, and the browser window.
SCREENSHOT_EXAMPLE = "dc_power_flow"
WINDOW = (1200, 1500)


@dataclass(frozen=True)
class Example:
    """What to report for one example, and which plots to show."""

    name: str
    of: list[str]
    wrt: list[str]
    sweep: dict[str, np.ndarray]
    plots: list[str]  # file names written by SensitivityReport.save_plots
    top: int = 5


EXAMPLES = [
    Example(
        name="portfolio",
        of=["w", "budget"],
        wrt=["mu", "gamma", "cap"],
        sweep={"gamma": np.linspace(2.0, 8.0, 13)},
        plots=["tornado.png", "ranges.png", "heatmap-w-mu.png", "sweep-gamma.png"],
    ),
    Example(
        name="dc_power_flow",
        of=["p", "balance"],
        wrt=["c", "d", "fmax"],
        sweep={"d": np.linspace(0.8, 1.2, 9)},
        plots=["tornado.png", "ranges.png", "heatmap-p-d.png", "heatmap-balance-d.png",
               "sweep-d.png"],
    ),
]


def _report(example: Example) -> SensitivityReport:
    """The sensitivity report of one example, as shown on the page."""
    ns = runpy.run_path(str(ROOT / "examples" / f"{example.name}.py"), run_name="docs")
    model, labels = ns["model"], ns["labels"]
    model.solve()
    report: SensitivityReport = model.sensitivity(of=example.of, wrt=example.wrt,
                                                  labels=labels, top=example.top,
                                                  sweep=example.sweep)
    return report


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(report: SensitivityReport, target: Path) -> bool:
    """Write ``report`` as HTML and save the top of it, as headless Chromium shows
    it, as ``target`` (PNG). Returns False (and writes nothing) without Chromium."""
    chromium = _chromium()
    if chromium is None:
        return False
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as profile:
        page = report.to_html(Path(tmp) / "report.html")
        shot = Path(tmp) / "shot.png"
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update",
             "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0 or not shot.exists():
            raise SystemExit(f"{chromium} failed: {result.stderr[-2000:]}")
        shutil.copyfile(shot, target)
    return True


def _markdown(example: Example, img_dir: Path, shot: Path | None = None) -> str:
    """The generated section of one example: its report and plots (and, with
    ``shot``, a screenshot of its HTML report)."""
    report = _report(example)
    if shot is not None and not screenshot(report, shot):
        print(f"no Chromium found: {shot} left as it is", file=sys.stderr)
    text = report.to_markdown()
    # Demote headings below the page's "## Example" heading; drop the title.
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join(("#" + line) if line.startswith("#") else line for line in lines)
    # Timings change from run to run.
    text = re.sub(r",? ?\d+(\.\d+)? s\.", ".", text)
    with tempfile.TemporaryDirectory() as tmp:
        saved = {p.name: p for p in map(Path, report.save_plots(tmp))}
        missing = [p for p in example.plots if p not in saved]
        if missing:
            raise SystemExit(f"{example.name}: save_plots() wrote no {', '.join(missing)} "
                             f"(it wrote {', '.join(sorted(saved))})")
        images = []
        for plot in example.plots:
            target = img_dir / f"{example.name}-{plot}"
            shutil.copyfile(saved[plot], target)
            images.append(f"![{example.name}: {plot[:-4]}](img/{target.name})")
    return text.strip() + "\n\n### Plots\n\n" + "\n\n".join(images) + "\n"


def render(page: str, img_dir: Path, shot: Path | None = None) -> str:
    """``page`` with every generated section replaced by a fresh one (and, with
    ``shot``, the screenshot of the HTML report written there)."""
    for example in EXAMPLES:
        begin = f"<!-- BEGIN GENERATED: {example.name} -->"
        end = f"<!-- END GENERATED: {example.name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
        if not pattern.search(page):
            raise SystemExit(f"{PAGE}: no markers {begin} ... {end}")
        body = _markdown(example, img_dir, shot if example.name == SCREENSHOT_EXAMPLE else None)
        page = pattern.sub(lambda _: f"{begin}\n\n{body}\n{end}", page)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if docs/reports.md is out of date")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = render(page, Path(tmp))
        if fresh != page:
            print(f"{PAGE} is out of date: run python docs/make_report_docs.py",
                  file=sys.stderr)
            return 1
        print(f"{PAGE} is up to date")
        return 0
    IMG.mkdir(exist_ok=True)
    for example in EXAMPLES:  # plots no longer shown are removed
        for old in IMG.glob(f"{example.name}-*.png"):
            old.unlink()
    PAGE.write_text(render(page, IMG, SCREENSHOT), encoding="utf-8")
    print(f"wrote {PAGE}, {SCREENSHOT.name} and the plots in {IMG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
