"""``ForecastPredictor``: a forecasting run's model and scaler, loaded once; history in,
quantile forecasts with timestamps out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from greentune.config import DataConfig, RunConfig
from greentune.data.sources import RawTable, load_table, resolve
from greentune.data.validate import clean_frame
from greentune.data.windows import ForecastData, Scaler, WindowSet, featurize
from greentune.errors import CheckpointError, ConfigError, DataError
from greentune.evaluate.lgbm import history_rows
from greentune.io import files_digest
from greentune.models.variants import read_variant
from greentune.results import Forecast
from greentune.rundir import RunDir
from greentune.tasks.base import Predictor, Prepared
from greentune.tasks.forecast.artifacts import Columns, load_columns, load_model, load_scaler
from greentune.tasks.forecast.batches import ForecastBatches, make_batches
from greentune.tasks.forecast.hybrid import HybridBase, base_of
from greentune.tasks.forecast.predict import (
    forecast_frame,
    predict_scaled,
    predict_stacked,
    to_forecast,
)
from greentune.tasks.forecast.rows import ROWS_DIR, RowSet, row_for
from greentune.tasks.members import require_model_dir

Origins = Literal["last", "daily"]


class ForecastPredictor(Predictor):
    """``predict(history)`` forecasts the horizon after the last observed target
    (``origins='last'``) or backtests every local midnight (``origins='daily'``).

    ``history`` has the run's time column (or a DatetimeIndex), its target(s) and covariates;
    for ``last`` it also holds the known covariates (e.g. the temperature forecast) over the
    horizon, unless the model uses calendar features only. The result has one row per
    (origin, step): ``origin``, ``time``, ``step``, ``<target>_forecast``, one
    ``<target>_q<level>`` per quantile, and ``<target>_actual`` where the input held it.
    """

    task = "forecast"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        cfg: RunConfig,
        scaler: Scaler,
        columns: Columns,
        run: RunDir | None = None,
        variant: str = "fp32",
        hybrid: HybridBase | None = None,
        row: str | None = None,
        rows: RowSet | None = None,
    ) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.scaler, self.columns = scaler, columns
        self.run, self.variant = run, variant
        self.hybrid = hybrid
        """A hybrid's LightGBM base (``model.skip_init: lightgbm``), else None."""
        self.row, self.rows = row, rows
        """The kept row ``predict`` forecasts with (None: the network) and the run's rows."""
        self.row_spec: str | None = None
        """The row as asked for (``recommended`` follows the run on a reload)."""
        self._trained_data: dict[str, Any] | None = None
        """metrics.json's ``data`` of the run, read once (serve prepares per request)."""

    @classmethod
    def load(cls, run: RunDir) -> ForecastPredictor:
        model_dir = require_model_dir(run.path)
        model, tokenizer = load_model(model_dir)
        variant = str(read_variant(model_dir).get("method", "fp32"))
        cfg = run.config
        scaler, columns = load_scaler(model_dir), load_columns(model_dir)
        hybrid = HybridBase.load(model_dir)
        if hybrid is None and getattr(getattr(model, "spec", None), "base", None):
            raise CheckpointError(
                f"{model_dir} is a hybrid whose LightGBM base (lightgbm-base/) is missing; "
                "run the training again to rebuild it"
            )
        return cls(model, tokenizer, cfg, scaler, columns, run, variant, hybrid)

    def with_model(self, model: Any) -> ForecastPredictor:
        """The same scaler and columns around another network (a compressed candidate)."""
        return ForecastPredictor(
            model,
            self.tokenizer,
            self.cfg,
            self.scaler,
            self.columns,
            self.run,
            self.variant,
            self.hybrid,
        )

    def with_row(self, row: str) -> ForecastPredictor:
        """The same run forecasting with its kept row ``row`` (a baseline or an ensemble, by
        its name in the run's table; ``recommended``: the row the run recommends; the network's
        name or ``model``: the network)."""
        if self.run is None:
            raise CheckpointError("a predictor made without its run keeps no rows but the network")
        name, rows = row_for(self.run, self.variant, row)
        out = self.with_model(self.model)
        out.row, out.rows, out.row_spec = name, rows, row
        return out

    @property
    def info(self) -> dict[str, Any]:
        info = super().info
        if self.run is not None:
            info["row"] = self.row or self.run.metrics.model
        return info

    def version(self) -> str:
        """The network's version as before rows were served (its ``model/``); a kept row's also
        hashes the run's ``rows/`` and the row's name."""
        if self.row is None or self.run is None:
            return super().version()
        rows = self.run.path / ROWS_DIR
        return files_digest(
            [(self.run.model_dir, ""), (rows, f"{ROWS_DIR}/")], extra=self.row.encode()
        )

    def _on_trained_clock(self, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
        """Input timestamps on the clock the run's calendar features were computed on. Without
        ``data.timezone`` a file's offsets decide it: several offsets (daylight saving) were
        read as UTC, one offset as that fixed zone. A history of one summer week has one
        offset: its calendar features would be hours off the run's, so it is converted."""
        if self.cfg.data.timezone or self.run is None:
            return frame  # clean_frame converted it to the run's zone already
        start = self._trained().get("start")
        zone = pd.Timestamp(start).tz if start else None
        index = pd.DatetimeIndex(frame.index)
        if zone is None:
            return frame  # naive local times: the input's wall clock is taken as it is
        if index.tz is None:
            raise DataError(
                f"{origin}: timestamps without a UTC offset, but this run was trained on "
                f"timestamps with one (its calendar features on {zone}); write the offset, as "
                "the training file did"
            )
        if str(index.tz) != str(zone):
            frame = frame.set_axis(index.tz_convert(zone))
        return frame

    def _trained(self) -> dict[str, Any]:
        """How the run's data was cut (metrics.json's ``data``: its step, its first time);
        empty for a predictor without its run."""
        if self._trained_data is None:
            self._trained_data = (self.run.metrics.data or {}) if self.run is not None else {}
        return self._trained_data

    def _trained_step(self) -> pd.Timedelta | None:
        """The step of the rows the run was trained on; None where it was not recorded."""
        step = self._trained().get("step")
        return pd.Timedelta(step) if step else None

    @property
    def context_length(self) -> int:
        return int(self.model.spec.context_length)

    @property
    def horizon(self) -> int:
        return int(self.model.spec.horizon)

    # ------------------------------------------------------------------ predictions

    def forecast(self, data: ForecastData, origins: np.ndarray) -> Forecast:
        """The network's forecasts in data units for windows already prepared (a run's own
        splits)."""
        base = base_of(self.hybrid, data, origins)
        batches = make_batches(self.cfg, data, origins, self.tokenizer, base)
        out = predict_scaled(self.model, batches, self.cfg.eval.batch_size)
        return to_forecast(data, out, self.cfg.model.quantiles)

    def prepare(  # type: ignore[override]
        self, frame: pd.DataFrame, origins: Origins = "last", source: str = "the DataFrame"
    ) -> Prepared:
        """Check ``frame`` (see the class docstring) and build its windows; ``source`` names it
        in errors."""
        return self.prepare_many([self], frame, origins, source)

    def predict_file(self, path: str | Path, origins: Origins = "last") -> pd.DataFrame:
        """``predict`` on a CSV or Parquet file (ETT files for an ETT run)."""
        return self.predict_file_many([self], path, origins)[0]

    def predict_prepared(self, items: list[Prepared]) -> list[pd.DataFrame]:
        return [frames[0] for frames in self.predict_many([self], items)]

    # ------------------------------------------------------------------ several rows at once

    def prepare_many(  # type: ignore[override]
        self,
        views: Sequence[Predictor],
        frame: pd.DataFrame,
        origins: Origins = "last",
        source: str = "the DataFrame",
    ) -> Prepared:
        """``prepare`` once for ``views``: this run's network and kept rows (``with_row``),
        each forecasting the same windows (those every one of them can forecast)."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
        dcfg = resolve(self.cfg.data)
        time_col = dcfg.time_col or "time"
        if time_col not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.rename_axis(time_col).reset_index()
        return self._prepare(RawTable(frame, source), dcfg, origins, _same_run(self, views))

    def predict_file_many(
        self, views: Sequence[Predictor], path: str | Path, origins: Origins = "last"
    ) -> list[pd.DataFrame]:
        dcfg = _file_config(self.cfg.data, Path(path))
        mine = _same_run(self, views)
        return self.predict_many(mine, [self._prepare(load_table(dcfg), dcfg, origins, mine)])[0]

    def predict_many(
        self, views: Sequence[Predictor], items: list[Prepared]
    ) -> list[list[pd.DataFrame]]:
        """Per item, each view's forecast: the network run once for all that weigh it, each
        kept baseline once for all the ensembles it is a member of."""
        parts: list[ForecastBatches] = [item.payload for item in items]
        if not parts:
            return []
        mine = _same_run(self, views)
        network = any(v.needs_network for v in mine)
        out = predict_stacked(self.model, parts, self.cfg.eval.batch_size) if network else None
        result, start = [], 0
        for part in parts:
            net = None
            if out is not None:
                net = to_forecast(
                    part.data, out[start : start + len(part)], self.cfg.model.quantiles
                )
                start += len(part)
            done: dict[str, Forecast] = {}
            frames = []
            for view in mine:
                fc = net
                if view.row is not None:
                    assert view.rows is not None
                    fc = view.rows.forecast(view.row, part.data, part.origins, net, done)
                assert fc is not None
                frames.append(forecast_frame(part.data, part.origins, fc))
            result.append(frames)
        return result

    @property
    def needs_network(self) -> bool:
        """Whether this row's forecast runs the network (the network's own, or an ensemble's
        with it as a member)."""
        return self.row is None or (self.rows is not None and self.rows.needs_network(self.row))

    def _prepare(
        self, table: RawTable, dcfg: DataConfig, origins: str, views: list[ForecastPredictor]
    ) -> Prepared:
        data, chosen = self._windows(table, dcfg, origins, views)
        network = any(v.needs_network for v in views)
        base = base_of(self.hybrid, data, chosen) if network else None
        batches = make_batches(self.cfg, data, chosen, self.tokenizer, base)
        return Prepared(self, len(chosen), batches)

    def _windows(
        self, table: RawTable, dcfg: DataConfig, how: str, views: list[ForecastPredictor]
    ) -> tuple[ForecastData, np.ndarray]:
        frame, report = clean_frame(table, dcfg)
        origin = report.origin  # names the series of a long file
        frame = self._on_trained_clock(frame, origin)
        trained = self._trained_step()
        if trained is not None and pd.Timedelta(report.step) != trained:
            raise DataError(
                f"{origin}: rows every {_span(pd.Timedelta(report.step))}, but this run was "
                f"trained on rows every {_span(trained)}: its context, horizon and seasonal "
                "lags count steps of that length; resample the input to it"
            )
        L, H = self.context_length, self.horizon
        if dcfg.multivariate:
            frame = _as_run_targets(frame, self.columns.targets, origin)
        if how == "last":
            frame = _extend_horizon(frame, self.columns, H, origin)
        featured, targets, past, known = featurize(frame, dcfg)
        got = [*targets, *past, *known]
        if got != self.columns.all:
            raise DataError(f"{origin}: columns {got} differ from the run's {self.columns.all}")
        scaled = self.scaler.transform(featured.to_numpy(dtype=float)).astype(np.float32)
        need, reader = L, "the model's context"
        step = featured.index[1] - featured.index[0]
        for view in views:
            if view.row is not None and view.rows is not None:
                history = view.rows.history(view.row, step, H)
                if history > need:
                    need, reader = history, f"{view.row} reads that far back"
        if self.hybrid is not None and any(v.needs_network for v in views):
            day = max(1, round(pd.Timedelta("1D") / step))
            base = max(history_rows(f, day, H) for f in self.hybrid.fits)
            if base > need:  # else its lags would be NaN and it would fall back to the mean
                need, reader = base, "the hybrid's LightGBM base reads that far back"
        chosen = _choose_origins(featured, targets, how, need, H, origin, reader)
        stamps = featured.index[chosen]
        off = stamps[(stamps.hour != 0) | (stamps.minute != 0)]
        if self.cfg.data.match_origins and len(off):
            raise DataError(
                f"{origin}: the forecast would start at {off[0]}, but this model was "
                "trained for forecasts from local midnight only (data.match_origins); give "
                "history that ends just before a local midnight, or ask for origins 'daily' "
                "(--origins daily)"
            )
        _check_inputs(
            featured, scaled, chosen, L, H, len(targets) + len(past), origin, need, len(targets)
        )
        data = ForecastData(
            featured,
            targets,
            past,
            known,
            self.scaler,
            np.nan_to_num(scaled),
            L,
            H,
            0,
            0,
            WindowSet("train", chosen[:0]),
            WindowSet("val", chosen[:0]),
            WindowSet("predict", chosen),
            report,
            # the kept rows read these (a channel-independent ridge folds its inputs)
            channel_independent=self.cfg.data.channel_independent,
            config=dcfg,
        )
        for view in views:  # here, not in the batch: a served batch holds others' requests
            if view.row is not None and view.rows is not None:
                view.rows.check(view.row, data, chosen)
        return data, chosen


def _span(step: pd.Timedelta) -> str:
    """'30 min', '1 h', '1 d': a step as a user writes it."""
    seconds = int(step.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _same_run(first: ForecastPredictor, views: Sequence[Predictor]) -> list[ForecastPredictor]:
    """``views`` as this run's predictors: rows of one loaded run share its network."""
    if not all(isinstance(v, ForecastPredictor) and v.model is first.model for v in views):
        raise ConfigError(
            "prepare_many/predict_many take views of one loaded run: the predictor itself and "
            "its with_row(...) views"
        )
    return [v for v in views if isinstance(v, ForecastPredictor)]


