"""Client DP across the 9 PJM utilities, starting from public data (``model.skip_init:
transfer``), against non-private FedAvg with and without that data.

    .venv/bin/python benchmarks/federated_public.py [--seeds 0,1,2] [--rounds 8]
        [--local-steps 16] [--epsilon 8]
    .venv/bin/python benchmarks/federated_public.py --arms plain,dp-public --patience 2 \
        --tag patience2      # some arms, with federated.patience: federated-public-TAG.json|md
    .venv/bin/python benchmarks/federated_public.py --render [--tag T]   # the .md again

The private window is each utility's last 365 days (``benchmarks/federated.py``'s protocol:
test = its last 56 days, validation the 56 before; client DP-SGD at ``--epsilon`` per
training window). The public data is the two years before it: PJM publishes its utilities'
hourly load, and ``federated.py`` already takes each utility's public load range from those
years. That is the most favourable public data there can be (the same series, earlier), and
the write-up says so. One ``greentune run`` fits the public start once, on those years alone:
a ridge shared by the nine series (channel-independent, each utility scaled by its public
range), its penalty and design chosen on that run's own validation split (the 56 days before
its last 56, which are its test; so the ridge is fitted on about 618 of the 730 public days).
Nothing of the window goes into it.

Arms, each a ``greentune federate`` of the same rounds and steps, no references:
- plain: non-private FedAvg on the window, its start the federated ridge of the window's rows
  (the issue's "non-private federated");
- history: non-private FedAvg on the public years and the window together (1,095 days), its
  start the federated ridge of all those rows: the non-private run given the data the private
  one below sees (near enough: it trains on all 730 public days, with each client's fitted
  scaler, and greentune picks its training stride from the longer data; the test and
  validation windows are the same rows in every arm);
- dp: client DP on the window from the seasonal start (greentune run's private default);
- dp-public: client DP on the window from the public start.
The arms run back to back per seed, the order alternating; every figure is from one machine and
one invocation. Energy is modelled where the VM has no RAPL (each client's process meter); the
public start's one-off bill is stated beside the arms and added in a ratio of its own.
A finished run of the same name is reused only if its rounds, steps, epsilon and patience are
these; a tagged invocation names its runs and results after the tag.

Writes benchmarks/results/federated-public[-TAG].json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
from federated import (
    POOLED,
    RESULTS,
    RUNS,
    _mid,
    overrides,
    prepare,
    public_ranges,
    run_once,
    summarise,
)
from machine import git_commit, machine_info

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.rundir import RunDir

WINDOW_DAYS, HISTORY_DAYS = 365, 1095
ARMS = ("plain", "history", "dp", "dp-public")
NO_REFS = "federated.references=[]"


def public_history(window: Path, history: Path) -> Path:
    """The rows of ``history`` before each utility's window, one column per utility."""
    out = RUNS / f"public-history-{WINDOW_DAYS}d.csv"
    if out.is_file():
        return out
    columns = []
    for path in sorted(window.glob("*.csv")):
        start = pd.read_csv(path, usecols=["time"], parse_dates=["time"])["time"].min()
        rows = pd.read_csv(history / path.name, parse_dates=["time"])
        columns.append(rows[rows["time"] < start].set_index("time")["load_mw"].rename(path.stem))
    wide = pd.concat(columns, axis=1).sort_index()
    wide.reset_index().to_csv(out, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return out


def public_start(window: Path, history: Path) -> tuple[Path, dict[str, Any]]:
    """The run whose skip path the dp-public arm starts from: fitted on the public years only,
    each utility scaled by the public range the private clients use."""
    csv = public_history(window, history)
    ranges = json.loads((window / "public-ranges.json").read_text())
    bounds = ", ".join(f"{name}: [{lo:g}, {hi:g}]" for name, (lo, hi) in ranges.items())
    name = "public-start"
    path = RUNS / name
    t0 = time.perf_counter()
    if not (path.is_dir() and RunDir(path).status == "complete"):
        cfg = gt.load_config(
            None,
            [
                "data.source=csv",
                f"data.path={csv}",
                "data.time_col=time",
                "data.multivariate=true",
                "data.channel_independent=true",
                "data.country=US",
                "data.fill_gaps=true",
                "data.context_length=168",
                "data.horizon=24",
                "model.patch_len=24",
                "data.scaler=bounds",
                f"data.bounds={{{bounds}}}",
                "train.max_steps=1",  # only the skip path is used: the ridge, fitted first
                "eval.baselines=[]",
                "eval.ensembles=[]",
                "eval.report=false",
                "energy.carbon=static:US",
                "seed=0",
                f"output_dir={RUNS}",
                f"name={name}",
            ],
        )
        gt.run(cfg, echo=lambda m: print(f"  {m}", flush=True))
    run = RunDir(path)
    frame = pd.read_csv(csv, usecols=["time"], parse_dates=["time"])["time"]
    ridge = next(
        (line for line in run.log_path.read_text().splitlines() if "skip path: ridge" in line), ""
    )
    return path, {
        "rows": f"{frame.min()} to {frame.max()}",
        "energy_j": run.ledger.totals()["all"]["energy_j"],
        "wall_s": time.perf_counter() - t0,
        "ridge": ridge.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=16)
    parser.add_argument("--epsilon", default="8")
    parser.add_argument("--patience", type=int, default=None, help="federated.patience")
    parser.add_argument("--arms", default=",".join(ARMS), help="some of " + ", ".join(ARMS))
    parser.add_argument("--tag", default="", help="federated-public-TAG.json|md, runs named so")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the .json")
    a = parser.parse_args()
    stem = f"federated-public-{a.tag}" if a.tag else "federated-public"
    if a.render:
        write(json.loads((RESULTS / f"{stem}.json").read_text()), stem)
        return
    if unknown := set(a.arms.split(",")) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))}")
    if (a.patience is not None or set(a.arms.split(",")) != set(ARMS)) and not a.tag:
        parser.error("--patience and --arms need --tag: the untagged results are all four arms")
    quiet_libraries()
    window, history = prepare(WINDOW_DAYS), prepare(HISTORY_DAYS)
    source, source_info = public_start(window, history)
    private = [f"privacy.dp.target_epsilon={a.epsilon}", public_ranges(window), NO_REFS]
    every: dict[str, tuple[Path, list[str]]] = {
        "plain": (window, [POOLED, NO_REFS]),
        "history": (history, [POOLED, NO_REFS]),
        "dp": (window, private),
        "dp-public": (window, [*private, "model.skip_init=transfer", f"model.skip_from={source}"]),
    }
    patience = [] if a.patience is None else [f"federated.patience={a.patience}"]
    arms = {k: (f, [*x, *patience]) for k, (f, x) in every.items() if k in a.arms.split(",")}
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {
        "machine": machine_info(),
        "commit": git_commit(),
        "seeds": seeds,
        "rounds": a.rounds,
        "local_steps": a.local_steps,
        "epsilon": float(a.epsilon),
        "patience": a.patience,
        "public_start": {"run": str(source.relative_to(RESULTS.parent.parent)), **source_info},
        "runs": {},
    }
    for i, seed in enumerate(seeds):
        for arm in list(arms) if i % 2 == 0 else list(arms)[::-1]:
            folder, extra = arms[arm]
            key = f"public-{arm}-s{seed}"
            name = f"public-{a.tag}-{arm}-s{seed}" if a.tag else key
            print(f"seed {seed}: {arm}", flush=True)
            wanted = (a.rounds, a.local_steps, float(a.epsilon), a.patience)
            _drop_if_other(RUNS / name, *wanted)
            run, wall = run_once(overrides(folder, name, seed, a.rounds, a.local_steps, *extra))
            out["runs"][key] = summarise(run, wall)
            write(out, stem)
    write(out, stem)


