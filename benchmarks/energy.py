"""Energy figures of the ledger issue, each side by side with its anchor in one run.

    .venv/bin/python benchmarks/energy.py overhead  [--pairs 5] [--steps 80]
    .venv/bin/python benchmarks/energy.py agreement [--repeats 3] [--steps 40]
    .venv/bin/python benchmarks/energy.py trainer   [--max-epochs 6] [--skip-init ridge|random]
    .venv/bin/python benchmarks/energy.py recipes   [--recipes default lora-3e-4] [--seeds 42 1 2]

overhead:  the same `greentune run` (Victoria 2014, MiniLM + LoRA) with metering on and off,
           interleaved pairs in fresh processes; wall-time ratio on/off, median over pairs.
agreement: one training workload metered at once by greentune's process model and by
           CodeCarbon's OfflineEmissionsTracker (process and machine mode); energy ratio.
trainer:   the default `greentune run` (LoRA, baselines off) vs an HF Trainer script that fully
           fine-tunes the same network to the same validation loss (hf_trainer_full.py); both
           metered by `greentune energy measure`; energy ratio.
recipes:   fine-tuning recipes x seeds: validation curve with the energy spent until each
           validation (from the ledger), early stopping replayed at patience 1-3.

Writes benchmarks/results/energy_<part>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GREENTUNE = [str(ROOT / ".venv" / "bin" / "greentune")]


def save(part: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    result["machine"] = machine_info()
    result["date"] = time.strftime("%Y-%m-%d")
    (RESULTS / f"energy_{part}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


def overhead(pairs: int, steps: int) -> None:
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            order = [True, False] if i % 2 == 0 else [False, True]
            walls = {}
            for enabled in order:
                name = f"p{i}-{'on' if enabled else 'off'}"
                cmd = [
                    *GREENTUNE, "run", f"output_dir={tmp}", f"name={name}",
                    f"train.max_steps={steps}", "eval.baselines=[seasonal_naive_weekly]",
                    f"energy.enabled={str(enabled).lower()}",
                ]  # fmt: skip
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                walls[enabled] = time.perf_counter() - t0
            runs.append({"on_s": walls[True], "off_s": walls[False]})
            print(f"pair {i}: on {walls[True]:.1f} s, off {walls[False]:.1f} s", flush=True)
    ratios = [r["on_s"] / r["off_s"] for r in runs]
    save(
        "overhead",
        {
            "what": f"greentune run, Victoria 2014, MiniLM+LoRA, {steps} steps, metering on/off",
            "pairs": pairs,
            "median_on_s": statistics.median(r["on_s"] for r in runs),
            "median_off_s": statistics.median(r["off_s"] for r in runs),
            "median_ratio_on_off": statistics.median(ratios),
            "ratios": ratios,
            "runs": runs,
        },
    )


def agreement(repeats: int, steps: int) -> None:
    from codecarbon import OfflineEmissionsTracker

    from greentune.cli import quiet_libraries
    from greentune.config import TrainConfig, build_config
    from greentune.data.windows import prepare_forecast_data
    from greentune.energy import Meter
    from greentune.energy.carbon import StaticIntensity
    from greentune.energy.model import ProcessModelSource, resolve_cpu_power
    from greentune.tasks.forecast.batches import make_batches
    from greentune.tasks.forecast.model import build_model
    from greentune.train.loop import train

    quiet_libraries()
    cfg = build_config()
    data = prepare_forecast_data(cfg.data)
    model, _ = build_model(cfg, data, total_steps=10_000)
    batches = make_batches(cfg, data, data.train.origins, None)
    tcfg = TrainConfig(epochs=1, max_steps=steps, patience=None, lr=1e-4)
    runs = []
    for i in range(repeats):
        for mode in ("process", "machine"):
            meter = Meter([ProcessModelSource(resolve_cpu_power())], StaticIntensity("AU"))
            tracker = OfflineEmissionsTracker(
                country_iso_code="AUS",
                tracking_mode=mode,
                measure_power_secs=1,
                save_to_file=False,
                log_level="error",
            )
            tracker.start()
            with meter.window("train") as w:
                train(model, batches, tcfg, seed=i)
            tracker.stop()
            cc = tracker.final_emissions_data
            ours = w.result
            row = {
                "repeat": i,
                "codecarbon_mode": mode,
                "duration_s": ours.duration_s,
                "greentune_cpu_j": ours.energy_j["cpu"],
                "greentune_dram_j": ours.energy_j["dram"],
                "greentune_j": ours.total_j,
                "greentune_g": ours.emissions_g,
                "codecarbon_cpu_j": cc.cpu_energy * 3.6e6,
                "codecarbon_ram_j": cc.ram_energy * 3.6e6,
                "codecarbon_j": cc.energy_consumed * 3.6e6,
                "codecarbon_g": cc.emissions * 1000,
                "codecarbon_cpu_power_w": cc.cpu_power,
                "codecarbon_ram_power_w": cc.ram_power,
                "codecarbon_cpu_model": cc.cpu_model,
            }
            row["ratio_greentune_codecarbon"] = row["greentune_j"] / row["codecarbon_j"]
            runs.append(row)
            print(
                f"repeat {i} {mode}: greentune {row['greentune_j']:.1f} J "
                f"(cpu {row['greentune_cpu_j']:.1f}, dram {row['greentune_dram_j']:.1f}) vs "
                f"CodeCarbon {row['codecarbon_j']:.1f} J (cpu {row['codecarbon_cpu_j']:.1f}, "
                f"ram {row['codecarbon_ram_j']:.1f})",
                flush=True,
            )
    summary = {}
    for mode in ("process", "machine"):
        rows = [r for r in runs if r["codecarbon_mode"] == mode]
        summary[mode] = {
            key: statistics.median(r[key] for r in rows)
            for key in (
                "greentune_j", "greentune_cpu_j", "greentune_dram_j", "codecarbon_j",
                "codecarbon_cpu_j", "codecarbon_ram_j", "ratio_greentune_codecarbon",
                "greentune_g", "codecarbon_g", "duration_s",
            )
        }  # fmt: skip
    save(
        "agreement",
        {
            "what": f"{steps} LoRA steps of MiniLM on Victoria 2014, metered by both at once",
            "greentune_source": meter.details(),
            "medians": summary,
            "runs": runs,
        },
    )


def trainer(max_epochs: int, skip_init: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ours = out / "greentune.json"
        cmd = [
            *GREENTUNE, "energy", "measure", "--json", str(ours), "--",
            *GREENTUNE, "run", f"output_dir={tmp}", "name=g", "eval.baselines=[]",
            "energy.enabled=false",
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        metrics = json.loads((out / "g" / "metrics.json").read_text())
        target = metrics["training"]["best_val_loss"]
        theirs, result = out / "trainer.json", out / "trainer_result.json"
        cmd = [
            *GREENTUNE, "energy", "measure", "--json", str(theirs), "--",
            sys.executable, str(ROOT / "benchmarks" / "hf_trainer_full.py"),
            "--target", repr(target), "--max-epochs", str(max_epochs), "--out", str(result),
            "--skip-init", skip_init,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        g, h = json.loads(ours.read_text()), json.loads(theirs.read_text())
        hf = json.loads(result.read_text())
    g_j, h_j = sum(g["energy_j"].values()), sum(h["energy_j"].values())
    save(
        f"trainer_{skip_init}",
        {
            "what": "greentune run (defaults, baselines off) vs HF Trainer full fine-tuning of "
            "the same network to the same validation loss; both under greentune energy measure",
            "greentune": {
                "energy_j": g_j,
                "duration_s": g["duration_s"],
                "best_val_loss": target,
                "steps": metrics["training"]["steps"],
                "train_s": metrics["training"]["train_s"],
                "trainable_parameters": metrics["training"]["trainable_parameters"],
                "test_mape": metrics["test"][metrics["model"]]["mape"],
            },
            "hf_trainer": {"energy_j": h_j, "duration_s": h["duration_s"], **hf},
            "energy_ratio_greentune_trainer": g_j / h_j,
            "kind": g["kind"],
        },
    )


RECIPES = {
    "default": [],
    "ln": ["peft.method=ln"],
    "full-5e-5": ["peft.method=full", "train.lr=5e-5"],
    "full-1e-4": ["peft.method=full", "train.lr=1e-4"],
    "lora-3e-4": ["train.lr=3e-4"],
}


def _spent_until(rows: list[dict], window: str) -> float:
    """Joules from the run's start to the end of ``window``: data, then every window nested in
    train (ridge fit, epochs, validations) that ended by then."""
    end = next(r["end"] for r in rows if r["window"] == window)
    return sum(
        sum(r["energy_j"].values())
        for r in rows
        if r["end"] <= end and (r["window"] == "data" or r["parent"] == "train")
    )


def _validation_costs(ledger: dict, val_curve: list[dict]) -> list[dict]:
    """Per validation: epoch, val_loss and the joules spent until it ended."""
    out = []
    for v in val_curve:
        name = "train/validate-init" if v["epoch"] == -1 else f"train/validate-{v['epoch']}"
        out.append({**v, "spent_j": _spent_until(ledger["rows"], name)})
    return out


def _with_patience(costs: list[dict], patience: int) -> dict:
    """Replay early stopping with another patience on a recorded curve."""
    best, bad = costs[0], 0
    for point in costs[1:]:
        if point["val_loss"] < best["val_loss"]:
            best, bad = point, 0
        else:
            bad += 1
        if bad >= patience:
            return {"stop_epoch": point["epoch"], "best_val_loss": best["val_loss"],
                    "spent_j": point["spent_j"]}  # fmt: skip
    last = costs[-1]
    return {"stop_epoch": last["epoch"], "best_val_loss": best["val_loss"],
            "spent_j": last["spent_j"]}  # fmt: skip


def recipes(names: list[str], seeds: list[int]) -> None:
    """Fine-tuning recipes on Victoria 2014 (baselines off), several seeds: validation curve,
    energy per validation from the ledger, early stopping replayed at patience 1, 2 and 3."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for seed in seeds:
                run = Path(tmp) / f"{name}-{seed}"
                cmd = [
                    *GREENTUNE, "run", f"output_dir={tmp}", f"name={run.name}",
                    "eval.baselines=[]", f"seed={seed}", *RECIPES[name],
                ]  # fmt: skip
                subprocess.run(cmd, check=True, capture_output=True)
                metrics = json.loads((run / "metrics.json").read_text())
                ledger = json.loads((run / "energy.json").read_text())
                costs = _validation_costs(ledger, metrics["training"]["val_curve"])
                row = {
                    "recipe": name,
                    "seed": seed,
                    "overrides": RECIPES[name],
                    "steps": metrics["training"]["steps"],
                    "best_val_loss": metrics["training"]["best_val_loss"],
                    "test_mape": metrics["test"][metrics["model"]]["mape"],
                    "run_j": metrics["energy"]["run_wh"] * 3600,
                    "curve": costs,
                    **{f"patience_{p}": _with_patience(costs, p) for p in (1, 2, 3)},
                }
                runs.append(row)
                print(
                    f"{name} seed {seed}: best val {row['best_val_loss']:.5f}, "
                    f"run {row['run_j']:.0f} J, MAPE {row['test_mape']:.2f}",
                    flush=True,
                )
    medians = {}
    for name in names:
        rows = [r for r in runs if r["recipe"] == name]
        medians[name] = {
            "best_val_loss": statistics.median(r["best_val_loss"] for r in rows),
            "test_mape": statistics.median(r["test_mape"] for r in rows),
            "run_j": statistics.median(r["run_j"] for r in rows),
            **{
                f"patience_{p}": {
                    "best_val_loss": statistics.median(r[f"patience_{p}"]["best_val_loss"]
                                                       for r in rows),
                    "spent_j": statistics.median(r[f"patience_{p}"]["spent_j"] for r in rows),
                }
                for p in (1, 2, 3)
            },
        }  # fmt: skip
    save(
        "recipes",
        {
            "what": "Victoria 2014 fine-tuning recipes, baselines off, medians over seeds",
            "seeds": seeds,
            "medians": medians,
            "runs": runs,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--steps", type=int, default=80)
    p = sub.add_parser("agreement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p = sub.add_parser("trainer")
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--skip-init", choices=["ridge", "random"], default="ridge")
    p = sub.add_parser("recipes")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    args = parser.parse_args()
    if args.part == "overhead":
        overhead(args.pairs, args.steps)
    elif args.part == "agreement":
        agreement(args.repeats, args.steps)
    elif args.part == "recipes":
        recipes(args.recipes, args.seeds)
    else:
        trainer(args.max_epochs, args.skip_init)


if __name__ == "__main__":
    main()
