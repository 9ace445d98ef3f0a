"""Prometheus metrics of one service (``prometheus-client``). With several worker processes
(``PROMETHEUS_MULTIPROC_DIR`` set) every worker writes its samples to that folder and
``/metrics`` sums them, whichever worker answers the scrape.

The names here are what ``deploy/prometheus/alerts.yaml`` and the HPA read; a test keeps them
in step."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ENERGY_BUCKETS_J = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)

METRIC_NAMES = (
    "greentune_requests_total",
    "greentune_request_duration_seconds",
    "greentune_predictions_total",
    "greentune_batch_size",
    "greentune_queue_depth",
    "greentune_energy_joules_total",
    "greentune_energy_per_request_joules",
    "greentune_model_info",
    "greentune_reloads_total",
)


class ServeMetrics:
    """The collectors, registered in a registry of their own (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "greentune_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "greentune_request_duration_seconds",
            "Request latency by route and status",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.predictions = Counter(
            "greentune_predictions", "Predictions served (windows or texts)", ["route"], registry=r
        )
        self.batch_size = Histogram(
            "greentune_batch_size",
            "Predictions per forward pass",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "greentune_queue_depth",
            "Requests waiting for the model",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.energy = Counter(
            "greentune_energy_joules",
            "Energy of the forward passes, by how it was obtained (measured or model)",
            ["kind"],
            registry=r,
        )
        self.energy_per_request = Histogram(
            "greentune_energy_per_request_joules",
            "Each request's share of its batch's energy",
            ["route"],
            buckets=ENERGY_BUCKETS_J,
            registry=r,
        )
        self.model_info = Gauge(
            "greentune_model_info",
            "The served model (value 1)",
            ["run", "variant", "row", "version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "greentune_reloads", "Model reloads by outcome", ["outcome"], registry=r
        )

    def serving(self, run: str, variant: str, row: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(run, variant, row, version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
