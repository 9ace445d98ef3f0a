"""Energy figures of the ledger issue, each side by side with its anchor in one run.

    .venv/bin/python benchmarks/energy.py overhead  [--pairs 5] [--steps 80]
    .venv/bin/python benchmarks/energy.py agreement [--repeats 3] [--steps 40]
    .venv/bin/python benchmarks/energy.py trainer   [--methods lora full] [--seeds 0 1 2]
    .venv/bin/python benchmarks/energy.py recipes   [--recipes default lora-3e-4] [--seeds 42 1 2]
        [--tag new-default]
    .venv/bin/python benchmarks/energy.py other-data [--seeds 0 1 2] [--until 2014-01-01]

overhead:  the same `greentune run` (Victoria 2014, MiniLM + LoRA) with metering on and off,
           interleaved pairs in fresh processes; wall-time ratio on/off, median over pairs.
agreement: one training workload metered at once by greentune's process model and by
           CodeCarbon's OfflineEmissionsTracker (process and machine mode); energy ratio.
trainer:   `greentune run` (baselines off) vs an HF Trainer script (hf_trainer.py) on the same
           network, data, threads and seeds, LoRA and full fine-tuning, the same early stopping
           (patience 2, best restored) and the same 3-value learning-rate grid chosen on
           validation; energy and test MAPE at each side's own stopping point, and energy until
           each first reaches the worse of the two bests; both metered by `greentune energy
           measure`.
recipes:   fine-tuning recipes x seeds: validation curve with the energy spent until each
           validation (from the ledger), early stopping replayed at patience 1-4; each seed
           runs every recipe back to back, and the energy of each against the first recipe's
           is given per seed (`--recipes default earlier-default --seeds 0 1 2 --tag
           new-default`: today's defaults against the ones before train.lr became auto).
other-data: LoRA's learning rate (1e-4 / 3e-4 / 1e-3) and patience (1-4) chosen on other data
           than the demo (Victoria 2012-2013 from ../shared/data), 3 seeds, 6 epochs without
           stopping, patience replayed on each validation curve.

Writes benchmarks/results/energy_<part>.json (recipes: energy_recipes[-<tag>].json and .md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from greentune.energy.base import kind_of

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GREENTUNE = [str(ROOT / ".venv" / "bin" / "greentune")]


def save(part: str, result: dict, quiet: bool = False) -> None:
    RESULTS.mkdir(exist_ok=True)
    result["machine"] = machine_info()
    result["date"] = time.strftime("%Y-%m-%d")
    path = RESULTS / f"energy_{part}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    if not quiet:
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


# The learning-rate grid each side searches on validation (the same 3 values for both sides).
GRID = {"lora": (1e-4, 3e-4, 1e-3), "full": (1e-5, 3e-5, 1e-4)}
SIDES = ("greentune", "hf")


def _iso_s(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _measured(cmd: list[str], measure_json: Path) -> tuple[float, float, float, dict]:
    """Run ``cmd`` under ``greentune energy measure``: (start, end) wall times, joules, result."""
    full = [*GREENTUNE, "energy", "measure", "--json", str(measure_json), "--", *cmd]
    t0 = time.time()
    done = subprocess.run(full, capture_output=True, text=True)
    t1 = time.time()
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    measured = json.loads(measure_json.read_text())
    return t0, t1, sum(measured["energy_j"].values()), measured


def _greentune_side(
    method: str, lr: float, seed: int, epochs: int, patience: int, tmp: Path
) -> dict:
    name = f"g-{method}-{lr:g}-{seed}"
    cmd = [
        *GREENTUNE, "run", f"output_dir={tmp}", f"name={name}", "eval.baselines=[]",
        f"peft.method={method}", f"train.lr={lr}", f"seed={seed}", f"train.epochs={epochs}",
        f"train.patience={patience}",
    ]  # fmt: skip
    t0, t1, joules, measured = _measured(cmd, tmp / f"{name}.json")
    metrics = json.loads((tmp / name / "metrics.json").read_text())
    ledger = json.loads((tmp / name / "energy.json").read_text())
    ends = {r["window"]: _iso_s(r["end"]) for r in ledger["rows"]}
    windows = {-1: "train/validate-init"}
    curve = [
        {**v, "time": ends[windows.get(v["epoch"], f"train/validate-{v['epoch']}")]}
        for v in metrics["training"]["val_curve"]
    ]
    training = metrics["training"]
    return {
        "best_val_loss": training["best_val_loss"],
        "test_mape": metrics["test"][metrics["model"]]["mape"],
        "steps": training["steps"],
        "trainable_parameters": training["trainable_parameters"],
        "curve": curve,
        "start": t0, "end": t1, "energy_j": joules, "kind": measured["kind"],
    }  # fmt: skip


def _hf_side(method: str, lr: float, seed: int, epochs: int, patience: int, tmp: Path) -> dict:
    name = f"h-{method}-{lr:g}-{seed}"
    out = tmp / f"{name}-result.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "hf_trainer.py"), "--method", method,
        "--lr", repr(lr), "--seed", str(seed), "--epochs", str(epochs),
        "--patience", str(patience), "--out", str(out),
    ]  # fmt: skip
    t0, t1, joules, measured = _measured(cmd, tmp / f"{name}.json")
    hf = json.loads(out.read_text())
    return {
        "best_val_loss": hf["best_val_loss"],
        "restored_val_loss": hf["restored_val_loss"],
        "test_mape": hf["test_mape"],
        "steps": hf["steps"],
        "trainable_parameters": hf["trainable_parameters"],
        "curve": hf["history"],
        "start": t0, "end": t1, "energy_j": joules, "kind": measured["kind"],
    }  # fmt: skip


def _joules_until(row: dict, target: float) -> float | None:
    """Metered joules from the command's start until its first validation at or below
    ``target``, apportioned by wall time (the modelled power is near constant while training)."""
    for point in row["curve"]:
        if point["val_loss"] <= target:
            share = (point["time"] - row["start"]) / (row["end"] - row["start"])
            return row["energy_j"] * share
    return None


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _best_trained(row: dict) -> float:
    """The best validation loss of the trained epochs (greentune's curve starts at epoch -1)."""
    return min(p["val_loss"] for p in row["curve"] if p["epoch"] != -1)


def fair_summary(runs: list[dict], seeds: list[int]) -> dict:
    """Each side's learning rate per method chosen by the median best validation loss over the
    seeds; at that rate: energy and test MAPE at its own stopping point, and the energy until
    each side first reaches the worse of the two sides' best validation losses (per seed)."""
    out: dict = {"chosen_lr": {}, "methods": {}}
    by = {(r["side"], r["method"], r["lr"], r["seed"]): r for r in runs}
    for method, grid in GRID.items():
        chosen = {}
        for side in SIDES:
            # the best validation loss, then (ties: greentune kept its start at several rates)
            # the best of the trained epochs
            medians = {
                lr: (
                    statistics.median(by[side, method, lr, s]["best_val_loss"] for s in seeds),
                    statistics.median(_best_trained(by[side, method, lr, s]) for s in seeds),
                )
                for lr in grid
                if all((side, method, lr, s) in by for s in seeds)
            }
            if medians:
                chosen[side] = min(medians, key=medians.__getitem__)
                out["chosen_lr"].setdefault(method, {})[side] = {
                    "lr": chosen[side],
                    "median_best_val_loss_by_lr": {lr: m[0] for lr, m in medians.items()},
                    "median_best_trained_val_loss_by_lr": {lr: m[1] for lr, m in medians.items()},
                }
        if len(chosen) < 2:
            continue
        rows = {side: [by[side, method, chosen[side], s] for s in seeds] for side in SIDES}
        per_seed = []
        for g, h in zip(rows["greentune"], rows["hf"], strict=True):
            target = max(g["best_val_loss"], h["best_val_loss"])
            g_j, h_j = _joules_until(g, target), _joules_until(h, target)
            assert g_j is not None and h_j is not None  # both reach the worse of the two bests
            # greentune also validates the ridge start (epoch -1) and keeps it when no epoch
            # beats it, which the Trainer cannot; the same comparison over trained epochs only
            trained = {**g, "curve": [p for p in g["curve"] if p["epoch"] != -1]}
            target_trained = max(_best_trained(g), h["best_val_loss"])
            g_tj = _joules_until(trained, target_trained)
            h_tj = _joules_until(h, target_trained)
            assert g_tj is not None and h_tj is not None
            per_seed.append({
                "seed": g["seed"], "target_val_loss": target, "greentune_j": g_j, "hf_j": h_j,
                "ratio_greentune_hf": g_j / h_j,
                "greentune_kept_start": g["curve"][0]["val_loss"] == g["best_val_loss"],
                "trained_target_val_loss": target_trained, "trained_greentune_j": g_tj,
                "trained_hf_j": h_tj, "trained_ratio_greentune_hf": g_tj / h_tj,
                "stop_ratio_greentune_hf": g["energy_j"] / h["energy_j"],
            })  # fmt: skip
        out["methods"][method] = {
            "own_stopping_point": {
                side: {
                    key: _spread([r[key] for r in rows[side]])
                    for key in ("energy_j", "test_mape", "best_val_loss", "steps")
                }
                for side in SIDES
            },
            "stop_ratio_greentune_hf": _spread([p["stop_ratio_greentune_hf"] for p in per_seed]),
            "common_target": {
                "per_seed": per_seed,
                "greentune_j": _spread([p["greentune_j"] for p in per_seed]),
                "hf_j": _spread([p["hf_j"] for p in per_seed]),
                "ratio_greentune_hf": _spread([p["ratio_greentune_hf"] for p in per_seed]),
                "trained_ratio_greentune_hf": _spread(
                    [p["trained_ratio_greentune_hf"] for p in per_seed]
                ),
                "greentune_kept_start": sum(p["greentune_kept_start"] for p in per_seed),
            },
        }
    return out


def _range(d: dict, form: str) -> str:
    return f"{d['median']:{form}} [{d['min']:{form}}–{d['max']:{form}}]"


def trainer_markdown(summary: dict) -> str:
    """results/energy_trainer.md: the chosen rates, then each method side by side."""
    lines = [
        "| method | side | lr (chosen on validation) | best val loss | test MAPE % "
        "| energy J (model), own stop | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, m in summary["methods"].items():
        for side in SIDES:
            own = m["own_stopping_point"][side]
            lr = summary["chosen_lr"][method][side]["lr"]
            lines.append(
                f"| {method} | {side} | {lr:g} | {_range(own['best_val_loss'], '.5f')} "
                f"| {_range(own['test_mape'], '.3f')} | {_range(own['energy_j'], '.0f')} "
                f"| {own['steps']['median']:.0f} |"
            )
    lines += [
        "",
        "| method | greentune / HF energy, own stop | greentune / HF energy to the worse best "
        "| same, trained epochs only | seeds where greentune kept its ridge start |",
        "|---|---|---|---|---|",
    ]
    for method, m in summary["methods"].items():
        c = m["common_target"]
        lines.append(
            f"| {method} | {_range(m['stop_ratio_greentune_hf'], '.2f')} "
            f"| {_range(c['ratio_greentune_hf'], '.2f')} "
            f"| {_range(c['trained_ratio_greentune_hf'], '.2f')} "
            f"| {c['greentune_kept_start']} of {len(c['per_seed'])} |"
        )
    return "\n".join(lines) + "\n"


def trainer(methods: list[str], seeds: list[int], epochs: int, patience: int) -> None:
    """greentune run vs the HF Trainer on the same network, data, splits, threads and seeds, the
    same early-stopping rule (patience, best restored) and the same learning-rate grid, chosen
    on validation. Runs are interleaved (greentune, then HF, per setting) and every finished one
    is kept in the results file, so an interrupted benchmark resumes where it stopped."""
    path = RESULTS / "energy_trainer.json"
    settings = {"epochs": epochs, "patience": patience, "grid": GRID}
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = old.get("settings", {})
    same = (kept.get("epochs"), kept.get("patience")) == (epochs, patience)
    # a run stays valid when the grid grows (both sides get the new rate); one no longer in
    # the grid is dropped
    runs = [r for r in old.get("runs", []) if same and r["lr"] in GRID[r["method"]]]
    done = {(r["side"], r["method"], r["lr"], r["seed"]) for r in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for method in methods:
                for lr in GRID[method]:
                    for side in SIDES:
                        if (side, method, lr, seed) in done:
                            continue
                        run = _greentune_side if side == "greentune" else _hf_side
                        row = run(method, lr, seed, epochs, patience, Path(tmp))
                        runs.append({"side": side, "method": method, "lr": lr, "seed": seed,
                                     **row})  # fmt: skip
                        print(
                            f"{side} {method} lr {lr:g} seed {seed}: best val "
                            f"{row['best_val_loss']:.5f}, MAPE {row['test_mape']:.3f}, "
                            f"{row['energy_j']:.0f} J",
                            flush=True,
                        )
                        save("trainer", {
                            "what": "greentune run vs HF Trainer, same network (MiniLM + patch "
                            "encoder, ridge skip, dropout 0), Victoria 2014 windows, threads "
                            "and seeds; both stop early with the same patience and restore "
                            "their best; each side's learning rate chosen on validation from "
                            "the same grid; both metered by greentune energy measure",
                            "settings": settings,
                            "seeds": seeds,
                            "summary": fair_summary(runs, seeds),
                            "kind": row["kind"],
                            "runs": runs,
                        }, quiet=True)  # fmt: skip
    summary = fair_summary(runs, seeds)
    # the file's summary follows the summary code too, not only the last run it saved
    save("trainer", {**json.loads(path.read_text()), "summary": summary}, quiet=True)
    (RESULTS / "energy_trainer.md").write_text(trainer_markdown(summary))
    print(trainer_markdown(summary))


RECIPES = {
    "default": [],
    # the forecast default before train.lr / train.patience became auto (until 2026-12-04)
    "earlier-default": ["train.lr=3e-4", "train.patience=2"],
    "ln": ["peft.method=ln"],
    "full-5e-5": ["peft.method=full", "train.lr=5e-5"],
    "full-1e-4": ["peft.method=full", "train.lr=1e-4"],
    "lora-3e-4": ["train.lr=3e-4"],
    # no early stopping: the whole curve, on which every patience is replayed
    "lora-3e-4-nostop": ["train.lr=3e-4", "train.patience=null"],
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


PATIENCES = (1, 2, 3, 4)


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


def recipes(names: list[str], seeds: list[int], tag: str = "") -> None:
    """Fine-tuning recipes on Victoria 2014 (baselines off), several seeds: validation curve,
    energy per validation from the ledger, early stopping replayed at patience 1 to 4. Each
    seed runs every recipe, in an order that alternates from seed to seed, so that the
    machine's drift during the benchmark falls on every recipe alike."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(seeds):
            for name in names if i % 2 == 0 else names[::-1]:
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
                    "train_j": sum(
                        sum(r["energy_j"].values())
                        for r in ledger["rows"]
                        if r["parent"] == "train"
                    ),
                    "curve": costs,
                    "kind": kind_of(row["kind"] for row in ledger["rows"]),
                    **{f"patience_{p}": _with_patience(costs, p) for p in PATIENCES},
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
            "train_j": statistics.median(r["train_j"] for r in rows),
            **{
                f"patience_{p}": {
                    "best_val_loss": statistics.median(r[f"patience_{p}"]["best_val_loss"]
                                                       for r in rows),
                    "spent_j": statistics.median(r[f"patience_{p}"]["spent_j"] for r in rows),
                }
                for p in PATIENCES
            },
        }  # fmt: skip
    paired = _paired_ratios(runs, names)
    part = f"recipes-{tag}" if tag else "recipes"
    save(
        part,
        {
            "what": "Victoria 2014 fine-tuning recipes, baselines off, medians over seeds",
            "seeds": seeds,
            "kind": kind_of(r["kind"] for r in runs),
            "medians": medians,
            "vs_first": paired,
            "runs": runs,
        },
    )
    text = recipes_markdown(names, medians, paired, seeds, kind_of(r["kind"] for r in runs))
    (RESULTS / f"energy_{part}.md").write_text(text)
    print(text)


def _paired_ratios(runs: list[dict], names: list[str]) -> dict[str, dict]:
    """Each recipe's run and training energy over the first recipe's, seed by seed (the same
    seed's runs ran back to back): median and range."""
    by = {(r["recipe"], r["seed"]): r for r in runs}
    out = {}
    for name in names[1:]:
        ratios: dict[str, list[float]] = {"run_j": [], "train_j": []}
        for (recipe, seed), row in by.items():
            if recipe != name or (names[0], seed) not in by:
                continue
            for key in ratios:
                ratios[key].append(row[key] / by[(names[0], seed)][key])
        out[name] = {
            key: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for key, v in ratios.items()
        }
    return out


def recipes_markdown(
    names: list[str],
    medians: dict[str, dict],
    paired: dict[str, dict],
    seeds: list[int],
    kind: str | None,
) -> str:
    first = names[0]
    lines = [
        f"Victoria 2014 (the demo's windows), baselines off, seeds {', '.join(map(str, seeds))}; "
        f"each seed runs every recipe back to back. Energy: **{kind}**; medians over seeds; "
        f"ratios are per seed against `{first}`, median [range].",
        "",
        f"| recipe | overrides | best val loss | test MAPE % | train J | run J | train J / {first} "
        f"| run J / {first} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        m = medians[name]
        ratio = paired.get(name)

        def cell(key: str, ratio: dict | None = ratio) -> str:
            if ratio is None:
                return "1"
            r = ratio[key]
            return f"{r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}]"

        over = " ".join(RECIPES[name]) or "(none: the product's defaults)"
        lines.append(
            f"| {name} | {over} | {m['best_val_loss']:.5f} | {m['test_mape']:.3f} | "
            f"{m['train_j']:.0f} | {m['run_j']:.0f} | {cell('train_j')} | {cell('run_j')} |"
        )
    return "\n".join(lines) + "\n"


VIC_CSV = ROOT.parent / "shared" / "data" / "demand" / "vic_elec" / "vic_electricity.csv"
OTHER_LRS = (1e-4, 3e-4, 1e-3)
# Victoria 2012-2013 as a CSV source, cut like the demo (7 days -> next day, 8 + 8 weeks);
# the training stride is the product's default rule (about 3,000 windows), as on the demo
OTHER_DATA = [
    "data.source=csv", "data.time_col=Time", "data.target=Demand",
    "data.covariates=[Temperature]", "data.temperature_col=Temperature",
    "data.timezone=Australia/Melbourne", "data.country=AU", "data.subdivision=VIC",
    "data.context_length=336", "data.horizon=48", "data.val=56D", "data.test=56D",
]  # fmt: skip


def _first_years(source: Path, until: str, out: Path) -> Path:
    """The Victoria series before ``until`` (UTC), as a temporary CSV: other data than the demo
    year, on which defaults may be chosen without looking at the demo's test split."""
    import pandas as pd

    frame = pd.read_csv(source)
    keep = pd.to_datetime(frame["Time"], utc=True) < pd.Timestamp(until, tz="UTC")
    frame[keep].drop(columns=["Date", "Holiday"]).to_csv(out, index=False)
    return out


def other_data(seeds: list[int], until: str) -> None:
    """LoRA's learning rate and the patience chosen on other data (Victoria before ``until``):
    each rate x seed trained 6 epochs without stopping, patience 1-4 replayed on its curve.
    Every finished run is kept in the results file, so an interrupted benchmark resumes."""
    path = RESULTS / "energy_other_data.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    # finished runs are reused only when they were trained on the same data
    done = saved.get("runs", []) if saved.get("until") == until else []
    key = {(r["lr"], r["seed"]) for r in done}
    runs = list(done)
    with tempfile.TemporaryDirectory() as tmp:
        csv = _first_years(VIC_CSV, until, Path(tmp) / "vic_before.csv")
        for lr in OTHER_LRS:
            for seed in seeds:
                if (lr, seed) in key:
                    continue
                name = f"lora-{lr:g}-{seed}"
                run = Path(tmp) / name
                cmd = [
                    *GREENTUNE, "run", f"output_dir={tmp}", f"name={name}", *OTHER_DATA,
                    f"data.path={csv}", "eval.baselines=[]", f"seed={seed}", f"train.lr={lr}",
                    "train.patience=null",
                ]  # fmt: skip
                done_run = subprocess.run(cmd, capture_output=True, text=True)
                if done_run.returncode != 0:
                    sys.exit(f"failed: {' '.join(cmd)}\n{done_run.stdout[-3000:]}"
                             f"\n{done_run.stderr[-3000:]}")  # fmt: skip
                metrics = json.loads((run / "metrics.json").read_text())
                ledger = json.loads((run / "energy.json").read_text())
                costs = _validation_costs(ledger, metrics["training"]["val_curve"])
                runs.append({
                    "lr": lr, "seed": seed, "steps": metrics["training"]["steps"],
                    "best_val_loss": metrics["training"]["best_val_loss"],
                    # recorded, never used to choose
                    "test_mape": metrics["test"][metrics["model"]]["mape"],
                    "run_j": metrics["energy"]["run_wh"] * 3600, "curve": costs,
                    **{f"patience_{p}": _with_patience(costs, p) for p in PATIENCES},
                })  # fmt: skip
                print(f"lr {lr:g} seed {seed}: best val {runs[-1]['best_val_loss']:.5f}, "
                      f"{runs[-1]['run_j']:.0f} J", flush=True)  # fmt: skip
                summary = other_data_summary(runs, seeds)
                save("other_data", {"what": f"Victoria before {until}, LoRA, 6 epochs no "
                                            "stopping, patience replayed; energy modelled",
                                    "until": until, "seeds": seeds, "summary": summary,
                                    "runs": runs}, quiet=True)  # fmt: skip
    summary = other_data_summary(runs, seeds)
    text = other_data_markdown(summary, until)
    (RESULTS / "energy_other_data.md").write_text(text)
    print(text)


def other_data_summary(runs: list[dict], seeds: list[int]) -> dict:
    """Per rate: median best validation loss (whole curve) and, per patience, the median best
    validation loss it keeps, the median joules until it stops and how many seeds it loses
    (stops before the curve's best). The rate: lowest median best validation loss; the
    patience: the smallest that loses no seed at that rate."""
    by_lr: dict = {}
    for lr in OTHER_LRS:
        rows = [r for r in runs if r["lr"] == lr and r["seed"] in seeds]
        if len(rows) < len(seeds):
            continue
        by_lr[lr] = {
            "median_best_val_loss": statistics.median(r["best_val_loss"] for r in rows),
            "kept_start": sum(
                min(rows_p["val_loss"] for rows_p in r["curve"]) == r["curve"][0]["val_loss"]
                for r in rows
            ),
            "median_full_j": statistics.median(r["curve"][-1]["spent_j"] for r in rows),
            "patience": {
                p: {
                    "median_best_val_loss": statistics.median(
                        r[f"patience_{p}"]["best_val_loss"] for r in rows
                    ),
                    "median_spent_j": statistics.median(
                        r[f"patience_{p}"]["spent_j"] for r in rows
                    ),
                    "seeds_lost": sum(
                        r[f"patience_{p}"]["best_val_loss"] > r["best_val_loss"] for r in rows
                    ),
                }
                for p in PATIENCES
            },
        }
    out: dict = {"by_lr": by_lr}
    if by_lr:
        lr = min(by_lr, key=lambda x: by_lr[x]["median_best_val_loss"])
        lossless = [p for p in PATIENCES if by_lr[lr]["patience"][p]["seeds_lost"] == 0]
        out["chosen_lr"] = lr
        out["chosen_patience"] = min(lossless) if lossless else None
    return out


def other_data_markdown(summary: dict, until: str) -> str:
    lines = [
        f"# LoRA learning rate and patience chosen on other data: Victoria before {until}",
        "",
        "MiniLM + LoRA, the product's defaults otherwise, 6 epochs without stopping per rate and "
        "seed; patience 1-4 replayed on each validation curve (best restored). Energy "
        "**modelled**, joules until the stop. Medians over seeds; *lost* = seeds whose replayed "
        "stop keeps a worse model than the curve's best. Test data of this series are not read "
        "for the choice.",
        "",
        "| lr | median best val (6 epochs) | seeds that kept the ridge start | J, 6 epochs "
        "| patience 1: val / J / lost | patience 2 | patience 3 | patience 4 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lr, row in summary["by_lr"].items():
        cells = [
            f"{q['median_best_val_loss']:.5f} / {q['median_spent_j']:.0f} / {q['seeds_lost']}"
            for q in (row["patience"][p] for p in PATIENCES)
        ]
        lines.append(
            f"| {lr:g} | {row['median_best_val_loss']:.5f} | {row['kept_start']} | "
            f"{row['median_full_j']:.0f} | " + " | ".join(cells) + " |"
        )
    if "chosen_lr" in summary:
        chosen = f"lr {summary['chosen_lr']:g}, patience {summary['chosen_patience']}"
        lines += ["", f"Chosen: {chosen} (the smallest patience that loses no seed)."]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--methods", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--patience", type=int, default=2)
    p = sub.add_parser("recipes")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--tag", default="", help="suffix of the result files")
    p = sub.add_parser("other-data")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--until", default="2014-01-01", help="use the series before this date")
    args = parser.parse_args()
    if args.part == "overhead":
        overhead(args.pairs, args.steps)
    elif args.part == "agreement":
        agreement(args.repeats, args.steps)
    elif args.part == "recipes":
        recipes(args.recipes, args.seeds, args.tag)
    elif args.part == "other-data":
        other_data(args.seeds, args.until)
    else:
        trainer(args.methods, args.seeds, args.epochs, args.patience)


if __name__ == "__main__":
    main()
