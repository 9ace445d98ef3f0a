"""One day-ahead forecast of a served ensemble of runs, today's code against an earlier commit,
in the same session.

    .venv/bin/python benchmarks/served_ensemble_speed.py --before 93cafcd
        [--ensembles seedens-vic_elec-012,seedens-vic_elec-345] [--repeats 3] [--tag T]

What `greentune serve ENS --row recommended` computes per request, for the deep ensembles of
``benchmarks/seed_ensembles.py`` (three Victoria runs' networks and the first run's `linear`,
`lightgbm` and `linear_clock`; made by it, reused here): the request is the data file's last
21 days and a day ahead (``rows._one_day``). Each version runs in a subprocess of its own (the
earlier commit from a git worktree under benchmarks/results/runs/, removed at the end), the
order alternating from one repeat to the next. In each, after a warm-up, the median wall and
process CPU seconds of 7 forecasts; reported: the median over the repeats, with the range, and
the largest difference between the versions' forecasts (the target's unit). Modelled energy per
1,000 forecasts = CPU seconds x greentune's CPU power per thread here (no counters on these
machines). The earlier commit must read the ensembles' runs: ones made by a later version,
whose config.yaml holds keys it does not know, are refused by it.

Writes benchmarks/results/served-ensemble-speed[-T].json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs"
ENSEMBLES = ("seedens-vic_elec-012", "seedens-vic_elec-345")
INNER = 7


def measure(name: str, out: Path) -> None:
    """One version (the greentune on PYTHONPATH): one forecast's median costs and the forecast."""
    import greentune as gt  # first: rows.py puts today's src in front of the path

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rows import _cost, _one_day

    from greentune.rundir import RunDir

    ens = RunDir(RUNS / name)
    kept = json.loads((ens.path / "ensemble.json").read_text())
    member = Path(kept["members"][0]["run_absolute"])
    cfg = RunDir(member).config
    predictor = gt.Predictor.from_run(ens.path, row="recommended")
    frame = _one_day(Path(str(cfg.data.path)), cfg, int(cfg.data.horizon), predictor)
    _cost(predictor, frame)  # warm-up
    costs = [_cost(predictor, frame) for _ in range(INNER)]
    forecast = predictor.predict(frame)[f"{cfg.data.target}_forecast"].to_numpy()
    np.save(out.with_suffix(".npy"), forecast)
    out.write_text(
        json.dumps(
            {
                "src": str(Path(gt.__file__).parents[1]),
                "row": predictor.info["row"],
                "wall_s": statistics.median(c[0] for c in costs),
                "cpu_s": statistics.median(c[1] for c in costs),
            }
        )
    )


def run_version(src: Path, name: str, out: Path) -> dict:
    from machine import run_in

    return run_in(src, [sys.executable, __file__, "--measure", name, "--out", str(out)], out)


def one_ensemble(name: str, versions: dict[str, Path], work: Path, repeats: int) -> dict:
    got: dict[str, list[dict]] = {v: [] for v in versions}
    for k in range(repeats):
        for v in list(versions) if k % 2 == 0 else list(versions)[::-1]:
            one = run_version(versions[v], name, work / f"{name}-{v}-{k}.json")
            print(f"{name} repeat {k} {v}: {one}", flush=True)
            got[v].append(one)
    out: dict = {"row": got["after"][0]["row"]}
    for v, runs in got.items():
        for key in ("wall_s", "cpu_s"):
            values = [r[key] for r in runs]
            out[f"{v}_{key}"] = statistics.median(values)
            out[f"{v}_{key}_range"] = [min(values), max(values)]
    out["cpu_ratio"] = out["after_cpu_s"] / out["before_cpu_s"]
    out["wall_ratio"] = out["after_wall_s"] / out["before_wall_s"]
    before = np.load(work / f"{name}-before-0.npy")
    after = np.load(work / f"{name}-after-0.npy")
    out["max_abs_diff"] = float(np.max(np.abs(before - after)))
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    w = results["w_per_thread"]
    lines = [
        "# One forecast of a served ensemble of runs, before and after",
        "",
        f"Before: {results['before']}; after: {results['after']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores. `Predictor.from_run(ENS, row='recommended').predict(frame)` on the "
        "file's last 21 days and a day ahead; per version and repeat a subprocess (order "
        f"alternating), the median of {INNER} forecasts after a warm-up; medians over "
        f"{results['repeats']} repeats [range]. Energy modelled: CPU s x {w} W per thread.",
        "",
        "| ensemble | row | before CPU s | after CPU s | after / before | wall after / before | "
        "Wh per 1k forecasts before / after (model) | largest forecast difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["ensembles"].items():
        b, a = r["before_cpu_s"], r["after_cpu_s"]
        lines.append(
            f"| {name} | {r['row']} | {b:.3f} [{r['before_cpu_s_range'][0]:.3f}–"
            f"{r['before_cpu_s_range'][1]:.3f}] | {a:.3f} [{r['after_cpu_s_range'][0]:.3f}–"
            f"{r['after_cpu_s_range'][1]:.3f}] | **{r['cpu_ratio']:.3f}x** | "
            f"{r['wall_ratio']:.3f}x | {1000 * b * w / 3600:.3f} / {1000 * a * w / 3600:.3f} | "
            f"{r['max_abs_diff']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="the earlier commit to time against")
    ap.add_argument("--ensembles", default=",".join(ENSEMBLES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args.measure, Path(args.out))
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
    from rows import W_PER_THREAD

    for name in args.ensembles.split(","):
        if not (RUNS / name / "ensemble.json").is_file():
            raise SystemExit(f"{RUNS / name}: make it first: benchmarks/seed_ensembles.py")
    before = short_commit(args.before)
    versions = {"before": worktree(before, "served-ensemble-speed"), "after": ROOT / "src"}
    work = RUNS / "served-ensemble-speed"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "before": before,
        "after": git_commit(),
        "machine": machine_info(),
        "repeats": args.repeats,
        "inner": INNER,
        "w_per_thread": W_PER_THREAD,
        "ensembles": {},
    }
    try:
        for name in args.ensembles.split(","):
            results["ensembles"][name] = one_ensemble(name, versions, work, args.repeats)
    finally:
        drop_worktree(versions["before"])
    suffix = f"-{args.tag}" if args.tag else ""
    write_results(RESULTS / f"served-ensemble-speed{suffix}", results, markdown(results))


if __name__ == "__main__":
    main()
