"""Federated fine-tuning across the 9 PJM utilities (../shared/data/multiclient/pjm_hourly), one
client each: federated vs centralised vs local-only, bytes, rounds, energy; and the same with
client-side DP at epsilon 8.

    .venv/bin/python benchmarks/federated.py [--seeds 0,1,2] [--days 365] [--rounds 8]
    .venv/bin/python benchmarks/federated.py --secure [--seeds 0]   # SecAgg+ vs in the clear
    .venv/bin/python benchmarks/federated.py --arms fedavg --tag X   # some arms only, into
                                                                     # federated-X.json|md

Every figure comes from `greentune federate` (Flower's simulation engine, Ray actors, one per
core) on real data, the references side by side in the same run:
- federated: FedAvg over the 9 clients, ``rounds`` x ``local_steps`` steps per client, the best
  round on the clients' pooled validation loss;
- local: each client alone, as outside the federation: the skip path from its own ridge, the
  rest of the network from the same start, the same rounds and steps, the best round on its own
  validation windows;
- central: the same network on the pooled training windows, the same number of samples
  (rounds x local_steps x 9 steps), the best round on the pooled validation loss;
- the seasonal naives (daily, weekly) on each client's test windows;
- dp: client-side DP-SGD at each epsilon of ``--dp``, with ``greentune run``'s private choices
  (the skip path from the seasonal naive, not a ridge of the rows; each utility's load scaled
  by a public range: 0 to 1.25 x its peak in the years before the window);
- personal (``--arms personal``): FedAvg as above with ``federated.personal_skip``, each client's
  frozen skip weights a blend of its own ridge and the federated one (the blend weight fitted on
  its validation windows), against the same local-only reference in the same run.
Each client keeps its own chronological split (test = its last 56 days, validation the 56 before)
and its own scaler. The files are prepared once (sorted, duplicated DST hours dropped, the last
``days`` days kept, hourly gaps interpolated by greentune) into benchmarks/results/runs/federated
(not in git). Defaults (lr 3e-4 LoRA, patch 24, context one week, day-ahead) are greentune's
own, not tuned here; nothing is chosen on test.

Writes benchmarks/results/federated.json and federated.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from machine import git_commit, machine_info, same_src

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs" / "federated"
PJM = ROOT.parent / "shared" / "data" / "multiclient" / "pjm_hourly"
ARMS = ("fedavg", "fp16", "dp", "personal")
POOLED = "federated.personal_skip=false"
"""The fedavg, fp16 and secure arms start every client from the federated ridge, as they did
before personal skip paths became the default (2026-12-06)."""
RANGES = "public-ranges.json"
"""Each utility's public load range for ``data.scaler: bounds`` (under DP), beside its CSV."""
ROWS = ("federated", "start", "central", "local", "seasonal_naive_daily", "seasonal_naive_weekly")
"""The rows of metrics.json's test table this benchmark reports, in order."""


def prepare(days: int, skip_days: int = 0) -> Path:
    """One CSV per utility: parsed, sorted, duplicate hours dropped, the last ``days`` days of
    the span all nine share (ending ``skip_days`` days before its end)."""
    out = RUNS / (f"pjm-{days}d" + (f"-{skip_days}before" if skip_days else ""))
    if out.is_dir() and len(list(out.glob("*.csv"))) == 9 and (out / RANGES).is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for path in sorted(PJM.glob("*_hourly.csv")):
        # the nine copies differ: comma or semicolon, "31-12-2004 01:00", ISO, "01.01.2003 0:00"
        raw = pd.read_csv(path, sep=None, engine="python")
        time_col, col = raw.columns[0], raw.columns[1]
        times = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
        for fmt in ("%d-%m-%Y %H:%M", "ISO8601", "%d.%m.%Y %H:%M"):
            times = times.fillna(pd.to_datetime(raw[time_col], format=fmt, errors="coerce"))
        if times.isna().any():
            raise ValueError(f"{path}: {int(times.isna().sum())} timestamps in no known format")
        frame = pd.DataFrame({"time": times, "load_mw": raw[col].astype(float)})
        frame = frame.sort_values("time").drop_duplicates("time", keep="first")
        frames[path.stem.removesuffix("_hourly")] = frame
    end = min(f["time"].max() for f in frames.values()) - pd.Timedelta(days=skip_days)
    start = end - pd.Timedelta(days=days)
    ranges = {}
    for name, frame in frames.items():
        keep = frame[(frame["time"] > start) & (frame["time"] <= end)]
        keep.to_csv(out / f"{name}.csv", index=False, date_format="%Y-%m-%d %H:%M:%S")
        # the public range DP scales by: 0 to 1.25 x the peak of the years before the window
        # (published history, none of the rows the federation trains, validates or tests on)
        before = frame.loc[frame["time"] <= start, "load_mw"]
        if before.empty:
            raise ValueError(f"{name}: no history before {start} for its public load range")
        ranges[name] = [0.0, float(math.ceil(1.25 * before.max() / 1000) * 1000)]
    (out / RANGES).write_text(json.dumps(ranges, indent=1))
    return out


