"""Differential privacy: what DP-SGD costs in quality, time and energy, and what it buys against
a membership-inference attack. Every number comes from `greentune run` / `greentune privacy
audit` on real data, private and non-private side by side, medians over seeds.

    .venv/bin/python benchmarks/privacy.py [--stages tune,quality,audit,speed] [--seeds 0,1,2]
        [--method frozen] [--lrs 3e-4,3e-3,1e-2] [--batches 32x1,32x8] [--tag NAME]

--method sets peft.method for every arm (default: the task's default, LoRA); --lrs and
--batches replace the tuning grid (batch_size x grad_accum); --tag names the runs and the
results (privacy-NAME.json|md) so another method's table does not overwrite this one.

- victoria: the embedded Victoria 2014 demo (day-ahead, 48 half-hours; test = last 8 weeks);
- vic_elec: Victoria 2012-14 (../shared/data/demand/vic_elec; test = last 92 days, validation
  the 92 before), the data the privacy issue names;
- sst2: SST-2 (../shared/data/text/sst2): a seeded sample of the training phrases, the 872 dev
  sentences as the test split (text.test_path), 10 % of the sample for validation.

Stages:
- tune: learning rate x batch (virtual batches under DP: batch_size x grad_accum; SST-2 the
  learning rate only) on seed 0,
  chosen by validation loss (never test) for the non-private arm and for DP at epsilon 8; the
  DP choice is used at every epsilon. Same grid, same epochs for both arms.
- quality: non-private, and DP at epsilon 1, 3 and 8, each with its chosen settings and the same
  epochs, seeds 0..2; test MAPE / dev accuracy, training samples/s and energy beside every row.
  Victoria adds "non-private, private recipe": no noise, but the data-independent choices DP
  needs (public-bounds scaler, a skip path not fitted on the data), so the cost of the noise
  and the cost of those choices show apart.
- speed: DP-SGD's step time against non-private training with the same batch size and
  accumulation (DP's chosen settings for every arm, fixed epochs, no early stopping), with
  Opacus' per-sample tensors (privacy.dp.factored=false) and greentune's factored per-sample
  gradients (the default), seeds as repeats, fresh runs, the arms' order rotating; the
  settings come from this run's tune stage or else from privacy.json.
- audit: loss-threshold membership inference on the SST-2 models (seed 0) and on a deliberately
  overfitted small-data model (200 phrases, 30 epochs), non-private vs epsilon 8 vs epsilon 1.

Writes benchmarks/results/privacy.json and privacy.md. Runs land in
benchmarks/results/runs/privacy/ (not in git); a finished run is reused when the script runs
again, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from victoria import VIC_ELEC as VIC_ELEC_CSV
from victoria import VIC_ELEC_ARGS

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.config import build_config
from greentune.errors import ConfigError
from greentune.privacy.dp import private_config
from greentune.rundir import RunDir
from greentune.tasks import TASKS
from greentune.tasks.forecast.transfer import read_source
from greentune.train.defaults import with_train_defaults

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs" / "privacy"
SST2 = ROOT.parent / "shared" / "data" / "text" / "sst2"
EPSILONS = (1.0, 3.0, 8.0)
LRS = (3e-4, 3e-3, 1e-2)
"""Learning rates tried per arm on validation (SST-2: 1e-2 added once DP chose 3e-3, the grid's
edge, with mean pooling)."""
BATCHES = {  # (batch_size, grad_accum): SST-2 keeps one to fit the time of one session
    "victoria": ((32, 1), (32, 8)),
    "vic_elec": ((32, 1), (32, 8)),
    "sst2": ((32, 1),),
}

VICTORIA = [
    "data.source=vic2014",
    "data.test=56D",
    "data.val=56D",
    "train.epochs=6",
    "energy.carbon=static:AU",
]
VIC_ELEC = [
    *VIC_ELEC_ARGS,
    "data.test=92D",
    "data.val=92D",
    "train.epochs=6",
    "energy.carbon=static:AU",
    # public ranges for the private arms' scaler: the grid's peak was near 10.6 GW (MW here)
    "data.bounds.Demand=[0,12000]",
    "data.bounds.Temperature=[-10,50]",
]
"""Victoria 2012-14 (the issue's data), split as benchmarks/victoria.py splits it; the training
stride is the data's default (about 3,000 windows), as on the demo."""
FORECASTS = ("victoria", "vic_elec")
NAIVES = "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly]"
REFERENCES = "eval.baselines=[seasonal_naive_daily,seasonal_naive_weekly,linear,lightgbm]"
PRIVATE_RECIPE = ["data.scaler=bounds", "model.skip_init=seasonal"]


def sst2_args(n_train: int, seed: int) -> list[str]:
    """A seeded sample of SST-2's training phrases (written under the runs folder, never the
    repo), tested on the dev sentences."""
    import pandas as pd

    path = RUNS / "data" / f"sst2-train-{n_train}-{seed}.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.read_csv(SST2 / "train.csv").sample(n=n_train, random_state=seed)
        frame.to_csv(path, index=False)
    return [
        "task=classify",
        f"text.path={path}",
        f"text.test_path={SST2 / 'dev.csv'}",
        "text.val=0.1",
        "text.max_length=64",
        "energy.carbon=static:WORLD",
    ]


def _settings(cfg: Any) -> tuple[Any, ...]:
    """What differs between this script's runs of one name: a finished run is reused only if
    it was made with the same (a grid that grows moves the chosen learning rate)."""
    dp = cfg.privacy.dp
    eps = None if dp is None else dp.target_epsilon
    t = cfg.train
    return (
        cfg.seed,
        t.lr,
        t.batch_size,
        t.grad_accum,
        t.epochs,
        cfg.model.pooling,
        eps,
        cfg.peft.method,
        dp.factored,
        t.patience,
        cfg.model.skip_init,
        cfg.model.skip_from,
        cfg.data.path,
        cfg.data.val,
        cfg.data.test,
    )


def _same(done: RunDir, cfg: Any) -> bool:
    """Whether a finished run was made with ``cfg``'s settings. A saved config holds what the
    run trained with: the lr and patience 'auto' chose, and under DP the private recipe
    (scaler, start); a transferred start must still be the source's (its heads' sha256)."""
    task = TASKS.get(cfg.task)
    if _settings(done.config) != _settings(
        private_config(task, with_train_defaults(cfg, task.train_defaults, task.name))
    ):
        return False
    if cfg.model.skip_init != "transfer":
        return True
    saved = done.path / "checkpoints" / "transfer-skip.npz"
    try:
        with np.load(saved) as z:
            return str(z["digest"]) == read_source(cfg.model.skip_from).digest
    except (OSError, KeyError, ValueError, ConfigError):
        return False


def run(name: str, overrides: list[str], reuse: bool = True) -> dict[str, Any]:
    """One run (reused when it finished before with the same settings, unless ``reuse`` is
    False: timings are only compared within one sitting); its metrics and wall time."""
    path = RUNS / name
    cfg = build_config(overrides=[*overrides, f"output_dir={RUNS}", f"name={name}"])
    done = RunDir.open(path) if reuse and (path / "metrics.json").is_file() else None
    if done is not None and done.info.status == "complete" and _same(done, cfg):
        metrics = done.metrics.to_dict()
        metrics["reused"] = True
        return metrics
    shutil.rmtree(path, ignore_errors=True)  # failed, cut, or made with other settings
    t0 = time.perf_counter()
    done = gt.run(cfg, echo=lambda m: print(f"  [{name}] {m}", flush=True))
    metrics = done.metrics.to_dict()
    metrics["wall_s"] = time.perf_counter() - t0
    (path / "bench-wall.json").write_text(json.dumps({"wall_s": metrics["wall_s"]}))
    return metrics


def arm_args(eps: float | None) -> list[str]:
    return [] if eps is None else [f"privacy.dp.target_epsilon={eps:g}"]


def setting_args(s: dict[str, Any]) -> list[str]:
    return [
        f"train.lr={s['lr']}",
        f"train.batch_size={s['batch']}",
        f"train.grad_accum={s['accum']}",
    ]


def tune(
    dataset: str,
    base: list[str],
    extra: list[str],
    prefix: str,
    lrs: tuple[float, ...] = LRS,
    batches: tuple[tuple[int, int], ...] | None = None,
) -> dict[str, Any]:
    """Per arm (non-private, DP at epsilon 8): the grid point with the lowest validation loss."""
    chosen: dict[str, Any] = {}
    for arm, eps in (("non-private", None), ("dp", 8.0)):
        scores = []
        for lr in lrs:
            for batch, accum in batches or BATCHES[dataset]:
                s = {"lr": lr, "batch": batch, "accum": accum}
                name = f"{prefix}-tune-{arm}-lr{lr:g}-b{batch}x{accum}"
                m = run(name, [*base, *extra, *arm_args(eps), *setting_args(s), "seed=0"])
                scores.append({**s, "val_loss": m["training"]["best_val_loss"]})
        best = min(scores, key=lambda r: r["val_loss"])
        chosen[arm] = {"grid": scores, "chosen": best}
        print(f"{dataset} {arm}: chose {best}", flush=True)
    return chosen


def quality_rows(
    dataset: str,
    base: list[str],
    chosen: dict[str, Any],
    seeds: list[int],
    headline: str,
    prefix: str,
) -> dict[str, Any]:
    """Every arm x seed: test quality, training throughput and energy; medians and ranges."""
    arms: list[tuple[str, float | None, list[str]]] = [
        ("non-private", None, setting_args(chosen["non-private"]["chosen"]))
    ]
    if dataset in FORECASTS:
        arms.append(
            (
                "non-private, private recipe",
                None,
                [*PRIVATE_RECIPE, *setting_args(chosen["non-private"]["chosen"])],
            )
        )
    arms += [(f"dp eps={e:g}", e, setting_args(chosen["dp"]["chosen"])) for e in EPSILONS]
    out: dict[str, Any] = {}
    for label, eps, settings in arms:
        per_seed = []
        for seed in seeds:
            slug = label.replace(" ", "-").replace(",", "").replace("=", "")
            refs = REFERENCES if dataset in FORECASTS and seed == seeds[0] else NAIVES
            extra = [refs] if dataset in FORECASTS else []
            m = run(
                f"{prefix}-{slug}-s{seed}",
                [*base, *extra, *arm_args(eps), *settings, f"seed={seed}"],
            )
            per_seed.append(_row(m, headline))
        out[label] = {"seeds": per_seed, "median": _median(per_seed)}
    ref = out["non-private"]["median"]
    for row in out.values():
        med = row["median"]
        med["samples_per_s_ratio_to_non_private"] = ref["samples_per_s"] / med["samples_per_s"]
        med["train_wh_ratio_to_non_private"] = med["train_wh"] / ref["train_wh"]
    return out


SPEED_ARMS: tuple[tuple[str, list[str]], ...] = (
    ("non-private", []),
    (
        "dp eps=8, Opacus per-sample tensors",
        ["privacy.dp.target_epsilon=8", "privacy.dp.factored=false"],
    ),
    ("dp eps=8, factored (default)", ["privacy.dp.target_epsilon=8"]),
)
SPEED_EPOCHS = {"victoria": 2, "vic_elec": 2, "sst2": 1}


def speed_rows(
    dataset: str, base: list[str], chosen: dict[str, Any], seeds: list[int], prefix: str
) -> dict[str, Any]:
    """DP-SGD's training time against non-private training with the same batch size and
    accumulation (DP's chosen learning rate, batch and virtual batches for all three arms;
    Poisson batches under DP), a fixed number of epochs and no early stopping: Opacus'
    per-sample tensors and greentune's factored per-sample gradients, clipped by the same code.
    Every run is made afresh, and the arms' order rotates from one repeat to the next, so
    drift on a shared machine hits all three."""
    settings = chosen["dp"]["chosen"]
    fixed = [f"train.epochs={SPEED_EPOCHS[dataset]}", "train.patience=null", "eval.baselines=[]"]
    per_arm: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in SPEED_ARMS}
    for turn, seed in enumerate(seeds):
        order = SPEED_ARMS[turn % len(SPEED_ARMS) :] + SPEED_ARMS[: turn % len(SPEED_ARMS)]
        for label, args in order:
            slug = label.split(",")[0].replace(" ", "-").replace("=", "")
            slug += "-opacus" if "Opacus" in label else ""
            m = run(
                f"{prefix}-speed-{slug}-s{seed}",
                [*base, *args, *setting_args(settings), *fixed, f"seed={seed}"],
                reuse=False,
            )
            per_arm[label].append(_row(m, "loss"))
    arms = {label: {"seeds": rows, "median": _median(rows)} for label, rows in per_arm.items()}
    ref = arms["non-private"]["median"]
    for row in arms.values():
        med = row["median"]
        med["slowdown"] = ref["samples_per_s"] / med["samples_per_s"]
        med["step_time_ratio"] = (med["train_s"] / med["steps"]) / (ref["train_s"] / ref["steps"])
        med["train_wh_ratio_to_non_private"] = med["train_wh"] / ref["train_wh"]
    return {
        "settings": {**settings, "epochs": SPEED_EPOCHS[dataset]},
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
        "arms": arms,
    }


