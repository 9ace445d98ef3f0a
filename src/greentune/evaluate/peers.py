"""The forecasting libraries practitioners reach for, as baselines on greentune's own windows.

``nhits`` and ``patchtst`` (Nixtla's neuralforecast), ``mstl`` (statsforecast's MSTL with its
default AutoETS trend) and ``mlforecast`` (LightGBM through Nixtla's mlforecast). Each is
scored like every other row: the same test origins, history before each origin as its input,
its energy metered in its own ``baseline/<name>`` window. Install them with
``pip install 'greentune[peers]'``; greentune never needs them otherwise.

What each one is given and how it is fitted (the refit policy):

- **nhits**: one global network over every target series, input = the run's context length,
  the known covariates the user gave (``data.covariates``: temperature, work day; not the
  features greentune derives) as future exogenous and the past covariates as historical
  exogenous inputs, robust window scaling, MAE loss, at most
  ``eval.peer_max_steps`` steps, early-stopped on the validation rows (patience 5 checks). Fitted
  once on the training rows, never refitted.
- **patchtst**: the same, history only (neuralforecast's PatchTST takes no exogenous inputs),
  with its library defaults (RevIN, patches of 16) but 128 windows per step (the PatchTST
  paper's batch) and the same step budget.
- **mstl**: local: a fresh MSTL (daily and weekly seasons, AutoETS trend) fitted at every origin
  on the 4 longest seasons of history before it (refit per origin); history only.
- **mlforecast**: one recursive LightGBM over lags (1-3 steps, 1-3 days, 1-2 weeks), rolling
  means of the last day and week, minute of day, day of week and of year and the known
  covariates the user gave; the number of trees early-stopped on the validation rows'
  one-step-ahead error, then fitted on the training rows; greentune's two tree sizes (63
  leaves, or 15 with at least 50 rows each) tried and the one with the lower MAE of its
  recursive forecasts of the validation origins kept, the budget greentune's ``lightgbm``
  row spends on its size.

Inputs with missing values are carried forward (the peers take no gaps); scores are computed on
the actual values of the complete windows only, as for every row. Quantiles are the point
forecast plus each peer's residual quantiles per horizon step on the validation origins at the
test origins' clock times, as for the ``lightgbm`` and ``linear`` baselines.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from greentune.data.windows import ForecastData
from greentune.errors import ConfigError
from greentune.evaluate.baselines import (
    BASELINES,
    BaselineOptions,
    calibration_origins,
    horizon_positions,
    residual_quantiles,
    steps_per,
)
from greentune.results import Forecast

# name -> the package it needs (all in the `peers` extra)
PEERS: dict[str, str] = {
    "nhits": "neuralforecast",
    "patchtst": "neuralforecast",
    "mstl": "statsforecast",
    "mlforecast": "mlforecast",
}
EARLY_STOP_CHECKS = 5  # validation checks without improvement before a neural peer stops
VAL_CHECKS = 10  # validation checks per step budget, at most every 100 steps
MSTL_SEASONS_OF_HISTORY = 4
PATCHTST_WINDOWS = 128
LGBM_EARLY_STOPPING = 50
LGBM_ROUNDS = 2000


def check_peers(names: tuple[str, ...] | list[str]) -> None:
    """Refuse, before any training, a peer whose library is not installed."""
    for name in names:
        package = PEERS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"eval.baselines: {name} needs {package}, which is not installed; install the "
                f"peers with pip install 'greentune[peers]', or remove {name} from eval.baselines"
            )


def _require(name: str) -> Any:
    check_peers([name])
    return importlib.import_module(PEERS[name])


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's banners and the libraries' warnings are noise in a run's log."""
    loggers = [
        logging.getLogger(n)
        for n in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ----------------------------------------------------------------------------- long frames


def _filled(data: ForecastData) -> pd.DataFrame:
    """The model columns with gaps filled by the last value before them (inputs only; scoring
    reads the actual values). Carried forward, not interpolated: interpolation would fill a gap
    just before an origin from the value at the origin, a target the peer must not see."""
    key = "peers/filled"
    if key not in data.cache:
        values = data.frame[data.columns].astype(float)
        if values.isna().to_numpy().any():
            values = values.ffill().bfill()  # bfill: only a gap at the very start is left
        data.cache[key] = values
    frame: pd.DataFrame = data.cache[key]
    return frame


def _covariates(data: ForecastData) -> list[str]:
    """The known covariates the user gave (``data.covariates``: temperature, work day, ...),
    not the features greentune derives from them and the calendar: a practitioner passes a
    peer their exogenous columns, and its own calendar features where it has them (NHITS'
    cost grows with every future input: 15 of them made it 5x slower than 2)."""
    given = set(data.config.covariates or ()) if data.config is not None else None
    return [c for c in data.known_cols if given is None or c in given]


def _freq(data: ForecastData) -> Any:
    return pd.tseries.frequencies.to_offset(data.step)


def _long(
    data: ForecastData, positions: np.ndarray, series: np.ndarray, cols: list[str], target: bool
) -> pd.DataFrame:
    """Rows ``positions`` (S, n) of the filled frame as a long frame: series id ``series[s]``,
    ds, y (when ``target``; from each series' own target column) and ``cols``. Negative
    positions (before the data starts) are left out, so early series are shorter."""
    frame = _filled(data)
    index = np.asarray(frame.index)
    ids, which = series[:, 0], series[:, 1]  # (S,) id and target column per series
    keep = positions.ravel() >= 0
    flat = positions.ravel()[keep]
    out: dict[str, Any] = {
        "unique_id": np.repeat(ids, positions.shape[1])[keep],
        "ds": index[flat],
    }
    if target:
        y = frame[data.target_cols].to_numpy()
        out["y"] = y[flat, np.repeat(which, positions.shape[1])[keep]]
    for c in cols:
        out[c] = frame[c].to_numpy()[flat]
    return pd.DataFrame(out)


def _series_ids(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    """(T*N, 2): id t*N + i and target t for target t at origin i, target-major."""
    n, t = len(origins), data.n_targets
    return np.column_stack([np.arange(n * t), np.repeat(np.arange(t), n)])


def _histories(data: ForecastData, origins: np.ndarray, length: int) -> np.ndarray:
    """(T*N, length) positions of the ``length`` rows before each origin (repeated per target);
    negative where the data starts later."""
    return np.tile(origins[:, None] - length + np.arange(length), (data.n_targets, 1))


def _futures(data: ForecastData, origins: np.ndarray) -> np.ndarray:
    return np.tile(horizon_positions(origins, data.horizon), (data.n_targets, 1))


def _to_array(data: ForecastData, out: pd.DataFrame, column: str, n: int) -> np.ndarray:
    """A library's long forecast (one row per series id and step) as (N, H, T)."""
    out = out.sort_values(["unique_id", "ds"])
    values = out[column].to_numpy(dtype=float).reshape(data.n_targets, n, data.horizon)
    return values.transpose(1, 2, 0)


# ----------------------------------------------------------------------------- the shared wrapper


Predict = Callable[[np.ndarray], np.ndarray]
"""A fitted peer: origins -> (N, H, T) forecasts in data units."""


def _peer(
    name: str, fit: Callable[[ForecastData, BaselineOptions], Predict]
) -> Callable[[ForecastData, np.ndarray, tuple[float, ...], BaselineOptions], Forecast]:
    def baseline(
        data: ForecastData,
        origins: np.ndarray,
        quantiles: tuple[float, ...],
        options: BaselineOptions,
    ) -> Forecast:
        _require(name)
        H = data.horizon
        t0 = time.perf_counter()
        key = f"peer/{name}/{options.seed}/{options.peer_max_steps}"
        with _quiet():
            fitted: Predict = data.cache.get(key) or fit(data, options)
            data.cache[key] = fitted
            memo: dict[int, np.ndarray] = data.cache.setdefault(f"{key}/forecasts", {})

            def forecast(at: np.ndarray) -> np.ndarray:
                """Every origin is forecast once per fit (validation reuses calibration's)."""
                new = np.array([o for o in at if int(o) not in memo], dtype=np.int64)
                if len(new):
                    for o, f in zip(new, fitted(new), strict=True):
                        memo[int(o)] = f
                if not len(at):
                    return np.empty((0, H, data.n_targets))
                return np.stack([memo[int(o)] for o in at])

            resid = None
            if quantiles:
                cal = calibration_origins(data, data.val_start, data.test_start - H + 1, origins)
                resid = data.target_values()[horizon_positions(cal, H)] - forecast(cal)
            t1 = time.perf_counter()
            point = forecast(origins)
        q = residual_quantiles(point, resid, quantiles) if resid is not None else None
        return Forecast(point, q, fit_s=t1 - t0, predict_s=time.perf_counter() - t1)

    baseline.__name__ = name
    baseline.__doc__ = f"The {name} peer (greentune.evaluate.peers)."
    return baseline


# ----------------------------------------------------------------------------- neuralforecast


def _trainer_kwargs() -> dict[str, Any]:
    # no logs, checkpoints or progress bars written beside the user's files; Lightning's own
    # early stopping (without a checkpoint it keeps the last weights, not the best)
    return {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }


def _neural(kind: str) -> Callable[[ForecastData, BaselineOptions], Predict]:
    def fit(data: ForecastData, options: BaselineOptions) -> Predict:
        nf_lib = _require(kind)
        from neuralforecast.models import NHITS, PatchTST

        H, L = data.horizon, data.context_length
        exog = kind == "nhits"
        futr = _covariates(data) if exog else []
        hist = list(data.past_cols) if exog else []
        steps = options.peer_max_steps
        common: dict[str, Any] = {
            "h": H,
            "input_size": L,
            "max_steps": steps,
            "early_stop_patience_steps": EARLY_STOP_CHECKS,
            "val_check_steps": max(1, min(100, steps // VAL_CHECKS)),
            "random_seed": options.seed,
            **_trainer_kwargs(),
        }
        if exog:
            model = NHITS(
                futr_exog_list=futr or None,
                hist_exog_list=hist or None,
                scaler_type="robust",
                **common,
            )
        else:
            # 128 windows per step, the PatchTST paper's batch, not the library's 1,024: on
            # CPU each step is otherwise ~8x dearer (1,000 steps took over half an hour here)
            model = PatchTST(windows_batch_size=PATCHTST_WINDOWS, **common)
        # one series per target over the training and validation rows; the last
        # (test_start - val_start) rows are validation targets only
        positions = np.arange(data.test_start)[None].repeat(data.n_targets, 0)
        ids = np.column_stack([np.arange(data.n_targets), np.arange(data.n_targets)])
        train = _long(data, positions, ids, [*futr, *hist], target=True)
        nf = nf_lib.NeuralForecast(models=[model], freq=_freq(data))
        nf.fit(train, val_size=data.test_start - data.val_start)
        column = type(model).__name__

        def predict(origins: np.ndarray) -> np.ndarray:
            series = _series_ids(data, origins)
            past = _long(data, _histories(data, origins, L), series, [*futr, *hist], True)
            future = _long(data, _futures(data, origins), series, futr, False) if futr else None
            out = nf.predict(df=past, futr_df=future)
            return _to_array(data, out, column, len(origins))

        return predict

    return fit


# ----------------------------------------------------------------------------- statsforecast


def _seasons(data: ForecastData) -> list[int]:
    day, week = steps_per(data, "1D"), steps_per(data, "7D")
    return sorted({m for m in (day, week) if m > 1})


def _fit_mstl(data: ForecastData, options: BaselineOptions) -> Predict:
    sf_lib = _require("mstl")
    from statsforecast.models import MSTL

    seasons = _seasons(data)
    length = MSTL_SEASONS_OF_HISTORY * max(seasons, default=data.context_length)
    sf = sf_lib.StatsForecast(models=[MSTL(season_length=seasons)], freq=_freq(data), n_jobs=1)

    def predict(origins: np.ndarray) -> np.ndarray:
        series = _series_ids(data, origins)
        past = _long(data, _histories(data, origins, length), series, [], target=True)
        out = sf.forecast(df=past, h=data.horizon)
        return _to_array(data, out, "MSTL", len(origins))

    return predict


# ----------------------------------------------------------------------------- mlforecast


def _minute_of_day(dates: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(dates.hour * 60 + dates.minute)


def _fit_mlforecast(data: ForecastData, options: BaselineOptions) -> Predict:
    """Both of greentune's LightGBM tree sizes (``lgbm.SIZES``), each early-stopped on the
    validation rows' one-step-ahead error, and the one whose recursive day-ahead forecasts of
    the validation origins have the lower MAE kept: the tuning budget greentune's own
    ``lightgbm`` row spends on its size."""
    mlf = _require("mlforecast")
    import lightgbm as lgb
    from mlforecast.lag_transforms import RollingMean

    from greentune.evaluate.lgbm import LGBM_PARAMS, SIZES

    day, week = steps_per(data, "1D"), steps_per(data, "7D")
    lags = sorted({1, 2, 3, day, 2 * day, 3 * day, week, 2 * week})
    history = max(lags) + week + 1
    exog = _covariates(data)

    def params(size: dict[str, object]) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in LGBM_PARAMS.items() if k != "seed"}
        return out | dict(size) | {"random_state": options.seed, "n_jobs": 1}

    def model(trees: int, size: dict[str, object]) -> Any:
        return lgb.LGBMRegressor(n_estimators=trees, **params(size))

    # the lag features are computed once; each size gets a copy of the fitted frame state
    base = mlf.MLForecast(
        models={"lgb": model(LGBM_ROUNDS, {})},
        freq=_freq(data),
        lags=lags,
        lag_transforms={1: [RollingMean(window_size=day), RollingMean(window_size=week)]},
        date_features=[_minute_of_day, "dayofweek", "dayofyear"],
    )
    positions = np.arange(data.test_start)[None].repeat(data.n_targets, 0)
    ids = np.column_stack([np.arange(data.n_targets), np.arange(data.n_targets)])
    train = _long(data, positions, ids, exog, target=True)
    rows = base.preprocess(train, static_features=[])
    features = [c for c in rows.columns if c not in ("unique_id", "ds", "y")]
    val_from = data.frame.index[data.val_start]
    is_val = (rows["ds"] >= val_from).to_numpy()
    x_train, y_train = rows.loc[~is_val, features], rows.loc[~is_val, "y"]

    def fitted(size: dict[str, object]) -> Predict:
        probe = model(LGBM_ROUNDS, size)
        probe.fit(
            x_train,
            y_train,
            eval_set=[(rows.loc[is_val, features], rows.loc[is_val, "y"])],
            callbacks=[lgb.early_stopping(LGBM_EARLY_STOPPING, verbose=False)],
        )
        fcst = copy.deepcopy(base)
        fcst.models = {"lgb": model(int(probe.best_iteration_ or LGBM_ROUNDS), size)}
        fcst.fit_models(x_train, y_train.to_numpy())

        def predict(origins: np.ndarray) -> np.ndarray:
            series = _series_ids(data, origins)
            past = _long(data, _histories(data, origins, history), series, exog, target=True)
            future = _long(data, _futures(data, origins), series, exog, False) if exog else None
            out = fcst.predict(data.horizon, new_df=past, X_df=future)
            return _to_array(data, out, "lgb", len(origins))

        return predict

    val = data.val.origins
    actual = data.target_values()[horizon_positions(val, data.horizon)]
    best: tuple[float, Predict, np.ndarray] | None = None
    for size in SIZES:
        predict = fitted(size)
        forecasts = predict(val)
        mae = float(np.nanmean(np.abs(forecasts - actual)))
        if best is None or mae < best[0]:
            best = (mae, predict, forecasts)
    assert best is not None
    _, chosen, forecasts = best
    # each origin is its own series, so the choice's validation forecasts are what a new
    # call would give: the ensembles and the calibration read them instead of a second pass
    known = {int(o): f for o, f in zip(val, forecasts, strict=True)}

    def predict_kept(origins: np.ndarray) -> np.ndarray:
        if len(origins) and all(int(o) in known for o in origins):
            return np.stack([known[int(o)] for o in origins])
        return chosen(origins)

    return predict_kept


BASELINES.register("nhits")(_peer("nhits", _neural("nhits")))
BASELINES.register("patchtst")(_peer("patchtst", _neural("patchtst")))
BASELINES.register("mstl")(_peer("mstl", _fit_mstl))
BASELINES.register("mlforecast")(_peer("mlforecast", _fit_mlforecast))
