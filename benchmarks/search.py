"""The energy-aware search against the default configuration and against random search with
the same number of trials, on Victoria demand (day-ahead).

Both searches start from the default configuration (trial 0), get the same trials, data, splits,
seed and stopping rule (the run's early stopping; the search's energy-median pruning for both),
and are judged on validation; test is read once, for the recommended trial and the default.
Energy is the runs' ledgers (modelled on a VM without counters; the tables say so).

    python benchmarks/search.py [--dataset embedded|vic_elec] [--trials 8]
    python benchmarks/search.py --samplers nsga2   # rerun one sampler; the other's trials
                                                   # are kept from the saved results
    python benchmarks/search.py --repeat 3   # the saved search's default and recommended
                                             # configurations run again, interleaved
    python benchmarks/search.py --repeat 3 --against today
        # the recommended configuration against today's default (the config untouched:
        # train.lr and train.patience resolved per task, as `greentune run` trains)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import git_commit, machine_info, same_src
from victoria import DATASETS, VIC_ELEC

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.config import load_config
from greentune.rundir import RunDir
from greentune.search import SearchOptions, SearchResult, TrialRow, search
from greentune.search.space import trial_config
from greentune.search.study import TRIAL_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLERS = ("nsga2", "random")
SPACE = """\
train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
peft.method: [lora, ln]
model.num_layers: [null, 4, 2]
data.train_stride: [4, 8, 16]
train.epochs: {type: int, low: 2, high: 6}
"""


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (energy, metric; both minimised) up to ``ref``: a front's
    size in one number (larger is better)."""
    area, best = 0.0, ref[1]
    for x, y in sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1]):
        if y < best:  # sweeping from the cheapest: each better point adds its strip
            area += (ref[0] - x) * (best - y)
            best = y
    return area


def _ratio(default: TrialRow | None, chosen: TrialRow | None) -> float | None:
    if default is None or chosen is None or not default.energy_wh or not chosen.energy_wh:
        return None
    return default.energy_wh / chosen.energy_wh


def generations(result: SearchResult) -> dict[int, int | None]:
    """Each trial's NSGA-II generation as the study stored it (None: not a genetic sampler, or
    a pruned trial): which trials were bred and which drawn at random."""
    import optuna

    study = optuna.load_study(study_name=result.study, storage=result.storage)
    key = "NSGAIISampler:generation"
    return {t.number: t.system_attrs.get(key) for t in study.get_trials(deepcopy=False)}


def summary(result: SearchResult) -> dict:
    rows = []
    generation = generations(result)
    for t in result.trials:
        run = RunDir(t.run) if t.run else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state,
                "params": t.params,
                "val_mape": t.value,
                "energy_wh": t.energy_wh,
                "run_wh": t.run_wh,
                "train_s": run.metrics.training.train_s if run else None,
                "front": t.number in result.front,
                "generation": generation.get(t.number),
                "repeat_of": t.repeat_of,
            }
        )
    chosen, default = result.row(result.greenest), result.row(result.default)
    cheaper = result.row(result.cheaper)
    return {
        "trials": rows,
        "front": result.front,
        "best": result.best,
        "recommended": result.greenest,
        "recommended_test_mape": chosen.test if chosen else None,
        "default": result.default,
        "default_test_mape": default.test if default else None,
        "energy_ratio_default_to_recommended": (
            default.energy_wh / chosen.energy_wh
            if chosen and default and chosen.energy_wh
            else None
        ),
        "search_wh": result.spent_wh,
        # the next trade-off down the front: what a looser target would buy
        "cheaper": result.cheaper,
        "cheaper_val_mape": cheaper.value if cheaper else None,
        "energy_ratio_recommended_to_cheaper": (
            chosen.energy_wh / cheaper.energy_wh
            if chosen and cheaper and chosen.energy_wh and cheaper.energy_wh
            else None
        ),
    }


