"""Federated fine-tuning (greentune.privacy.federated) through the real ServerApp and ClientApp
on the in-process engine: partitions, the exact federated ridge, what travels, per-client
energy rows, strategies, client-side DP, drop-outs, resume, and each client's own run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from greentune.config import load_config, replace
from greentune.errors import ConfigError, DataError
from greentune.evaluate.ridge import (
    RIDGE_ALPHAS,
    LinearFit,
    complete_origins,
    design_matrix,
    fit_linear,
)
from greentune.privacy.accounting import epsilon
from greentune.privacy.federated import protocol as P
from greentune.privacy.federated.apps import zone_label
from greentune.privacy.federated.client import (
    Proximal,
    alone,
    drop_cached,
    network,
    open_client,
    personal_skip,
    residual_offsets,
    trainable_arrays,
)
from greentune.privacy.federated.inline import run_inline
from greentune.privacy.federated.partitions import client_data, client_names, client_table
from greentune.privacy.federated.ridge import add_statistics, ridge_statistics, solve_pooled
from greentune.privacy.federated.server import FederationError
from greentune.privacy.federated.simulate import federate
from greentune.rundir import RunDir
from greentune.tasks.forecast.skip import SkipInit
from greentune.train.callbacks import SetupContext
from greentune.train.state import LoopState
from tests.conftest import make_series, series_overrides

CLIENTS = ("a", "b", "c")


def _wide(tmp: Path) -> Path:
    wide = make_series(seed=1).rename(columns={"load_mw": "a"})
    wide["b"] = make_series(seed=2)["load_mw"].to_numpy() * 1.5
    wide["c"] = make_series(seed=3)["load_mw"].to_numpy() * 0.7
    path = tmp / "wide.csv"
    wide.to_csv(path, index=False)
    return path


def _config(tmp: Path, *extra: str, path: Path | None = None, name: str = "fed"):
    path = path or _wide(tmp)
    base = [o for o in series_overrides(path, tmp / "runs", name) if "data.target" not in o]
    return load_config(
        None,
        [*base, "federated.rounds=2", "federated.local_steps=3", "train.batch_size=8", *extra],
    )


class Recording:
    """The inline engine, keeping its grid so tests can read every message."""

    def __init__(self, wrap: Any = None) -> None:
        self.grid: Any = None
        self.wrap = wrap

    def __call__(self, server_app: Any, app: Any, n: int) -> None:
        self.grid = run_inline(server_app, self.wrap(app) if self.wrap else app, n)


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, Recording, Path]:
    tmp = tmp_path_factory.mktemp("fed")
    drop_cached()
    engine = Recording()
    run = federate(_config(tmp), echo=lambda m: None, engine=engine)
    return run, engine, tmp


# ----------------------------------------------------------------------------- partitions


def test_partitions_of_a_wide_file_a_long_file_and_a_folder(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert client_names(cfg) == list(CLIENTS)  # the time column and covariates are not clients
    wide = pd.read_csv(cfg.data.path)
    long = pd.concat(
        [wide[["ts", c, "temp_c"]].rename(columns={c: "load"}).assign(zone=c) for c in CLIENTS]
    )
    long.to_csv(tmp_path / "long.csv", index=False)
    lcfg = replace(
        cfg,
        data={"path": str(tmp_path / "long.csv"), "target": "load"},
        federated={"partition_col": "zone"},
    )
    assert client_names(lcfg) == list(CLIENTS)
    folder = tmp_path / "utilities"
    folder.mkdir()
    for c in CLIENTS:
        wide[["ts", c, "temp_c"]].rename(columns={c: f"{c.upper()}_MW"}).to_csv(
            folder / f"{c}.csv", index=False
        )
    fcfg = replace(cfg, data={"path": str(folder)})
    assert client_names(fcfg) == list(CLIENTS)
    # every layout gives client b the same series
    series = [client_table(c, "b")[1].frame for c in (cfg, lcfg, fcfg)]
    values = [f.drop(columns=["ts", "temp_c"]).iloc[:, 0].to_numpy() for f in series]
    np.testing.assert_allclose(values[0], values[1])
    np.testing.assert_allclose(values[0], values[2])
    assert client_table(fcfg, "b")[0].data.target == "B_MW"
    # a deployed client holds only its own file: that file is its series, named as it likes
    own = replace(cfg, data={"path": str(folder / "b.csv")})
    client, table = client_table(own, "b")
    assert client.data.target == "B_MW"
    np.testing.assert_allclose(table.frame["B_MW"].to_numpy(), values[0])


def test_each_client_has_its_own_scaler_and_split_and_last_keeps_the_end(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _, a = client_data(cfg, "a")
    _, b = client_data(cfg, "b")
    assert a.scaler.mean[0] != pytest.approx(b.scaler.mean[0])  # b is 1.5x a's level
    short = replace(cfg, federated={"last": "30D"})
    _, a30 = client_data(short, "a")
    assert a30.frame.index[-1] == a.frame.index[-1]
    assert len(a30.frame) == 30 * 24


def test_partition_errors_name_what_to_fix(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"federated.clients: no client x .*there are: a, b, c"):
        client_names(replace(cfg, federated={"clients": ("a", "x")}))
    with pytest.raises(DataError, match="at least 2 clients, found 1"):
        client_names(replace(cfg, federated={"clients": ("a",)}))
    with pytest.raises(DataError, match=r"no column 'zone' \(federated.partition_col\)"):
        client_names(replace(cfg, federated={"partition_col": "zone"}))
    with pytest.raises(
        ConfigError, match=r"name its column with federated.partition_col=zone \(--partition-col\)"
    ):
        client_names(replace(cfg, data={"series_col": "zone"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .csv or .parquet file"):
        client_names(replace(cfg, data={"path": str(empty)}))
    with pytest.raises(ConfigError, match="data.source csv or parquet"):
        client_names(replace(cfg, data={"source": "vic2014"}))


# ----------------------------------------------------------------------------- ridge


def test_the_federated_ridge_is_the_ridge_of_the_pooled_windows(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    datas = [client_data(cfg, c)[1] for c in CLIENTS]
    fed = solve_pooled(add_statistics([ridge_statistics(d, chunk=50) for d in datas]))
    # the centralised ridge, solved directly on the stacked design matrices
    L, H = datas[0].context_length, datas[0].horizon
    xs, ys, xv, yv = [], [], [], []
    for d in datas:
        x, y = design_matrix(d, complete_origins(d, np.arange(L, d.val_start - H + 1)))
        xs.append(x), ys.append(y)
        x, y = design_matrix(d, complete_origins(d, d.val.origins))
        xv.append(x), yv.append(y)
    x, y = np.concatenate(xs).astype(float), np.concatenate(ys).astype(float)
    xm, ym = x.mean(0), y.mean(0)
    gram = (x - xm).T @ (x - xm)
    scale = np.mean(np.diag(gram))

    def solve(alpha: float) -> np.ndarray:
        return np.linalg.solve(gram + alpha * scale * np.eye(len(gram)), (x - xm).T @ (y - ym))

    errors = {
        a: np.mean(((np.concatenate(xv) - xm) @ solve(a) + ym - np.concatenate(yv)) ** 2)
        for a in RIDGE_ALPHAS
    }
    assert fed.alpha == min(errors, key=errors.__getitem__)  # the walk found the grid's best
    np.testing.assert_allclose(fed.weight, solve(fed.alpha), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fed.x_mean, xm, rtol=1e-9, atol=1e-12)
    # one client: exactly the run's own ridge
    one = solve_pooled(add_statistics([ridge_statistics(datas[0])]))
    own = fit_linear(datas[0])
    assert one.alpha == own.alpha
    np.testing.assert_allclose(one.weight, own.weight, rtol=1e-6, atol=1e-9)


def test_the_local_only_reference_starts_from_the_clients_own_ridge(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    drop_cached()
    local = open_client(cfg, "a", "own-ridge")
    sums = [ridge_statistics(client_data(cfg, c)[1]) for c in CLIENTS]
    pooled = solve_pooled(add_statistics(sums))
    federated = network(local, SkipInit(pooled, residual_offsets(local, pooled)), "pooled")
    own = alone(local)
    assert own is not None and own.model is not None and own.model is not federated
    assert local.model is federated  # the client's network is left as it was
    q = len(cfg.model.quantiles)
    mine = fit_linear(local.data).weight  # the client's ridge on its data alone
    skip = own.model.skip.weight.detach().numpy()
    np.testing.assert_allclose(skip, np.repeat(mine.T, q, axis=0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(skip, np.repeat(pooled.weight.T, q, axis=0), rtol=1e-3, atol=1e-5)
    # everything that trains starts the same, but the skip path's bias (its own intercept and
    # residual quantiles)
    start, own_start = trainable_arrays(federated), trainable_arrays(own.model)
    assert start.keys() == own_start.keys()
    differ = [k for k in start if not np.array_equal(start[k], own_start[k])]
    assert differ == ["skip.bias"]
    seasonal = replace(cfg, model={"skip_init": "seasonal"})
    assert alone(open_client(seasonal, "a", "seasonal")) is None  # nothing pooled to undo
    drop_cached()


def test_a_personal_skip_blends_the_clients_own_ridge_as_its_validation_says(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path)
    drop_cached()
    local = open_client(cfg, "b", "personal")
    pooled = solve_pooled(
        add_statistics([ridge_statistics(client_data(cfg, c)[1]) for c in CLIENTS])
    )
    shared = SkipInit(pooled, residual_offsets(local, pooled))
    skip, a = personal_skip(local, shared)
    own = fit_linear(local.data)
    assert 0.0 < a < 1.0
    np.testing.assert_allclose(skip.fit.weight, a * own.weight + (1 - a) * pooled.weight)
    np.testing.assert_array_equal(skip.offsets, shared.offsets)
    x, y = design_matrix(local.data, complete_origins(local.data, local.data.val.origins))
    median = shared.offsets[list(cfg.model.quantiles).index(0.5)]

    def val_mse(w: float) -> float:
        # the start's point forecast: the median's output, the fit plus its residual offset
        fit = replace_fit(skip.fit, w * own.weight + (1 - w) * pooled.weight)
        return float(np.mean((fit.predict_scaled(x) + median - y) ** 2))

    # a is the blend with the lowest validation MSE (a grid of 201 finds no better one)
    grid = np.linspace(0, 1, 201)
    assert val_mse(a) <= min(val_mse(w) for w in grid) + 1e-12
    assert abs(grid[np.argmin([val_mse(w) for w in grid])] - a) <= 0.005
    # the intercept stays the federated one: every client's trainable start is the same
    assert np.allclose(
        skip.fit.predict_scaled(x[:5]) - x[:5] @ skip.fit.weight,
        pooled.predict_scaled(x[:5]) - x[:5] @ pooled.weight,
    )
    start = trainable_arrays(network(local, shared, "pooled"))
    mine = network(local, skip, "personal")
    assert trainable_arrays(mine).keys() == start.keys()
    for name, value in trainable_arrays(mine).items():
        np.testing.assert_array_equal(value, start[name])
    q = len(cfg.model.quantiles)
    skip_w = mine.skip.weight.detach().numpy()
    np.testing.assert_allclose(
        skip_w, np.repeat(skip.fit.weight.T, q, axis=0), rtol=1e-5, atol=1e-7
    )
    # a federated fit equal to the client's own leaves nothing to blend
    same, none = personal_skip(local, SkipInit(own, shared.offsets))
    assert none == 0.0
    np.testing.assert_array_equal(same.fit.weight, own.weight)
    drop_cached()


def replace_fit(fit: LinearFit, weight: np.ndarray) -> LinearFit:
    return dataclasses.replace(fit, weight=weight)


def test_a_personal_skip_run_keeps_each_clients_blend_on_the_client(tmp_path: Path) -> None:
    drop_cached()
    engine = Recording()
    run = federate(
        _config(tmp_path, "federated.personal_skip=true"), echo=lambda m: None, engine=engine
    )
    fed = run.metrics.federated
    weights = fed["personal_skip"]["own_weight"]
    assert sorted(weights) == list(CLIENTS) and all(0 <= w <= 1 for w in weights.values())
    assert not all(w == 0 for w in weights.values())
    # the blend never travels: the replies hold the ridge's sums, the residual offsets, the
    # trainable arrays (no skip weight) and named numbers
    for reply in engine.grid.received:
        arrays = reply.content[P.ARRAYS] if P.ARRAYS in reply.content.array_records else {}
        assert not any(name.endswith("skip.weight") or name == "weight" for name in arrays)
    # each client's own run holds its blend as the frozen skip weights
    cfg = _config(tmp_path)
    pooled = solve_pooled(
        add_statistics([ridge_statistics(client_data(cfg, c)[1]) for c in CLIENTS])
    )
    client = max(weights, key=weights.__getitem__)  # the one whose blend moved furthest
    a = weights[client]
    assert a > 0.05
    local = open_client(cfg, client, "check")
    own = fit_linear(local.data)
    import greentune as gt

    model = gt.Predictor.from_run(run.path / "clients" / client).model
    q = len(cfg.model.quantiles)
    blend = a * own.weight + (1 - a) * pooled.weight
    np.testing.assert_allclose(
        model.skip.weight.detach().numpy(), np.repeat(blend.T, q, axis=0), rtol=1e-4, atol=1e-6
    )
    drop_cached()


def test_a_personal_skip_needs_a_ridge_start(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "federated.personal_skip=true", "model.skip_init=seasonal")
    with pytest.raises(
        ConfigError, match="federated.personal_skip blends .* set federated.personal_skip=false"
    ):
        federate(cfg, echo=lambda m: None, engine=Recording())
    private = _config(tmp_path, "federated.personal_skip=true", "privacy.dp.noise_multiplier=1")
    with pytest.raises(ConfigError, match="outside DP-SGD's guarantee: under privacy.dp set"):
        federate(private, echo=lambda m: None, engine=Recording())
    assert not (tmp_path / "runs" / "fed").exists()


def test_clients_that_disagree_on_the_windows_are_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    a = ridge_statistics(client_data(cfg, "a")[1])
    b = ridge_statistics(client_data(replace(cfg, data={"horizon": 12}), "b")[1])
    with pytest.raises(DataError, match=r"client reply 2: ridge statistics .* another shape"):
        add_statistics([a, b])


# ----------------------------------------------------------------------------- a whole run


def test_a_federated_run_scores_every_client_and_pools_them(fed_run) -> None:
    run, _, _ = fed_run
    metrics = run.metrics
    fed = metrics.federated
    assert run.status == "complete"
    assert fed["clients"] == list(CLIENTS)
    assert set(metrics.test) == {
        "federated",
        "start",
        "local",
        "central",
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
    }
    assert [r["round"] for r in fed["val_curve"]] == [0, 1, 2]
    best = min(fed["val_curve"], key=lambda r: r["val_loss"])["round"]
    assert fed["best_round"] == best
    # pooled MAPE is the clients' MAPE weighted by their test points (equal here)
    per = [fed["per_client"][c]["federated"]["mape"] for c in CLIENTS]
    assert metrics.test["federated"].scores["mape"] == pytest.approx(np.mean(per))
    assert fed["wins_over_local"]["of"] == 3
    # personal skip paths by default over a ridge start (chosen on validation)
    assert RunDir(run.path).config.federated.personal_skip is True
    assert set(fed["personal_skip"]["own_weight"]) == set(CLIENTS)


ENERGY = set(P.ENERGY_KEYS)
REPLY_METRICS = {
    P.RIDGE: {P.WEIGHT},
    P.OFFSETS: {P.WEIGHT},
    P.INIT: {P.WEIGHT, "total_parameters", *P.SHAPE_KEYS},
    P.TRAIN: {P.WEIGHT, "train_loss"},
    P.EVALUATE: {P.WEIGHT, "val_loss"},
}
"""Every named number a client sends, per message type (plus its energy figures)."""


def test_only_parameter_arrays_and_named_numbers_travel(fed_run) -> None:
    run, engine, _ = fed_run
    grid = engine.grid
    for msg in grid.sent:
        content = msg.content
        assert set(content.keys()) <= {P.ARRAYS, P.CONFIG}
        assert set(content[P.CONFIG].keys()) <= {"run-config", "server-round", "proximal-mu"}
        assert "wide.csv" in str(content[P.CONFIG]["run-config"])  # a path, never values
    trainable = set(
        P.to_arrays(
            next(m for m in grid.sent if m.metadata.message_type == P.TRAIN).content[P.ARRAYS]
        )
    )
    d = client_data(_config(Path(run.path).parents[1]), "a")[1]
    width, outputs = d.context_length * len(d.columns) + d.horizon * len(d.known_cols), d.horizon
    for reply in grid.received:
        kind, content = reply.metadata.message_type, reply.content
        assert set(content.keys()) <= {P.ARRAYS, P.METRICS, P.META}
        assert set(content[P.META].keys()) == set(P.META_KEYS)
        metrics = set(content[P.METRICS].keys()) - ENERGY
        arrays = P.to_arrays(content[P.ARRAYS]) if P.ARRAYS in content.array_records else {}
        if kind == P.TEST:  # row/score pairs and the point count, nothing per window
            assert all("/" in k for k in metrics - {P.WEIGHT, P.OWN_WEIGHT})
            assert arrays == {}
            continue
        assert metrics == REPLY_METRICS[kind]
        if kind == P.RIDGE:  # sums: fixed shapes, whatever the client's number of windows
            # and the layout: which columns are the target's context (the same for everyone)
            assert set(np.unique(arrays["level_x"])) == {0.0, 1.0}
            np.testing.assert_array_equal(arrays["level_y"], np.ones(outputs))
            assert {k: v.shape for k, v in arrays.items()} == {
                "level_x": (width,),
                "level_y": (outputs,),
                "n": (1,),
                "sx": (width,),
                "sy": (outputs,),
                "sxx": (width, width),
                "sxy": (width, outputs),
                "nv": (1,),
                "sxv": (width,),
                "syv": (outputs,),
                "sxxv": (width, width),
                "sxyv": (width, outputs),
                "syyv": (1,),
            }
        elif kind == P.OFFSETS:
            assert {k: v.shape for k, v in arrays.items()} == {"offsets": (3, outputs)}
        elif kind in (P.INIT, P.TRAIN):
            assert set(arrays) == trainable
        else:
            assert arrays == {}
    # what trains: LoRA, the patch projections, the head and the skip path's biases; never the
    # frozen backbone
    assert trainable and all(
        ("lora_" in n or n.startswith(("head.", "skip.", "encoder."))) for n in trainable
    )
    assert not any("skip.weight" in n for n in trainable)
    fed = run.metrics.federated
    per_round = fed["bytes"]["per_client_round_sent"]
    train = [m for m in grid.sent if m.metadata.message_type == P.TRAIN]
    assert per_round == train[0].content[P.ARRAYS].count_bytes()
    assert per_round < fed["bytes"]["full_model_fp32"]


def test_the_ledger_has_each_clients_energy_per_message(fed_run) -> None:
    run, _, _ = fed_run
    rows = [r for r in run.ledger.rows if r["phase"].startswith("client-")]
    by_client = {c: [r for r in rows if r["extra"]["client"] == c] for c in CLIENTS}
    for mine in by_client.values():
        assert {r["extra"]["message"] for r in mine} == {
            "ridge",
            "offsets",
            "init",
            "train",
            "evaluate",
            "test",
        }
        assert sum(r["extra"]["message"] == "train" for r in mine) == 2
        assert all(r["energy_j"]["client"] > 0 and r["kind"] == "model" for r in mine)
        assert all(r["extra"]["zone"] == "static:WORLD" for r in mine)
    totals = run.ledger.totals()["by_phase"]
    assert {"client-a", "client-b", "client-c", "federate"} <= set(totals)


def test_each_client_prices_its_energy_with_its_own_grid(tmp_path: Path) -> None:
    drop_cached()
    cfg = _config(
        tmp_path,
        "federated.references=[]",
        "federated.rounds=1",
        "federated.carbon={a: 'fixed:100', b: 'fixed:500'}",
        "energy.carbon=fixed:300",
    )
    run = federate(cfg, echo=lambda m: None, engine=Recording())
    rows = [r for r in run.ledger.rows if r["phase"].startswith("client-")]
    for client, grams in (("a", 100), ("b", 500), ("c", 300)):
        mine = [r for r in rows if r["extra"]["client"] == client]
        assert {r["extra"]["zone"] for r in mine} == {f"fixed:{grams}"}
        for r in mine:  # emissions = energy (kWh) x the client's own intensity
            kwh = r["energy_j"]["client"] / 3.6e6
            assert r["emissions_g"] == pytest.approx(kwh * grams, rel=1e-6)
    # what the server learns of a client's provider: its kind and zone, never a local path
    assert zone_label("trace:/srv/em@US-MIDA-PJM|static:US") == "trace@US-MIDA-PJM|static:US"
    assert zone_label("trace:/srv/pjm.csv") == "trace"


def test_each_client_keeps_a_loadable_run_of_the_global_model(fed_run) -> None:
    import greentune as gt

    run, _, tmp = fed_run
    client = RunDir(run.path / "clients" / "b")
    assert client.status == "complete"
    assert set(client.metrics.test) == set(run.metrics.test) - {"central"}  # its own rows
    mape = client.metrics.test["federated"].scores["mape"]
    assert mape == pytest.approx(run.metrics.federated["per_client"]["b"]["federated"]["mape"])
    wide = pd.read_csv(tmp / "wide.csv")
    frame = wide[["ts", "b", "temp_c"]].iloc[-200:].copy()
    frame.loc[frame.index[-24:], "b"] = np.nan  # the day to forecast: its temperature is known
    out = gt.Predictor.from_run(client.path).predict(frame)
    truth = wide["b"].to_numpy()[-24:]
    assert len(out) == 24
    # b's own scaler puts the forecast at b's level (1.5x a's): within 10 % of what happened
    assert np.mean(np.abs(out["b_forecast"].to_numpy() / truth - 1)) < 0.10


def test_the_global_weights_and_the_skip_fit_are_saved(fed_run) -> None:
    run, engine, _ = fed_run
    with np.load(run.path / "federated" / "global.npz") as z:
        names = [k.split("/", 1) for k in z.files]
        assert {g for g, _ in names} == {"trainable", "skip"}
        test_msg = next(m for m in engine.grid.sent if m.metadata.message_type == P.TEST)
        for name, value in P.to_arrays(test_msg.content[P.ARRAYS]).items():
            np.testing.assert_array_equal(z[f"trainable/{name}"], value)


# ----------------------------------------------------------------------------- options


def test_float16_halves_the_bytes_and_fedprox_sends_mu(tmp_path: Path) -> None:
    drop_cached()
    engine = Recording()
    cfg = _config(
        tmp_path,
        "federated.float16=true",
        "federated.strategy=fedprox",
        "federated.proximal_mu=0.5",
        "federated.references=[]",
        "federated.rounds=1",
    )
    run = federate(cfg, echo=lambda m: None, engine=engine)
    train = [m for m in engine.grid.sent if m.metadata.message_type == P.TRAIN]
    assert all(float(m.content[P.CONFIG]["proximal-mu"]) == 0.5 for m in train)
    arrays = P.to_arrays(train[0].content[P.ARRAYS])
    assert all(a.dtype == np.float16 for a in arrays.values())
    assert run.metrics.federated["strategy"] == "fedprox"
    assert set(run.metrics.test) == {
        "federated",
        "start",
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
    }


def test_fedadam_runs_and_its_moments_are_checkpointed(tmp_path: Path) -> None:
    drop_cached()
    cfg = _config(tmp_path, "federated.strategy=fedadam", "federated.references=[]")
    run = federate(cfg, echo=lambda m: None, engine=Recording())
    with np.load(run.path / "checkpoints" / "federated-state.npz") as z:
        assert any(k.startswith("m_t/") for k in z.files)
        assert any(k.startswith("v_t/") for k in z.files)
    assert run.metrics.federated["strategy"] == "fedadam"


def test_the_proximal_term_pulls_towards_the_global_weights() -> None:
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    prox = Proximal(mu=0.1)
    prox.on_setup(SetupContext(layer, optimizer, None, LoopState(), 1, False))
    with torch.no_grad():
        layer.weight.add_(torch.tensor([[1.0, -1.0]]))  # a local step moved it
    layer.weight.grad = torch.zeros_like(layer.weight)
    optimizer.step()  # w - lr * mu * (w - w_global) = [2, 1] - 0.05 * [1, -1]
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[1.95, 1.05]]))
    prox.on_end(LoopState())
    layer.weight.grad = torch.zeros_like(layer.weight)
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[1.95, 1.05]]))


PUBLIC_RANGES = (
    "data.bounds={temp_c: [-5, 35]}",
    "federated.bounds={a: {a: [0, 300]}, b: {b: [0, 450]}, c: {c: [0, 220]}}",
)
"""Public ranges for ``data.scaler: bounds``, which privacy.dp switches on: the covariate's
shared, each client's own load."""


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_client_dp_accounts_every_round_of_every_client(tmp_path: Path, secure: bool) -> None:
    """Client-side DP acts inside each client's training, before SecAgg+ masks the update: the
    two compose, and each client's accountant is the same either way."""
    drop_cached()
    cfg = _config(
        tmp_path,
        "privacy.dp.noise_multiplier=1.0",
        "federated.references=[]",
        f"federated.secure_aggregation={str(secure).lower()}",
        *PUBLIC_RANGES,
    )
    engine = Recording()
    run = federate(cfg, echo=lambda m: None, engine=engine)
    assert run.metrics.federated["secure_aggregation"] is secure
    # greentune run's private choices: nothing fitted on the rows outside DP-SGD, so no
    # ridge sums or offsets are asked for, and each client scales by its public ranges
    kinds = {m.metadata.message_type for m in engine.grid.sent}
    assert kinds.isdisjoint({P.RIDGE, P.OFFSETS})
    queries = [
        m.content[P.CONFIG].get(P.SECURE_QUERY)
        for m in engine.grid.sent
        if P.CONFIG in m.content.config_records  # SecAgg+'s own messages carry none
    ]
    assert queries and all(q is None for q in queries)
    saved = RunDir(run.path).config
    assert saved.model.skip_init == "seasonal" and saved.data.scaler == "bounds"
    assert saved.federated.personal_skip is False  # off under DP when left unset
    notes = run.metrics.federated["privacy"]["notes"]
    assert any("seasonal" in n for n in notes) and any("public ranges" in n for n in notes)
    b = RunDir(run.path / "clients" / "b").config
    assert b.data.bounds == {"b": (0.0, 450.0), "temp_c": (-5.0, 35.0)}
    privacy = run.metrics.federated["privacy"]
    assert set(privacy["epsilon"]) == set(CLIENTS)
    for c in CLIENTS:
        _, data = client_data(cfg, c)
        steps_per_epoch = -(-len(data.train) // 8)
        expected = epsilon([(1.0, 1 / steps_per_epoch, 2 * 3)], privacy["delta"][c], "rdp")
        assert privacy["epsilon"][c] == pytest.approx(expected)
    client = RunDir(run.path / "clients" / "a").metrics
    assert client.privacy is not None and client.privacy["steps"] == 6


def test_a_private_federation_can_start_every_client_from_public_data(tmp_path: Path) -> None:
    """``model.skip_init: transfer``: each client reads the public run's skip path itself, so
    no ridge sums or offsets travel, and every client's frozen weights are the source's."""
    from safetensors.numpy import load_file

    import greentune as gt

    make_series(seed=7).to_csv(tmp_path / "public.csv", index=False)
    source = gt.run(
        load_config(
            None,
            [
                *series_overrides(tmp_path / "public.csv", tmp_path, "public"),
                "train.epochs=1",
                "eval.baselines=[]",
                "eval.ensembles=[]",
                "data.scaler=bounds",
                "data.bounds={load_mw: [0, 300], temp_c: [-5, 35]}",
            ],
        ),
        echo=lambda m: None,
    ).path
    drop_cached()
    cfg = _config(
        tmp_path,
        "privacy.dp.noise_multiplier=1.0",
        "federated.references=[local, central]",
        "model.skip_init=transfer",
        f"model.skip_from={source}",
        *PUBLIC_RANGES,
    )
    engine = Recording()
    run = federate(cfg, echo=lambda m: None, engine=engine)
    assert {m.metadata.message_type for m in engine.grid.sent}.isdisjoint({P.RIDGE, P.OFFSETS})
    assert RunDir(run.path).config.model.skip_init == "transfer"
    public = load_file(str(source / "model" / "heads.safetensors"))["skip.weight"]
    for c in CLIENTS:  # each client's run of the global model
        client = run.path / "clients" / c
        trained = load_file(str(client / "model" / "heads.safetensors"))["skip.weight"]
        np.testing.assert_array_equal(trained, public)
        notes = RunDir(client).metrics.data["notes"]
        assert notes[0].startswith(f"skip path: transferred from {source}")
    notes = run.metrics.federated["privacy"]["notes"]
    assert any("starts from" in n and "that data is public" in n for n in notes)
    # the references start from it too: it pools nothing
    assert {"local", "central"} <= set(run.metrics.test)
    for c in CLIENTS:
        kept = list((run.path / "clients" / c).glob(".transfer-skip-*.npz"))
        assert len(kept) == 1  # for a restarted client or a resumed run


def test_patience_stops_the_rounds_and_keeps_the_best(tmp_path: Path) -> None:
    """``federated.patience``: a learning rate that wrecks the network makes round 1 worse
    than the start, so one round without a better pooled validation loss ends the run, and the
    start (round 0) is what is kept and tested."""
    drop_cached()
    logs: list[str] = []
    cfg = _config(
        tmp_path,
        "federated.rounds=4",
        "federated.patience=1",
        "train.lr=5.0",
        "federated.references=[]",
    )
    run = federate(cfg, echo=logs.append, engine=Recording())
    fed = run.metrics.federated
    assert (fed["rounds"], fed["rounds_run"], fed["best_round"]) == (4, 1, 0)
    assert [r["round"] for r in fed["val_curve"]] == [0, 1]
    said = "stopped after round 1 of 4: no lower pooled validation loss in 1 round ("
    assert any(said in line for line in logs)
    trained = {r["extra"]["round"] for r in run.ledger.rows if r["extra"].get("message") == "train"}
    assert trained == {1}
    with pytest.raises(ConfigError, match="federated.patience"):
        _config(tmp_path, "federated.patience=0")


def test_patience_is_read_from_the_round_history_alone() -> None:
    """What a resumed server stops on: the history it restores, nothing else."""
    from greentune.privacy.federated.rounds import _stale
    from greentune.privacy.federated.server import History

    def history(best: int, last: int) -> History:
        return History(rounds=[{"round": r} for r in range(last + 1)], best_round=best)

    assert not _stale(history(0, 0), 1)  # round 0 alone: train round 1
    assert _stale(history(0, 1), 1) and not _stale(history(0, 1), 2)
    assert _stale(history(3, 5), 2) and not _stale(history(4, 5), 2)
    assert not _stale(history(0, 7), None)  # off: every round


# ----------------------------------------------------------------------------- faults


def _failing(kind: str, client: int, rounds: set[int], times: list[int]):
    """A client app whose ``client``-th node raises on ``kind`` messages of ``rounds``."""

    def wrap(app: Any) -> Any:
        def call(msg: Any, context: Any) -> Any:
            r = int(msg.content[P.CONFIG]["server-round"])
            node = context.node_config["partition-id"]
            if msg.metadata.message_type == kind and r in rounds and node == client and times:
                times.pop()
                raise RuntimeError("killed")
            return app(msg, context)

        return call

    return wrap


def test_a_round_goes_on_without_a_failed_client(tmp_path: Path) -> None:
    drop_cached()
    engine = Recording(_failing(P.TRAIN, 1, {1}, [1]))
    cfg = _config(tmp_path, "federated.min_clients=2", "federated.references=[]")
    logs: list[str] = []
    run = federate(cfg, echo=logs.append, engine=engine)
    assert "round 1 train: went on without 1 client(s)" in logs
    rows = [r for r in run.ledger.rows if r["extra"].get("message") == "train"]
    assert sorted(r["extra"]["round"] for r in rows) == [1, 1, 2, 2, 2]
    assert run.status == "complete"


def test_too_few_clients_fail_the_run_and_it_resumes_from_the_last_round(
    tmp_path: Path,
) -> None:
    drop_cached()
    cfg = _config(tmp_path, "federated.references=[]", "federated.rounds=3")
    engine = Recording(_failing(P.TRAIN, 0, {2}, [1]))
    with pytest.raises(FederationError, match="round 2 train: 2 of 3 clients answered"):
        federate(cfg, echo=lambda m: None, engine=engine)
    run_path = Path(cfg.output_dir) / "fed"
    assert RunDir(run_path).status == "failed"
    with np.load(run_path / "checkpoints" / "federated-state.npz") as z:
        saved = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("global/")}
    logs: list[str] = []
    drop_cached()
    again = Recording()
    run = federate(cfg, resume=run_path, echo=logs.append, engine=again)
    first = next(m for m in again.grid.sent if m.metadata.message_type == P.TRAIN)
    assert int(first.content[P.CONFIG]["server-round"]) == 2
    for name, value in P.to_arrays(first.content[P.ARRAYS]).items():
        np.testing.assert_array_equal(value, saved[name])  # round 2 starts where round 1 ended
    assert any("resumed after round 1" in m for m in logs)
    assert [r["round"] for r in run.metrics.federated["val_curve"]] == [0, 1, 2, 3]
    train = [m for m in run.ledger.rows if m["extra"].get("message") == "train"]
    assert sorted({r["extra"]["round"] for r in train}) == [1, 2, 3]
    assert run.status == "complete"


