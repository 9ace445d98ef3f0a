"""``model.skip_init: transfer``: a run's skip path starts from another run's, fitted on other
(public) data, which a private run may use; what does not fit is refused by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands  # noqa: F401  (the command modules register)
from greentune.config import RunConfig, load_config, replace
from greentune.data.windows import ForecastData, prepare_forecast_data
from greentune.errors import ConfigError
from greentune.tasks.forecast.skip import init_skip, transfer_skip
from tests.conftest import make_series, series_overrides

runner = CliRunner()
BOUNDS = "data.bounds={load_mw: [0, 400], temp_c: [-20, 50]}"
QUICK = ["train.epochs=1", "eval.baselines=[]", "eval.ensembles=[]", "data.scaler=bounds", BOUNDS]


def _skip(run_path: Path) -> tuple[np.ndarray, np.ndarray]:
    heads = load_file(str(run_path / "model" / "heads.safetensors"))
    return heads["skip.weight"], heads["skip.bias"]


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on other data (another seed's series): the public source."""
    tmp = tmp_path_factory.mktemp("public")
    make_series(seed=7).to_csv(tmp / "public.csv", index=False)
    cfg = load_config(None, [*series_overrides(tmp / "public.csv", tmp, "public"), *QUICK])
    return gt.run(cfg, echo=lambda m: None).path


@pytest.fixture(scope="module")
def private_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("private") / "load.csv"
    make_series(seed=0).to_csv(path, index=False)
    return path


def _refused(cfg: RunConfig, data: ForecastData, match: str) -> None:
    """The start is refused with a ConfigError matching ``match``."""
    with pytest.raises(ConfigError, match=match):
        transfer_skip(cfg, data, lambda m: None)


def test_the_start_is_the_source_skip_path_to_the_bit(public: Path, private_csv: Path) -> None:
    cfg = load_config(
        None,
        [
            *series_overrides(private_csv, public.parent, "p"),
            *QUICK,
            "model.skip_init=transfer",
            f"model.skip_from={public}",
        ],
    )
    lines: list[str] = []
    init = transfer_skip(cfg, prepare_forecast_data(cfg.data), lines.append)
    digest = hashlib.sha256((public / "model" / "heads.safetensors").read_bytes()).hexdigest()
    assert lines == [
        f"skip path: transferred from {public} (its skip path as trained there on "
        f"{public.parent / 'public.csv'}, heads sha256 {digest[:12]}: none of this run's rows), "
        "weights frozen"
    ]
    weight, bias = _skip(public)
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    init_skip(layer, init)
    # every quantile's row, weights and trained biases alike
    assert torch.equal(layer.weight, torch.from_numpy(weight))
    assert torch.equal(layer.bias, torch.from_numpy(bias))
    assert not layer.weight.requires_grad
    # the model/ folder names the same source
    assert (
        transfer_skip(
            replace(cfg, model={"skip_from": str(public / "model")}),
            prepare_forecast_data(cfg.data),
            lambda m: None,
        ).fit.weight.tolist()
        == init.fit.weight.tolist()
    )