def repeat(dataset: str, repeats: int, against: str = "search") -> None:
    """The saved NSGA-II search's recommended configuration against a default, each run
    ``repeats`` more times as the search ran its trials (same overrides), interleaved with the
    order alternating: one draw per configuration flatters the one picked as the cheapest.
    ``against="search"``: the default as the search ran it (its trial 0); ``"today"``: the
    config untouched, so ``train.lr`` and ``train.patience`` resolve to today's defaults."""
    saved = json.loads((RESULTS / f"search-{dataset}.json").read_text())
    result = saved["nsga2"]
    trials = {t["trial"]: t for t in result["trials"]}
    configs = {
        "default": trials[result["default"]]["params"] if against == "search" else {},
        "recommended": trials[result["recommended"]]["params"],
    }
    work = RESULTS / "runs"
    base = load_config(None, [*DATASETS[dataset], "energy.carbon=static:AU", f"output_dir={work}"])
    draws: dict[str, list[dict]] = {label: [] for label in configs}
    for i in range(repeats):
        for label in configs if i % 2 == 0 else reversed(configs):
            name = f"repeat-{dataset}-{label}-{i}"
            shutil.rmtree(work / name, ignore_errors=True)
            extra = [*TRIAL_DEFAULTS, f"output_dir={work}", f"name={name}"]
            run = gt.run(trial_config(base, configs[label], extra), echo=lambda m: None)
            m = run.metrics
            assert m.result.bill is not None and m.validation is not None
            draws[label].append(
                {
                    "energy_wh": m.result.bill.energy_wh,
                    "val_mape": m.validation[m.model]["mape"],
                    "lr": run.config.train.lr,
                    "patience": run.config.train.patience,
                    "epochs_run": m.training.epochs_run if m.training else None,
                }
            )
            print(f"{label} {i}: {draws[label][-1]}", flush=True)
    med = {k: statistics.median(d["energy_wh"] for d in v) for k, v in draws.items()}
    out = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "dataset": dataset,
        "against": against,
        "configs": configs,
        # today's default never ran in the search: it has no draw there
        "search_draws_wh": {
            k: trials[result[k]]["energy_wh"] if configs[k] or k == "recommended" else None
            for k in configs
        },
        "draws": draws,
        "median_wh": med,
        "ratio_default_to_recommended": med["default"] / med["recommended"],
    }
    stem = f"search-{dataset}-repeats" + ("-today" if against == "today" else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2))
    which = {
        "search": "the default as the search ran it (its trial 0)",
        "today": "today's default: the config untouched, train.lr and train.patience resolved "
        "per task as `greentune run` does",
    }[against]
    lines = [
        f"# The search's recommended configuration against {which} ({dataset})",
        "",
        f"Machine: {out['machine']['cpu']}, {out['date']}. Energy **modelled** (the network "
        f"row's bill, as in the search). {repeats} runs each, interleaved, order alternating.",
        "",
        "| configuration | lr, patience | Wh in the search | Wh, each repeat | median Wh | "
        "epochs run | val MAPE |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in configs:
        each = ", ".join(f"{d['energy_wh']:.3g}" for d in draws[k])
        vals = sorted({round(d["val_mape"], 3) for d in draws[k]})
        searched = out["search_draws_wh"][k]
        lines.append(
            f"| {k} | {draws[k][0]['lr']:g}, {draws[k][0]['patience']} | "
            f"{'–' if searched is None else f'{searched:.3g}'} | {each} | {med[k]:.3g} | "
            f"{', '.join(str(d['epochs_run']) for d in draws[k])} | "
            f"{', '.join(f'{v:.3f}' for v in vals)} |"
        )
    lines += [
        "",
        "Default / recommended, median over repeats: "
        f"**{out['ratio_default_to_recommended']:.2f}x**.",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def kept(path: Path, sampler: str, out: dict) -> dict:
    """A sampler's results from the saved run, where that run searched the same dataset,
    number of trials and space: a rerun of the other sampler is then compared with them."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: run both samplers (--samplers nsga2,random)")
    saved = json.loads(path.read_text())
    for key in ("dataset", "trials", "space"):
        if saved.get(key) != out[key]:
            raise SystemExit(
                f"{path}: its {key} differs from this run's; run both samplers "
                "(--samplers nsga2,random)"
            )
    result = saved[sampler]
    # trials from other code would not compare: refuse where the saved run's code is known and
    # differs in src/ (the stop-40 results predate this record)
    commit = result.get("commit")
    if commit and not same_src(commit, "HEAD"):
        raise SystemExit(
            f"{path}: {sampler}'s trials ran on commit {commit}, whose src/ differs from "
            "HEAD's; run both samplers"
        )
    result.setdefault("measured", "in an earlier run")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="embedded", choices=sorted(DATASETS))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=0, help="rerun the saved search's picks")
    parser.add_argument(
        "--against",
        default="search",
        choices=["search", "today"],
        help="with --repeat: the default as the search ran it, or today's default",
    )
    parser.add_argument(
        "--samplers",
        default="nsga2,random",
        help="the samplers to run; any other keeps its trials from the saved results (same "
        "dataset, trials and space)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the saved studies: a killed benchmark goes on, a finished one is summarised "
        "again",
    )
    args = parser.parse_args()
    if args.dataset == "vic_elec" and not VIC_ELEC.is_file():
        print(f"{VIC_ELEC} not found; nothing to do")
        return
    quiet_libraries()
    if args.repeat:
        repeat(args.dataset, args.repeat, args.against)
        return
    work = RESULTS / "runs"
    work.mkdir(parents=True, exist_ok=True)
    space = work / "search-space.yaml"
    space.write_text(SPACE)
    out: dict = {
        "machine": machine_info(),
        "dataset": args.dataset,
        "trials": args.trials,
        "space": SPACE,
        "target": 0.01,
    }
    chosen = args.samplers.split(",")
    if unknown := set(chosen) - set(SAMPLERS):
        parser.error(f"--samplers: unknown {', '.join(sorted(unknown))}; valid: nsga2, random")
    saved_path = RESULTS / f"search-{args.dataset}.json"
    for sampler in SAMPLERS:
        if sampler not in chosen:
            out[sampler] = kept(saved_path, sampler, out)
            continue
        study = f"search-{args.dataset}-{sampler}"
        if not args.resume:
            shutil.rmtree(work / study, ignore_errors=True)
        opts = SearchOptions(
            space=space,
            trials=args.trials,
            overrides=(*DATASETS[args.dataset], "energy.carbon=static:AU", f"output_dir={work}"),
            target=0.01,
            study=study,
            sampler=sampler,
            seed=0,
        )
        result = search(opts, log=lambda m, s=sampler: print(f"  [{s}] {m}", flush=True))
        out[sampler] = summary(result)
        out[sampler]["measured"] = time.strftime("%Y-%m-%d")
        # the code that wrote this summary: with --resume, trials may have trained on an earlier
        # commit (benchmarks/README.md names it where that matters)
        out[sampler]["commit"] = git_commit()
        print(json.dumps(out[sampler], indent=1, default=str), flush=True)
    # one point per configuration: a repeat's second draw of the energy is noise, not a find
    points = {
        s: [
            (r["energy_wh"], r["val_mape"])
            for r in out[s]["trials"]
            if r["val_mape"] is not None and r.get("repeat_of") is None
        ]
        for s in SAMPLERS
    }
    done = [(v, e) for s in SAMPLERS for e, v in points[s]]
    ref = (max(v for v, _ in done) * 1.01, max(e for _, e in done) * 1.01)
    for s in SAMPLERS:
        pts = points[s]
        out[s]["hypervolume"] = hypervolume(pts, (ref[1], ref[0]))
    out["hypervolume_reference"] = {"val_mape": ref[0], "energy_wh": ref[1]}
    (RESULTS / f"search-{args.dataset}.json").write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / f"search-{args.dataset}.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    lines = [
        f"# Energy-aware search on Victoria ({out['dataset']}), {out['trials']} trials each",
        "",
        f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores. Energy "
        "modelled (no counters on this VM). Chosen on validation; test read once.",
        "",
    ]
    for s in SAMPLERS:
        r = out[s]
        lines += [
            f"## {s}",
            "",
            *([f"Trials measured {r['measured']}.", ""] if r.get("measured") else []),
            "| trial | generation | state | params | val MAPE | Wh (model) | front |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in r["trials"]:
            params = ", ".join(
                f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                for k, v in t["params"].items()
            )
            val = "–" if t["val_mape"] is None else f"{t['val_mape']:.3f}"
            wh = "–" if t["energy_wh"] is None else f"{t['energy_wh']:.3g}"
            mark = "(default) " if t["trial"] == r["default"] else ""
            gen = t.get("generation")
            state = t["state"].lower()
            if t.get("repeat_of") is not None:
                how = "reused" if t["run_wh"] == 0 else "trained again"
                state += f" (repeats {t['repeat_of']}: {how})"
            lines.append(
                f"| {mark}{t['trial']} | {'–' if gen is None else gen} | {state} | "
                f"{params} | {val} | {wh} | "
                f"{'yes' if t['front'] else ''} |"
            )
        ratio = r["energy_ratio_default_to_recommended"]
        if r["recommended"] == r["default"]:
            versus = "the default itself: no trial within 1 % of the best is greener."
        else:
            versus = (
                f"test MAPE {_num(r['recommended_test_mape'])} against the default's "
                f"{_num(r['default_test_mape'])}; "
                + (f"the default uses {ratio:.2f}x its energy." if ratio else "")
            )
        lines += [
            "",
            "Recommended (greenest within 1 % of the best validation MAPE): trial "
            f"{r['recommended']}, {versus} The search cost {r['search_wh']:.3g} Wh. "
            f"Hypervolume {r['hypervolume']:.4g}.",
        ]
        if r.get("cheaper") is not None:
            best = next(t["val_mape"] for t in r["trials"] if t["trial"] == r["best"])
            gap = 100 * (r["cheaper_val_mape"] - best) / best
            lines.append(
                f"Next on the front: trial {r['cheaper']}, validation MAPE "
                f"{r['cheaper_val_mape']:.3f} ({gap:+.1f} % against the best) for "
                f"{r['energy_ratio_recommended_to_cheaper']:.2f}x less energy than the "
                "recommended trial."
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
