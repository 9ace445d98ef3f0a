"""greentune serve under load, side by side with the naive FastAPI app (one model call per
request, the 20-line version a user writes first: benchmarks/naive_serve.py).

    .venv/bin/python benchmarks/serve.py [--rounds 3] [--duration 8] [--soak 60]
        [--parts sweep,main,soak] [--resummarise]

Model: MiniLM + LoRA text classifier trained on SST-2 (`../shared/data/text/sst2/dev.csv`,
872 sentences, the example classify config, up to 8 epochs with its early stopping),
compressed to int8-dynamic and onnx-int8.

Load: one text per request from a separate process on loopback (benchmarks/serve_load.py: a
lean asyncio HTTP/1.1 client, since on 2 cores the load generator's own CPU slows the server
it measures). Closed loop at concurrency 1, 8, 32; open loop (Poisson arrivals) at about half
of a variant's unbatched capacity, where tail latency is not queueing against saturation.

- sweep: the batching defaults (max batch 8/16/32/64, 5 ms wait) chosen on other texts (the
  shipped grid-incident tickets, examples/grid_incidents.csv) at concurrency 32, fp32 and
  onnx-int8 — never on the SST-2 load of the main table.
- main: SST-2 training sentences (>= 6 words) as the load. Servers: greentune serve with
  dynamic batching (max 32 predictions, 5 ms wait) and without (max 1), and the naive app, each
  for fp32, int8-dynamic and onnx-int8; rounds interleave the servers (alternating order);
  medians over rounds, ranges kept.
- soak: 60 s at concurrency 32 on greentune fp32 with a reload in the middle: errors,
  resident-memory growth (curve every 5 s), energy per 1,000 predictions beside the compress
  table's figure for the same model.

Energy is modelled for every server alike (kind "model"): the server process's CPU seconds x
the CPU power per thread greentune's meter uses here, plus resident memory x its W per GB.
greentune's own per-reply figures (X-Energy-Joules, the same model) are reported beside it.

Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from machine import machine_info

import greentune as gt
from greentune.cli import quiet_libraries
from greentune.compress import CompressOptions, compress_run
from greentune.config import EnergyConfig, load_config
from greentune.energy.ledger import Ledger
from greentune.energy.model import resolve_cpu_power
from greentune.serve.keys import KeyStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs"
SST2 = ROOT.parent / "shared" / "data" / "text" / "sst2"
VARIANTS = ["fp32", "int8-dynamic", "onnx-int8"]
CONCURRENCY = [1, 8, 32]
PY = sys.executable


def build_run(log: Any) -> Path:
    run_path = RUNS / "serve-classify"
    if (run_path / "compression.json").is_file():
        return run_path
    cfg = load_config(
        ROOT / "configs" / "classify" / "example.yaml",
        [
            f"text.path={SST2 / 'dev.csv'}",
            "train.epochs=8",
            f"output_dir={RUNS}",
            "name=serve-classify",
            "seed=0",
        ],
    )
    run = gt.run(cfg, echo=log)
    compress_run(run.path, CompressOptions(("int8-dynamic", "onnx-int8"), replace=True), log)
    return run.path


def texts_file() -> Path:
    out = RUNS / "serve-texts.txt"
    if not out.is_file():
        import pandas as pd

        train = pd.read_csv(SST2 / "train.csv")["text"].astype(str)
        long = [t for t in train if len(t.split()) >= 6][:3000]
        out.write_text("\n".join(long) + "\n")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(kind: str, run: Path, variant: str, max_batch: int, keys: Path) -> tuple:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind == "greentune":
        cmd = [PY, "-m", "greentune", "serve", str(run), "--port", str(port), "--keys", str(keys)]
        cmd += ["--variant", variant, "--rate", "1000000", "--burst", "1000000"]
        cmd += ["--max-batch-size", str(max_batch), "--max-wait-ms", "5"]
    else:
        env.update(GREENTUNE_NAIVE_RUN=str(run), GREENTUNE_NAIVE_VARIANT=variant)
        cmd = [
            PY,
            "-m",
            "uvicorn",
            "--factory",
            "naive_serve:app",
            "--app-dir",
            str(ROOT / "benchmarks"),
        ]
        cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    log_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (lives as long as the server)
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    probe = "/readyz" if kind == "greentune" else "/docs"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_file.seek(0)
            raise RuntimeError(f"{cmd} exited: {log_file.read()[-3000:]}")
        try:
            if httpx.get(base + probe, timeout=1).status_code == 200:
                return proc, base, log_file
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} not ready in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def load(base: str, texts: Path, conc: int, duration: float, key: str, pid: int, **kw: Any) -> dict:
    cmd = [PY, str(ROOT / "benchmarks" / "serve_load.py"), base, "--texts", str(texts)]
    cmd += [
        "--concurrency",
        str(conc),
        "--duration",
        str(duration),
        "--key",
        key,
        "--pid",
        str(pid),
    ]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    before = batch_stats(base)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    after = batch_stats(base)
    batches = after[1] - before[1]
    row["mean_batch_size"] = (after[0] - before[0]) / batches if batches else None
    return row


def batch_stats(base: str) -> tuple[float, float]:
    """(sum, count) of greentune_batch_size from /metrics; (0, 0) for the naive app."""
    reply = httpx.get(base + "/metrics")
    text = reply.text if reply.status_code == 200 else ""
    values = dict(re.findall(r"^greentune_batch_size_(sum|count) ([0-9.e+]+)$", text, re.M))
    return float(values.get("sum", 0)), float(values.get("count", 0))


def modelled_wh_per_1k(row: dict, w_per_thread: float, w_per_gb: float) -> float | None:
    if not row["ok"]:
        return None
    mem_gb = (row["rss_mb_start"] + row["rss_mb_end"]) / 2 / 1024
    joules = row["server_cpu_s"] * w_per_thread + mem_gb * w_per_gb * row["duration_s"]
    return 1000 * joules / 3600 / row["ok"]


OPEN_LOOP_RATE = {"fp32": 30.0, "int8-dynamic": 30.0, "onnx-int8": 70.0}
"""Requests/s for the open-loop runs: about half of each variant's unbatched capacity here."""