def test_a_private_run_starts_from_public_data_and_keeps_its_weights(
    public: Path, private_csv: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            *series_overrides(private_csv, tmp_path, "private"),
            *QUICK,
            "privacy.dp.target_epsilon=8",
            "model.skip_init=transfer",
            f"model.skip_from={public}",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    run = gt.RunDir.open(tmp_path / "private")
    assert run.config.model.skip_init == "transfer"  # kept under privacy.dp, not seasonal
    notes = run.metrics.privacy["notes"]
    fitted = f"the skip path starts from {public}'s, fitted on {public.parent / 'public.csv'}: "
    assert fitted + "private only if that data is public" in " ".join(notes)
    assert "skip path: transferred from" in run.log_path.read_text()
    assert (run.checkpoint_dir / "transfer-skip.npz").is_file()  # a resume keeps this start
    weight, bias = _skip(run.path)
    public_weight, public_bias = _skip(public)
    np.testing.assert_array_equal(weight, public_weight)  # frozen through training
    assert not np.array_equal(bias, public_bias)  # the biases trained


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.horizon=12"], r"forecasts from other inputs: horizon 24 there, 12 here"),
        (["model.quantiles=[]"], r"quantiles \[0.1, 0.5, 0.9\] there, \[\] here"),
        (["data.scaler=standard"], r"data.scaler bounds there, standard here"),
        (["data.calendar=false"], r"known columns \[.temp_c., .*\] there, \[.temp_c.*\] here"),
    ],
)
def test_a_source_with_other_inputs_is_refused_by_name(
    public: Path, private_csv: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    cfg = load_config(
        None,
        [
            *series_overrides(private_csv, tmp_path, "x"),
            *QUICK,
            *extra,
            "model.skip_init=transfer",
            f"model.skip_from={public}",
        ],
    )
    with pytest.raises(ConfigError, match=message):
        transfer_skip(cfg, prepare_forecast_data(cfg.data), lambda m: None)


def _source(tmp: Path, name: str, *extra: str) -> Path:
    make_series(seed=7).to_csv(tmp / f"{name}.csv", index=False)
    overrides = [*series_overrides(tmp / f"{name}.csv", tmp, name), *QUICK, *extra]
    return gt.run(load_config(None, overrides), echo=lambda m: None).path


def _private(csv: Path, tmp: Path, source: Path, *extra: str):
    base = [*series_overrides(csv, tmp, "x"), *QUICK, *extra]
    cfg = load_config(None, [*base, "model.skip_init=transfer", f"model.skip_from={source}"])
    return cfg, prepare_forecast_data(cfg.data)


def test_a_point_forecast_start_is_exact_and_a_free_skip_path_is_refused(
    private_csv: Path, tmp_path: Path
) -> None:
    point = _source(tmp_path, "point", "model.quantiles=[]")
    cfg, data = _private(private_csv, tmp_path, point, "model.quantiles=[]")
    layer = torch.nn.Linear(1, 1)
    weight, bias = _skip(point)
    layer.weight = torch.nn.Parameter(torch.zeros(weight.shape))
    layer.bias = torch.nn.Parameter(torch.zeros(bias.shape))
    init_skip(layer, transfer_skip(cfg, data, lambda m: None))
    assert torch.equal(layer.weight, torch.from_numpy(weight))
    assert torch.equal(layer.bias, torch.from_numpy(bias))
    free = _source(tmp_path, "free", "model.skip_init=random")
    cfg, data = _private(private_csv, tmp_path, free)
    _refused(cfg, data, "differ between quantiles .*skip_init=random")


def test_a_bare_model_folder_is_read_and_a_source_without_skip_path_refused(
    public: Path, private_csv: Path, tmp_path: Path
) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(public / "model", bare)  # no run around it: no config.yaml to check
    cfg, data = _private(private_csv, tmp_path, bare)
    lines: list[str] = []
    init = transfer_skip(cfg, data, lines.append)
    assert lines[0] == f"skip path: {bare} has no config.yaml: its kind of scaler is not checked"
    np.testing.assert_array_equal(np.repeat(init.fit.weight.T, 3, axis=0), _skip(public)[0])
    plain = _source(tmp_path, "plain", "model.linear_skip=false")
    cfg, data = _private(private_csv, tmp_path, plain)
    _refused(cfg, data, "that model has no linear skip path to start from")


def test_an_unfinished_or_compressed_source_is_refused(
    public: Path, private_csv: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from greentune.models.variants import VARIANT_FILE

    source = tmp_path / "copy"
    shutil.copytree(public, source)
    cfg, data = _private(private_csv, tmp_path, source)
    info = json.loads((source / "run.json").read_text())
    (source / "run.json").write_text(json.dumps({**info, "status": "running"}))
    _refused(cfg, data, "that run is running, not complete; finish it first")
    (source / "run.json").write_text(json.dumps(info))
    (source / "model" / VARIANT_FILE).write_text(json.dumps({"format": "onnx"}))
    _refused(cfg, data, "is a compressed variant; start from the run it was")


def test_other_past_covariates_and_a_private_runs_own_data_are_refused(
    public: Path, private_csv: Path, tmp_path: Path
) -> None:
    frame = make_series(seed=0)
    frame["price"] = frame["temp_c"] * 2.0
    frame.to_csv(tmp_path / "priced.csv", index=False)
    cfg, data = _private(
        tmp_path / "priced.csv",
        tmp_path,
        public,
        "data.past_covariates=[price]",
        "data.bounds={load_mw: [0, 400], temp_c: [-20, 50], price: [-40, 100]}",
    )
    _refused(cfg, data, r"past covariates \[\] there, \['price'\] here")
    # under DP a start fitted on this run's own file is refused; without DP it is allowed
    own = public.parent / "public.csv"
    cfg, data = _private(own, tmp_path, public, "privacy.dp.target_epsilon=8")
    _refused(cfg, data, f"was fitted on {own}, this run's own data")
    cfg, data = _private(own, tmp_path, public)
    init = transfer_skip(cfg, data, lambda m: None)
    np.testing.assert_array_equal(np.repeat(init.fit.weight.T, 3, axis=0), _skip(public)[0])


def test_a_resumed_run_keeps_the_start_it_trained_from(
    public: Path, private_csv: Path, tmp_path: Path
) -> None:
    import shutil

    source = tmp_path / "copy"
    shutil.copytree(public, source)
    cfg, data = _private(private_csv, tmp_path, source)
    saved = tmp_path / "checkpoints" / "transfer-skip.npz"
    first = transfer_skip(cfg, data, lambda m: None, saved)
    assert saved.is_file()
    (source / "model" / "heads.safetensors").write_bytes(b"damaged")
    _refused(cfg, data, "its model cannot be read")
    lines: list[str] = []
    again = transfer_skip(cfg, data, lines.append, saved)
    np.testing.assert_array_equal(again.fit.weight, first.fit.weight)
    np.testing.assert_array_equal(again.offsets, first.offsets)
    np.testing.assert_array_equal(again.fit.y_mean, first.fit.y_mean)
    assert lines == [
        f"skip path: transferred from {source}, kept from {saved} (the start this run trained "
        f"from; {source} has changed or gone since), weights frozen"
    ]


def test_transfer_settings_are_checked_and_the_cli_exits_2(
    private_csv: Path, tmp_path: Path
) -> None:
    base = series_overrides(private_csv, tmp_path, "y")
    with pytest.raises(ConfigError, match="skip_init=transfer needs model.linear_skip=true"):
        load_config(None, [*base, "model.skip_init=transfer"])
    with pytest.raises(ConfigError, match="read only with model.skip_init=transfer"):
        load_config(None, [*base, f"model.skip_from={tmp_path}"])
    result = runner.invoke(
        app, ["run", *base, "model.skip_init=transfer", f"model.skip_from={tmp_path / 'none'}"]
    )
    assert result.exit_code == 2
    assert f"model.skip_from={tmp_path / 'none'}: no forecasting model there" in result.output
    assert not (tmp_path / "y" / "model").exists()


def test_another_series_of_one_long_file_is_other_data(tmp_path: Path) -> None:
    """Under DP a start fitted on another zone of the same long file is allowed (the user
    declared that zone public); one fitted on this run's own zone is refused."""
    long = pd.concat(
        [make_series(seed=7).assign(zone="PUB"), make_series(seed=0).assign(zone="PRIV")]
    ).sort_values(["ts", "zone"], kind="stable")
    path = tmp_path / "zones.csv"
    long.to_csv(path, index=False)
    zone = ["data.series_col=zone"]
    source = _source_on(path, tmp_path, [*zone, "data.series=PUB"])
    dp = ["privacy.dp.target_epsilon=8", *zone]
    cfg, data = _private(path, tmp_path, source, *dp, "data.series=PRIV")
    init = transfer_skip(cfg, data, lambda m: None)
    np.testing.assert_array_equal(np.repeat(init.fit.weight.T, 3, axis=0), _skip(source)[0])
    cfg, data = _private(path, tmp_path, source, *dp, "data.series=PUB")
    _refused(cfg, data, "this run's own data")
    # one model over every series of the file trains on PUB too
    every = ["data.multivariate=true", "data.covariates=[]", "data.temperature_col=null"]
    every.append("data.bounds={PRIV: [0, 400], PUB: [0, 400]}")
    cfg, data = _private(path, tmp_path, source, *dp, *every)
    _refused(cfg, data, "this run's own data")


def _source_on(csv: Path, tmp: Path, extra: list[str]) -> Path:
    overrides = [*series_overrides(csv, tmp, "zone-source"), *QUICK, *extra]
    return gt.run(load_config(None, overrides), echo=lambda m: None).path
