"""Private forecasting from a public start (``model.skip_init: transfer``), on the privacy
issue's data and split (Victoria), or on a PJM utility, beside the non-private run.

    .venv/bin/python benchmarks/dp_public.py [--series vic_elec|pjm-UTILITY] [--seeds 0,1,2]
        [--epsilons 8,3,1]

Protocol: ``benchmarks/privacy.py``'s vic_elec arm (Victoria 2012-14, half-hourly, day-ahead;
test = the last 92 days, Oct-Dec 2014, validation the 92 before; 6 epochs; batches of 32 x 8,
what privacy.py's tuning chose on validation for both arms; the seasonal naives as baselines).
The public data is 2012 (AEMO publishes Victoria's demand; here the year is declared public and
the private run sees only 2013-14).

The public start: ``greentune run`` on 2012 alone fits it (the network is not trained: only its
ridge skip path is used), scaled by the same public ranges as the private runs (0-12,000 MW,
-10-50 C). Such a run keeps a validation tail (its ridge's penalty and design are chosen there)
and a test tail it needs but nobody reads, and neither is fitted on: the more it keeps back, the
less of the public year the start learns from. Candidates (validation / test tail): 56D / 7D,
28D / 1D, 14D / 1D. The script keeps the one whose start forecasts the private run's validation
windows best (the median's MSE in scaled units; the private run also stops early on them; DP
does not cover validation data, docs/privacy.md). No test number takes part.

Learning rate: per arm, on validation (seed 0, the best validation loss), from one grid for every
arm: 3e-5, 1e-4, 3e-4 (privacy.py chose 3e-4 from {3e-4, 3e-3} for both arms from the seasonal
start; a run that starts close to its best may want smaller steps, so the grid reaches down),
grown by half a decade past its edge while the best sits there (at most twice; every arm alike).

``--series pjm-AEP`` (any of the nine): the utility's last three years (hourly load, no weather,
``federated.prepare``), the first declared public and the two after it private; test the last
92 days, validation the 92 before; the scaler's public range 1.25x the peak of the years before;
everything else as above.

Arms, each seed:
- non-private: all the years (Victoria 2012-14), no privacy (the issue's non-private row);
- dp-public: DP-SGD at the first of ``--epsilons`` on the private years from the public start;
- dp: the same from the seasonal start (greentune's private default), for the start's share;
- dp-public at each other epsilon (the learning rate chosen at the first, as privacy.py uses
  its epsilon-8 choice at every epsilon).
Test windows are the same rows in every arm. Energy is modelled where the VM has no RAPL.

Writes benchmarks/results/dp-public.json and .md (``dp-public-pjm-UTILITY.*`` for a PJM
series); runs under results/runs/privacy/ (a finished run of the same settings is reused).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from federated import RANGES, _mid, prepare
from federated_public import runs_of
from machine import git_commit, machine_info
from privacy import NAIVES, RESULTS, RUNS, VIC_ELEC, _row, run
from victoria import VIC_ELEC as VIC_ELEC_CSV

from greentune.cli import quiet_libraries

PUBLIC_BEFORE = "2013-01-01"
"""Local dates before this are the public year."""
SETTINGS = ["train.batch_size=32", "train.grad_accum=8"]
"""privacy.py's choice on validation for vic_elec, both arms alike (privacy-vic-elec.json)."""
LRS = (3e-5, 1e-4, 3e-4)
"""One learning-rate grid for every arm, chosen per arm on validation."""
PUBLIC_SPLITS = (("56D", "7D"), ("28D", "1D"), ("14D", "1D"))
"""(validation, test) tails the public run may keep back; chosen on the private validation."""


def split_files() -> tuple[Path, Path]:
    """(the public year, the private years) as two CSVs of vic_elec's own format."""
    public, private = RUNS / "data" / "vic-elec-2012.csv", RUNS / "data" / "vic-elec-2013-14.csv"
    if public.is_file() and private.is_file():
        return public, private
    public.parent.mkdir(parents=True, exist_ok=True)
    raw = pd.read_csv(VIC_ELEC_CSV)
    local = pd.to_datetime(raw["Time"], utc=True).dt.tz_convert("Australia/Melbourne")
    before = (local < pd.Timestamp(PUBLIC_BEFORE, tz="Australia/Melbourne")).to_numpy()
    raw[before].to_csv(public, index=False)
    raw[~before].to_csv(private, index=False)
    return public, private