def show(label: str, r: dict) -> None:
    how = f"c={r['concurrency']:2d}" if r["concurrency"] else f"{r['rate_per_s']:g}/s open"
    print(
        f"{label} {how}: {r['throughput_per_s']:6.1f}/s p50 {r['p50_ms']:6.1f} "
        f"p99 {r['p99_ms']:7.1f} ms batch {r['mean_batch_size'] or 1:.1f} {r['statuses']}",
        flush=True,
    )


def measure(args: argparse.Namespace, run: Path, texts: Path, keys: Path, key: str) -> list:
    servers = [("greentune", v, b) for v in VARIANTS for b in (True, False)]
    servers += [("naive", v, False) for v in VARIANTS]
    rows = []
    for rnd in range(args.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]  # interleaved, alternating order
        for kind, variant, batched in order:
            proc, base, _ = start_server(kind, run, variant, 32 if batched else 1, keys)
            label = f"round {rnd} {kind:9s} {variant:12s} batched={batched!s:5s}"
            meta = {"round": rnd, "server": kind, "variant": variant, "batched": batched}
            try:
                for conc in CONCURRENCY:
                    r = load(base, texts, conc, args.duration, key, proc.pid)
                    rows.append({**meta, **r})
                    show(label, r)
                r = load(base, texts, 1, args.duration, key, proc.pid, rate=OPEN_LOOP_RATE[variant])
                rows.append({**meta, **r})
                show(label, r)
            finally:
                stop_server(proc)
    return rows


