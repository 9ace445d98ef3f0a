"""Fault injection over every command, Jepsen-style: kill at random points, check invariants.

    .venv/bin/python benchmarks/faults.py --kills 100 [--elastic 20] [--seed 0]

Data: 40 days of real hourly demand and temperature of one ISO-NE zone (Jan-Feb 2017, from
``../shared/data/multiclient/isone_2017``), a tiny deterministic model (tiny-bert, patch encoder,
LoRA; 8 epochs of 38 steps, a checkpoint every 5 steps, seasonal-naive and ridge baselines),
the default journal interval (5 s). Every command runs in its own process, as a user runs it.
Scenarios (kills shared out 55/15/15/15 %):

- ``run``: SIGKILL (3 in 4) or SIGTERM, at a uniformly random time of the uninterrupted run's
  duration or at a named phase (``GREENTUNE_FAULT``: data, ridge skip, epochs, validations,
  test, save, each baseline, a checkpoint write, the ledger save); then ``run --resume`` (or,
  killed before the run wrote its config, the same command again);
- ``compress``: ``greentune compress RUN -m int8-dynamic`` killed at a random time, then again;
- ``schedule``: ``greentune schedule run`` (run-now, one tiny job) killed at a random time, with
  its job (SIGKILL to both) or alone (the job runs on and is adopted), then started again;
- ``ddp``: ``run --nproc 2`` with rank 1 (or every process) killed at a random time during
  training, then ``run --resume --nproc 2``.

Invariants after every kill: the run directory opens (``RunDir.open`` and its status); the
continuation exits 0 and the run is complete; test metrics equal the uninterrupted run's (DDP:
the uninterrupted 2-process run's; compress: the int8 variant's); every checkpoint is readable
(or the resume skipped it for an older one); the ledger's energy after the continuation over the
uninterrupted run's (target >= 95 % median, >= 90 % worst); and, for a process killed with
SIGKILL, the seconds between its journal's last record and its death (unmetered, then estimated)
and the estimated share of the energy its journal gives back. ``--elastic N`` repeats the
restart scenario (``--nproc 2 --max-restarts 1``, rank 1 killed after the first checkpoint) and
keeps the output of every failure. Writes benchmarks/results/faults.json (+ faults-logs/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from greentune.rundir import RunDir, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ISONE = ROOT.parent / "shared" / "data" / "multiclient" / "isone_2017"
ZONE = "ME"
RUN = [
    "data.source=csv",
    "data.time_col=ts",
    "data.target=load_mw",
    "data.covariates=[temp_c]",
    "data.temperature_col=temp_c",
    "data.context_length=48",
    "data.horizon=24",
    "data.val=6D",
    "data.test=6D",
    "data.val_origins=6",
    "data.train_stride=1",
    "model.patch_len=12",
    "model.backbone=tiny-bert",
    "train.batch_size=16",
    "eval.batch_size=64",
    "train.epochs=8",
    "train.lr=1e-3",
    "train.patience=null",
    "train.checkpoint_every=5",
    "train.keep_checkpoints=10",
    "train.threads=1",
    "eval.baselines=[seasonal_naive_daily,linear]",
]
POINTS = [
    "data",
    "train/ridge-skip",
    "train/validate-init",
    "train/epoch-0",
    "train/validate-0",
    "train/epoch-1",
    "train/epoch-2",
    "train/validate-2",
    "train/epoch-5",
    "train/validate-7",
    "checkpoint-write#2",
    "test",
    "save",
    "baseline/seasonal_naive_daily",
    "baseline/linear",
    "ledger-save",
]
Case = dict[str, Any]


def cli(*args: str, fault: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GREENTUNE_FAULT"}
    if fault:
        env["GREENTUNE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "greentune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "GREENTUNE_FAULT"}
    return subprocess.Popen(
        [sys.executable, "-m", "greentune", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def real_series(path: Path) -> Path:
    """40 days of one ISO-NE zone's demand and temperature (deg C), hourly, no DST change."""
    raw = pd.read_csv(ISONE / "isone_smd_2017_jan_apr_zones.csv")
    zone = raw[raw["zone"] == ZONE].copy()
    zone["ts"] = pd.to_datetime(zone["datetime_local_hour_begin"])
    zone = zone[zone["ts"] < pd.Timestamp("2017-02-10")]
    out = pd.DataFrame(
        {
            "ts": zone["ts"],
            "load_mw": zone["rt_demand_mw"],
            "temp_c": (zone["drybulb_f"] - 32) * 5 / 9,
        }
    )
    out.to_csv(path, index=False)
    return path


