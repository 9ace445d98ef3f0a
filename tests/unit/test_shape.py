import pandas as pd
import pytest

from greentune.config import DataConfig
from greentune.data.shape import (
    channels_of,
    default_patch_len,
    needs_shape,
    resolve_shape,
    to_steps,
)
from greentune.errors import ConfigError, DataError


def _index(freq: str, span: str) -> pd.DatetimeIndex:
    start = pd.Timestamp("2020-01-01")
    return pd.date_range(start, start + pd.Timedelta(span), freq=freq, inclusive="left")


@pytest.mark.parametrize(
    ("freq", "span", "expected"),
    [
        # 12 weeks of half-hours: the 56-day splits would leave nothing to train on
        ("30min", "84D", (336, 48, "0.15", "0.15", 1, "6")),
        # 3 years of hours: day-ahead is 24 steps, a stride keeps about 3,000 windows
        ("1h", "1095D", (168, 24, "56D", "56D", 8, "3")),
        # 2 years of days: week-ahead from 8 weeks
        ("1D", "730D", (56, 7, "56D", "56D", 1, "1")),
        # 1 month of quarter-hours
        ("15min", "30D", (672, 96, "0.15", "0.15", 1, "12")),
    ],
)
def test_defaults_follow_the_step_and_the_length(freq, span, expected):
    cfg, notes = resolve_shape(DataConfig(), _index(freq, span), "x.csv")
    got = (cfg.context_length, cfg.horizon, cfg.val, cfg.test, cfg.train_stride, cfg.val_origins)
    assert got == expected
    assert cfg.chosen == tuple(notes) and not needs_shape(cfg)
    if expected[2] == "0.15":
        assert any("15% each" in n for n in notes)


def test_channel_independent_series_are_told_the_greener_stride():
    """Nine folded series per window: the default stride is one series' (3,000 windows, each
    of nine series) and the notes name the stride that keeps 3,000 windows of one series;
    mixed channels (not folded) count as one, a given stride is left alone."""
    index = _index("1h", "1095D")
    frame = pd.DataFrame({f"s{i}": 0.0 for i in range(9)}, index=index)
    folded = DataConfig(multivariate=True, channel_independent=True)
    assert channels_of(folded, frame) == 9
    assert channels_of(DataConfig(multivariate=True), frame) == 1
    assert channels_of(DataConfig(channel_independent=True), frame) == 1
    one, one_notes = resolve_shape(folded, index, "x.csv")
    nine, notes = resolve_shape(folded, index, "x.csv", channels=9)
    # 26,280 rows - 2 x 1,344 held out - 168 - 24 = 23,400 windows at stride 1
    assert (one.train_stride, nine.train_stride) == (8, 8)
    assert not any("series" in n for n in one_notes)
    assert (
        "each training window holds all 9 series; data.train_stride=70 would train 335 "
        "windows x 9 series, about 3,015 of one series in all, 8/70 of the network's training"
    ) in notes
    # 12 weeks of hours: 1,220 windows at stride 1, so about 3,000 of one series is stride 4
    weeks, short = resolve_shape(folded, _index("1h", "84D"), "x.csv", channels=9)
    assert weeks.train_stride == 1
    assert "data.train_stride=4 would train 306 windows x 9 series, about 2,754" in " ".join(short)
    # too few windows for a smaller share: no hint
    _, tiny = resolve_shape(folded, _index("1h", "84D"), "x.csv", channels=2)
    assert not any("series" in n for n in tiny)
    given, given_notes = resolve_shape(DataConfig(train_stride=2), index, "x.csv", channels=9)
    assert given.train_stride == 2 and not any("series" in n for n in given_notes)


def test_durations_become_steps_and_given_steps_stay():
    index = _index("1h", "400D")
    cfg, notes = resolve_shape(
        DataConfig(
            horizon="36h",
            context_length=100,
            val="0.1",
            test="20D",
            train_stride=2,
            val_origins="1",
        ),
        index,
        "x.csv",
    )
    assert (cfg.horizon, cfg.context_length, cfg.val, cfg.test) == (36, 100, "0.1", "20D")
    assert notes == ["horizon 36 steps (36h)"]
    assert to_steps("8W", pd.Timedelta("1D"), "k") == 56
    with pytest.raises(ConfigError, match="shorter than the data's step"):
        to_steps("10min", pd.Timedelta("1h"), "data.horizon")
    with pytest.raises(ConfigError, match=r"data.horizon='soon'"):
        DataConfig(horizon="soon")


def test_too_little_data_names_the_minimum():
    with pytest.raises(
        DataError,
        match=r"x.csv: too little data for windows of 336 context \+ 48 horizon steps: 300 rows "
        r"of 0 days 00:30:00 with val 0.15 and test 0.15; that needs at least 549 rows "
        r"\(11 days 10:30:00\)",
    ):
        resolve_shape(DataConfig(), _index("30min", "150h"), "x.csv")
    with pytest.raises(DataError, match=r"needs at least 360 rows .*Use a longer series"):
        resolve_shape(
            DataConfig(context_length=48, horizon=24, val="6D", test="6D"),
            _index("1h", "13D"),
            "load.csv",
        )
    with pytest.raises(DataError, match=r"Make data.val/data.test at least the horizon \(24"):
        resolve_shape(
            DataConfig(context_length=48, horizon=24, val="6h", test="6D"),
            _index("1h", "60D"),
            "load.csv",
        )


def test_patch_follows_the_step_within_the_context():
    assert default_patch_len(pd.Timedelta("30min"), 336) == 24
    assert default_patch_len(pd.Timedelta("1h"), 168) == 12
    assert default_patch_len(pd.Timedelta("1D"), 56) == 7
    assert default_patch_len(pd.Timedelta("30min"), 10) == 10
    assert default_patch_len(pd.Timedelta("7D"), 32) == 4


def test_fractions_that_leave_no_training_rows_are_refused():
    with pytest.raises(ConfigError, match="fractions must lie in \\(0, 1\\) and leave rows"):
        resolve_shape(DataConfig(val="0.5", test="0.5"), _index("1h", "400D"), "x.csv")
    with pytest.raises(ConfigError, match="fractions must lie"):
        resolve_shape(DataConfig(val="0", test="0.2"), _index("1h", "400D"), "x.csv")