def test_a_model_the_clients_cannot_build_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "model.encoder=text")
    with pytest.raises(ConfigError, match="trains the patch encoder: set model.encoder=patch"):
        federate(cfg, echo=lambda m: None, engine=Recording())
    with pytest.raises(ConfigError, match="trains forecasters, not task: classify"):
        federate(
            replace(cfg, task="classify", model={"encoder": "patch"}),
            echo=lambda m: None,
            engine=Recording(),
        )
    with pytest.raises(ConfigError, match="task=forecast, which chooses its kept model on loss"):
        picky = _config(tmp_path, "train.select_on=accuracy", name="picky")
        federate(picky, echo=lambda m: None, engine=Recording())
    with pytest.raises(
        ConfigError, match="lowest pooled validation loss, not train.select_on=mape"
    ):
        picky = _config(tmp_path, "train.select_on=mape", name="picky-mape")
        federate(picky, echo=lambda m: None, engine=Recording())
    with pytest.raises(ConfigError, match="pools and compares its rows by MAPE, not eval.metric"):
        picky = _config(tmp_path, "eval.metric=mase", name="picky-mase")
        federate(picky, echo=lambda m: None, engine=Recording())
    # a client that fails says why, through the server
    cfg = _config(tmp_path, name="bad")
    engine = Recording(_failing(P.RIDGE, 0, {0}, [1, 1, 1]))
    failed = r"round 0 ridge: 2 of 3 .*\(node 101: RuntimeError: killed\)"
    with pytest.raises(FederationError, match=failed):
        federate(cfg, echo=lambda m: None, engine=engine)


