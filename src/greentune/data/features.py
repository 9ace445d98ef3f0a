"""Known-future features: cyclic calendar, public holidays, temperature hinge (degree) features.

All of these are known for the forecast horizon at the forecast origin (calendar exactly, weather
as a forecast), so they are fed to the model for both the context and the horizon.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from greentune.config import DataConfig
from greentune.errors import ConfigError, DataError

# Demand is U-shaped in temperature: heating below ~14-18 C, cooling above ~22 C. Knots in C;
# the /5 keeps the features near unit scale before standardisation.
HEATING_KNOTS_C = (14.0, 18.0)
COOLING_KNOTS_C = (22.0, 26.0, 30.0, 34.0)
HINGE_SCALE_C = 5.0


def calendar_features(index: pd.DatetimeIndex) -> pd.DataFrame:
    """Hour of day, day of week and day of year as sine/cosine pairs (local time of the index)."""
    hour = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    dow = index.day_of_week.to_numpy()
    doy = index.day_of_year.to_numpy() - 1
    cols = {
        "cal_hour_sin": np.sin(2 * np.pi * hour / 24.0),
        "cal_hour_cos": np.cos(2 * np.pi * hour / 24.0),
        "cal_dow_sin": np.sin(2 * np.pi * dow / 7.0),
        "cal_dow_cos": np.cos(2 * np.pi * dow / 7.0),
        "cal_year_sin": np.sin(2 * np.pi * doy / 365.25),
        "cal_year_cos": np.cos(2 * np.pi * doy / 365.25),
    }
    return pd.DataFrame(cols, index=index)


def holiday_flags(index: pd.DatetimeIndex, country: str, subdivision: str | None) -> pd.Series:
    """1.0 on public holidays of ``country``/``subdivision`` (local dates), else 0.0."""
    import holidays

    years = range(int(index.year.min()), int(index.year.max()) + 1)
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision, years=years)
    except NotImplementedError:
        raise ConfigError(
            f"data.country={country!r} is not known to the holidays package; "
            "use an ISO 3166 code such as AU, DE, GB, US"
        ) from None
    except Exception as exc:  # holidays raises for an unknown subdivision
        raise ConfigError(f"data.subdivision={subdivision!r} for {country}: {exc}") from None
    dates = index.date
    flags = np.fromiter((d in calendar for d in dates), dtype=float, count=len(dates))
    return pd.Series(flags, index=index, name="holiday")


def hinge_features(temperature: pd.Series) -> pd.DataFrame:
    """Heating- and cooling-degree hinges of a temperature column in C."""
    t = temperature.to_numpy(dtype=float)
    cols = {f"hdd_{k:g}": np.maximum(k - t, 0.0) / HINGE_SCALE_C for k in HEATING_KNOTS_C}
    cols.update({f"cdd_{k:g}": np.maximum(t - k, 0.0) / HINGE_SCALE_C for k in COOLING_KNOTS_C})
    return pd.DataFrame(cols, index=temperature.index)


NO_HINGES = (
    'for no degree hinges give the column an empty name: temperature_col: "" in a file, '
    "'data.temperature_col=\"\"' on the command line (null is the demo's default)"
)


def check_temperature(cfg: DataConfig) -> None:
    """The hinges are inputs over the horizon, so their temperature must be a covariate known
    ahead (a forecast), never a value observed only up to the origin: a past covariate, the
    target, or a column of a multivariate file (each is a target forecast from its past).
    Checked where windows are cut for a run (training, evaluation), not where a trained model
    forecasts: there the input gives the horizon's temperatures itself."""
    col = cfg.temperature_col
    if not col:
        return
    retrain = "; a run made so was scored on the observed future: train it again without it"
    if cfg.multivariate:
        raise ConfigError(
            f"data.temperature_col={col!r}: with data.multivariate every column is a target "
            f"forecast from its past, so its future temperatures are not known; {NO_HINGES}"
            + retrain
        )
    if col == cfg.target or col in cfg.past_covariates:
        kind = "the target" if col == cfg.target else "a past covariate (data.past_covariates)"
        raise ConfigError(
            f"data.temperature_col={col!r} is {kind}, known only up to the forecast origin, "
            "but its degree hinges are read over the horizon: name a temperature forecast "
            f"column in data.covariates, or {NO_HINGES}" + retrain
        )
    if col not in (cfg.covariates or ()):
        raise ConfigError(
            f"data.temperature_col={col!r} must also be a covariate (data.covariates), known "
            f"over the horizon; covariates are: {', '.join(cfg.covariates or ()) or 'none'}; "
            + NO_HINGES
        )


def add_features(frame: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """Return the frame with feature columns appended, and the names of the added columns."""
    parts: list[pd.DataFrame | pd.Series] = []
    if cfg.calendar:
        parts.append(calendar_features(frame.index))
    if cfg.country:
        parts.append(holiday_flags(frame.index, cfg.country, cfg.subdivision))
    if cfg.temperature_col:
        if cfg.temperature_col not in frame.columns:
            raise ConfigError(
                f"data.temperature_col={cfg.temperature_col!r} must also be a covariate; "
                f"covariates are: {', '.join(frame.columns[1:]) or 'none'}; {NO_HINGES}"
            )
        parts.append(hinge_features(frame[cfg.temperature_col]))
    if not parts:
        return frame, []
    added = pd.concat(parts, axis=1)
    clash = [c for c in added.columns if c in frame.columns]
    if clash:
        raise DataError(
            f"{cfg.path or cfg.source}: column(s) {', '.join(map(repr, clash))} take the name "
            "of a feature greentune adds (calendar, holidays, degree hinges); rename them in "
            "the file"
        )
    return pd.concat([frame, added], axis=1), list(added.columns)