def scores(run: RunDir) -> dict[str, dict[str, float]]:
    return {name: r.scores for name, r in run.metrics.test.items()}


def energy_j(run: RunDir) -> float:
    return float(run.ledger.totals()["all"]["energy_j"])


def max_rel_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    worst = 0.0
    for name in a:
        for key, x in a[name].items():
            y = b[name].get(key)
            if x is None or y is None:
                if x != y:
                    return float("inf")
                continue
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def checkpoints_readable(run: RunDir) -> tuple[int, int]:
    good = bad = 0
    for path in list_checkpoints(run.checkpoint_dir):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
            good += 1
        except Exception:
            bad += 1
    return good, bad


def open_state(path: Path) -> tuple[bool, str]:
    """Does the run directory open, and what status does it report?"""
    if not path.exists():
        return True, "absent"
    try:
        return True, RunDir.open(path).status
    except Exception as exc:
        if "stopped before its run began" in str(exc):
            return True, "not begun"
        return False, f"error: {exc}"


def wait_kill(proc: subprocess.Popen, after_s: float, victims: str = "self") -> float | None:
    """Kill ``proc`` (or its process group) ``after_s`` seconds in; returns when (epoch
    seconds), None if it ended first."""
    deadline = time.monotonic() + after_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    if proc.poll() is not None:
        return None
    killed_at = time.time()
    if victims == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL if victims == "self" else signal.SIGTERM)
    proc.communicate(timeout=120)
    return killed_at


def journal_loss(path: Path, died_at: float) -> dict[str, float]:
    """What the dead process's journal kept: seconds between its last record and the death
    (not metered), the energy it recovers and the part of it that is estimated."""
    from greentune.energy.journal import read_journals

    out: dict[str, float] = {}
    for jf in read_journals(path) if path.is_dir() else []:
        if jf.alive(lock_held=False):
            continue
        rows = [r for r in jf.recovered_rows(None) if r["depth"] == 0]
        last = pd.Timestamp(jf.last_seen).timestamp()
        out["lag_s"] = max(out.get("lag_s", 0.0), died_at - last)
        out["recovered_j"] = out.get("recovered_j", 0.0) + sum(
            sum(r["energy_j"].values()) for r in rows
        )
        out["estimated_j"] = out.get("estimated_j", 0.0) + sum(
            sum(r["energy_j"].values()) for r in rows if r["kind"] == "estimated"
        )
    return out


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Reference:
    """Uninterrupted runs: their metrics (identical in each, checked), the median energy and
    the spread of their energies (the noise floor of ``energy_kept``), and when metering began."""

    run: RunDir
    wall_s: float
    energy_j: float
    energies_j: list[float]
    metered_after_s: float


def reference_runs(csv: Path, out: Path, repeats: int, nproc: int = 1) -> Reference:
    extra = ["--nproc", str(nproc)] if nproc > 1 else []
    walls, energies, offsets, runs = [], [], [], []
    for k in range(repeats):
        t_wall, t0 = time.time(), time.monotonic()
        done = cli("run", f"data.path={csv}", *RUN, f"output_dir={out}", f"name=ref{k}", *extra)
        if done.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{done.stdout}\n{done.stderr}")
        walls.append(time.monotonic() - t0)
        run = RunDir.open(out / f"ref{k}")
        runs.append(run)
        energies.append(energy_j(run))
        started = pd.Timestamp(run.ledger.sessions[0]["started"]).timestamp()
        offsets.append(started - t_wall)
        if max_rel_diff(scores(run), scores(runs[0])) != 0.0:
            raise SystemExit("two uninterrupted runs disagree: the model is not deterministic")
    return Reference(
        runs[0],
        statistics.median(walls),
        statistics.median(energies),
        energies,
        statistics.median(offsets),
    )


