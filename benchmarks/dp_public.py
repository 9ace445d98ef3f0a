"""Private forecasting on Victoria from a public start (``model.skip_init: transfer``), on the
privacy issue's data and split, beside the non-private run.

    .venv/bin/python benchmarks/dp_public.py [--seeds 0,1,2] [--epsilon 8]

Protocol: ``benchmarks/privacy.py``'s vic_elec arm (Victoria 2012-14, half-hourly, day-ahead;
test = the last 92 days, Oct-Dec 2014, validation the 92 before; 6 epochs; lr 3e-4 and batches
of 32 x 8, what privacy.py's tuning chose on validation for both arms; the seasonal naives as
baselines). The public data is 2012 (AEMO publishes Victoria's demand; here the year is
declared public and the private run sees only 2013-14). One ``greentune run`` on 2012 alone
fits the public start (validation its last 56 days, a 7-day test it needs but nobody reads; the
network is not trained: only its ridge skip path is used), scaled by the same public ranges as
the private runs (0-12,000 MW, -10-50 C).

Arms, each seed:
- non-private: 2012-14, all of it, no privacy (the issue's non-private row);
- dp-public: DP-SGD at ``--epsilon`` on 2013-14 from the public start;
- dp: the same from the seasonal start (greentune's private default), for the start's share.
Test windows are the same rows in every arm. Energy is modelled where the VM has no RAPL.

Writes benchmarks/results/dp-public.json and .md; runs under results/runs/privacy/ (a finished
run of the same settings is reused).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from federated import _mid
from federated_public import runs_of
from machine import git_commit, machine_info
from privacy import NAIVES, RESULTS, RUNS, VIC_ELEC, _row, run
from victoria import VIC_ELEC as VIC_ELEC_CSV

from greentune.cli import quiet_libraries

PUBLIC_BEFORE = "2013-01-01"
"""Local dates before this are the public year."""
SETTINGS = ["train.lr=0.0003", "train.batch_size=32", "train.grad_accum=8"]
"""privacy.py's choice on validation for vic_elec, both arms alike (privacy-vic-elec.json)."""


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epsilon", default="8")
    a = parser.parse_args()
    quiet_libraries()
    public_csv, private_csv = split_files()
    source = RUNS / "public-start-2012"
    start = run(
        source.name,
        [
            *with_path(public_csv),
            "data.val=56D",
            "data.test=7D",
            "data.scaler=bounds",
            "train.max_steps=1",
            "eval.baselines=[]",
            "eval.ensembles=[]",
            "eval.report=false",
            "seed=0",
        ],
    )
    dp = [f"privacy.dp.target_epsilon={a.epsilon}"]
    arms = {
        "non-private": [*VIC_ELEC, *SETTINGS, NAIVES],
        "dp-public": [
            *with_path(private_csv),
            *SETTINGS,
            NAIVES,
            *dp,
            "model.skip_init=transfer",
            f"model.skip_from={source}",
        ],
        "dp": [*with_path(private_csv), *SETTINGS, NAIVES, *dp],
    }
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {
        "machine": machine_info(),
        "commit": git_commit(),
        "seeds": seeds,
        "epsilon": float(a.epsilon),
        "public_start": {
            "run": str(source.relative_to(RESULTS.parent.parent)),
            "energy_wh": (start.get("energy") or {}).get("run_wh"),
            "skip": next(
                (
                    line
                    for line in (source / "log.txt").read_text().splitlines()
                    if "skip path: ridge" in line
                ),
                "",
            ).strip(),
        },
        "runs": {},
    }
    for i, seed in enumerate(seeds):
        for arm in list(arms) if i % 2 == 0 else list(arms)[::-1]:
            name = f"public-{arm}-s{seed}"
            print(f"seed {seed}: {arm}", flush=True)
            metrics = run(name, [*arms[arm], f"seed={seed}"])
            out["runs"][name] = _row(metrics, "mape")
            write(out)


def write(out: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dp-public.json").write_text(json.dumps(out, indent=1))
    text = render(out)
    (RESULTS / "dp-public.md").write_text(text)
    print(text, flush=True)


def render(out: dict[str, Any]) -> str:
    arms = {arm: runs_of(out, arm) for arm in ("non-private", "dp-public", "dp")}
    src = out["public_start"]
    eps = out["epsilon"]
    wh = src.get("energy_wh")
    lines = [
        "# Private forecasting on Victoria from a public start (benchmarks/dp_public.py)",
        "",
        f"Machine: {out['machine'].get('cpu', '')}, {out['machine'].get('cores', '')} cores; "
        f"commit {out['commit']}. Seeds {out['seeds']}: medians, [min, max]. Test: Oct-Dec "
        "2014 (92 days), the same rows in every arm.",
        "",
        f"Public start: one run on 2012 alone, {wh:.4f} Wh (model); {src['skip']}."
        if wh is not None
        else f"Public start: one run on 2012 alone; {src['skip']}.",
        "",
        "| arm | data | test MAPE % | best epoch | epsilon spent | seasonal naive daily / "
        "weekly MAPE % | run Wh (model) |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {
        "non-private": "2012-14, non-private",
        "dp-public": f"2013-14, DP eps {eps:g}, start fitted on 2012",
        "dp": f"2013-14, DP eps {eps:g}, seasonal start",
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
            f"| {arm} | {what[arm]} | {_mid([r['mape'] for r in rs])} | "
            f"{_mid([r['best_epoch'] for r in rs])} | {_mid(spent)} | {naive} | "
            f"{_mid([r['run_wh'] for r in rs if r.get('run_wh') is not None])} |"
        )
    lines.append("")
    for num in ("dp-public", "dp"):
        pairs = [
            (arms[num][s], arms["non-private"][s]) for s in arms[num] if s in arms["non-private"]
        ]
        if pairs:
            ratio = [n["mape"] / d["mape"] for n, d in pairs]
            lines.append(
                f"- {num} / non-private test MAPE, seed by seed: {_mid(ratio)} (target <= 1.15)"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