def test_the_cli_runs_a_federation_and_says_what_is_wrong(tmp_path: Path) -> None:
    from tests.conftest import cli

    path = _wide(tmp_path)
    given = ("data.source", "data.path", "data.time_col", "data.target")  # by the CLI's flags
    base = [o for o in series_overrides(path, tmp_path / "runs", "cli") if not o.startswith(given)]
    data = ["train.batch_size=8", "federated.references=[local]"]
    done = cli(
        "federate",
        *base,
        *data,
        "--data",
        str(path),
        "--time-col",
        "ts",
        "--rounds",
        "1",
        "--local-steps",
        "2",
        "--engine",
        "inline",
    )
    assert done.returncode == 0, done.stderr
    assert "pooled" in done.stdout and "beats local-only on" in done.stdout
    metrics = json.loads((tmp_path / "runs" / "cli" / "metrics.json").read_text())
    assert metrics["federated"]["rounds"] == 1
    bad = cli("federate", "--data", str(path), "--time-col", "ts", "--partition-col", "zone")
    assert bad.returncode == 2
    assert "no column 'zone' (federated.partition_col)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_central_dp_clips_and_noises_the_average_and_reports_client_level_epsilon(
    tmp_path: Path,
) -> None:
    def update_norm(engine: Recording) -> float:
        """|| global after round 1 - global before || from the train messages."""
        train = [m for m in engine.grid.sent if m.metadata.message_type == P.TRAIN]
        first = P.to_arrays(train[0].content[P.ARRAYS])
        after = P.to_arrays(
            next(m for m in train if int(m.content[P.CONFIG]["server-round"]) == 2).content[
                P.ARRAYS
            ]
        )
        return float(np.sqrt(sum(np.sum((after[k] - first[k]) ** 2) for k in first)))

    base = ["federated.references=[]", "federated.rounds=2"]
    drop_cached()
    plain = Recording()
    federate(_config(tmp_path, *base, name="plain"), echo=lambda m: None, engine=plain)
    drop_cached()
    clipped = Recording()  # noise 0: only the clipping acts
    federate(
        _config(
            tmp_path,
            *base,
            "federated.central_noise_multiplier=0",
            "federated.central_clipping_norm=0.005",
            name="clipped",
        ),
        echo=lambda m: None,
        engine=clipped,
    )
    assert update_norm(plain) > 0.02  # the clients' average moves further than the bound
    assert 0 < update_norm(clipped) <= 0.005 * (1 + 1e-5)  # each update clipped, then averaged
    drop_cached()
    engine = Recording()
    cfg = _config(
        tmp_path,
        *base,
        "federated.central_noise_multiplier=2.0",
        "federated.central_clipping_norm=0.01",
        name="central",
    )
    run = federate(cfg, echo=lambda m: None, engine=engine)
    central = run.metrics.federated["central_privacy"]
    assert central["delta"] == pytest.approx(1 / 30)
    assert central["epsilon"] == pytest.approx(epsilon([(2.0, 1.0, 2)], 1 / 30, "rdp"))
    # equal weights for the average (the mechanism's sensitivity); the noise (std 2 x 0.01 / 3
    # per coordinate) moves the average well past the clipping bound
    train = [m for m in engine.grid.received if m.metadata.message_type == P.TRAIN]
    assert {float(m.content[P.METRICS][P.WEIGHT]) for m in train} == {1.0}
    assert update_norm(engine) > 10 * 0.01
    with pytest.raises(ConfigError, match="central_noise_multiplier works with fedavg or fedprox"):
        _config(tmp_path, "federated.central_noise_multiplier=1", "federated.strategy=fedadam")


