"""The hybrid (the network as a residual over LightGBM, ``model.skip_init: lightgbm``) on a
series, alone and as one more member of the default run's ensemble (``greentune ensemble``).

For each seed: the default run of ``benchmarks/combine.py`` (reused, or made), a hybrid run of
the same data and seed (its network only: no baselines), and ``greentune ensemble`` of the
default run's own ensemble members (its network, ``linear``, ``lightgbm`` and, where it applies,
``linear_clock``) plus the hybrid's network. Every row is scored on test; the ensemble's
recommended row is chosen on validation, as ``run`` and ``ensemble`` choose. Energy is the
runs' ledgers (modelled here: no counters on this VM); the ensemble's bill adds both runs'
members.

    .venv/bin/python benchmarks/hybrid.py [--series vic_elec|pjm-AEP|isone-CT] [--seeds 0,1,2]
    .venv/bin/python benchmarks/hybrid.py --series pjm,isone --seeds 0 --tag other
        [--set train.select_on=mape --name hybrid-mape]

Writes benchmarks/results/hybrid-SERIES.json and .md (one series), or hybrid-TAG.* (groups:
one row per series and seed, the pick with the hybrid against the default run's pick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combine import RUNS, run_dir, series, write
from machine import git_commit, machine_info

import greentune as gt

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


HYBRID = ("model.skip_init=lightgbm", "eval.baselines=[]")
"""The hybrid run's settings beside the series' own: its network only."""


def rows(metrics: dict) -> dict[str, dict[str, Any]]:
    val = metrics.get("validation") or {}
    return {
        name: {
            "test_mape": r["mape"],
            "val_mape": (val.get(name) or {}).get("mape"),
            "energy_wh": r.get("energy_wh"),
        }
        for name, r in metrics["test"].items()
    }


def one(
    label: str, overrides: list[str], seed: int, name: str = "hybrid", extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    default = run_dir(label, overrides, seed)
    hybrid = run_dir(label, overrides, seed, name, (*HYBRID, *extra))
    out = RUNS / f"{name}-ensemble-{label}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    # the default run's own ensemble members (linear_clock is left out where it does not apply)
    own = json.loads((default / "metrics.json").read_text())["ensembles"]["ensemble-weighted"]
    baselines = [m for m in own["members"] if m != "model"]
    specs = [str(default), *(f"{default}:{m}" for m in baselines), str(hybrid)]
    ens = gt.ensemble(specs, out, log=lambda m: print(f"  [{out.name}] {m}", flush=True))
    m = json.loads((ens.path / "metrics.json").read_text())
    d = json.loads((default / "metrics.json").read_text())
    h = json.loads((hybrid / "metrics.json").read_text())
    greenest = m["energy"]["greenest"]
    weighted = m["ensembles"]["ensemble-weighted"]
    return {
        "default_run": rows(d),
        "default_recommended": d["energy"]["greenest"],
        "hybrid_run": rows(h),
        "ensemble": rows(m),
        "ensemble_recommended": greenest,
        "ensemble_weights_mean": dict(
            zip(
                weighted["members"],
                np.round(np.mean(weighted["weights_by_step"], axis=0), 4).tolist(),
                strict=True,
            )
        ),
    }


def markdown(result: dict) -> str:
    machine = result["machine"]
    out = [
        f"# The hybrid on {result['series']}, alone and in the ensemble",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        "Test MAPE % (validation MAPE in brackets); energy modelled.",
        "",
        "| seed | LightGBM | default run's pick | hybrid | ensemble + hybrid, weighted | "
        "ensemble + hybrid, mean | pick with the hybrid (on validation) | pick / LightGBM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for seed, r in result["seeds"].items():
        d, e = r["default_run"], r["ensemble"]
        hyb = next(iter(r["hybrid_run"].values()))
        pick = e[r["ensemble_recommended"]]
        ratio = pick["test_mape"] / d["lightgbm"]["test_mape"]
        ratios.append(ratio)

        def cell(x: dict) -> str:
            return f"{x['test_mape']:.3f} ({x['val_mape']:.3f})"

        out.append(
            f"| {seed} | {cell(d['lightgbm'])} | {r['default_recommended']} "
            f"{cell(d[r['default_recommended']])} | {cell(hyb)} | {cell(e['ensemble-weighted'])} | "
            f"{cell(e['ensemble-mean'])} | {r['ensemble_recommended']} {cell(pick)} | "
            f"{ratio:.3f} |"
        )
    out.append(f"\nMedian pick / LightGBM: **{statistics.median(ratios):.3f}**\n")
    return "\n".join(out)


def _wh(row: dict) -> str:
    return "-" if row.get("energy_wh") is None else f"{row['energy_wh']:.3f}"


def markdown_many(result: dict) -> str:
    """One row per series: does the hybrid as a fifth member change what the run recommends?"""
    machine = result["machine"]
    out = [
        "# The hybrid as a fifth ensemble member, series by series",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Commit {result['commit']}. "
        "Test MAPE %; picks chosen on validation; energy modelled (Wh of the picked row).",
        "",
        "| series | seed | LightGBM | hybrid alone | default pick | pick with the hybrid | "
        "MAPE ratio | Wh: default pick → with the hybrid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for label, by_seed in result["series"].items():
        for seed, r in by_seed.items():
            d, e = r["default_run"], r["ensemble"]
            hyb = next(iter(r["hybrid_run"].values()))
            before, after = d[r["default_recommended"]], e[r["ensemble_recommended"]]
            ratio = after["test_mape"] / before["test_mape"]
            ratios.append(ratio)
            out.append(
                f"| {label} | {seed} | {d['lightgbm']['test_mape']:.3f} | "
                f"{hyb['test_mape']:.3f} | {r['default_recommended']} {before['test_mape']:.3f} | "
                f"{r['ensemble_recommended']} {after['test_mape']:.3f} | {ratio:.3f} | "
                f"{_wh(before)} → {_wh(after)} |"
            )
    out.append(
        f"\nMedian MAPE ratio (pick with the hybrid / default pick): "
        f"**{statistics.median(ratios):.4f}**; lower on {sum(x < 1 for x in ratios)} of "
        f"{len(ratios)}.\n"
    )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--series",
        default="vic_elec",
        help="vic_elec, pjm-UTILITY or isone-ZONE (one table per seed), or pjm / isone / a "
        "comma list of those (one row per series and seed, results/hybrid-TAG)",
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="other", help="file suffix for several series")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more settings of the hybrid runs (e.g. train.select_on=mape); give --name too",
    )
    p.add_argument("--name", default="hybrid", help="prefix of the hybrid runs and result files")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    groups = a.series.split(",")
    if len(groups) > 1 or groups[0] in ("pjm", "isone"):
        labelled = series(groups)
        many: dict[str, Any] = {
            "machine": machine_info(),
            "commit": git_commit(),
            "hybrid_settings": [*HYBRID, *a.set],
            "series": {
                label: {str(s): one(label, o, s, a.name, tuple(a.set)) for s in seeds}
                for label, o in labelled.items()
            },
        }
        write(RESULTS / f"{a.name}-{a.tag}", many, markdown_many)
        return
    group = a.series.split("-", 1)[0]
    known = series([group]) if group in ("pjm", "isone", "vic_elec") else {}
    if a.series not in known:
        raise SystemExit(f"--series: one of {', '.join(known) or 'vic_elec, pjm-AEP, isone-CT'}")
    label, overrides = a.series, known[a.series]
    result: dict[str, Any] = {
        "machine": machine_info(),
        "commit": git_commit(),
        "hybrid_settings": [*HYBRID, *a.set],
        "series": label,
        "seeds": {str(s): one(label, overrides, s, a.name, tuple(a.set)) for s in seeds},
    }
    write(RESULTS / f"{a.name}-{label}", result, markdown)


if __name__ == "__main__":
    main()