def with_path(path: Path) -> list[str]:
    return [a if not a.startswith("data.path=") else f"data.path={path}" for a in VIC_ELEC]


@dataclass(frozen=True)
class Series:
    """One series the protocol runs on: how greentune reads its years, and their names."""

    name: str
    prefix: str
    """Of its run directories (none for vic_elec, whose runs came first)."""
    public_args: list[str]
    private_args: list[str]
    all_args: list[str]
    public: str
    private: str
    test: str
    start_name: str
    """The public start's run directory (with ``-valND`` for the shorter tails)."""


def vic_elec() -> Series:
    public_csv, private_csv = split_files()
    return Series(
        name="vic_elec",
        prefix="",
        public_args=with_path(public_csv),
        private_args=with_path(private_csv),
        all_args=VIC_ELEC,
        public="2012",
        private="2013-14",
        test="Oct-Dec 2014 (92 days)",
        start_name="public-start-2012",
    )


def pjm_utility(utility: str) -> Series:
    """One PJM utility's last three years (hourly load, no weather; ``federated.prepare``):
    the first declared public, the other two private; its public range for the scaler is
    1.25x the peak of the years before (``federated.prepare``)."""
    folder = prepare(3 * 365)
    frame = pd.read_csv(folder / f"{utility}.csv", parse_dates=["time"])
    hi = json.loads((folder / RANGES).read_text())[utility][1]
    cut = frame["time"].min() + pd.Timedelta(days=365)
    paths = [RUNS / "data" / f"pjm-{utility}-{part}.csv" for part in ("public", "private")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    frame[frame["time"] < cut].to_csv(paths[0], index=False)
    frame[frame["time"] >= cut].to_csv(paths[1], index=False)

    def args(path: Path) -> list[str]:
        return [
            "data.source=csv",
            f"data.path={path}",
            "data.time_col=time",
            "data.target=load_mw",
            "data.country=US",
            "data.fill_gaps=true",
            "data.test=92D",
            "data.val=92D",
            "train.epochs=6",
            "energy.carbon=static:US",
            f"data.bounds.load_mw=[0,{hi:g}]",
        ]

    years = f"{frame['time'].min():%Y-%m-%d} to {frame['time'].max():%Y-%m-%d}"
    end = frame["time"].max()
    return Series(
        name=f"pjm-{utility}",
        prefix=f"pjm-{utility}-",
        public_args=args(paths[0]),
        private_args=args(paths[1]),
        all_args=args(folder / f"{utility}.csv"),
        public=f"the first year of {years} (to {cut:%Y-%m-%d})",
        private="the two years after it",
        test=f"the last 92 days, to {end:%Y-%m-%d}",
        start_name=f"pjm-{utility}-public-start",
    )


def public_start(series: Series, val: str, test: str) -> tuple[Path, dict[str, Any]]:
    """One candidate public start: its run directory and what it cost."""
    source = RUNS / (series.start_name if val == "56D" else f"{series.start_name}-val{val}")
    metrics = run(
        source.name,
        [
            *series.public_args,
            f"data.val={val}",
            f"data.test={test}",
            "data.scaler=bounds",
            "train.max_steps=1",
            "eval.baselines=[]",
            "eval.ensembles=[]",
            "eval.report=false",
            "seed=0",
        ],
    )
    skip = next(
        (
            line.strip()
            for line in (source / "log.txt").read_text().splitlines()
            if line.startswith("skip path: ridge")
        ),
        "",
    )
    return source, {"energy_wh": (metrics.get("energy") or {}).get("run_wh"), "skip": skip}


def start_val_mse(private: list[str], sources: list[Path]) -> list[float]:
    """Each source's start on the private run's validation windows: the MSE of its median
    forecast in scaled units (the windows the private run stops early on)."""
    from greentune.config import build_config
    from greentune.data.windows import prepare_forecast_data
    from greentune.evaluate.ridge import complete_origins, design_matrix
    from greentune.privacy.dp import private_config
    from greentune.tasks import TASKS
    from greentune.tasks.forecast.transfer import transferred

    def cfg(source: Path) -> Any:
        """The config the private run trains with (its scaler resolved as under DP)."""
        given = build_config(
            overrides=[*private, "model.skip_init=transfer", f"model.skip_from={source}"]
        )
        task = TASKS.get(given.task)
        return private_config(task, task.resolve_config(given))

    data = prepare_forecast_data(cfg(sources[0]).data)
    x, y = design_matrix(data, complete_origins(data, data.val.origins))
    out = []
    for source in sources:
        fit, _ = transferred(cfg(source), data, lambda _: None)
        out.append(float(np.mean((fit.predict_scaled(x) - y) ** 2)))
    return out


def _half_decade(lr: float, down: bool) -> float:
    """The next rate on the 1-3-10 ladder below (or above) ``lr``."""
    ladder = [m * 10.0**e for e in range(-8, 1) for m in (1, 3)]
    i = min(range(len(ladder)), key=lambda k: abs(math.log(ladder[k] / lr)))
    return float(f"{ladder[i - 1 if down else i + 1]:.0e}")


def tune(arms: dict[str, list[str]], prefix: str) -> dict[str, Any]:
    """Per arm, the learning rate with the lowest validation loss (seed 0), from ``LRS``; while
    the best sits at the grid's edge the grid grows past it by half a decade (at most twice),
    the same rule for every arm."""
    chosen: dict[str, Any] = {}
    for arm, args in arms.items():
        grid: list[dict[str, float]] = []
        lrs = list(LRS)
        while lrs:
            for lr in lrs:
                name = f"{prefix}public-tune-{arm}-lr{lr:g}"
                m = run(name, [*args, f"train.lr={lr}", "seed=0"])
                grid.append({"lr": lr, "val_loss": m["training"]["best_val_loss"]})
            grid.sort(key=lambda r: r["lr"])
            best = min(grid, key=lambda r: r["val_loss"])
            edge = best is grid[0] or best is grid[-1]
            beyond = _half_decade(best["lr"], down=best is grid[0])
            lrs = [beyond] if edge and len(grid) < len(LRS) + 2 else []
        chosen[arm] = {"grid": grid, "lr": best["lr"]}
        print(f"{arm}: chose lr {best['lr']:g} on validation", flush=True)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--series",
        default="vic_elec",
        help="vic_elec (2012 public, 2013-14 private) or pjm-UTILITY (e.g. pjm-AEP: the "
        "first of its last three years public)",
    )
    parser.add_argument(
        "--epsilons",
        default="8,3,1",
        help="the first is the arms' (tuned there, as privacy.py tunes at 8); the others add "
        "the public start at each, with the first's learning rate",
    )
    a = parser.parse_args()
    quiet_libraries()
    series = vic_elec() if a.series == "vic_elec" else pjm_utility(a.series.removeprefix("pjm-"))
    epsilons = [float(e) for e in a.epsilons.split(",")]

    def private_at(eps: float) -> list[str]:
        return [*series.private_args, *SETTINGS, NAIVES, f"privacy.dp.target_epsilon={eps:g}"]

    private = private_at(epsilons[0])
    candidates = [public_start(series, val, test) for val, test in PUBLIC_SPLITS]
    scores = start_val_mse(private, [c[0] for c in candidates])
    pick = int(np.argmin(scores))
    source = candidates[pick][0]
    print(f"public start: {source.name} (validation MSE {scores[pick]:.6g})", flush=True)
    start = ["model.skip_init=transfer", f"model.skip_from={source}"]
    arms = {
        "non-private": [*series.all_args, *SETTINGS, NAIVES],
        "dp-public": [*private, *start],
        "dp": private,
    }
    lrs = tune(arms, series.prefix)
    for eps in epsilons[1:]:
        arm = f"dp-public-eps{eps:g}"
        arms[arm] = [*private_at(eps), *start]
        lrs[arm] = {**lrs["dp-public"], "tuned_at": "dp-public"}
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {
        "series": series.name,
        "public": series.public,
        "private": series.private,
        "test": series.test,
        "machine": machine_info(),
        "commit": git_commit(),
        "seeds": seeds,
        "epsilon": epsilons[0],
        "epsilons": epsilons,
        "public_start": {
            "run": str(source.relative_to(RESULTS.parent.parent)),
            **candidates[pick][1],
            "candidates": [
                {"val": val, "test": test, "val_mse": score, "run": run_dir.name, **info}
                for (val, test), score, (run_dir, info) in zip(
                    PUBLIC_SPLITS, scores, candidates, strict=True
                )
            ],
        },
        "tuning": lrs,
        "runs": {},
    }
    for i, seed in enumerate(seeds):
        for arm in list(arms) if i % 2 == 0 else list(arms)[::-1]:
            name = f"public-{arm}-s{seed}"
            print(f"seed {seed}: {arm}", flush=True)
            lr = f"train.lr={lrs[arm]['lr']}"
            metrics = run(series.prefix + name, [*arms[arm], lr, f"seed={seed}"])
            out["runs"][name] = {
                **_row(metrics, "mape"),
                "lr": lrs[arm]["lr"],
                "reused": bool(metrics.get("reused")),
            }
            write(out)


