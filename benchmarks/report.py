"""The HTML report opened in a real browser: file size, write time and load time on the
default run, a compressed variant of it and an ETTh1 run (issue target: under 5 MB and 2 s).

There is no peer to compare the page with (MLflow's and TensorBoard's UIs are servers, not
files); the figures stand against the target. Each report is written ``--repeats`` times
(median write time) and opened ``--repeats`` times in headless Chromium, offline, each in a
fresh page (median and worst load time: navigation start to the load event, every figure
decoded). The runs are built first when missing, under benchmarks/results/runs/.

    python benchmarks/report.py [--repeats 5] [--skip-ett]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.config import load_config
from greentune.report import write_report
from greentune.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "runs"
ETT = ROOT.parent / "shared" / "data" / "benchmarks" / "ETT" / "ETTh1.csv"
DRAWN = "els => els.map(e => e.naturalWidth > 0 && e.getBoundingClientRect().height > 0)"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _finished(path: Path) -> bool:
    return (path / "metrics.json").is_file() and RunDir(path).info.status == "complete"


def build_runs(skip_ett: bool) -> dict[str, Path]:
    """The default run, its int8 variant and (unless skipped) ETTh1 at horizon 96."""
    WORK.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    demo = WORK / "report-demo"
    if not _finished(demo):
        shutil.rmtree(demo, ignore_errors=True)
        cfg = load_config(None, ["name=report-demo", f"output_dir={WORK}"])
        gt.run(cfg, echo=lambda m: print(f"  [demo] {m}", flush=True))
    variant = WORK / "report-demo-int8-dynamic"
    if not _finished(variant):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "greentune",
                "compress",
                str(demo),
                "-m",
                "int8-dynamic",
                "--replace",
            ],
            check=True,
        )
    runs["default run, Victoria 2014 (with its compressed variants)"] = demo
    runs["its compressed variant (int8-dynamic)"] = variant
    if not skip_ett and ETT.is_file():
        ett = WORK / "report-ett-h96"
        if not _finished(ett):
            shutil.rmtree(ett, ignore_errors=True)
            cfg = load_config(
                ROOT / "configs" / "forecast" / "ett_h1.yaml",
                [
                    f"data.path={ETT}",
                    "train.epochs=1",
                    "eval.baselines=[linear]",
                    "name=report-ett-h96",
                    f"output_dir={WORK}",
                ],
            )
            gt.run(cfg, echo=lambda m: print(f"  [ett] {m}", flush=True))
        runs["ETTh1 h96 (7 channels)"] = ett
    return runs


def load_times(page_path: Path, repeats: int) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium (scripts/setup.sh --tests)")
    times, errors, figures = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
                page = context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                t0 = time.perf_counter()
                page.goto(page_path.as_uri(), wait_until="load")
                page.evaluate("Promise.all([...document.images].map(i => i.decode()))")
                times.append(time.perf_counter() - t0)
                figures = page.eval_on_selector_all(
                    "img",
                    DRAWN,
                )
                context.close()
        finally:
            browser.close()
    return {
        "load_s_median": statistics.median(times),
        "load_s_max": max(times),
        "load_s": times,
        "figures": len(figures),
        "figures_drawn": sum(bool(f) for f in figures),
        "console_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-ett", action="store_true")
    args = parser.parse_args()
    quiet_libraries()
    runs = build_runs(args.skip_ett)
    rows = []
    for label, path in runs.items():
        out = path / "report.html"
        writes = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write_report([path], out)
            writes.append(time.perf_counter() - t0)
        row = {
            "report": label,
            "run": path.name,
            "size_mb": out.stat().st_size / 1e6,
            "write_s_median": statistics.median(writes),
            **load_times(out, args.repeats),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "load_s"}), flush=True)
    result = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "target": {"size_mb": 5, "load_s": 2},
        "rows": rows,
    }
    (RESULTS / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# The HTML report in headless Chromium (offline)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"medians of {args.repeats} writes and {args.repeats} loads, each in a fresh page. "
        "Target: under 5 MB and 2 s.",
        "",
        "| report | size MB | write s | load s (median / worst) | figures drawn | console errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['report']} | {r['size_mb']:.2f} | {r['write_s_median']:.2f} | "
            f"{r['load_s_median']:.2f} / {r['load_s_max']:.2f} | "
            f"{r['figures_drawn']} of {r['figures']} | {len(r['console_errors'])} |"
        )
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