def sweep(args: argparse.Namespace, run: Path, keys: Path, key: str) -> list:
    import pandas as pd

    texts = RUNS / "serve-texts-grid.txt"
    texts.write_text(
        "\n".join(pd.read_csv(ROOT / "examples" / "grid_incidents.csv")["text"]) + "\n"
    )
    rows = []
    configs = [(v, size) for v in ("fp32", "onnx-int8") for size in (8, 16, 32, 64)]
    for rnd in range(args.rounds):
        for variant, size in configs if rnd % 2 == 0 else configs[::-1]:
            proc, base, _ = start_server("greentune", run, variant, size, keys)
            try:
                r = load(base, texts, 32, args.duration, key, proc.pid)
            finally:
                stop_server(proc)
            rows.append({"round": rnd, "variant": variant, "max_batch_size": size, **r})
            show(f"sweep {rnd} {variant:9s} max_batch={size:2d}", r)
    return rows


def soak(args: argparse.Namespace, run: Path, texts: Path, keys: Path, key: str) -> dict:
    before = len([row for row in Ledger.load(run).rows if row["phase"] == "serve"])
    proc, base, _ = start_server("greentune", run, "fp32", 32, keys)
    try:
        r = load(base, texts, 32, args.soak, key, proc.pid, reload_at=args.soak / 2, warmup=10)
    finally:
        stop_server(proc)
    rows = [row for row in Ledger.load(run).rows if row["phase"] == "serve"][before:]
    serve_row = rows[-1] if rows else None
    growth = (
        (r["rss_mb_end"] - r["rss_mb_start"]) / r["rss_mb_start"] if r["rss_mb_start"] else None
    )
    out = {
        **r,
        "errors": sum(v for k, v in r["statuses"].items() if k != "200"),
        "rss_growth": growth,
        "reply_wh_per_1k": 1000 * r["reply_energy_j"] / 3600 / r["ok"] if r["ok"] else None,
    }
    if serve_row is not None:
        extra = serve_row.get("extra", {})
        total_j = sum(serve_row["energy_j"].values())
        out["ledger"] = {
            "kind": serve_row["kind"],
            "window_s": serve_row["duration_s"],
            "energy_j": total_j,
            "batches_energy_j": extra.get("energy_j"),
            "predictions": extra.get("predictions"),
            "wh_per_1k_all_in": 1000 * total_j / 3600 / extra["predictions"]
            if extra.get("predictions")
            else None,
        }
    return out


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def load_label(r: dict) -> str:
    return f"c{r['concurrency']}" if r["concurrency"] else f"open{r['rate_per_s']:g}"


def summarise_sweep(rows: list) -> list:
    cells: dict[tuple, list] = {}
    for r in rows:
        cells.setdefault((r["variant"], r["max_batch_size"]), []).append(r)
    return [
        {
            "variant": variant,
            "max_batch_size": size,
            "rounds": len(rs),
            "throughput_per_s": med([r["throughput_per_s"] for r in rs]),
            "p50_ms": med([r["p50_ms"] for r in rs]),
            "p99_ms": med([r["p99_ms"] for r in rs]),
            "mean_batch_size": med([r["mean_batch_size"] for r in rs]),
        }
        for (variant, size), rs in sorted(cells.items())
    ]