def _drop_if_other(
    path: Path, rounds: int, steps: int, epsilon: float, patience: int | None
) -> None:
    """A finished run under this name made with other settings is run again, not reported."""
    if not (path / "config.yaml").is_file():
        return
    cfg = RunDir(path).config
    dp, fed = cfg.privacy.dp, cfg.federated
    made = (fed.rounds, fed.local_steps, dp.target_epsilon if dp.enabled else None, fed.patience)
    if made != (rounds, steps, epsilon if dp.enabled else None, patience):
        shutil.rmtree(path)


def write(out: dict[str, Any], stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    text = render(out)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text, flush=True)


def runs_of(out: dict[str, Any], arm: str) -> dict[int, dict[str, Any]]:
    """{seed: summary} of one arm's runs (named ``public-ARM-sSEED``)."""
    prefix = f"public-{arm}-s"
    runs = out["runs"].items()
    return {int(k.removeprefix(prefix)): v for k, v in runs if k.startswith(prefix)}


def render(out: dict[str, Any]) -> str:
    arms = {arm: runs_of(out, arm) for arm in ARMS}
    src = out["public_start"]
    eps = out["epsilon"]
    lines = [
        "# Client DP from a public start, 9 PJM utilities (benchmarks/federated_public.py)",
        "",
        f"Machine: {out['machine'].get('cpu', '')}, {out['machine'].get('cores', '')} cores; "
        f"commit {out['commit']}. Seeds {out['seeds']}: medians over seeds, [min, max]. "
        f"{out['rounds']} rounds x {out['local_steps']} local steps, FedAvg, no references"
        + (
            f", federated.patience {out['patience']} (rounds run in the table)."
            if out.get("patience")
            else "."
        ),
        "",
        f"Public start: one `greentune run` on the 9 utilities' published load of {src['rows']} "
        f"(before every window), {src['energy_j'] / 3600:.4f} Wh (model), once for all seeds; "
        f"{src['ridge'] or 'its ridge'}.",
        "",
        "| arm | data | pooled MAPE % | start (round 0) pooled MAPE % | median client MAPE % | "
        "worst client MAPE % | best round | rounds run | largest client epsilon | "
        "client Wh (model) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    what = {
        "plain": "window, non-private",
        "history": "public years + window, non-private",
        "dp": f"window, client DP eps {eps:g}, seasonal start",
        "dp-public": f"window, client DP eps {eps:g}, public start",
    }
    for arm, runs in arms.items():
        if not runs:
            continue
        rs = list(runs.values())
        spent = [max(r["privacy"]["epsilon"].values()) for r in rs if r.get("privacy")]
        lines.append(
            f"| {arm} | {what[arm]} | {_mid([r['pooled_mape']['federated'] for r in rs])} | "
            f"{_mid([r['pooled_mape']['start'] for r in rs if 'start' in r['pooled_mape']])} | "
            f"{_mid([r['median_mape']['federated'] for r in rs])} | "
            f"{_mid([r['worst_mape']['federated'] for r in rs])} | "
            f"{_mid([r['best_round'] for r in rs])} | "
            f"{_mid([len(r['val_curve']) - 1 for r in rs])} | {_mid(spent)} | "
            f"{_mid([r['energy_j']['clients_total'] / 3600 for r in rs])} | "
            f"{_mid([r['wall_s'] for r in rs])} |"
        )
    lines.append("")
    for num, den in (("dp-public", "plain"), ("dp-public", "history"), ("dp", "plain")):
        pairs = [(arms[num][s], arms[den][s]) for s in arms[num] if s in arms[den]]
        if pairs:
            mape = [n["pooled_mape"]["federated"] / d["pooled_mape"]["federated"] for n, d in pairs]
            wh = [n["energy_j"]["clients_total"] / d["energy_j"]["clients_total"] for n, d in pairs]
            lines.append(
                f"- {num} / {den} pooled MAPE, seed by seed: {_mid(mape)} (target <= 1.15); "
                f"client energy {_mid(wh)}x"
            )
            if num == "dp-public":  # its bill includes the public start, fitted once
                once = src["energy_j"]
                wh = [
                    (n["energy_j"]["clients_total"] + once) / d["energy_j"]["clients_total"]
                    for n, d in pairs
                ]
                lines.append(f"  - with the public start's one-off energy: {_mid(wh)}x")
    present = [arm for arm, runs in arms.items() if runs]
    if present:
        first = next(iter(arms[present[0]].values()))
        lines += [
            "",
            "Per client: test MAPE % of the federated model (seed medians)",
            "",
            f"| client | {' | '.join(present)} |",
            "|---" * (len(present) + 1) + "|",
        ]
        for c in sorted(first["client_mape"]["federated"]):
            cells = [
                _mid([r["client_mape"]["federated"][c] for r in arms[arm].values()])
                for arm in present
            ]
            lines.append(f"| {c} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