def public_ranges(folder: Path) -> str:
    """``federated.bounds`` for the DP arm: each utility's public load range (``prepare``)."""
    ranges = json.loads((folder / RANGES).read_text())
    return (
        "federated.bounds={"
        + ", ".join(f"{name}: {{load_mw: [{lo:g}, {hi:g}]}}" for name, (lo, hi) in ranges.items())
        + "}"
    )


def overrides(
    folder: Path, name: str, seed: int, rounds: int, steps: int, *extra: str
) -> list[str]:
    return [
        "data.source=csv",
        f"data.path={folder}",
        "data.time_col=time",
        "data.target=load_mw",
        "data.country=US",
        "data.fill_gaps=true",
        "data.context_length=168",
        "data.horizon=24",
        "model.patch_len=24",
        f"federated.rounds={rounds}",
        f"federated.local_steps={steps}",
        "energy.carbon=static:US",
        f"seed={seed}",
        f"output_dir={RUNS}",
        f"name={name}",
        *extra,
    ]


def run_once(args: list[str]) -> tuple[RunDir, float]:
    from greentune.privacy.federated.client import drop_cached
    from greentune.privacy.federated.simulate import federate

    cfg = gt.load_config(None, args)
    path = Path(cfg.output_dir) / str(cfg.name)
    if path.is_dir() and RunDir(path).status == "complete":
        return RunDir(path), float(json.loads((path / "wall.json").read_text())["wall_s"])
    shutil.rmtree(path, ignore_errors=True)  # a failed or partial run starts again
    drop_cached()
    t0 = time.perf_counter()
    run = federate(cfg, echo=lambda m: print(f"  {m}", flush=True))
    wall = time.perf_counter() - t0
    (path / "wall.json").write_text(json.dumps({"wall_s": wall}))
    return run, wall


def summarise(run: RunDir, wall_s: float) -> dict[str, Any]:
    m = run.metrics
    fed = m.federated or {}
    per = fed["per_client"]
    rows = [r for r in ROWS if r in m.test]
    mape = {r: {c: per[c][r]["mape"] for c in per if r in per[c]} for r in rows}
    ledger = run.ledger
    by_phase = ledger.totals()["by_phase"]
    clients_j = {
        p.removeprefix("client-"): v["energy_j"]
        for p, v in by_phase.items()
        if p.startswith("client-")
    }
    clients_g = {
        p.removeprefix("client-"): v["emissions_g"]
        for p, v in by_phase.items()
        if p.startswith("client-")
    }
    ref_j = by_phase.get("reference", {}).get("energy_j", 0.0)
    fed_rows = [r for r in ledger.rows if r["phase"].startswith("client-")]
    local_share = _local_share(fed_rows)
    return {
        "pooled_mape": {r: m.test[r].scores["mape"] for r in rows},
        "client_mape": mape,
        "median_mape": {r: statistics.median(v.values()) for r, v in mape.items()},
        "worst_mape": {r: max(v.values()) for r, v in mape.items()},
        "wins_over_local": fed["wins_over_local"],
        "best_round": fed["best_round"],
        "val_curve": fed["val_curve"],
        "bytes": fed["bytes"],
        "privacy": fed.get("privacy"),
        "personal_skip": (fed.get("personal_skip") or {}).get("own_weight"),
        "energy_j": {
            "clients_total": sum(clients_j.values()),
            "per_client": clients_j,
            "test_and_local_reference_share": local_share,
            "central_reference": ref_j,
            "server": by_phase.get("federate", {}).get("energy_j", 0.0),
        },
        "emissions_g_per_client": clients_g,
        "energy_kind": sorted({r["kind"] for r in fed_rows}),
        "wall_s": wall_s,
    }