def test_a_private_federation_names_what_it_needs_and_refuses_ridge_queries(
    tmp_path: Path,
) -> None:
    from greentune.privacy.federated.apps import _ridge
    from greentune.privacy.federated.partitions import federation_config, federation_notes

    with pytest.raises(ConfigError, match=r"federated.bounds.AEP.load_mw must be \[low, high\]"):
        load_config(None, ["federated.bounds={AEP: {load_mw: [10, 0]}}"])
    private = federation_config(_config(tmp_path, "privacy.dp.noise_multiplier=1.0"))
    # no range for client a's load: the message names the key a federation uses
    with pytest.raises(DataError, match=r"public range for a.*federated.bounds.a.<column>"):
        client_data(replace(private, data={"bounds": {"temp_c": (-5.0, 35.0)}}), "a")
    with pytest.raises(ConfigError, match=r"federated.bounds names zz, not a client of"):
        federate(
            _config(
                tmp_path,
                "privacy.dp.noise_multiplier=1.0",
                *PUBLIC_RANGES[:1],
                "federated.bounds={zz: {a: [0, 1]}}",
            ),
            echo=lambda m: None,
            engine=Recording(),
        )
    assert not (tmp_path / "runs" / "fed").exists()
    # the references are trained on raw rows: said so
    notes = federation_notes(private)
    assert any("local and central reference rows" in n and "non-private" in n for n in notes)
    assert federation_notes(_config(tmp_path)) == []
    # a client whose own config has no ridge start answers no ridge query, whatever the server
    drop_cached()
    bounded = _config(tmp_path, "privacy.dp.noise_multiplier=1.0", *PUBLIC_RANGES)
    local = open_client(federation_config(bounded), "a", "private")
    with pytest.raises(ConfigError, match="client a: its config starts the skip path at seasonal"):
        _ridge(local, None)  # type: ignore[arg-type]
    drop_cached()
    # a private run saved before the private choices (a ridge start, fitted scalers) is not
    # resumed under them: its checkpoint belongs to the old start
    old = replace(bounded, name="old")
    RunDir.create(old).start(old)
    with pytest.raises(ConfigError, match="was started under privacy.dp before .* new run"):
        federate(old, resume=Path(old.output_dir) / "old", echo=lambda m: None)


