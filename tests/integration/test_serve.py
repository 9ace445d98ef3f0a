"""greentune serve on tiny real runs, in process (FastAPI's TestClient runs the lifespan):
status codes, masking, energy per request, metrics, reload under load, the OpenAPI contract."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import greentune as gt
from greentune.energy.ledger import Ledger
from greentune.serve.app import build_service, create_app
from greentune.serve.keys import KeyStore
from greentune.serve.settings import ServeSettings
from tests.conftest import make_series, series_overrides, tiny_classify_run


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    return tiny_classify_run(tmp_path_factory.mktemp("serve-c"), 160, 1)


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-f")
    csv = tmp / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp / "runs"),
            "train.epochs=1",
            "eval.baselines=[seasonal_naive_daily]",
        ]
    )
    return gt.run(cfg, echo=lambda m: None)


@pytest.fixture
def keys(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    return {
        "store": store,
        "classify": store.add("app", ["classify"])[0],
        "forecast": store.add("grid", ["forecast"])[0],
        "admin": store.add("ops", ["admin"])[0],
    }


def settings_for(run, keys, **kw) -> ServeSettings:
    return ServeSettings(run=str(run.path), keys_file=str(keys["store"].path), **kw)


def client_for(settings: ServeSettings) -> TestClient:
    return TestClient(create_app(build_service(settings)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def history(hours: int = 72) -> list[dict]:
    frame = make_series(days=5).iloc[-hours:].copy()
    frame["ts"] = frame["ts"].astype(str)
    frame.loc[frame.index[-24:], "load_mw"] = np.nan  # the horizon: known temperature only
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def test_classify_reply_matches_the_predictor_and_carries_energy(classify_run, keys):
    texts = ["feeder 12 tripped at the substation", "meter reading late", "outage on main st"]
    with client_for(settings_for(classify_run, keys)) as client:
        r = client.post("/v1/classify", json={"texts": texts}, headers=auth(keys["classify"]))
        assert r.status_code == 200, r.text
        body = r.json()
        expected = gt.Predictor.from_run(classify_run).predict(texts)
        assert [p["label"] for p in body["predictions"]] == list(expected["label"])
        np.testing.assert_allclose(
            [p["probability"] for p in body["predictions"]], expected["probability"], rtol=1e-5
        )
        version = body["model"]["version"]
        assert len(version) == 12 and r.headers["X-Model-Version"] == version
        assert body["model"]["variant"] == "fp32"
        assert float(r.headers["X-Energy-Joules"]) == pytest.approx(
            body["energy"]["joules"], rel=1e-8
        )
        assert body["energy"]["joules"] > 0 and r.headers["X-Energy-Kind"] in ("model", "measured")
        models = client.get("/v1/models", headers=auth(keys["classify"])).json()["models"][0]
        assert models["version"] == version and models["task"] == "classify"
        assert models["served"]["requests"] == 1 and models["served"]["predictions"] == 3
        assert "accuracy" in models["test_metrics"]
        assert models["energy_per_1k_predictions"]["wh"] > 0
    # the service's lifetime joins the run's ledger as phase serve, with what it served
    ledger = Ledger.load(classify_run.path)
    serve_rows = [r for r in ledger.rows if r["phase"] == "serve"]
    assert serve_rows[-1]["extra"]["predictions"] == 3
    assert serve_rows[-1]["extra"]["energy_j"] <= sum(serve_rows[-1]["energy_j"].values())


def test_forecast_reply_matches_the_predictor(forecast_run, keys):
    rows = history()
    with client_for(settings_for(forecast_run, keys)) as client:
        r = client.post("/v1/forecast", json={"history": rows}, headers=auth(keys["forecast"]))
        assert r.status_code == 200, r.text
        got = r.json()["forecasts"]
        assert len(got) == 24 and [p["step"] for p in got] == list(range(1, 25))
        frame = pd.DataFrame(rows)
        expected = gt.Predictor.from_run(forecast_run).predict(frame)
        np.testing.assert_allclose(
            [p["values"]["load_mw_forecast"] for p in got], expected["load_mw_forecast"], rtol=1e-5
        )
        assert set(got[0]["values"]) >= {"load_mw_forecast", "load_mw_q0.1", "load_mw_q0.9"}
        # the wrong task's route says which one to use
        r = client.post("/v1/classify", json={"texts": ["x"]}, headers=auth(keys["forecast"]))
        assert r.status_code == 403
        # a bad history names the column
        bad = [{k: v for k, v in row.items() if k != "temp_c"} for row in rows]
        r = client.post("/v1/forecast", json={"history": bad}, headers=auth(keys["forecast"]))
        assert r.status_code == 422 and "temp_c" in json.dumps(r.json())
        assert r.json()["detail"][0]["loc"] == ["body", "history"]


def test_a_kept_row_is_served_and_a_reload_switches_back_to_the_network(forecast_run, keys):
    rows = history()
    settings = settings_for(forecast_run, keys, row="seasonal_naive_daily")
    with client_for(settings) as client:
        r = client.post("/v1/forecast", json={"history": rows}, headers=auth(keys["forecast"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["row"] == "seasonal_naive_daily"
        expected = gt.Predictor.from_run(forecast_run, row="seasonal_naive_daily").predict(
            pd.DataFrame(rows)
        )
        np.testing.assert_array_equal(
            [p["values"]["load_mw_forecast"] for p in body["forecasts"]],
            expected["load_mw_forecast"],
        )
        card = client.get("/v1/models", headers=auth(keys["forecast"])).json()["models"][0]
        info = [x for x in client.get("/metrics").text.splitlines() if "model_info{" in x]
        assert len(info) == 1 and 'row="seasonal_naive_daily"' in info[0]
        naive = forecast_run.metrics.test["seasonal_naive_daily"].scores
        assert card["row"] == "seasonal_naive_daily"
        assert card["test_metrics"]["mape"] == naive["mape"]
        network = forecast_run.metrics.model
        r = client.post("/admin/reload", json={}, headers=auth(keys["admin"]))  # the row stays
        assert r.status_code == 200 and r.json()["row"] == "seasonal_naive_daily", r.text
        r = client.post("/admin/reload", json={"row": "model"}, headers=auth(keys["admin"]))
        assert r.status_code == 200 and r.json()["row"] == network, r.text
        assert r.json()["version"] != card["version"]
        r = client.post("/admin/reload", json={"row": "nope"}, headers=auth(keys["admin"]))
        assert r.status_code in (400, 404, 409, 422) and "no row 'nope'" in r.text


def member_name(spec: str) -> str:
    path, row = spec.rsplit(":", 1)
    return f"{path.rsplit('/', 1)[1]}/{row}"


def test_an_ensemble_of_runs_is_served_through_its_members(forecast_run, keys, tmp_path):
    from greentune.tasks.forecast.ensemble_runs import ensemble_runs

    naive = f"{forecast_run.path}:seasonal_naive_daily"
    ens = ensemble_runs([str(forecast_run.path), naive], tmp_path / "ens", ("mean", "median"))
    rows = history()
    frame = pd.DataFrame(rows)
    with client_for(settings_for(ens, keys)) as client:
        r = client.post("/v1/forecast", json={"history": rows}, headers=auth(keys["forecast"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["row"] == "ensemble-mean"
        got = [p["values"]["load_mw_forecast"] for p in body["forecasts"]]
        network = gt.Predictor.from_run(forecast_run).predict(frame)["load_mw_forecast"]
        naive_fc = gt.Predictor.from_run(forecast_run, row="seasonal_naive_daily").predict(frame)
        np.testing.assert_allclose(got, (network + naive_fc["load_mw_forecast"]) / 2, rtol=1e-5)
        card = client.get("/v1/models", headers=auth(keys["forecast"])).json()["models"][0]
        assert card["test_metrics"]["mape"] == ens.metrics.test["ensemble-mean"].scores["mape"]
        network = f"{forecast_run.path.name}/{forecast_run.metrics.model}"
        assert card["network"] is None and card["members"] == [network, member_name(naive)]
        member = f"{forecast_run.path.name}/seasonal_naive_daily"
        r = client.post("/admin/reload", json={"row": member}, headers=auth(keys["admin"]))
        assert r.status_code == 200 and r.json()["row"] == member, r.text
        r = client.post("/v1/forecast", json={"history": rows}, headers=auth(keys["forecast"]))
        np.testing.assert_array_equal(
            [p["values"]["load_mw_forecast"] for p in r.json()["forecasts"]],
            naive_fc["load_mw_forecast"],
        )


def test_access_control_and_limits(classify_run, keys):
    s = settings_for(classify_run, keys, max_body_bytes=2_000, rate_per_s=1.0, burst=2)
    body = {"texts": ["feeder tripped"]}
    with client_for(s) as client:
        assert client.post("/v1/classify", json=body).status_code == 401
        r = client.post("/v1/classify", json=body, headers=auth("gt_nokey_nosecret"))
        assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"
        r = client.post("/v1/classify", json=body, headers=auth(keys["forecast"]))
        assert r.status_code == 403 and "may use forecast, not classify" in r.json()["detail"]
        r = client.post(
            "/v1/classify", json={"texts": ["x" * 3_000]}, headers=auth(keys["classify"])
        )
        assert r.status_code == 413
        r = client.post("/v1/classify", json={"txt": ["x"]}, headers=auth(keys["classify"]))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "texts"]
        # X-API-Key works as well as a bearer token; the bucket holds 2, refills 1/s
        h = {"X-API-Key": keys["classify"]}
        codes = [client.post("/v1/classify", json=body, headers=h).status_code for _ in range(4)]
        assert codes.count(429) >= 1 and codes[0] == 200
        r = client.post("/v1/classify", json=body, headers=h)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
        # another key has its own bucket; a revoked key stops working
        assert client.get("/v1/models", headers=auth(keys["admin"])).status_code == 200
        keys["store"].revoke("ops")
        import time

        time.sleep(1.1)  # the key file is re-read at most once a second
        assert client.get("/v1/models", headers=auth(keys["admin"])).status_code == 401
        # probes and metrics need no key; CORS is off by default
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "ready"
        r = client.options(
            "/v1/classify",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in r.headers


def test_too_many_items_and_no_keys(classify_run, keys, tmp_path):
    s = settings_for(classify_run, keys, max_items=2)
    with client_for(s) as client:
        r = client.post(
            "/v1/classify", json={"texts": ["a", "b", "c"]}, headers=auth(keys["classify"])
        )
        assert r.status_code == 413 and "at most 2" in r.json()["detail"]
    with pytest.raises(gt.CheckpointError, match=r"no API keys in .*empty.json: add one with"):
        build_service(
            ServeSettings(run=str(classify_run.path), keys_file=str(tmp_path / "empty.json"))
        )


def test_personal_data_is_masked_in_logs_and_optionally_for_the_model(classify_run, keys, caplog):
    text = "call me on 0412 345 678 or jane.doe@example.com about meter number 12345678901"
    caplog.set_level(logging.INFO, logger="greentune.serve")
    logger = logging.getLogger("greentune.serve")
    logger.propagate = True
    s = settings_for(classify_run, keys, mask_inputs=True)
    with client_for(s) as client:
        r = client.post("/v1/classify", json={"texts": [text]}, headers=auth(keys["classify"]))
        assert r.status_code == 200
    logged = caplog.text
    assert "POST /v1/classify 200" in logged and "masked=email,meter,phone" in logged
    assert "jane.doe" not in logged and "0412" not in logged and "12345678901" not in logged
    # with mask_inputs the model saw the masked text: same answer as for the masked text
    masked = "call me on [PHONE] or [EMAIL] about [METER]"
    expected = gt.Predictor.from_run(classify_run).predict([masked])
    assert r.json()["predictions"][0]["probability"] == pytest.approx(
        float(expected["probability"].iloc[0]), rel=1e-5
    )


def test_batching_shares_energy_and_metrics_report_it(classify_run, keys):
    s = settings_for(classify_run, keys, max_batch_size=16, max_wait_ms=50)
    h = auth(keys["classify"])
    with client_for(s) as client:
        results: list = []

        def call(i: int) -> None:
            r = client.post("/v1/classify", json={"texts": [f"feeder {i} tripped"] * 2}, headers=h)
            results.append(r)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status_code == 200 for r in results)
        sizes = [r.json()["energy"]["batch_size"] for r in results]
        assert max(sizes) > 2  # requests shared forward passes
        metrics = client.get("/metrics").text
        assert 'greentune_requests_total{route="/v1/classify",status="200"} 8.0' in metrics
        assert "greentune_batch_size_count" in metrics
        assert 'greentune_predictions_total{route="/v1/classify"} 16.0' in metrics
        assert 'greentune_energy_joules_total{kind="model"}' in metrics
        assert "greentune_model_info{" in metrics
        served = client.get("/v1/models", headers=h).json()["models"][0]["served"]
        total = sum(r.json()["energy"]["joules"] for r in results)
        assert total == pytest.approx(served["energy_j"], rel=1e-4, abs=1e-6)


def test_reload_under_load_fails_no_request(classify_run, keys):
    s = settings_for(classify_run, keys, max_batch_size=8, max_wait_ms=2)
    h = auth(keys["classify"])
    stop = threading.Event()
    codes: list[int] = []
    with client_for(s) as client:
        v0 = client.get("/v1/models", headers=h).json()["models"][0]["version"]

        def hammer() -> None:
            while not stop.is_set():
                codes.append(
                    client.post(
                        "/v1/classify", json={"texts": ["feeder down"]}, headers=h
                    ).status_code
                )

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(2):
                r = client.post("/admin/reload", json={}, headers=auth(keys["admin"]))
                assert r.status_code == 200, r.text
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert len(codes) > 10 and set(codes) == {200}
        assert r.json()["version"] == v0  # same files, same version
        metrics = client.get("/metrics").text
        assert 'greentune_reloads_total{outcome="ok"} 2.0' in metrics
        r = client.post("/admin/reload", json={"variant": "nope"}, headers=auth(keys["admin"]))
        assert r.status_code == 409 and "no variant 'nope'" in r.json()["detail"]
        assert client.post("/v1/classify", json={"texts": ["x"]}, headers=h).status_code == 200


def test_openapi_document_lists_every_route(classify_run, keys):
    with client_for(settings_for(classify_run, keys)) as client:
        doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) == {
        "/v1/forecast",
        "/v1/classify",
        "/v1/models",
        "/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    schemes = doc["components"]["securitySchemes"]
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)


@pytest.mark.parametrize("encoder", ["patch", "text"])
def test_many_histories_in_one_pass_equal_one_at_a_time(tmp_path, encoder):
    """The batching seam: predict_prepared over inputs with different scaling windows (and,
    for the text encoder, prompts of different lengths) gives each input what predict gives."""
    csv = tmp_path / "load.csv"
    make_series().to_csv(csv, index=False)
    cfg = gt.build_config(
        overrides=[
            *series_overrides(csv, tmp_path / "runs"),
            "train.epochs=1",
            f"model.encoder={encoder}",
            "eval.baselines=[seasonal_naive_daily]",
            "energy.enabled=false",
        ]
    )
    model = gt.Predictor.from_run(gt.run(cfg, echo=lambda m: None))
    series = make_series(days=12)
    frames = [series.iloc[: 24 * d].copy() for d in (4, 7, 12)]
    frames[1]["load_mw"] *= 3.0  # another level: its own scaled inputs
    alone = [model.predict(f, origins="daily") for f in frames]
    together = model.predict_prepared([model.prepare(f, origins="daily") for f in frames])
    assert [len(a) for a in alone] == [len(t) for t in together]
    for a, t in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(a, t, rtol=1e-5)


def test_texts_of_several_requests_in_one_pass_equal_one_at_a_time(classify_run):
    model = gt.Predictor.from_run(classify_run)
    requests = [["feeder 7 tripped"], ["bill too high", "meter reading missing for march"], []]
    together = model.predict_prepared([model.prepare(r) for r in requests])
    for texts, got in zip(requests, together, strict=True):
        pd.testing.assert_frame_equal(got, model.predict(texts), rtol=1e-5)


def test_a_body_that_is_not_json_gets_400_and_a_field_error_422(classify_run, keys):
    with client_for(settings_for(classify_run, keys)) as client:
        h = {**auth(keys["classify"]), "Content-Type": "application/json"}
        r = client.post("/v1/classify", content=b'{"texts": ["x"', headers=h)
        assert r.status_code == 400 and r.json()["detail"].startswith("the body is not JSON")
        r = client.post("/v1/classify", json={"texts": "x"}, headers=auth(keys["classify"]))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "texts"]