def _local_share(rows: list[dict[str, Any]]) -> float:
    """Energy of the clients' test messages (which include the local-only reference)."""
    return sum(sum(r["energy_j"].values()) for r in rows if r["extra"]["message"] == "test")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=16)
    parser.add_argument("--dp", default="8", help="client-side DP epsilons ('' for none)")
    parser.add_argument(
        "--arms",
        default="fedavg,fp16,dp",
        help="the arms to run (fedavg: with the references; fp16; dp; personal: "
        "federated.personal_skip with the local-only reference)",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="write federated-TAG.json|md instead of federated.json|md (a partial run never "
        "mixes with another run's arms)",
    )
    parser.add_argument("--render", action="store_true", help="rewrite federated.md only")
    parser.add_argument(
        "--add",
        default="",
        help="with --render: add the runs of federated-ADD.json (more seeds of the same protocol "
        "on the same machine, run separately) to the --tag file",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="instead: SecAgg+ against plain FedAvg, no references (federated-secure.json|md)",
    )
    a = parser.parse_args()
    stem = f"federated-{a.tag}" if a.tag else "federated"
    if a.render:
        saved = json.loads((RESULTS / f"{stem}.json").read_text())
        write(add_seeds(saved, f"federated-{a.add}") if a.add else saved, stem)
        return
    quiet_libraries()
    folder = prepare(a.days)
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.secure:
        secure_study(folder, seeds, a.rounds, a.local_steps)
        return
    out: dict[str, Any] = {
        "machine": machine_info(),
        "protocol": {
            "data": f"9 PJM utilities, last {a.days} days each (hourly); per client test = "
            "last 56 days, validation = the 56 before",
            "model": "MiniLM-L6 patch encoder (24 h patches, 7 tokens), LoRA r=8, ridge skip path "
            "fitted from the clients' summed statistics",
            "rounds": a.rounds,
            "local_steps": a.local_steps,
            "strategy": "fedavg",
            "engine": "Flower simulation (Ray), one actor per core, 1 thread each",
            "energy": "model (no RAPL/NVML on this VM): each client's own process meter",
            "dp": "client DP-SGD with greentune run's private choices: the skip path from the "
            "seasonal naive (no ridge), each utility's load scaled by its public range (0 to "
            "1.25 x its peak in the years before the window)",
        },
        "seeds": seeds,
        "commit": git_commit(),
        "runs": {},
    }
    arms = a.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))}; valid: {', '.join(ARMS)}")
    # (run name, what it is, its overrides) per arm; the references only in the fedavg arm
    runs: list[tuple[str, str, list[str]]] = []
    if "fedavg" in arms:
        runs.append(("fedavg", "federated + references", [POOLED]))
    no_refs = "federated.references=[]"
    if "fp16" in arms:
        runs.append(("fp16", "float16 transfer", ["federated.float16=true", POOLED, no_refs]))
    if "personal" in arms:
        personal = ["federated.personal_skip=true", "federated.references=[local]"]
        runs.append(("personal", "personal skip paths + local reference", personal))
    for eps in [e for e in a.dp.split(",") if e and "dp" in arms]:
        dp = [f"privacy.dp.target_epsilon={eps}", public_ranges(folder), no_refs]
        runs.append((f"dp{eps}", f"client DP epsilon {eps}", dp))
    for seed in seeds:
        for name, label, extra in runs:
            print(f"seed {seed}: {label}", flush=True)
            cfg = overrides(folder, f"{name}-s{seed}", seed, a.rounds, a.local_steps, *extra)
            run, wall = run_once(cfg)
            out["runs"][f"{name}-s{seed}"] = summarise(run, wall)
        write(out, stem)
    write(out, stem)


