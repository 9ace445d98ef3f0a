"""The hybrid's start (``model.skip_init: lightgbm``): the network learns a correction to
LightGBM's forecast instead of to the ridge's.

LightGBM (the `lightgbm` baseline's design, chosen on validation) gives each window a base
forecast; the network's output is that base plus each quantile's offset (LightGBM's
out-of-fold residual quantile on the training windows, a trainable bias) plus its head, which
starts at zero, so training starts exactly at LightGBM and validation before the first step
makes it the model to beat. On the training windows the base is out-of-fold (each block
forecast by LightGBM refitted without it): in-sample, LightGBM looks better than it is on new
windows and the network would learn to correct too little.

Saved in ``model/lightgbm-base/`` (LightGBM's own text format per target and ``base.json``), so
``Predictor`` forecasts new data with the same base.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greentune.config import RunConfig
from greentune.data.windows import ForecastData
from greentune.errors import CheckpointError
from greentune.evaluate.baselines import horizon_positions
from greentune.evaluate.lgbm import Booster, LgbmFit, kept_fit, out_of_fold, predict_target
from greentune.io import write_json

BASE_DIR = "lightgbm-base"
BASE_WINDOW = "lightgbm-base"  # the meter window of its fit, inside ``train``
Log = Callable[[str], None]


@dataclass
class HybridBase:
    """LightGBM per target and the quantile offsets the network's bias starts at."""

    fits: list[LgbmFit]
    offsets: np.ndarray
    """(Q, H*T) residual quantiles of the out-of-fold forecasts on the training windows minus
    their median (the median starts at LightGBM's point), in scaled units; zeros for a point
    forecast."""
    training: tuple[np.ndarray, np.ndarray] | None = None
    """(origins, base) of the run's training windows, computed once (the refits are the cost)."""

    def scaled(self, data: ForecastData, origins: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, H, T) float32 base forecasts in the network's scaled units; ``training``: the
        run's own training windows, forecast out of fold. A window LightGBM cannot forecast
        (NaN) gets the training mean (0 scaled)."""
        if len(origins) == 0:
            return np.zeros((0, data.horizon, data.n_targets), dtype=np.float32)
        if training and self.training is not None and np.array_equal(self.training[0], origins):
            return self.training[1]
        forecast = out_of_fold if training else predict_target
        per_target = [forecast(data, j, fit, origins) for j, fit in enumerate(self.fits)]
        y = np.stack(per_target, axis=-1)
        t = data.n_targets
        scaled = np.nan_to_num((y - data.scaler.mean[:t]) / data.scaler.std[:t]).astype(np.float32)
        if training:
            self.training = (origins.copy(), scaled)
        return scaled

    def save(self, directory: Path) -> None:
        """Into ``directory/lightgbm-base`` (the caller stages ``directory``)."""
        folder = directory / BASE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for j, fit in enumerate(self.fits):
            (folder / f"target-{j}.txt").write_text(fit.predict.to_string())
        write_json(
            folder / "base.json",
            {
                "forms": [f.form for f in self.fits],
                "sizes": [f.size for f in self.fits],
                "val_mae": [f.val_mae for f in self.fits],
                "offsets": self.offsets.tolist(),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> HybridBase | None:
        """The base saved in a model folder, or None for a model without one."""
        folder = directory / BASE_DIR
        if not folder.is_dir():
            return None
        try:
            raw = json.loads((folder / "base.json").read_text())
            boosters = [Booster.from_string(p.read_text()) for p in _files(folder, raw)]
            fits = [
                LgbmFit(form, size, boosters[j], mae)
                for j, (form, size, mae) in enumerate(
                    zip(raw["forms"], raw["sizes"], raw["val_mae"], strict=True)
                )
            ]
            offsets = np.asarray(raw["offsets"], dtype=float)
        except Exception as exc:  # OSError, a bad JSON key or LightGBM's own error
            raise CheckpointError(
                f"{folder} is damaged ({exc}); run the training again to rebuild it"
            ) from None
        return cls(fits, offsets)


def is_hybrid(cfg: RunConfig) -> bool:
    return cfg.model.linear_skip and cfg.model.skip_init == "lightgbm"


def base_of(
    hybrid: HybridBase | None, data: ForecastData, origins: np.ndarray, training: bool = False
) -> np.ndarray | None:
    """The batches' ``base`` for ``origins`` (None without a hybrid)."""
    return None if hybrid is None else hybrid.scaled(data, origins, training)


def _files(folder: Path, raw: dict[str, list[object]]) -> list[Path]:
    return [folder / f"target-{j}.txt" for j in range(len(raw["forms"]))]


def fit_hybrid_base(data: ForecastData, quantiles: tuple[float, ...], log: Log) -> HybridBase:
    """LightGBM per target (cached on ``data``: the `lightgbm` baseline reuses it) and the
    residual quantiles of its out-of-fold forecasts on the training windows (validation stays
    for choosing the epoch and the model)."""
    t0 = time.perf_counter()
    fits = [kept_fit(data, j) for j in range(data.n_targets)]
    H, T = data.horizon, data.n_targets
    base = HybridBase(fits, np.zeros((max(1, len(quantiles)), H * T)))
    if quantiles:  # on the training windows, out of fold: validation stays unfitted
        train = data.train.origins
        y = data.target_values()[horizon_positions(train, H)]
        y_scaled = (y - data.scaler.mean[:T]) / data.scaler.std[:T]
        resid = (y_scaled - base.scaled(data, train, training=True)).reshape(len(train), H * T)
        spread = np.nanquantile(resid, quantiles, axis=0)
        # the band's width from the out-of-fold residuals, its centre at LightGBM's own point:
        # refitted on half the year, LightGBM is biased on the other half (the level moved),
        # and that bias would shift the start away from the model it is meant to equal
        base.offsets = spread - spread[list(quantiles).index(0.5)]
    designs = ", ".join(f"{f.form} (validation MAE {f.val_mae:.4g})" for f in fits)
    log(f"skip path: LightGBM base, {designs}, in {time.perf_counter() - t0:.1f} s")
    return base
