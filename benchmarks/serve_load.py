"""Closed-loop HTTP load from a separate process: ``concurrency`` clients each send one text per
request for ``duration_s`` after ``warmup_s``; prints one JSON line with latencies, status
counts, the X-Energy-Joules the replies carried, and the server process's CPU seconds.

    python benchmarks/serve_load.py URL --texts FILE --concurrency 8 --duration 8 [--key K]
        [--pid PID] [--reload-at 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import httpx
import psutil


def cpu_s(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    kids = sum(c.cpu_times().user + c.cpu_times().system for c in proc.children(recursive=True))
    return t.user + t.system + kids


def rss_mb(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    return (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))) / 2**20


async def main(args: argparse.Namespace) -> dict:
    texts = [t for t in Path(args.texts).read_text().splitlines() if t.strip()]
    headers = {"X-API-Key": args.key} if args.key else {}
    proc = psutil.Process(args.pid) if args.pid else None
    rng = random.Random(0)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    energy_j = 0.0
    energy_kind: set[str] = set()
    batch_sizes: list[int] = []
    measuring = False
    stop_at = time.perf_counter() + args.warmup + args.duration
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal energy_j
            while time.perf_counter() < stop_at:
                text = rng.choice(texts)
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/classify", json={"texts": [text]}, headers=headers)
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    r, code = None, type(exc).__name__
                if not measuring:
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[code] = statuses.get(code, 0) + 1
                if r is not None and r.status_code == 200 and "x-energy-joules" in r.headers:
                    energy_j += float(r.headers["x-energy-joules"])
                    energy_kind.add(r.headers.get("x-energy-kind", "?"))
                    batch_sizes.append(int(r.json()["energy"]["batch_size"]))

        async def reloader() -> dict:
            await asyncio.sleep(args.warmup + args.reload_at)
            r = await client.post("/admin/reload", json={}, headers=headers)
            return {"status": r.status_code, "at_s": args.reload_at}

        tasks = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        reload_task = asyncio.create_task(reloader()) if args.reload_at is not None else None
        await asyncio.sleep(args.warmup)
        measuring = True
        cpu0, rss0, t0 = cpu_s(proc), rss_mb(proc), time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        cpu1, rss1 = cpu_s(proc), rss_mb(proc)
        reload = await reload_task if reload_task else None
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return 1e3 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    ok = statuses.get("200", 0)
    return {
        "concurrency": args.concurrency,
        "duration_s": elapsed,
        "requests": len(lat),
        "ok": ok,
        "statuses": statuses,
        "throughput_per_s": ok / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "server_cpu_s": cpu1 - cpu0,
        "rss_mb_start": rss0,
        "rss_mb_end": rss1,
        "reply_energy_j": energy_j,
        "reply_energy_kind": sorted(energy_kind),
        "mean_batch_size": sum(batch_sizes) / len(batch_sizes) if batch_sizes else None,
        "reload": reload,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--texts", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--key", default=None)
    p.add_argument("--pid", type=int, default=None)
    p.add_argument("--reload-at", type=float, default=None)
    print(json.dumps(asyncio.run(main(p.parse_args()))))