def continue_run(path: Path, base: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    extra = ["--nproc", str(nproc)] if nproc > 1 else []
    if (path / "config.yaml").is_file():
        return cli("run", "--resume", str(path), *extra)
    return cli("run", *base, *extra)  # killed before the run began: the same command again


def judge(case: Case, run_path: Path, ref: Reference, done: subprocess.CompletedProcess) -> Case:
    case["continued_exit"] = done.returncode
    if done.returncode != 0:
        case["continue_output"] = (done.stdout + done.stderr)[-1500:]
        return case
    run = RunDir.open(run_path)
    case["final_status"] = run.status
    case["checkpoints_good"], case["checkpoints_bad"] = checkpoints_readable(run)
    case["skipped_checkpoint"] = "skipping unreadable checkpoint" in done.stdout + done.stderr
    case["metric_rel_diff"] = max_rel_diff(scores(run), scores(ref.run))
    case["energy_kept"] = energy_j(run) / ref.energy_j
    recovered = [s for s in run.ledger.sessions if s.get("recovered")]
    case["recovered_sessions"] = len(recovered)
    rows = run.ledger.rows
    est = sum(sum(r["energy_j"].values()) for r in rows if r["kind"] == "estimated")
    case["estimated_j"] = est
    case["journal_left"] = (run_path / "energy-journal").exists()
    return case


def kill_time(rng: random.Random, metered_after_s: float, wall_s: float) -> float:
    """Mostly while metered work runs; one kill in ten before it (imports, config, data
    files opened), where the run directory may not exist yet."""
    if rng.random() < 0.1:
        return rng.uniform(0.0, metered_after_s)
    return rng.uniform(metered_after_s, wall_s)


def run_case(rng: random.Random, csv: Path, tmp: Path, ref: Reference, i: int) -> Case:
    out = tmp / f"run-{i}"
    base = [f"data.path={csv}", *RUN, f"output_dir={out}", "name=k"]
    sig = "kill" if rng.random() < 0.75 else "term"
    case: Case = {"scenario": "run", "signal": sig}
    if rng.random() < 0.5:
        point = rng.choice(POINTS)
        case |= {"mode": "point", "point": point}
        done = cli("run", *base, fault=f"{sig}@{point}")
        died_at = time.time()
        case["exit"] = done.returncode
    else:
        at = kill_time(rng, ref.metered_after_s, ref.wall_s)
        case |= {"mode": "time", "at_s": at}
        proc = start("run", *base)
        killed_at = wait_kill(proc, at, "self" if sig == "kill" else "term")
        if killed_at is None:
            case["ended_before_kill"] = True
            return case
        died_at = killed_at
        case["exit"] = proc.returncode
    case["opens"], case["status_after_kill"] = open_state(out / "k")
    case["phase"] = last_phase(out / "k")
    case |= journal_loss(out / "k", died_at)
    return judge(case, out / "k", ref, continue_run(out / "k", base))


def last_phase(path: Path) -> str | None:
    """The newest window the killed process opened (from its journal), if any."""
    from greentune.energy.journal import read_journals

    if not path.is_dir():
        return None
    for jf in read_journals(path):
        names = [w["window"] for w in jf.open.values()] or [r["window"] for r in jf.rows[-1:]]
        return names[-1] if names else None
    return None


def compress_case(
    rng: random.Random,
    tmp: Path,
    ref: RunDir,
    compressed: RunDir,
    c_times: tuple[float, float],
    i: int,
) -> Case:
    """``ref``: an uninterrupted run; ``compressed``: a copy of it compressed once, without
    faults (its ledger: the run's and one compress session)."""
    parent = tmp / f"compress-{i}" / "ref"
    shutil.copytree(ref.path, parent)
    at = kill_time(rng, *c_times)
    case: Case = {"scenario": "compress", "signal": "kill", "mode": "time", "at_s": at}
    proc = start("compress", str(parent), "-m", "int8-dynamic")
    killed_at = wait_kill(proc, at)
    if killed_at is None:
        case["ended_before_kill"] = True
        return case
    case["exit"] = proc.returncode
    case |= journal_loss(parent, killed_at)
    case["opens"], case["status_after_kill"] = open_state(parent)
    done = cli("compress", str(parent), "-m", "int8-dynamic", "--replace")
    case["continued_exit"] = done.returncode
    if done.returncode != 0:
        case["continue_output"] = (done.stdout + done.stderr)[-1500:]
        return case
    run = RunDir.open(parent)
    variant = run.variant("int8-dynamic")
    case["final_status"] = variant.status
    case["metric_rel_diff"] = max(
        max_rel_diff(scores(variant), scores(compressed.variant("int8-dynamic"))),
        max_rel_diff(scores(run), scores(ref)),
    )
    case["energy_kept"] = energy_j(run) / energy_j(compressed)
    case["recovered_sessions"] = sum(1 for s in run.ledger.sessions if s.get("recovered"))
    case["journal_left"] = (parent / "energy-journal").exists()
    return case


JOBS = """
schedule: {{now: {now}, slot: 1h, policy: run-now, forecast: seasonal-naive, history: 2D,
           output_dir: {runs}}}
sites:
  home: {{carbon: "fixed:300", capacity: 1}}
jobs:
  - name: k
    config: {config}
    overrides: {overrides}
    energy: {{energy_wh: 0.01, duration: 1h}}
    deadline: +12h
    interruptible: true
"""


def schedule_case(rng: random.Random, csv: Path, tmp: Path, ref: Reference, i: int) -> Case:
    folder = tmp / f"schedule-{i}"
    folder.mkdir()
    config = folder / "base.yaml"
    config.write_text("task: forecast\n")
    now = pd.Timestamp.now(tz="UTC").floor("h").isoformat()
    jobs = folder / "jobs.yaml"
    overrides = json.dumps([f"data.path={csv}", *RUN])
    jobs.write_text(JOBS.format(now=now, runs=folder / "runs", config=config, overrides=overrides))
    both = rng.random() < 0.5
    at = 0.5 + kill_time(rng, ref.metered_after_s, ref.wall_s)  # it plans for ~0.5 s first
    case: Case = {"scenario": "schedule", "signal": "kill", "mode": "time", "at_s": at}
    case["victims"] = "scheduler and job" if both else "scheduler"
    proc = start("schedule", "run", str(jobs), "--out", str(folder / "out"))
    deadline = time.monotonic() + at
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:
        case["ended_before_kill"] = True
        return case
    state = folder / "out" / "state.json"
    job_pid = None
    if state.is_file():
        job_pid = json.loads(state.read_text())["jobs"]["k"].get("pid")
    killed_at = time.time()
    proc.kill()
    if both and job_pid and psutil.pid_exists(job_pid):
        os.kill(job_pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    run_path = folder / "runs" / "k"
    if both:
        time.sleep(0.2)  # the job is no child of ours: let its new parent reap it
        case |= journal_loss(run_path, killed_at)
    case["opens"], case["status_after_kill"] = open_state(run_path)
    done = cli("schedule", "run", str(jobs), "--out", str(folder / "out"))
    if done.returncode == 0 and not run_path.is_dir():
        done = subprocess.CompletedProcess(done.args, 1, done.stdout, "no run directory")
    return judge(case, run_path, ref, done)


def ddp_case(rng: random.Random, csv: Path, tmp: Path, ref2: Reference, i: int) -> Case:
    out = tmp / f"ddp-{i}"
    base = [f"data.path={csv}", *RUN, f"output_dir={out}", "name=k"]
    victims = "rank 1" if rng.random() < 0.5 else "every process"
    case: Case = {"scenario": "ddp", "signal": "kill", "mode": "training", "victims": victims}
    proc = start("run", *base, "--nproc", "2")
    ckpt = out / "k" / "checkpoints"
    skip_steps = rng.randint(0, 2)  # after the 1st, 2nd or 3rd checkpoint appeared
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list_checkpoints(ckpt)) > skip_steps:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        case["ended_before_kill"] = True
        return case
    case["after_checkpoints"] = len(list_checkpoints(ckpt))
    killed_at = time.time()
    if victims == "rank 1":
        victim = worker(proc.pid, "1")
        if victim is None:
            proc.kill()
            case["no_worker"] = True
            return case
        victim.kill()
    else:  # the launcher, torchrun (its own session) and the workers
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()
    proc.communicate(timeout=180)
    case["exit"] = proc.returncode
    case["opens"], case["status_after_kill"] = open_state(out / "k")
    if victims == "every process":
        time.sleep(0.2)
        case |= journal_loss(out / "k", killed_at)
    return judge(case, out / "k", ref2, continue_run(out / "k", base, nproc=2))


def worker(parent_pid: int, rank: str) -> psutil.Process | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in psutil.Process(parent_pid).children(recursive=True):
            try:
                if proc.environ().get("RANK") == rank and "greentune" in " ".join(proc.cmdline()):
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.05)
    return None


