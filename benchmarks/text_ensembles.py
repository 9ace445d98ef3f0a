"""Ensembles of the SST-2 method table (issue 18): `greentune ensemble` over runs that
methods.py already trained; nothing is retrained.

    .venv/bin/python benchmarks/text_ensembles.py [--table methods-sst2-full-grouped]
        [--seeds 3,4,5]

Rows, all fixed before any dev accuracy is read:
- per method: its seeds' networks (a deep ensemble), combined by the mean and by the median of
  their class probabilities, beside the method's single-seed median and range;
- across methods: the three methods with the lowest best validation loss at the tuning seed
  (the measure that chose every learning rate), their runs of that seed. They split their data
  alike, so the ensemble is also scored on their shared validation texts.
- ensemble selection across every method's run of the tuning seed (`--kinds selected`: greedy
  picks with replacement on the shared validation texts' log loss, Caruana et al. 2004), beside
  the plain mean of the same runs. Its validation score is cross-fitted.

Energy: an ensemble's energy is the sum of its members' energy to their best validation point
(the method table's measure, from methods.py's JSON) plus the scoring `greentune ensemble` did
(metered into the ensemble's own ledger; modelled on a VM without counters). "vs full" divides
by full fine-tuning's single-seed median energy to best. Dev accuracy is on SST-2's 872 dev
sentences, which chose nothing.

Writes benchmarks/results/ensembles-<table>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, write_results

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "runs"
KINDS = ("mean", "median")
CROSS = 3
"""Methods in the cross-method ensemble."""


def run_name(table: str, method: str, lr: float, seed: int | str) -> str:
    """methods.py's name for a run of the table (``method_rows``)."""
    return f"{table}-{method}-lr{lr:g}-s{seed}"


def ensemble(name: str, members: list[Path], kinds: tuple[str, ...] = KINDS) -> RunDir:
    """The ensemble's run directory, reused when it finished before with the same members and
    kinds."""
    out = RUNS / name
    if (out / "metrics.json").is_file():
        run = RunDir.open(out)
        if (
            run.info.status == "complete"
            and run.info.extra.get("members") == [str(m) for m in members]
            and tuple(run.config.eval.ensembles) == kinds
        ):
            return run
    shutil.rmtree(out, ignore_errors=True)
    return gt.ensemble(
        [str(m) for m in members], out, kinds, log=lambda m: print(f"  [{name}] {m}", flush=True)
    )


def _bill_wh(m: gt.RunMetrics, kind: str) -> float | None:
    """The ensemble row's whole bill (members' runs to their end, and prediction)."""
    bill = m.test[f"ensemble-{kind}"].bill
    return None if bill is None else bill.energy_wh


def _wh(value: float | None, full: float | None) -> tuple[str, str]:
    """(Wh, ratio to full) as table cells; n/a where a run was not metered."""
    if value is None:
        return "n/a", "n/a"
    return f"{value:.3g}", f"{value / full:.2f}x" if full else "n/a"


