"""``model.skip_init: transfer``: a run's skip path starts from another run's, fitted on other
(public) data, which a private run may use; what does not fit is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

import greentune as gt
from greentune.cli import app, commands  # noqa: F401  (the command modules register)
from greentune.config import load_config, replace
from greentune.data.windows import prepare_forecast_data
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
    assert lines == [
        f"skip path: transferred from {public} (its skip path as trained there, on its own "
        "data: none of this run's rows), weights frozen"
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
    assert f"the skip path starts from {public}'s, fitted on that run's data" in " ".join(notes)
    assert "skip path: transferred from" in run.log_path.read_text()
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