def write(out: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "dp-public" if out["series"] == "vic_elec" else f"dp-public-{out['series']}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    text = render(out)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text, flush=True)


def _wh(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render(out: dict[str, Any]) -> str:
    more = [f"dp-public-eps{eps:g}" for eps in out.get("epsilons", [])[1:]]
    arms = {arm: runs_of(out, arm) for arm in ("non-private", "dp-public", "dp", *more)}
    src = out["public_start"]
    eps = out["epsilon"]
    series = out.get("series", "vic_elec")
    public, private = out.get("public", "2012"), out.get("private", "2013-14")
    lines = [
        f"# Private forecasting on {series} from a public start (benchmarks/dp_public.py)",
        "",
        f"Machine: {out['machine'].get('cpu', '')}, {out['machine'].get('cores', '')} cores; "
        f"commit {out['commit']}. Seeds {out['seeds']}: medians, [min, max]. Test: "
        f"{out.get('test', 'Oct-Dec 2014 (92 days)')}, the same rows in every arm. Public: "
        f"{public}; private: {private}.",
        "",
        f"Public start: {src['run']}, {src['skip']}.",
        "",
        *(
            [
                "| public run's validation / test tail | start's MSE on the private validation "
                "(scaled) | its skip path | run Wh (model) |",
                "|---|---|---|---|",
            ]
            if src.get("candidates")
            else []
        ),
        *(
            f"| {c['val']} / {c['test']}{' (kept)' if src['run'].endswith(c['run']) else ''} | "
            f"{c['val_mse']:.6g} | {c['skip'].removeprefix('skip path: ')} | "
            f"{_wh(c.get('energy_wh'))} |"
            for c in src.get("candidates", [])
        ),
        "",
        *(
            [
                "Learning rate chosen per arm on validation (seed 0; best validation loss): "
                + "; ".join(
                    f"{arm} {t['lr']:g} ("
                    + ", ".join(f"{g['lr']:g}: {g['val_loss']:.6g}" for g in t["grid"])
                    + ")"
                    for arm, t in out["tuning"].items()
                    if "tuned_at" not in t
                )
                + "; the other epsilons use dp-public's. Epsilon counts DP-SGD only: the "
                "choices on validation (start, learning rate) are not charged to it.",
                "",
            ]
            if out.get("tuning")
            else []
        ),
        "| arm | data | lr | test MAPE % | best epoch | epsilon spent | seasonal naive daily / "
        "weekly MAPE % | run Wh (model) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    what = {
        "non-private": "all years, non-private",
        "dp-public": f"private years, DP eps {eps:g}, public start",
        "dp": f"private years, DP eps {eps:g}, seasonal start",
        **{
            arm: f"private years, DP eps {arm.removeprefix('dp-public-eps')}, public start"
            for arm in more
        },
    }
    for arm, runs in arms.items():
        rs = list(runs.values())
        if not rs:
            continue
        naive = (
            f"{_mid([r['seasonal_naive_daily:mape'] for r in rs])} / "
            f"{_mid([r['seasonal_naive_weekly:mape'] for r in rs])}"
        )
        spent = [r["epsilon"] for r in rs if r.get("epsilon") is not None]
        lines.append(
            f"| {arm} | {what[arm]} | {out.get('tuning', {}).get(arm, {}).get('lr', 3e-4):g} | "
            f"{_mid([r['mape'] for r in rs])} | "
            f"{_mid([r['best_epoch'] for r in rs])} | {_mid(spent)} | {naive} | "
            f"{_mid([r['run_wh'] for r in rs if r.get('run_wh') is not None])} |"
        )
    lines.append("")
    for num in ("dp-public", "dp", *more):
        pairs = [
            (arms[num][s], arms["non-private"][s]) for s in arms[num] if s in arms["non-private"]
        ]
        if pairs:
            ratio = [n["mape"] / d["mape"] for n, d in pairs]
            lines.append(
                f"- {num} / non-private test MAPE, seed by seed: {_mid(ratio)}"
                + (" (target: <= 1.15)" if num in ("dp-public", "dp") and eps == 8 else "")
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