def _commit() -> str:
    import subprocess

    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def _row(m: dict[str, Any], headline: str) -> dict[str, Any]:
    model = m["test"][m["model"]]
    energy = m.get("energy") or {}
    phases = energy.get("by_phase_wh") or {}
    row = {
        headline: model[headline] if headline != "loss" else m["training"]["best_val_loss"],
        "epsilon": (m.get("privacy") or {}).get("epsilon"),
        "steps": m["training"]["steps"],
        "best_epoch": m["training"]["best_epoch"],
        "samples_per_s": m["training"]["samples_per_s"],
        "train_s": m["training"]["train_s"],
        "train_wh": phases.get("train"),
        "trainable_parameters": m["training"].get("trainable_parameters"),
        "run_wh": energy.get("run_wh"),
        "run_g": energy.get("run_g"),
    }
    for name, r in m["test"].items():
        if name != m["model"]:
            row[f"{name}:{headline}"] = r.get(headline)
    return row


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.median(values)
            out[f"{key}_range"] = [min(values), max(values)]
    return out


def audits(seeds: list[int], n_train: int) -> dict[str, Any]:
    from greentune.privacy.audit import audit

    out: dict[str, Any] = {}
    seed = seeds[0]
    for label in ("non-private", "dp eps=8", "dp eps=1"):
        slug = label.replace(" ", "-").replace("=", "")
        path = RUNS / f"sst2-{slug}-s{seed}"
        out[f"sst2 {label}"] = audit(RunDir.open(path), samples=872, seed=0).to_dict()
    # a deliberately overfitted small-data model: the attack works, so the drop is visible
    small = [
        *sst2_args(200, 1),
        "train.epochs=30",
        "train.patience=null",
        "train.lr=1e-3",
        "train.batch_size=16",
    ]
    for label, eps in (("non-private", None), ("dp eps=8", 8.0), ("dp eps=1", 1.0)):
        slug = label.replace(" ", "-").replace("=", "")
        run(f"sst2-overfit-{slug}", [*small, *arm_args(eps), "seed=0"])
        path = RUNS / f"sst2-overfit-{slug}"
        m = RunDir.open(path).metrics.to_dict()
        result = audit(RunDir.open(path), samples=200, seed=0).to_dict()
        result["test_accuracy"] = m["test"][m["model"]]["accuracy"]
        out[f"overfit {label}"] = result
    return out


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Differential privacy benchmark", "", f"Machine: {out['machine']}", ""]
    wh = f"Wh ({out['machine'].get('energy_kind', 'kind not recorded')})"
    lines += [
        f"Method: {out.get('method') or 'the task default'}; learning rates tuned on "
        f"validation: {list(out.get('lrs') or LRS)}; batch x accumulation: "
        f"{out.get('batches') or 'per dataset, ' + str(BATCHES)}.",
        "",
    ]
    for dataset, t in out.get("tuning", {}).items():
        chosen = ", ".join(
            f"{arm} lr {c['chosen']['lr']:g} batch {c['chosen']['batch']}x{c['chosen']['accum']}"
            for arm, c in t.items()
        )
        lines += [f"Chosen on validation ({dataset}): {chosen}.", ""]
    for dataset, headline in (("victoria", "mape"), ("vic_elec", "mape"), ("sst2", "accuracy")):
        q = out.get("quality", {}).get(dataset)
        if not q:
            continue
        lines += [
            f"## {dataset} ({headline}, median and range over seeds {out['seeds']})",
            "",
            f"| arm | {headline} | epsilon | steps | samples/s | DP slowdown | train {wh} | "
            f"train Wh ratio | run {wh} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, row in q.items():
            med = row["median"]
            lo, hi = med[f"{headline}_range"]
            eps = "–" if med.get("epsilon") is None else f"{med['epsilon']:.2f}"
            lines.append(
                f"| {arm} | {med[headline]:.4g} ({lo:.4g}–{hi:.4g}) | {eps} | {med['steps']:.0f} "
                f"| {med['samples_per_s']:.0f} | {med['samples_per_s_ratio_to_non_private']:.2f}x "
                f"| {med['train_wh']:.3g} | {med['train_wh_ratio_to_non_private']:.2f}x "
                f"| {med['run_wh']:.3g} |"
            )
        lines.append("")
    for dataset, q in (out.get("speed") or {}).items():
        st = q["settings"]
        lines += [
            f"## DP step time, {dataset} (median and range over {len(out['seeds'])} repeats)",
            "",
            f"Commit {q['commit']}, {q['date']}. Every arm: lr {st['lr']:g}, batch "
            f"{st['batch']} x {st['accum']} (Poisson batches under DP), {st['epochs']} "
            "epoch(s), no early stopping; fresh runs, the arms' order rotating per repeat. "
            "Energy is the ledger's (modelled where the machine has no counters).",
            "",
            "| arm | samples/s | throughput slowdown | s per step | step-time ratio "
            f"| train {wh} | train Wh ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm, row in q["arms"].items():
            med = row["median"]
            lo, hi = med["samples_per_s_range"]
            lines.append(
                f"| {arm} | {med['samples_per_s']:.0f} ({lo:.0f}–{hi:.0f}) "
                f"| {med['slowdown']:.2f}x | {med['train_s'] / med['steps']:.3f} "
                f"| {med['step_time_ratio']:.2f}x | {med['train_wh']:.3g} "
                f"| {med['train_wh_ratio_to_non_private']:.2f}x |"
            )
        lines.append("")
    if out.get("audit"):
        lines += [
            "## Membership inference (loss threshold)",
            "",
            "| model | epsilon | AUC | TPR @ 1 % FPR | advantage | empirical epsilon |",
            "|---|---|---|---|---|---|",
        ]
        for name, a in out["audit"].items():
            eps = "–" if a["epsilon"] is None else f"{a['epsilon']:.2f}"
            lines.append(
                f"| {name} | {eps} | {a['auc']:.3f} | {100 * a['tpr_at_1pct_fpr']:.1f} % | "
                f"{a['advantage']:.3f} | {a['empirical_epsilon']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _tuning(out: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The settings chosen on validation: this run's, else the ones privacy.json holds."""
    if dataset in out.get("tuning", {}):
        return out["tuning"][dataset]
    return json.loads((RESULTS / "privacy.json").read_text())["tuning"][dataset]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="tune,quality,audit")
    parser.add_argument("--datasets", default="victoria,sst2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sst2-train", type=int, default=4000)
    parser.add_argument("--method", default=None, help="peft.method for every arm")
    parser.add_argument("--lrs", default=None, help="learning rates to tune, e.g. 3e-3,1e-2")
    parser.add_argument("--batches", default=None, help="batch_size x grad_accum, e.g. 32x1,32x8")
    parser.add_argument("--tag", default=None, help="names the runs and privacy-TAG.json|md")
    args = parser.parse_args()
    quiet_libraries()
    seeds = [int(s) for s in args.seeds.split(",")]
    stages = args.stages.split(",")
    lrs = LRS if args.lrs is None else tuple(float(v) for v in args.lrs.split(","))
    batches = (
        None
        if args.batches is None
        else tuple((int(b), int(a)) for b, a in (v.split("x") for v in args.batches.split(",")))
    )
    method = [] if args.method is None else [f"peft.method={args.method}"]
    stem = "privacy" if args.tag is None else f"privacy-{args.tag}"
    path = RESULTS / f"{stem}.json"
    out: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    out.update(
        {
            "machine": machine_info(),
            "seeds": seeds,
            "sst2_train": args.sst2_train,
            "method": args.method,
            "lrs": lrs,
            "batches": batches,
        }
    )
    datasets = {
        "victoria": ([*VICTORIA, *method], [NAIVES], "mape"),
        "vic_elec": ([*VIC_ELEC, *method], [NAIVES], "mape"),
        "sst2": (
            [*sst2_args(args.sst2_train, 0), "train.epochs=2", "model.backbone=minilm", *method],
            [],
            "accuracy",
        ),
    }
    for dataset in args.datasets.split(","):
        if dataset == "sst2" and not SST2.is_dir():
            print(f"skipping sst2: {SST2} not found")
            continue
        if dataset == "vic_elec" and not VIC_ELEC_CSV.is_file():
            print(f"skipping vic_elec: {VIC_ELEC_CSV} not found")
            continue
        base, tune_extra, headline = datasets[dataset]
        prefix = dataset if args.tag is None else f"{dataset}-{args.tag}"
        if "tune" in stages:
            out.setdefault("tuning", {})[dataset] = tune(
                dataset, base, tune_extra, prefix, lrs, batches
            )
        if "speed" in stages:
            out.setdefault("speed", {})[dataset] = speed_rows(
                dataset, base, _tuning(out, dataset), seeds, prefix
            )
        if "quality" in stages:
            chosen = out["tuning"][dataset]
            out.setdefault("quality", {})[dataset] = quality_rows(
                dataset, base, chosen, seeds, headline, prefix
            )
        path.write_text(json.dumps(out, indent=2, default=str))
    if "audit" in stages and SST2.is_dir():
        out["audit"] = audits(seeds, args.sst2_train)
    path.write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / f"{stem}.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