def summarise_ensemble(
    run: RunDir, members_to_best_wh: float, kinds: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    m = run.metrics
    own_wh = m.energy.by_phase_wh["ensemble"] if m.energy else None
    out: dict[str, Any] = {
        "members": m.data["members"] if m.data else [],
        "ensemble_scoring_wh": own_wh,
        "energy_to_best_wh": None if own_wh is None else members_to_best_wh + own_wh,
        "energy_kind": m.energy.kinds if m.energy else None,
        "bill_wh": {k: _bill_wh(m, k) for k in kinds},
    }
    if "selected" in kinds and m.ensembles:
        out["selected_weights"] = m.ensembles["ensemble-selected"]["weights"]
    for k in kinds:
        out[f"{k}_accuracy"] = m.test[f"ensemble-{k}"].scores["accuracy"]
        if m.validation:
            out[f"{k}_val_accuracy"] = m.validation[f"ensemble-{k}"]["accuracy"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", default="methods-sst2-full-grouped")
    parser.add_argument(
        "--seeds",
        default=None,
        help="only these of the table's seeds (e.g. 3,4,5: a replication's own ensemble); "
        "the results' names end in -s<seeds>",
    )
    args = parser.parse_args()
    quiet_libraries()
    table = json.loads((RESULTS / f"{args.table}.json").read_text())
    runs: dict[str, Any] = table["runs"]
    seeds = args.seeds.split(",") if args.seeds else [str(s) for s in table["seeds"]]
    suffix = f"-s{''.join(seeds)}" if args.seeds else ""
    rows: dict[str, Any] = {}
    for method, r in runs.items():
        have = [s for s in seeds if s in r["seeds"]]
        if len(have) < 2:
            continue
        paths = [RUNS / run_name(args.table, method, r["lr"], s) for s in have]
        run = ensemble(f"ens-{args.table}-{method}{suffix}", paths)
        single = [r["seeds"][s]["accuracy"] for s in have]
        to_best = sum(r["seeds"][s]["energy_to_best_wh"] for s in have)
        rows[method] = {
            "seeds": have,
            "single_accuracy_median": statistics.median(single),
            "single_accuracy_range": [min(single), max(single)],
            "single_energy_to_best_wh": statistics.median(
                r["seeds"][s]["energy_to_best_wh"] for s in have
            ),
            **summarise_ensemble(run, to_best),
        }
    tune = str(table["tune_seed"])
    if tune not in seeds:  # the cross-method rows are the tuning seed's runs
        runs = {}
    ranked = sorted(
        (m for m in runs if tune in runs[m]["seeds"]),
        key=lambda m: runs[m]["seeds"][tune]["best_val_loss"],
    )[:CROSS]
    cross = None
    if len(ranked) == CROSS:
        paths = [RUNS / run_name(args.table, m, runs[m]["lr"], tune) for m in ranked]
        run = ensemble(f"ens-{args.table}-top{CROSS}-s{tune}", paths)
        to_best = sum(runs[m]["seeds"][tune]["energy_to_best_wh"] for m in ranked)
        cross = {"methods": ranked, "seed": tune, **summarise_ensemble(run, to_best)}
    every = [m for m in runs if tune in runs[m]["seeds"]]
    selected = None
    if len(every) >= 2:
        paths = [RUNS / run_name(args.table, m, runs[m]["lr"], tune) for m in every]
        kinds = ("mean", "selected")
        run = ensemble(f"ens-{args.table}-selected-s{tune}", paths, kinds)
        to_best = sum(runs[m]["seeds"][tune]["energy_to_best_wh"] for m in every)
        selected = {"methods": every, "seed": tune, **summarise_ensemble(run, to_best, kinds)}
        # the members the selection kept: energy to best of those alone (the others could
        # have been left untrained)
        kept = [m for m, p in zip(every, paths, strict=True) if _weight(selected, p) > 0]
        selected["kept_methods"] = kept
        selected["kept_energy_to_best_wh"] = sum(
            runs[m]["seeds"][tune]["energy_to_best_wh"] for m in kept
        ) + (selected["ensemble_scoring_wh"] or 0.0)
    full = rows.get("full", {}).get("single_energy_to_best_wh")
    payload = {
        "machine": machine_info(),
        "table": args.table,
        "kinds": KINDS,
        "per_method": rows,
        "top_by_validation": cross,
        "selected_by_validation": selected,
        "full_single_energy_to_best_wh": full,
    }
    write_results(RESULTS / f"ensembles-{args.table}{suffix}", payload, markdown(payload))


def _weight(summary: dict[str, Any], path: Path) -> float:
    """The selection's weight of the member run at ``path``."""
    for name, w in summary["selected_weights"].items():
        if name.split("/")[0] == path.name:
            return float(w)
    raise KeyError(f"{path.name} is not a member of the selected ensemble")


def markdown(p: dict[str, Any]) -> str:
    lines = [
        f"# Ensembles of {p['table']}",
        "",
        f"Machine: {p['machine']['cpu']}, {p['machine']['cores']} cores. `greentune ensemble` "
        "over the method table's runs (nothing retrained). Dev accuracy on SST-2's 872 dev "
        "sentences. Energy to best = the members' energy to their best validation point plus "
        "the ensemble's scoring (modelled on this VM: no energy counters).",
        "",
        "| ensemble | members | dev acc % (mean of probs) | dev acc % (median) | "
        "single-seed median % [range] | Wh to best (model) | vs full (1 seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    full = p["full_single_energy_to_best_wh"]
    order = sorted(p["per_method"].items(), key=lambda kv: -kv[1]["mean_accuracy"])
    for method, r in order:
        lo, hi = (100 * v for v in r["single_accuracy_range"])
        wh, ratio = _wh(r["energy_to_best_wh"], full)
        lines.append(
            f"| {method}, seeds {','.join(r['seeds'])} | {len(r['seeds'])} | "
            f"{100 * r['mean_accuracy']:.2f} | {100 * r['median_accuracy']:.2f} | "
            f"{100 * r['single_accuracy_median']:.2f} [{lo:.2f}–{hi:.2f}] | {wh} | {ratio} |"
        )
    cross = p["top_by_validation"]
    if cross:
        wh, ratio = _wh(cross["energy_to_best_wh"], full)
        lines.append(
            f"| top {len(cross['methods'])} by validation loss, seed {cross['seed']}: "
            f"{', '.join(cross['methods'])} | {len(cross['methods'])} | "
            f"{100 * cross['mean_accuracy']:.2f} | {100 * cross['median_accuracy']:.2f} | "
            f"| {wh} | {ratio} |"
        )
        if "mean_val_accuracy" in cross:
            lines += [
                "",
                f"The cross-method ensemble on its members' shared validation texts: mean "
                f"{100 * cross['mean_val_accuracy']:.2f} %, median "
                f"{100 * cross['median_val_accuracy']:.2f} %.",
            ]
    sel = p.get("selected_by_validation")
    if sel:
        weights = ", ".join(
            f"{n.split('/')[0].removeprefix(p['table'] + '-')} {w:.2f}"
            for n, w in sel["selected_weights"].items()
            if w > 0
        )
        wh, ratio = _wh(sel["energy_to_best_wh"], full)
        kept_wh, kept_ratio = _wh(sel["kept_energy_to_best_wh"], full)
        lines += [
            "",
            f"### Ensemble selection across all {len(sel['methods'])} methods, seed {sel['seed']}",
            "",
            "Weights chosen on the members' shared validation texts (greedy picks with "
            "replacement on the log loss, `greentune ensemble --kinds selected`); dev chose "
            "nothing.",
            "",
            "| ensemble | dev acc % | validation acc % | Wh to best (model) | vs full (1 seed) |",
            "|---|---|---|---|---|",
            f"| mean of all {len(sel['methods'])} | {100 * sel['mean_accuracy']:.2f} | "
            f"{100 * sel['mean_val_accuracy']:.2f} | {wh} | {ratio} |",
            f"| selected: {weights} | {100 * sel['selected_accuracy']:.2f} | "
            f"{100 * sel['selected_val_accuracy']:.2f} (cross-fitted) | {wh} (all trained); "
            f"{kept_wh} (kept members only) | {ratio}; {kept_ratio} |",
        ]
    reach = [
        (m, r)
        for m, r in p["per_method"].items()
        if r["mean_accuracy"] >= 0.90 and r["energy_to_best_wh"]
    ]
    if reach:
        m, r = min(reach, key=lambda kv: kv[1]["energy_to_best_wh"])
        lines += [
            "",
            f"Greenest seed ensemble at >= 90 % dev accuracy (mean of probabilities): **{m}**, "
            f"{r['energy_to_best_wh']:.3g} Wh to best (model).",
        ]
    else:
        lines += ["", "No seed ensemble reached 90 % dev accuracy (mean of probabilities)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