def secure_study(folder: Path, seeds: list[int], rounds: int, steps: int) -> None:
    """SecAgg+ (ridge sums and training rounds) against the same run in the clear, seed by
    seed, back to back in alternating order: quality, bytes, wall time, client energy."""
    arms = {"plain": [POOLED], "secure": [POOLED, "federated.secure_aggregation=true"]}
    out: dict[str, Any] = {"machine": machine_info(), "seeds": seeds, "runs": {}}
    for i, seed in enumerate(seeds):
        for arm in list(arms) if i % 2 == 0 else list(arms)[::-1]:
            name = f"{arm}-norefs-s{seed}"
            print(f"seed {seed}: {arm}", flush=True)
            extra = ["federated.references=[]", *arms[arm]]
            run, wall = run_once(overrides(folder, name, seed, rounds, steps, *extra))
            out["runs"][name] = summarise(run, wall)
    lines = [
        "# Secure aggregation (SecAgg+) against plain FedAvg, 9 PJM utilities",
        "",
        "`python benchmarks/federated.py --secure`: the same federated run (no references) in "
        "the clear and under SecAgg+ (the ridge's sums and every training round), back to "
        f"back per seed. Machine: {out['machine'].get('cpu', '')}. Energy **modelled** (each "
        "client's process meter; SecAgg+'s key stages are not metered).",
        "",
        "| seed | arm | pooled MAPE % | bytes per client and round, sent / received | "
        "wall s | clients' J (model) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in out["runs"].items():
        b = r["bytes"]
        lines.append(
            f"| {name.rsplit('-s', 1)[1]} | {name.split('-')[0]} | "
            f"{r['pooled_mape']['federated']:.3f} | "
            f"{b['per_client_round_sent']:,} / {b['per_client_round_received']:,} | "
            f"{r['wall_s']:.0f} | {r['energy_j']['clients_total']:.0f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "federated-secure.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "federated-secure.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def add_seeds(out: dict[str, Any], stem: str) -> dict[str, Any]:
    """``out`` with the runs of ``stem``.json: more seeds of the same protocol on the same
    machine. Refused otherwise: medians over seeds of other protocols or machines mean nothing."""
    path = RESULTS / f"{stem}.json"
    more = json.loads(path.read_text())
    for key in ("protocol", "machine"):
        if more.get(key) != out.get(key):
            raise SystemExit(f"{path}: its {key} differs; its seeds cannot join this run's")
    mine, theirs = out.get("commit"), more.get("commit")
    if mine and theirs and not same_src(mine, theirs):
        raise SystemExit(f"{path}: its runs are of another src/ ({theirs}, this run's {mine})")
    if clash := set(more["runs"]) & set(out["runs"]):
        raise SystemExit(f"{path}: runs {sorted(clash)} are in both files")
    return {
        **out,
        "seeds": sorted({*out["seeds"], *more["seeds"]}),
        "runs": {**out["runs"], **more["runs"]},
        "added_from": [*out.get("added_from", []), f"{stem}.json"],
    }


def write(out: dict[str, Any], stem: str = "federated") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    (RESULTS / f"{stem}.md").write_text(render(out))


def render(out: dict[str, Any]) -> str:
    runs = out["runs"]

    def of(prefix: str) -> list[dict[str, Any]]:
        return [v for k, v in runs.items() if k.startswith(prefix + "-")]

    fedavg, fp16, dp, personal = of("fedavg"), of("fp16"), of("dp8"), of("personal")
    m = out["machine"]
    lines = [
        "# Federated fine-tuning, 9 PJM utilities (benchmarks/federated.py)",
        "",
        f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores. Seeds {out['seeds']}: "
        "medians over seeds, [min, max].",
        "",
        _seeds_line(runs),
        "",
        *(
            [f"Seeds added from {', '.join(out['added_from'])} (a separate invocation).", ""]
            if out.get("added_from")
            else []
        ),
        "Rows: `federated` the global model at its best round on the pooled validation loss; "
        "`start` round 0 (the federated ridge skip path, the network untrained); `central` the "
        "same network on the pooled windows; `local` each client alone (the skip path from its "
        "own ridge, the same rounds and steps, its own best round).",
        "",
        *_rows_table(fedavg),
    ]
    for label, group in (("federated, float16 transfer", fp16), ("federated, client DP eps 8", dp)):
        if group:
            lines.append(
                f"| {label} | {_mid([r['pooled_mape']['federated'] for r in group])} | "
                f"{_mid([r['median_mape']['federated'] for r in group])} | "
                f"{_mid([r['worst_mape']['federated'] for r in group])} |"
            )
    if fedavg:
        ratio = [r["median_mape"]["federated"] / r["median_mape"]["central"] for r in fedavg]
        lines += [
            "",
            f"- federated / central median client MAPE: {_mid(ratio)} (target <= 1.05)",
            *_wins_lines(fedavg, out["protocol"]["rounds"]),
        ]
    if dp and fedavg:
        ratio = [
            d["pooled_mape"]["federated"] / f["pooled_mape"]["federated"]
            for d, f in zip(dp, fedavg, strict=False)
        ]
        eps = [max(d["privacy"]["epsilon"].values()) for d in dp if d.get("privacy")]
        lines.append(
            f"- client DP / non-private federated pooled MAPE: {_mid(ratio)} "
            f"(target <= 1.15); largest client epsilon spent {_mid(eps)}"
        )
    lines += [
        "",
        "| run | bytes to a client per round | of the network (fp32) | "
        "client energy Wh (model) | server Wh | wall s |",
        "|---|---|---|---|---|---|",
    ]
    groups = (
        ("fedavg + references", fedavg),
        ("float16", fp16),
        ("client DP", dp),
        ("personal skip + local", personal),
    )
    for label, group in groups:
        if not group:
            continue
        b = group[0]["bytes"]
        share = [r["bytes"]["per_client_round_sent"] / r["bytes"]["full_model_fp32"] for r in group]
        lines.append(
            f"| {label} | {b['per_client_round_sent']:,} | {_mid([100 * x for x in share])} % | "
            f"{_mid([r['energy_j']['clients_total'] / 3600 for r in group])} | "
            f"{_mid([r['energy_j']['server'] / 3600 for r in group])} | "
            f"{_mid([r['wall_s'] for r in group])} |"
        )
    if fedavg:
        lines += [
            "",
            "Per client (seed medians): test MAPE % federated / start (round 0) / central / "
            "local, "
            "and energy Wh of all its messages (federated rounds + its local-only "
            "reference in the test message)",
            "",
            *_client_table(fedavg, ("federated", "start", "central", "local")),
        ]
    if personal:
        lines += [
            "",
            "## Personal skip paths (`federated.personal_skip`, `--arms personal`)",
            "",
            "FedAvg as above, each client's frozen skip weights a x its own ridge + (1 - a) x "
            "the federated ridge, a fitted on its own validation windows; `start` is that "
            "blend with the network untrained; `local` the same reference as above, in the "
            "same run.",
            "",
            *_rows_table(personal),
            "",
            *_wins_lines(personal, out["protocol"]["rounds"]),
            "",
            "Per client (seed medians): test MAPE % federated / start / local, the weight a of "
            "its own ridge, and the energy Wh of all its messages",
            "",
            *_client_table(personal, ("federated", "start", "local"), own_weight=True),
        ]
    return "\n".join(lines) + "\n"


def _rows_table(group: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| row | pooled MAPE % | median client MAPE % | worst client MAPE % |",
        "|---|---|---|---|",
    ]
    for row in ROWS:
        vals = [r for r in group if row in r["pooled_mape"]]
        if vals:
            lines.append(
                f"| {row} | {_mid([r['pooled_mape'][row] for r in vals])} | "
                f"{_mid([r['median_mape'][row] for r in vals])} | "
                f"{_mid([r['worst_mape'][row] for r in vals])} |"
            )
    return lines


def _wins_lines(group: list[dict[str, Any]], rounds: int) -> list[str]:
    wins = [r["wins_over_local"]["count"] for r in group]
    return [
        f"- clients where federated beats local-only: {_mid(wins)} of 9 (target >= 7)",
        "- clients where the start (round 0, untrained) beats local-only: "
        f"{_mid([_wins(r, 'start', 'local') for r in group])} of 9",
        f"- best round (of {rounds}): {_mid([r['best_round'] for r in group])}",
    ]


def _client_table(
    group: list[dict[str, Any]], rows: tuple[str, ...], own_weight: bool = False
) -> list[str]:
    head = [*rows, *(["own weight a"] if own_weight else []), "energy Wh"]
    lines = [f"| client | {' | '.join(head)} |", "|---" * (len(head) + 1) + "|"]
    for c in sorted(group[0]["client_mape"]["federated"]):
        cells = [
            _mid([r["client_mape"][row][c] for r in group if row in r["client_mape"]])
            for row in rows
        ]
        if own_weight:
            own = [(r["personal_skip"] or {}).get(c) for r in group]
            cells.append(_mid([a for a in own if a is not None]))
        cells.append(_mid([r["energy_j"]["per_client"][c] / 3600 for r in group]))
        lines.append(f"| {c} | {' | '.join(cells)} |")
    return lines


def _seeds_line(runs: dict[str, Any]) -> str:
    seeds: dict[str, list[str]] = {}
    for name in runs:
        arm, seed = name.rsplit("-s", 1)
        seeds.setdefault(arm, []).append(seed)
    return "Seeds run: " + "; ".join(f"{arm} {', '.join(s)}" for arm, s in seeds.items()) + "."


def _wins(run: dict[str, Any], row: str, other: str) -> float:
    mape = run["client_mape"]
    return float(sum(mape[row][c] < mape[other][c] for c in mape[other]))


def _mid(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    if not values:
        return "–"
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


if __name__ == "__main__":
    main()