def test_a_resumed_private_run_goes_on_spending_from_each_clients_accountant(
    tmp_path: Path,
) -> None:
    """The clients lose their node state when the run is resumed; their accountants come
    back from their workdirs, so epsilon covers every step ever taken, not only the new ones."""
    drop_cached()
    cfg = _config(
        tmp_path, "privacy.dp.noise_multiplier=1.0", "federated.references=[]", *PUBLIC_RANGES
    )
    with pytest.raises(FederationError, match="round 2 train"):
        federate(cfg, echo=lambda m: None, engine=Recording(_failing(P.TRAIN, 0, {2}, [1])))
    drop_cached()
    run = federate(
        cfg, resume=Path(cfg.output_dir) / "fed", echo=lambda m: None, engine=Recording()
    )
    privacy = run.metrics.federated["privacy"]
    for c in CLIENTS:
        _, data = client_data(cfg, c)
        rate = 1 / -(-len(data.train) // 8)
        steps = RunDir(run.path / "clients" / c).metrics.privacy["steps"]
        assert steps >= 6  # every step ever taken, before and after the resume
        assert privacy["epsilon"][c] == pytest.approx(
            epsilon([(1.0, rate, steps)], privacy["delta"][c], "rdp")
        )
    # the client that failed round 2 trained rounds 1 and 2 (after the resume): 6 steps; the
    # two that finished round 2 before the failure trained it again: 9 steps
    steps = {c: RunDir(run.path / "clients" / c).metrics.privacy["steps"] for c in CLIENTS}
    assert steps == {"a": 6, "b": 9, "c": 9}
    # each client's private start, a seasonal naive of its own choosing, is in its run, and
    # kept in its workdir for a restart: after the resume it was read back, not chosen again
    for c in CLIENTS:
        notes = RunDir(run.path / "clients" / c).metrics.data["notes"]
        assert notes[0].startswith("skip path: the seasonal naive (1D back), kept from ")
        (saved,) = (run.path / "clients" / c).glob(".seasonal-skip-*.json")
        assert json.loads(saved.read_text())["label"] == "1D back"


# ----------------------------------------------------------------------------- window shape


def test_config_yaml_holds_the_window_shape_the_clients_chose(tmp_path: Path) -> None:
    """Left to the data (or given in time), each client resolves the shape from its own data;
    the server, which never reads the data, writes their common shape in steps to
    config.yaml, and names the clients when they differ."""
    import yaml

    from greentune.data.shape import default_patch_len

    drop_cached()
    left = ("data.context_length=2D", "data.horizon=null", "model.patch_len=null")
    one = ("federated.rounds=1", "federated.references=[]")
    logs: list[str] = []
    run = federate(_config(tmp_path, *left, *one), echo=logs.append, engine=Recording())
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    patch = default_patch_len(pd.Timedelta("1h"), 48)
    assert (saved["data"]["context_length"], saved["data"]["horizon"]) == (48, 24)
    assert saved["model"]["patch_len"] == patch
    said = f"the clients' window shape in steps: context_length 48, horizon 24, patch_len {patch}"
    assert any(said in line for line in logs)
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_series(days=40).rename(columns={"load_mw": "a"}).to_csv(folder / "a.csv", index=False)
    half = make_series(days=40, freq="30min").rename(columns={"load_mw": "b"})
    half.to_csv(folder / "b.csv", index=False)
    mixed = _config(tmp_path, *left, *one, "model.skip_init=random", path=folder, name="mixed")
    with pytest.raises(
        FederationError,
        match=r"different window shapes .*a: context_length 48, "
        r"horizon 24.*b: context_length 96, horizon 48.*set data.context_length",
    ):
        federate(mixed, echo=lambda m: None, engine=Recording())