def elastic_case(csv: Path, tmp: Path, i: int, logs: Path) -> Case:
    out = tmp / f"elastic-{i}"
    long = [
        f"data.path={csv}",
        *[o for o in RUN if not o.startswith(("train.epochs", "eval.baselines"))],
        "train.epochs=60",
        "train.checkpoint_every=20",
        "eval.baselines=[]",
        f"output_dir={out}",
        "name=k",
    ]
    t0 = time.monotonic()
    proc = start("run", *long, "--nproc", "2", "--max-restarts", "1")
    ckpt = out / "k" / "checkpoints"
    while proc.poll() is None and not list_checkpoints(ckpt):
        time.sleep(0.02)
    victim = worker(proc.pid, "1") if proc.poll() is None else None
    if victim is not None:
        victim.kill()
    output, _ = proc.communicate(timeout=600)
    text = output.decode(errors="replace")
    case: Case = {
        "scenario": "elastic",
        "killed": victim is not None,
        "exit": proc.returncode,
        "wall_s": time.monotonic() - t0,
    }
    ok = proc.returncode == 0 and RunDir.open(out / "k").status == "complete"
    case["ok"] = ok
    if not ok:
        log = logs / f"elastic-{i}.txt"
        log.write_text(text + "\n--- log.txt ---\n" + (out / "k" / "log.txt").read_text())
        case["log"] = str(log.relative_to(ROOT))
    return case