def _as_run_targets(frame: pd.DataFrame, targets: list[str], origin: str) -> pd.DataFrame:
    """A multivariate run's series in its own order (a file may list them in another)."""
    have = [str(c) for c in frame.columns]
    missing = [t for t in targets if t not in have]
    unknown = [c for c in have if c not in targets]
    if missing or unknown:
        said = [f"without {', '.join(map(repr, missing))}"] if missing else []
        said += [f"with {', '.join(map(repr, unknown))}, which the run does not know"] * bool(
            unknown
        )
        raise DataError(
            f"{origin}: the run forecasts the series {', '.join(targets)}; this data comes "
            f"{' and '.join(said)}"
        )
    return frame.set_axis(have, axis=1)[targets]


def _file_config(cfg: DataConfig, path: Path) -> DataConfig:
    source: Literal["csv", "parquet", "ett"] = (
        "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    )
    if cfg.source == "ett":
        source = "ett"
    return dataclasses.replace(resolve(cfg), source=source, path=str(path))


def _extend_horizon(
    frame: pd.DataFrame, columns: Columns, horizon: int, origin: str
) -> pd.DataFrame:
    """Make room for the horizon after the last observed target when no input is missing."""
    target = columns.targets[0]
    observed = np.flatnonzero(frame[target].notna().to_numpy())
    if len(observed) == 0:
        raise DataError(f"{origin}: column {target!r} has no values to forecast from")
    missing = observed[-1] + 1 + horizon - len(frame)
    if missing <= 0:
        return frame
    # only known-future covariates are read over the horizon; derived features are rebuilt
    raw_covariates = [c for c in columns.known if c in frame.columns]
    if raw_covariates:
        raise DataError(
            f"{origin}: needs {horizon} rows after the last observed {target!r} "
            f"with {', '.join(raw_covariates)} filled (their forecast); it has {horizon - missing}"
        )
    step = frame.index[1] - frame.index[0]
    extra = pd.date_range(frame.index[-1] + step, periods=missing, freq=step)
    return pd.concat([frame, pd.DataFrame(index=extra, columns=frame.columns, dtype=float)])


def _choose_origins(
    frame: pd.DataFrame,
    targets: list[str],
    how: str,
    L: int,
    H: int,
    origin: str,
    reader: str = "the model's context",
) -> np.ndarray:
    """``reader``: what reads the ``L`` rows before each forecast (the model's context, or a
    kept row's longer history)."""
    observed = np.flatnonzero(frame[targets[0]].notna().to_numpy())
    if how == "last":
        o = int(observed[-1]) + 1
        if o < L:
            raise DataError(
                f"{origin}: needs {L} observed rows of {targets[0]!r} before the forecast "
                f"({reader}); it has {o}. Give a longer history"
            )
        return np.array([o])
    if how != "daily":
        raise DataError(f"origins={how!r}: use 'last' or 'daily'")
    idx = frame.index
    mids = np.flatnonzero((idx.hour == 0) & (idx.minute == 0))
    chosen = mids[(mids >= L) & (mids + H <= len(frame))]
    if len(chosen) == 0:
        raise DataError(f"{origin}: no local midnight with {L} steps before and {H} after")
    return chosen


def _check_inputs(
    frame: pd.DataFrame,
    scaled: np.ndarray,
    origins: np.ndarray,
    L: int,
    H: int,
    t: int,
    origin: str,
    need: int | None = None,
    n_targets: int | None = None,
) -> None:
    """No missing input: every column over the context and (known covariates) the horizon;
    the targets over the ``need`` rows a kept row (a weekly naive's lags, LightGBM's) or a
    hybrid's base reads before the context too."""
    need = max(L, need or L)
    for o in origins:
        window = scaled[o - need : o + H].copy()
        window[need:, :t] = 0.0  # future targets and past-only covariates are not inputs
        window[: need - L, t if n_targets is None else n_targets :] = 0.0  # targets only
        bad = np.argwhere(np.isnan(window))
        if len(bad):
            row, col = bad[0]
            raise DataError(
                f"{origin}: column {frame.columns[col]!r} is missing at "
                f"{frame.index[o - need + row]}, "
                "inside the window needed for the forecast; fill the value in the input"
            )