def summarise(rows: list, compress: dict, w_thread: float, w_gb: float) -> dict:
    cells: dict[tuple, list] = {}
    for r in rows:
        cells.setdefault((r["server"], r["variant"], r["batched"], load_label(r)), []).append(r)
    table = []
    for (server, variant, batched, label), rs in sorted(cells.items()):
        table.append(
            {
                "server": server,
                "variant": variant,
                "batched": batched,
                "load": label,
                "rounds": len(rs),
                "throughput_per_s": med([r["throughput_per_s"] for r in rs]),
                "throughput_range": [
                    min(r["throughput_per_s"] for r in rs),
                    max(r["throughput_per_s"] for r in rs),
                ],
                "p50_ms": med([r["p50_ms"] for r in rs]),
                "p95_ms": med([r["p95_ms"] for r in rs]),
                "p99_ms": med([r["p99_ms"] for r in rs]),
                "errors": sum(sum(v for k, v in r["statuses"].items() if k != "200") for r in rs),
                "mean_batch_size": med([r["mean_batch_size"] for r in rs]),
                "wh_per_1k_modelled": med([modelled_wh_per_1k(r, w_thread, w_gb) for r in rs]),
                "wh_per_1k_reply_headers": med(
                    [
                        1000 * r["reply_energy_j"] / 3600 / r["ok"]
                        if r["ok"] and r["reply_energy_j"]
                        else None
                        for r in rs
                    ]
                ),
            }
        )

    def cell(server: str, variant: str, batched: bool, label: str) -> dict:
        return next(
            t
            for t in table
            if (t["server"], t["variant"], t["batched"], t["load"])
            == (server, variant, batched, label)
        )

    ratios = {}
    for v in VARIANTS:
        b32, u32, n32 = (
            cell("greentune", v, True, "c32"),
            cell("greentune", v, False, "c32"),
            cell("naive", v, False, "c32"),
        )
        u1 = cell("greentune", v, False, "c1")
        open_label = f"open{OPEN_LOOP_RATE[v]:g}"
        bo, uo = cell("greentune", v, True, open_label), cell("greentune", v, False, open_label)
        ratios[v] = {
            "open_loop_rate_per_s": OPEN_LOOP_RATE[v],
            "p99_batched_open_over_batch1_p50": bo["p99_ms"] / u1["p50_ms"],
            "p99_batched_open_vs_unbatched_open": bo["p99_ms"] / uo["p99_ms"],
            "throughput_batched_vs_unbatched_c32": b32["throughput_per_s"]
            / u32["throughput_per_s"],
            "throughput_batched_vs_naive_c32": b32["throughput_per_s"] / n32["throughput_per_s"],
            "p99_batched_c32_over_p99_c1": b32["p99_ms"] / u1["p99_ms"],
            "p99_batched_vs_unbatched_c32": b32["p99_ms"] / u32["p99_ms"],
            "p99_batched_vs_naive_c32": b32["p99_ms"] / n32["p99_ms"],
            "energy_batched_vs_naive_c32": (b32["wh_per_1k_modelled"] or 0)
            / (n32["wh_per_1k_modelled"] or 1),
        }
    ref = compress.get("reference", {})
    compress_wh = {"fp32": ref.get("wh_per_1k_predictions")}
    for row in compress.get("variants", []):
        compress_wh[row["method"]] = row.get("wh_per_1k_predictions")
    return {"table": table, "ratios": ratios, "compress_table_wh_per_1k": compress_wh}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--soak", type=float, default=60.0)
    p.add_argument("--parts", default="sweep,main,soak")
    p.add_argument("--resummarise", action="store_true")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    quiet_libraries()
    out_path = RESULTS / "serve.json"
    cfg = EnergyConfig()
    w_thread = resolve_cpu_power(cfg.cpu_power_per_thread_w).power_per_thread_w
    w_gb = cfg.memory_power_per_gb_w
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if not args.resummarise:
        run = build_run(print)
        texts = texts_file()
        result.update(
            machine=machine_info(),
            run=str(run),
            protocol=__doc__,
            energy_rule={"kind": "model", "cpu_w_per_thread": w_thread, "memory_w_per_gb": w_gb},
        )
        with tempfile.TemporaryDirectory() as tmp:
            keys = Path(tmp) / "keys.json"
            key, _ = KeyStore(keys).add("bench", ["classify", "admin"])
            t0 = time.time()
            if "sweep" in parts:
                result["sweep_rows"] = sweep(args, run, keys, key)
            if "main" in parts:
                result["rows"] = measure(args, run, texts, keys, key)
            if "soak" in parts:
                result["soak"] = soak(args, run, texts, keys, key)
            result["wall_s"] = time.time() - t0
    compress = json.loads((Path(result["run"]) / "compression.json").read_text())
    if result.get("rows"):
        result["summary"] = summarise(result["rows"], compress, w_thread, w_gb)
    if result.get("sweep_rows"):
        result["sweep"] = summarise_sweep(result["sweep_rows"])
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result.get(k) for k in ("sweep", "soak")}, indent=1))
    if "summary" in result:
        print(json.dumps(result["summary"]["ratios"], indent=1))


if __name__ == "__main__":
    main()
