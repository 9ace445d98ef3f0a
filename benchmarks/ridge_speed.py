"""The ridge's fit time (or another row's), today's code against an earlier commit, in the
same session.

    .venv/bin/python benchmarks/ridge_speed.py --before 689ceef [--datasets embedded,vic_elec]
        [--repeats 3] [--rows linear,linear_clock] [--tag T]

What `greentune run` computes for two rows of its table, timed on each data set:
- `linear`: the ridge on every training window (stride 1; also the network's skip-path start),
  forecasting the validation and test origins;
- `linear_clock`: a ridge per clock time of the origins it forecasts (the validation's eight
  times of day, the test's midnight), each fitted on the training windows that start then.
`--rows lightgbm` times the LightGBM row the same way (its tuning of designs on validation,
then its validation and test forecasts). Quantiles 0.1 / 0.5 / 0.9, as a default run forecasts
them. Each version runs in a subprocess of its own (the earlier commit from a git worktree
under benchmarks/results/runs/, removed at the end), the order alternating from one repeat to
the next; medians over the repeats, with the range. Both versions' forecasts are compared (the
largest absolute difference, in the target's unit): a faster solver must give the same
forecasts. Fit time is what the run meters for these rows; its modelled energy (a constant
power per thread on these machines) follows it.

Writes benchmarks/results/ridge-speed[-T].json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUANTILES = (0.1, 0.5, 0.9)
ROWS = ("linear", "linear_clock")


def measure(dataset: str, out: Path, rows: tuple[str, ...] = ROWS) -> None:
    """One version (the greentune on PYTHONPATH): each row's wall seconds and forecasts."""
    import greentune  # first: victoria.py puts today's src in front of the path

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from victoria import DATASETS

    from greentune.config import build_config
    from greentune.data.windows import prepare_forecast_data
    from greentune.evaluate.baselines import run_baseline

    data = prepare_forecast_data(build_config(overrides=DATASETS[dataset]).data)
    seconds: dict[str, float] = {}
    points: dict[str, np.ndarray] = {}
    for row in rows:
        t0 = time.perf_counter()
        for split, origins in (("val", data.val.origins), ("test", data.test.origins)):
            points[f"{row}-{split}"] = run_baseline(row, data, origins, QUANTILES).point
        seconds[row] = time.perf_counter() - t0
    np.savez(out.with_suffix(".npz"), **points)
    out.write_text(json.dumps({"src": str(Path(greentune.__file__).parents[1]), **seconds}))


def run_version(
    src: Path, dataset: str, out: Path, rows: tuple[str, ...] = ROWS
) -> dict[str, float]:
    from machine import run_in

    cmd = [sys.executable, __file__, "--measure", dataset, "--out", str(out)]
    return run_in(src, [*cmd, "--rows", ",".join(rows)], out)


def one_dataset(
    ds: str, versions: dict[str, Path], work: Path, repeats: int, rows: tuple[str, ...] = ROWS
) -> dict:
    """Each row's seconds per version and repeat (the order alternating), their median ratio
    and the largest difference between the versions' forecasts."""
    times: dict[str, dict[str, list[float]]] = {v: {r: [] for r in rows} for v in versions}
    for k in range(repeats):
        for v in list(versions) if k % 2 == 0 else list(versions)[::-1]:
            got = run_version(versions[v], ds, work / f"{ds}-{v}-{k}.json", rows)
            print(f"{ds} repeat {k} {v}: {got}", flush=True)
            for row in rows:
                times[v][row].append(got[row])
    with np.load(work / f"{ds}-before-0.npz") as b, np.load(work / f"{ds}-after-0.npz") as a:
        diffs = {
            row: max(float(np.max(np.abs(a[k] - b[k]))) for k in a if k.startswith(f"{row}-"))
            for row in rows
        }
    return {
        row: {
            "before_s": times["before"][row],
            "after_s": times["after"][row],
            "ratio": statistics.median(times["after"][row])
            / statistics.median(times["before"][row]),
            "max_abs_diff": diffs[row],
        }
        for row in rows
    }


def markdown(results: dict) -> str:
    lines = [
        "# A row's fit time: today's code against an earlier commit",
        "",
        f"Before: {results['before']}; after: {results['after']}. Machine: "
        f"{results['machine'].get('cpu', '?')}, {results['machine'].get('threads', '?')} "
        f"threads. Medians of {results['repeats']} repeats [range], wall seconds for the "
        "validation and test forecasts of each row.",
        "",
        "| data | row | before s | after s | after / before | largest forecast difference |",
        "|---|---|---|---|---|---|",
    ]
    for ds, rows in results["datasets"].items():
        for row, r in rows.items():
            b, a = r["before_s"], r["after_s"]
            lines.append(
                f"| {ds} | `{row}` | {statistics.median(b):.1f} [{min(b):.1f}-{max(b):.1f}] | "
                f"{statistics.median(a):.1f} [{min(a):.1f}-{max(a):.1f}] | "
                f"**{r['ratio']:.3f}** | {r['max_abs_diff']:.2e} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="the earlier commit to time against")
    ap.add_argument("--datasets", default="embedded,vic_elec")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="")
    ap.add_argument("--rows", default=",".join(ROWS), help="rows to time (linear_clock, lightgbm)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = tuple(args.rows.split(","))
    if args.measure:
        measure(args.measure, Path(args.out), rows)
        return
    if not args.before:
        ap.error("--before COMMIT is required")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import (
        drop_worktree,
        git_commit,
        machine_info,
        short_commit,
        worktree,
        write_results,
    )

    before = short_commit(args.before)
    versions = {"before": worktree(before, "ridge-speed"), "after": ROOT / "src"}
    work = RESULTS / "runs" / "ridge-speed"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "before": before,
        "after": git_commit(),
        "machine": machine_info(),
        "repeats": args.repeats,
        "datasets": {},
    }
    try:
        for ds in args.datasets.split(","):
            results["datasets"][ds] = one_dataset(ds, versions, work, args.repeats, rows)
    finally:
        drop_worktree(versions["before"])
    suffix = f"-{args.tag}" if args.tag else ""
    write_results(RESULTS / f"ridge-speed{suffix}", results, markdown(results))


if __name__ == "__main__":
    main()
