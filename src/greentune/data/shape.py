"""Window shape that follows the data: horizon, context, splits, stride and patch from the step.

A user's series may be 12 weeks of half-hours, three years of hours or two years of days. The
settings left unset (None) are chosen from the data's step and length here, and each choice is
written into the config (``data.chosen``) and the run's log:

- horizon: one day ahead for sub-daily data, a week for daily data, 8 steps for coarser data;
- context: a week for sub-daily data, 8 weeks for daily data, 4 horizons for coarser data;
- validation and test: 56 days each, or 15 % each when that would leave less than 4x a split's
  length for training (a short series);
- train stride: about TARGET_TRAIN_WINDOWS training windows, whatever the length; on
  channel-independent data each window holds every series, and the log names the stride that
  would train about TARGET_TRAIN_WINDOWS windows of one series in all (the greener choice,
  not the default: benchmarks/README.md, "One model across the PJM utilities");
- validation origins: 8 per day (every 6 half-hours, 3 hours, 12 quarter-hours), daily data 1;
- patch length: 12 hours of steps (a week for daily data), never longer than the context.

Durations ("1D", "7D", "8W", "36h") are accepted wherever steps are, and converted with the
data's step. Values already given as steps stay as they are.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from greentune.config import DataConfig
from greentune.errors import ConfigError, DataError

DAY = pd.Timedelta(days=1)
TIME_SPLIT = "56D"
SHORT_SPLIT = 0.15
MIN_TRAIN_PER_SPLIT = 4
# The Victoria demo's 12,144 training rows at stride 4 gave 3,036 windows and trains in about
# two minutes on 2 cores; longer series keep about as many windows (a larger stride).
TARGET_TRAIN_WINDOWS = 3000
VAL_ORIGINS_PER_DAY = 8


SHAPE_KEYS = ("horizon", "context_length", "val", "test", "train_stride", "val_origins")


def needs_shape(cfg: DataConfig) -> bool:
    """True while a shape setting is unset or given as a duration."""
    return any(getattr(cfg, k) is None for k in SHAPE_KEYS) or any(
        isinstance(getattr(cfg, k), str) for k in ("horizon", "context_length")
    )


def to_steps(value: int | str, step: pd.Timedelta, key: str) -> int:
    """Steps in ``value``: an int as it is, a duration ('1D', '36h', '8W') divided by the step."""
    if isinstance(value, int):
        return value
    try:
        span = pd.Timedelta(str(value).strip())
    except ValueError:
        raise ConfigError(
            f"{key}={value!r}: give steps (48) or a duration such as '1D', '36h' or '8W'"
        ) from None
    steps = span / step
    if steps < 1:
        raise ConfigError(f"{key}={value!r} is shorter than the data's step of {step}")
    return max(1, round(steps))


def default_patch_len(step: pd.Timedelta, context_length: int) -> int:
    """12 hours of steps for sub-daily data, a week of days, else an eighth of the context."""
    if step < DAY:
        patch = round(pd.Timedelta(hours=12) / step)
    elif step == DAY:
        patch = 7
    else:
        patch = context_length // 8
    return max(1, min(patch, context_length))


def _horizon_default(step: pd.Timedelta) -> tuple[int | str, str]:
    if step < DAY:
        return "1D", "day-ahead"
    if step == DAY:
        return "7D", "week-ahead"
    return 8, "8 steps"


def _context_default(step: pd.Timedelta, horizon: int) -> tuple[int | str, str]:
    if step < DAY:
        return "7D", "a week"
    if step == DAY:
        return "56D", "8 weeks"
    return 4 * horizon, "4 horizons"


def _split_rows(spec: str, n: int, step: pd.Timedelta) -> int | None:
    """Rows a split spec holds: a fraction or a duration; None for a start date."""
    try:
        return max(1, round(n * float(spec)))
    except ValueError:
        pass
    try:
        return round(pd.Timedelta(spec) / step)
    except ValueError:
        return None


def channels_of(cfg: DataConfig, frame: pd.DataFrame) -> int:
    """Series one training window holds for the network: every column of a cleaned
    multivariate frame when its channels are folded (``data.channel_independent``), else 1
    (a window of mixed channels costs the network about what one series does)."""
    return len(frame.columns) if cfg.multivariate and cfg.channel_independent else 1


def resolve_shape(
    cfg: DataConfig, index: pd.DatetimeIndex, origin: str, channels: int = 1
) -> tuple[DataConfig, list[str]]:
    """``cfg`` with horizon, context, val, test, stride and validation origins in concrete
    terms for data on ``index`` (``channels`` series per window, ``channels_of``); the notes
    say what was chosen and why."""
    n = len(index)
    if n < 2:
        raise DataError(f"{origin}: {n} row(s); a forecast needs a series")
    step = pd.Timedelta(index[1] - index[0])
    notes: list[str] = []
    h_spec, h_why = _horizon_default(step) if cfg.horizon is None else (cfg.horizon, "")
    horizon = to_steps(h_spec, step, "data.horizon")
    c_spec, c_why = (
        _context_default(step, horizon) if cfg.context_length is None else (cfg.context_length, "")
    )
    context = to_steps(c_spec, step, "data.context_length")
    for key, spec, steps, why in (
        ("horizon", h_spec, horizon, h_why),
        ("context", c_spec, context, c_why),
    ):
        if why or not isinstance(spec, int):
            notes.append(f"{key} {steps} steps ({spec}{', ' + why if why else ''})")
    val, test = cfg.val, cfg.test
    if val is None or test is None:
        held = [_split_rows(s, n, step) or 0 for s in (val or TIME_SPLIT, test or TIME_SPLIT)]
        if n - sum(held) < MIN_TRAIN_PER_SPLIT * max(held):
            val, test = val or str(SHORT_SPLIT), test or str(SHORT_SPLIT)
            notes.append(
                f"val/test {SHORT_SPLIT:.0%} each: {TIME_SPLIT} each would leave less than "
                f"{MIN_TRAIN_PER_SPLIT}x as much for training in {n} rows"
            )
        else:
            notes.append(f"val/test {TIME_SPLIT} each")
            val, test = val or TIME_SPLIT, test or TIME_SPLIT
    out = dataclasses.replace(cfg, horizon=horizon, context_length=context, val=val, test=test)
    _check_room(out, n, step, origin)
    if cfg.train_stride is None and not cfg.match_origins:
        train_rows = n - sum(_split_rows(s, n, step) or 0 for s in (val, test))
        windows = train_rows - context - horizon
        stride = max(1, round(windows / TARGET_TRAIN_WINDOWS))
        out = dataclasses.replace(out, train_stride=stride)
        notes.append(f"train stride {stride} (about {TARGET_TRAIN_WINDOWS:,} training windows)")
        fewer = max(1, round(windows * channels / TARGET_TRAIN_WINDOWS))
        if fewer > stride:
            # Measured on 9 PJM utilities: a ninth of the windows cost 0.24x the energy of one
            # run per series at 0.97x their recommended rows' MAPE, but the network alone lost
            # 4.7 % on validation, which the pre-registered rule for a default did not allow.
            kept = windows // fewer + 1
            notes.append(
                f"each training window holds all {channels} series; data.train_stride={fewer} "
                f"would train {kept:,} windows x {channels} series, about "
                f"{kept * channels:,} of one series in all, {stride}/{fewer} of the network's "
                "training"
            )
    if cfg.val_origins is None and not cfg.match_origins:
        every = max(1, round(DAY / step) // VAL_ORIGINS_PER_DAY)
        out = dataclasses.replace(out, val_origins=str(every))
        notes.append(f"validation origins every {every} steps")
    if notes:
        out = dataclasses.replace(out, chosen=(*cfg.chosen, *notes))
    return out, notes


def _check_room(cfg: DataConfig, n: int, step: pd.Timedelta, origin: str) -> None:
    """A clear refusal, with the minimum, for a series too short for its windows."""
    assert isinstance(cfg.horizon, int) and isinstance(cfg.context_length, int)
    assert cfg.val is not None and cfg.test is not None
    L, H = cfg.context_length, cfg.horizon
    fractions, rows = [], []
    for spec in (cfg.val, cfg.test):
        try:
            fractions.append(float(spec))
        except ValueError:
            held = _split_rows(spec, n, step)
            if held is None:
                return  # a split given as a date is checked once the data is cut
            rows.append(held)
    if any(not 0 < f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ConfigError(
            f"data.val={cfg.val!r} and data.test={cfg.test!r}: fractions must lie in (0, 1) "
            "and leave rows for training"
        )
    need = math.ceil(max([(L + H + sum(rows)) / (1 - sum(fractions)), *[H / f for f in fractions]]))
    if n >= need and all(r >= H for r in rows):
        return
    short = [r for r in rows if r < H]
    fix = (
        f"make data.val/data.test at least the horizon ({H} steps)"
        if short
        else "use a longer series, or a shorter data.context_length / data.horizon"
    )
    raise DataError(
        f"{origin}: too little data for windows of {L} context + {H} horizon steps: {n} rows "
        f"of {step} with val {cfg.val} and test {cfg.test}; that needs at least {need} rows "
        f"({need * step}). {fix[0].upper()}{fix[1:]}"
    )
