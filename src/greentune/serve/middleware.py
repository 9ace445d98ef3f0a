"""ASGI middleware around every request: the body-size limit (413) and the access record
(Prometheus counters and latency by route template and status, one log line that never holds
the body)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from greentune.serve.metrics import ServeMetrics

Scope = dict[str, Any]
Message = dict[str, Any]

log = logging.getLogger("greentune.serve")


class BodyTooLarge(Exception):
    pass


async def _send_413(send: Any, limit: int) -> None:
    body = json.dumps(
        {"detail": f"request body over {limit:,} bytes; send fewer rows or texts per request"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServeMiddleware:
    def __init__(self, app: Any, metrics: ServeMetrics, max_body_bytes: int, log_requests: bool):
        self.app, self.metrics = app, metrics
        self.max_body_bytes, self.log_requests = max_body_bytes, log_requests

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > limit
        except ValueError:
            too_big = False
        if too_big:
            status[0] = 413
            await _send_413(send, limit)
            self._record(scope, 413, t0)
            return
        seen = [0]
        started = [False]

        async def counted_receive() -> Message:
            message: Message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:  # a chunked body that grows past the limit
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                started[0] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started[0]:
                status[0] = 413
                await _send_413(send, limit)
        finally:
            self._record(scope, status[0], t0)

    def _record(self, scope: Scope, status: int, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None) or "unmatched"
        code = str(status)
        self.metrics.requests.labels(route, code).inc()
        self.metrics.latency.labels(route, code).observe(elapsed)
        if self.log_requests:
            state = scope.get("state") or {}
            pii = state.get("pii")
            log.info(
                "%s %s %d %.1fms key=%s items=%s%s",
                scope.get("method"),
                route,
                status,
                elapsed * 1e3,
                state.get("key_id", "-"),
                state.get("items", "-"),
                f" masked={','.join(pii)}" if pii else "",
            )