# ---------------------------------------------------------------------------- summary


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(cases: list[Case]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in ("run", "compress", "schedule", "ddp"):
        mine = [c for c in cases if c["scenario"] == scenario]
        killed = [c for c in mine if not c.get("ended_before_kill") and not c.get("no_worker")]
        if not mine:
            continue
        kept = [c["energy_kept"] for c in killed if "energy_kept" in c]
        out[scenario] = {
            "tried": len(mine),
            "killed": len(killed),
            "ended_before_the_kill": len(mine) - len(killed),
            "failed_to_open": sum(1 for c in killed if not c.get("opens", True)),
            "continuations_failed": sum(1 for c in killed if c.get("continued_exit") != 0),
            "metric_mismatches": sum(
                1
                for c in killed
                if c.get("metric_rel_diff", 0.0) > (1e-6 if scenario == "ddp" else 0.0)
            ),
            "max_metric_rel_diff": max(
                (c.get("metric_rel_diff", 0.0) for c in killed), default=0.0
            ),
            "unreadable_checkpoints": sum(c.get("checkpoints_bad", 0) for c in killed),
            "resumes_that_skipped_a_checkpoint": sum(
                1 for c in killed if c.get("skipped_checkpoint")
            ),
            "journals_left_after": sum(1 for c in killed if c.get("journal_left")),
            "energy_kept_median": statistics.median(kept) if kept else None,
            "energy_kept_worst": min(kept) if kept else None,
            # where the killed process had metered work that its journal gave back (elsewhere
            # nothing was lost: the ratio is run-to-run noise of two uninterrupted runs)
            "energy_kept_worst_with_recovered_session": min(
                (c["energy_kept"] for c in killed if c.get("recovered_sessions")), default=None
            ),
            "journal_lag_s_median": median_or_none([c["lag_s"] for c in killed if "lag_s" in c]),
            "journal_lag_s_max": max((c["lag_s"] for c in killed if "lag_s" in c), default=None),
            "recovered_sessions_estimated_share_median": median_or_none(
                [c["estimated_j"] / c["recovered_j"] for c in killed if c.get("recovered_j")]
            ),
            "statuses_after_kill": dict(Counter(str(c.get("status_after_kill")) for c in killed)),
            "phases": dict(Counter(str(c.get("point") or c.get("phase")) for c in killed)),
        }
    elastic = [c for c in cases if c["scenario"] == "elastic"]
    if elastic:
        out["elastic"] = {
            "tried": len(elastic),
            "ok": sum(1 for c in elastic if c["ok"]),
            "failures": [c.get("log") for c in elastic if not c["ok"]],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--elastic", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="uninterrupted reference runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    parser.add_argument(
        "--resummarise", action="store_true", help="recompute --out's summary from its cases"
    )
    args = parser.parse_args()
    if args.resummarise:
        saved = json.loads(args.out.read_text())
        saved["summary"] = summarise(saved["cases"])
        args.out.write_text(json.dumps(saved, indent=1, default=str) + "\n")
        print(json.dumps(saved["summary"], indent=1))
        return
    if not ISONE.is_dir():
        raise SystemExit(f"{ISONE} is missing: this benchmark reads real ISO-NE data from there")
    rng = random.Random(args.seed)
    logs = RESULTS / "faults-logs"
    logs.mkdir(parents=True, exist_ok=True)
    n_compress = n_schedule = n_ddp = round(args.kills * 0.15)
    n_run = args.kills - n_compress - n_schedule - n_ddp
    cases: list[Case] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        csv = real_series(tmp / "isone.csv")
        ref = reference_runs(csv, tmp / "ref1", args.repeats)
        print(f"reference runs: {ref.wall_s:.1f} s, {ref.energies_j} J", flush=True)
        # the compress reference: the run copied (its ledger included) and compressed once
        ref_copy = tmp / "cref" / "ref"
        shutil.copytree(ref.run.path, ref_copy)
        t_wall, t0 = time.time(), time.monotonic()
        done = cli("compress", str(ref_copy), "-m", "int8-dynamic")
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        c_s = time.monotonic() - t0
        compressed = RunDir.open(ref_copy)
        c_started = compressed.ledger.sessions[-1]["started"]
        c_times = (pd.Timestamp(c_started).timestamp() - t_wall, c_s)
        ref2 = reference_runs(csv, tmp / "ref2", args.repeats, nproc=2) if n_ddp else None
        plan = ["run"] * n_run + ["compress"] * n_compress + ["schedule"] * n_schedule
        plan += ["ddp"] * n_ddp
        rng.shuffle(plan)
        for i, scenario in enumerate(plan):
            if scenario == "run":
                case = run_case(rng, csv, tmp, ref, i)
            elif scenario == "compress":
                case = compress_case(rng, tmp, ref.run, compressed, c_times, i)
            elif scenario == "schedule":
                case = schedule_case(rng, csv, tmp, ref, i)
            else:
                assert ref2 is not None
                case = ddp_case(rng, csv, tmp, ref2, i)
            cases.append(case)
            brief = {k: case.get(k) for k in ("scenario", "mode", "point", "at_s", "exit",
                                               "status_after_kill", "continued_exit",
                                               "metric_rel_diff", "energy_kept")}  # fmt: skip
            print(i, json.dumps(brief, default=str), flush=True)
            shutil.rmtree(tmp / f"{scenario}-{i}", ignore_errors=True)
        for i in range(args.elastic):
            case = elastic_case(csv, tmp, i, logs)
            cases.append(case)
            print("elastic", i, case, flush=True)
            shutil.rmtree(tmp / f"elastic-{i}", ignore_errors=True)
    result = {
        "machine": machine_info(),
        "data": f"ISO-NE zone {ZONE}, 2017-01-01 .. 2017-02-09 hourly (real demand, dry bulb)",
        "config": RUN,
        "kills": args.kills,
        "seed": args.seed,
        "reference": {
            "runs": args.repeats,
            "run_wall_s": ref.wall_s,
            "run_energy_j": ref.energies_j,
            "metering_began_after_s": ref.metered_after_s,
            "ddp_energy_j": ref2.energies_j if ref2 else None,
            "compress_s": c_s,
            "compress_metering_began_after_s": c_times[0],
        },
        "wall_s": time.monotonic() - t_start,
        "summary": summarise(cases),
        "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
