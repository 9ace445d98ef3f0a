"""HTTP load from a separate process, one text per request, for ``duration_s`` after
``warmup_s``: closed loop (``concurrency`` clients, each sends when its last reply came) or, with
``--rate``, open loop (Poisson arrivals at that mean rate, whatever the replies do: the tail
latency a service shows below saturation). Prints one JSON line with latencies, status counts,
the X-Energy-Joules the replies carried, and the server process's CPU seconds.

    python benchmarks/serve_load.py URL --texts FILE --concurrency 8 --duration 8 [--key K]
        [--pid PID] [--reload-at 30] [--rate 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import psutil

try:  # the load generator shares the cores with the server: keep its own cost low
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Conn:
    """One keep-alive HTTP/1.1 connection: a few lines of asyncio instead of a client library,
    because on 2 cores the load generator's own CPU time slows the server it measures."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{self.extra}\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
    measuring = False
    stop_at = time.perf_counter() + args.warmup + args.duration
    host, port = args.url.split("//", 1)[1].rsplit(":", 1)
    free: list[Conn] = [Conn(host, int(port), headers) for _ in range(args.concurrency)]

    async def one(text: str) -> None:
        nonlocal energy_j
        conn = free.pop() if free else Conn(host, int(port), headers)
        t0 = time.perf_counter()
        counted = measuring
        payload = json.dumps({"texts": [text]}).encode()
        try:
            status, got, _ = await conn.post("/v1/classify", payload)
            code = str(status)
        except (OSError, asyncio.IncompleteReadError) as exc:
            status, got, code = 0, {}, type(exc).__name__
            conn.close()
            conn = Conn(host, int(port), headers)
        free.append(conn)
        if not counted:
            return
        latencies.append(time.perf_counter() - t0)
        statuses[code] = statuses.get(code, 0) + 1
        if status == 200 and "x-energy-joules" in got:
            energy_j += float(got["x-energy-joules"])
            energy_kind.add(got.get("x-energy-kind", "?"))

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await one(rng.choice(texts))

    async def arrivals() -> None:
        pending: set[asyncio.Task[None]] = set()
        while time.perf_counter() < stop_at:
            task = asyncio.create_task(one(rng.choice(texts)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(rng.expovariate(args.rate))
        await asyncio.gather(*pending)

    async def reloader() -> dict:
        await asyncio.sleep(args.warmup + args.reload_at)
        admin = Conn(host, int(port), headers)
        status, _, _ = await admin.post("/admin/reload", b"{}")
        admin.close()
        return {"status": status, "at_s": args.reload_at}

    if args.rate:
        tasks = [asyncio.create_task(arrivals())]
    else:
        tasks = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    reload_task = asyncio.create_task(reloader()) if args.reload_at is not None else None
    await asyncio.sleep(args.warmup)
    measuring = True
    cpu0, rss0, t0 = cpu_s(proc), rss_mb(proc), time.perf_counter()
    rss_curve: list[float] = []

    async def sample_rss() -> None:
        while time.perf_counter() < stop_at:
            rss_curve.append(round(rss_mb(proc), 1))
            await asyncio.sleep(5)

    sampler = asyncio.create_task(sample_rss())
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0  # before the sampler's last sleep ends
    cpu1, rss1 = cpu_s(proc), rss_mb(proc)
    sampler.cancel()
    reload = await reload_task if reload_task else None
    for conn in free:
        conn.close()
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return 1e3 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    ok = statuses.get("200", 0)
    return {
        "concurrency": None if args.rate else args.concurrency,
        "rate_per_s": args.rate,
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
        "rss_mb_every_5s": rss_curve,
        "reply_energy_j": energy_j,
        "reply_energy_kind": sorted(energy_kind),
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
    p.add_argument("--rate", type=float, default=None, help="open loop: Poisson arrivals per s")
    run = uvloop.run if uvloop is not None else asyncio.run
    print(json.dumps(run(main(p.parse_args()))))
