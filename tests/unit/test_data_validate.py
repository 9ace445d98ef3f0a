import numpy as np
import pandas as pd
import pytest

from greentune.config import DataConfig
from greentune.data.sources import RawTable, load_vic2014, resolve
from greentune.data.validate import clean_frame
from greentune.errors import ConfigError, DataError

CFG = DataConfig(source="csv", time_col="ts", target="load_mw", covariates=("temp_c",))


def table(frame: pd.DataFrame) -> RawTable:
    return RawTable(frame, "load.csv")


def test_clean_frame_indexes_by_time(tiny_series):
    frame, report = clean_frame(table(tiny_series), CFG)
    assert list(frame.columns) == ["load_mw", "temp_c"]
    assert report.rows == len(tiny_series) and report.step == "0 days 01:00:00"
    assert frame.index[0] == pd.Timestamp("2021-01-04")


def test_missing_time_column_lists_columns(tiny_series):
    cfg = DataConfig(source="csv", time_col="when", target="load_mw")
    with pytest.raises(
        DataError, match=r"load.csv: time column 'when' not found; columns are: ts, load_mw, temp_c"
    ):
        clean_frame(table(tiny_series), cfg)


def test_unknown_config_column(tiny_series):
    cfg = DataConfig(source="csv", time_col="ts", target="load_mw", covariates=("humidity",))
    with pytest.raises(DataError, match=r"column\(s\) 'humidity' named in the config not found"):
        clean_frame(table(tiny_series), cfg)


def test_unparseable_timestamp_names_row(tiny_series):
    frame = tiny_series.astype({"ts": str})
    frame.loc[5, "ts"] = "yesterday-ish"
    with pytest.raises(DataError, match=r"column 'ts' row 6: cannot parse 'yesterday-ish'"):
        clean_frame(table(frame), CFG)


def test_timestamps_written_two_ways_name_the_first_odd_row(tiny_series):
    """Each cell parses alone; pandas reads the column in row 1's format."""
    stamps = pd.to_datetime(tiny_series.ts)
    iso = tiny_series.assign(ts=stamps.dt.strftime("%Y-%m-%d %H:%M:%S"))
    iso.loc[0, "ts"] = stamps[0].strftime("%Y-%m-%d")  # midnight written short: read as ISO
    frame, _ = clean_frame(table(iso), CFG)
    assert frame.index[0] == stamps[0] and len(frame) == len(tiny_series)
    aware = tiny_series.assign(ts=stamps.dt.strftime("%Y-%m-%d %H:%M:%S+11:00"))
    aware.loc[100, "ts"] = stamps[100].strftime("%Y-%m-%d %H:%M:%S")  # appended without offset
    with pytest.raises(
        DataError,
        match=rf"row 101: '{stamps[100]:%Y-%m-%d %H:%M:%S}' is not written as row 1 "
        rf"\('{stamps[0]:%Y-%m-%d %H:%M:%S}\+11:00', read as %Y-%m-%d %H:%M:%S%z; that one "
        r"has a UTC offset, this one none\)",
    ):
        clean_frame(table(aware), CFG)


def test_missing_timestamp(tiny_series):
    frame = tiny_series.copy()
    frame.loc[3, "ts"] = pd.NaT
    with pytest.raises(DataError, match=r"1 missing timestamp\(s\), first at row 4"):
        clean_frame(table(frame), CFG)


def test_duplicate_timestamps(tiny_series):
    frame = tiny_series.copy()
    frame.loc[10, "ts"] = frame.loc[9, "ts"]
    with pytest.raises(
        DataError, match=r"1 duplicate timestamp\(s\), first 2021-01-04 09:00:00 at row 11"
    ):
        clean_frame(table(frame), CFG)


def test_unsorted_timestamps(tiny_series):
    frame = tiny_series.copy()
    frame.loc[[7, 8], "ts"] = frame.loc[[8, 7], "ts"].to_numpy()
    with pytest.raises(
        DataError, match=r"is not sorted: row 9 \(2021-01-04 07:00:00\) comes before row 8"
    ):
        clean_frame(table(frame), CFG)


def test_gap_is_refused_then_filled_when_asked(tiny_series):
    frame = tiny_series.drop(index=[20, 21, 22]).reset_index(drop=True)
    with pytest.raises(
        DataError,
        match=r"1 gap\(s\) in the time index \(3 missing steps of 0 days 01:00:00\), "
        r"first between 2021-01-04 19:00:00 and 2021-01-04 23:00:00; .*data.fill_gaps=true",
    ):
        clean_frame(table(frame), CFG)
    filled, report = clean_frame(table(frame), DataConfig(**{**CFG.__dict__, "fill_gaps": True}))
    assert len(filled) == len(tiny_series) and report.filled_steps == 3
    # time interpolation: the middle filled value lies on the line between its neighbours
    a, b = tiny_series.load_mw[19], tiny_series.load_mw[23]
    assert filled.load_mw.iloc[21] == pytest.approx(a + (b - a) * 2 / 4)
    # a value missing in a row the file has is not the gap's to fill: it stays missing
    holed = frame.copy()
    holed.loc[40, "load_mw"] = np.nan
    kept, report = clean_frame(table(holed), DataConfig(**{**CFG.__dict__, "fill_gaps": True}))
    assert np.isnan(kept.load_mw.iloc[43]) and report.filled_steps == 3
    assert kept.load_mw.iloc[21] == pytest.approx(a + (b - a) * 2 / 4)
    assert report.missing_values == {"load_mw": 1}


def test_off_grid_timestamp(tiny_series):
    frame = tiny_series.copy()
    frame.loc[5, "ts"] = frame.loc[5, "ts"] + pd.Timedelta(minutes=7)
    with pytest.raises(DataError, match=r"row 6 .* is off the 0 days 01:00:00 grid"):
        clean_frame(table(frame), CFG)


def test_non_numeric_column_names_row(tiny_series):
    frame = tiny_series.astype({"temp_c": object})
    frame.loc[12, "temp_c"] = "warm"
    with pytest.raises(DataError, match=r"column 'temp_c' is not numeric: row 13 holds 'warm'"):
        clean_frame(table(frame), CFG)
    frame.loc[12, "temp_c"] = "1e400"  # parses, as infinity
    with pytest.raises(DataError, match=r"column 'temp_c' holds '1e400' \(infinite\) at row 13"):
        clean_frame(table(frame), CFG)


def test_mixed_utc_offsets_parse_as_instants():
    frame = pd.DataFrame(
        {
            "ts": [
                "2021-03-27 23:00:00+01:00",
                "2021-03-28 00:00:00+01:00",
                "2021-03-28 01:00:00+01:00",
                "2021-03-28 03:00:00+02:00",
                "2021-03-28 04:00:00+02:00",
            ],
            "load_mw": [1.0, 2, 3, 4, 5],
            "temp_c": [0.0] * 5,
        }
    )
    cfg = DataConfig(
        source="csv",
        time_col="ts",
        target="load_mw",
        covariates=("temp_c",),
        timezone="Europe/Berlin",
    )
    out, report = clean_frame(table(frame), cfg)
    assert str(out.index.tz) == "Europe/Berlin" and report.gaps == []
    assert out.index[3].hour == 3  # 02:00 does not exist on that night


def test_vic2014_rebuilds_melbourne_timestamps():
    raw = load_vic2014(resolve(DataConfig()))
    frame, _report = clean_frame(raw, resolve(DataConfig()))
    assert len(frame) == 17_520 and list(frame.columns) == ["Demand", "Temperature", "WorkDay"]
    assert frame.index[0] == pd.Timestamp("2014-01-01 00:00", tz="Australia/Melbourne")
    assert str(frame.index.tz) == "Australia/Melbourne"
    assert frame.Demand.iloc[0] == pytest.approx(3.914647, abs=1e-6)
    assert np.all(np.diff(frame.index.asi8) == 1_800_000_000_000)


def long_file(tiny_series: pd.DataFrame) -> pd.DataFrame:
    """Two series in one file, one row per (time, zone), as ISO-NE's zone exports."""
    zones = [
        tiny_series.assign(zone=z, load_mw=tiny_series.load_mw + k) for k, z in ((0, "A"), (7, "B"))
    ]
    return pd.concat(zones).sort_values(["ts", "zone"], kind="stable").reset_index(drop=True)


LONG = DataConfig(**{**CFG.__dict__, "series_col": "zone", "series": "B"})


def test_a_long_file_is_cut_to_the_series_asked_for(tiny_series):
    frame, report = clean_frame(table(long_file(tiny_series)), LONG)
    assert report.origin == "load.csv [zone=B]" and report.rows == len(tiny_series)
    np.testing.assert_array_equal(frame.load_mw.to_numpy(), tiny_series.load_mw.to_numpy() + 7)
    np.testing.assert_array_equal(frame.temp_c.to_numpy(), tiny_series.temp_c.to_numpy())


def test_a_table_without_the_series_column_is_that_one_series(tiny_series):
    frame, report = clean_frame(table(tiny_series), LONG)
    assert report.origin == "load.csv" and len(frame) == len(tiny_series)


def test_a_long_file_says_which_series_it_holds(tiny_series):
    cfg = DataConfig(**{**LONG.__dict__, "series": None})
    with pytest.raises(
        DataError,
        match=r"load.csv: column 'zone' \(data.series_col\) names 2 series \(A, B\); pick one "
        r"with data.series=<name> \(--series zone=<name>\), forecast all of them with one model "
        r"\(data.multivariate=true data.channel_independent=true\), or train one across them "
        r"whose data stay apart with greentune federate --partition-col zone",
    ):
        clean_frame(table(long_file(tiny_series)), cfg)
    cfg = DataConfig(**{**LONG.__dict__, "series": "C"})
    with pytest.raises(DataError, match=r"zone = 'C' \(data.series\); the series are: A, B"):
        clean_frame(table(long_file(tiny_series)), cfg)


def test_duplicate_timestamps_of_a_long_file_point_to_its_series_column(tiny_series):
    with pytest.raises(
        DataError,
        match=r"960 duplicate timestamp\(s\), first 2021-01-04 00:00:00 at row 2; it looks like a "
        r"long file, one row per time and 'zone': forecast one series with data.series_col=zone "
        r"data.series=<name> \(--series zone=<name>\)",
    ):
        clean_frame(table(long_file(tiny_series)), CFG)


def test_errors_in_a_long_file_name_the_files_row(tiny_series):
    frame = long_file(tiny_series).astype({"temp_c": object})
    frame.loc[9, "temp_c"] = "warm"  # zone B's 5th row: row 10 of the file
    with pytest.raises(
        DataError, match=r"load.csv \[zone=B\]: column 'temp_c' is not numeric: row 10 holds 'warm'"
    ):
        clean_frame(table(frame), LONG)
    frame = long_file(tiny_series).astype({"ts": str})
    frame.loc[11, "ts"] = "yesterday-ish"
    with pytest.raises(DataError, match=r"\[zone=B\]: column 'ts' row 12: cannot parse"):
        clean_frame(table(frame), LONG)
    frame = long_file(tiny_series)
    frame.loc[[7, 9], "ts"] = frame.loc[[9, 7], "ts"].to_numpy()  # zone B's rows 4 and 5 swapped
    with pytest.raises(
        DataError, match=r"is not sorted: row 10 \(2021-01-04 03:00:00\) comes before row 8 "
    ):
        clean_frame(table(frame), LONG)


def test_a_series_needs_its_column():
    with pytest.raises(ConfigError, match=r"data.series='B' picks a series of a long file: also"):
        DataConfig(source="csv", series="B")


def test_more_errors_in_a_long_file_name_the_files_row(tiny_series):
    frame = long_file(tiny_series)
    frame.loc[13, "ts"] = pd.NaT  # zone B's 7th row
    with pytest.raises(DataError, match=r"\[zone=B\]: .*1 missing timestamp\(s\), first at row 14"):
        clean_frame(table(frame), LONG)
    frame = long_file(tiny_series)
    frame.loc[15, "ts"] = frame.loc[13, "ts"]  # zone B's 8th row repeats its 7th
    with pytest.raises(DataError, match=r"1 duplicate timestamp\(s\), first .* at row 16; aggr"):
        clean_frame(table(frame), LONG)
    frame = long_file(tiny_series)
    frame.loc[17, "ts"] += pd.Timedelta("30min")  # zone B's 9th row off the hourly grid
    with pytest.raises(DataError, match=r"\[zone=B\]: row 18 \(2021-01-04 08:30:00\) is off the"):
        clean_frame(table(frame), LONG)


def test_a_numeric_series_column_is_named_as_written(tiny_series):
    frame = long_file(tiny_series)
    frame["zone"] = frame["zone"].map({"A": 4001, "B": 4002})
    frame.loc[0, "zone"] = np.nan  # an empty cell makes the column float: 4002.0
    assert frame["zone"].dtype == float
    cfg = DataConfig(**{**LONG.__dict__, "series": "4002"})
    got, report = clean_frame(table(frame), cfg)
    assert report.origin == "load.csv [zone=4002]" and len(got) == len(tiny_series)
    cfg = DataConfig(**{**LONG.__dict__, "series": None})
    with pytest.raises(DataError, match=r"names 2 series \(4001, 4002\)"):
        clean_frame(table(frame), cfg)


def test_a_daylight_saving_flag_is_not_taken_for_a_series_column(tiny_series):
    frame = tiny_series.assign(dst="EDT")
    frame.loc[5, "ts"] = frame.loc[4, "ts"]  # the repeated hour of naive local times
    frame.loc[5, "dst"] = "EST"
    with pytest.raises(DataError, match=r"at row 6; aggregate or remove duplicates$"):
        clean_frame(table(frame), CFG)


def test_a_multivariate_long_file_names_its_series_column(tiny_series):
    cfg = DataConfig(source="csv", time_col="ts", multivariate=True)
    with pytest.raises(DataError, match=r"it looks like a long file, one row per time and 'zone'"):
        clean_frame(table(long_file(tiny_series)), cfg)
    cfg = DataConfig(**{**cfg.__dict__, "series_col": "zone", "series": "A"})
    got, _ = clean_frame(table(long_file(tiny_series)), cfg)
    assert list(got.columns) == ["load_mw", "temp_c"]


def test_a_zone_code_read_as_a_number_still_matches(tiny_series):
    frame = long_file(tiny_series)
    frame["zone"] = frame["zone"].map({"A": 9, "B": 10})  # "009" and "010" in the file
    cfg = DataConfig(**{**LONG.__dict__, "series": "010"})
    got, report = clean_frame(table(frame), cfg)
    assert report.origin == "load.csv [zone=010]"
    np.testing.assert_array_equal(got.load_mw.to_numpy(), tiny_series.load_mw.to_numpy() + 7)


ALL = DataConfig(
    source="csv", time_col="ts", target="load_mw", series_col="zone", multivariate=True
)


def test_every_series_of_a_long_file_becomes_a_target(tiny_series):
    frame = long_file(tiny_series).sort_values(["zone", "ts"], kind="stable")  # by series
    got, report = clean_frame(table(frame.drop(columns=["temp_c"])), ALL)
    assert list(got.columns) == ["A", "B"] and report.origin == "load.csv [zone: 2 series]"
    np.testing.assert_array_equal(got.A.to_numpy(), tiny_series.load_mw.to_numpy())
    np.testing.assert_array_equal(got.B.to_numpy(), tiny_series.load_mw.to_numpy() + 7)
    assert report.rows == len(tiny_series)


def test_every_series_errors_name_the_files_row(tiny_series):
    frame = long_file(tiny_series).drop(columns=["temp_c"]).astype({"load_mw": object})
    frame.loc[9, "load_mw"] = "n/a"
    with pytest.raises(DataError, match=r"column 'load_mw' is not numeric: row 10 holds 'n/a'"):
        clean_frame(table(frame), ALL)
    frame = long_file(tiny_series).drop(columns=["temp_c"])
    frame.loc[5, "ts"] = frame.loc[3, "ts"]  # zone B's 3rd row repeats its 2nd time
    with pytest.raises(
        DataError,
        match=r"series 'B' has 1 repeated time\(s\) in column 'ts' \(1 in all series\), "
        r"first .* at row 6",
    ):
        clean_frame(table(frame), ALL)
    with pytest.raises(ConfigError, match=r"covariates \(temp_c\) differ per series"):
        clean_frame(
            table(long_file(tiny_series)), DataConfig(**{**ALL.__dict__, "covariates": ("temp_c",)})
        )
    with pytest.raises(DataError, match=r"name the long file's value column with --target"):
        clean_frame(table(long_file(tiny_series)), DataConfig(**{**ALL.__dict__, "target": None}))


def test_a_series_lacking_times_the_others_have_is_a_gap_and_a_shorter_one_refused(tiny_series):
    frame = long_file(tiny_series).drop(columns=["temp_c"])
    holes = frame.index[(frame.zone == "B")][[30, 31]]  # zone B lacks day 2's 06:00 and 07:00
    cut = frame.drop(index=holes)
    with pytest.raises(
        DataError,
        match=r"series 'B' has no row at 2 time\(s\) the others have, first "
        r"2021-01-05 06:00:00 \(2 in all series\); .*data.fill_gaps=true",
    ):
        clean_frame(table(cut), ALL)
    got, report = clean_frame(table(cut), DataConfig(**{**ALL.__dict__, "fill_gaps": True}))
    b = tiny_series.load_mw.to_numpy() + 7
    np.testing.assert_allclose(got.B.iloc[30:32], b[29] + (b[32] - b[29]) * np.array([1, 2]) / 3)
    assert "filled 2 times absent from 1 series that the others have" in report.notes
    late = frame.drop(index=frame.index[(frame.zone == "A")][:24])  # zone A starts a day later
    with pytest.raises(
        DataError,
        match=r"needs each of them at every time of 2021-01-04 00:00:00 .. 2021-02-12 23:00:00; "
        r"these start later or end sooner: A 2021-01-05 00:00:00 .. 2021-02-12 23:00:00. Cut the "
        r"file to the times they share \(from 2021-01-05 00:00:00 to 2021-02-12 23:00:00\)",
    ):
        clean_frame(table(late), ALL)
    every_other = frame.drop(index=frame.index[(frame.zone == "B")][1:-1:2])  # B two-hourly
    with pytest.raises(DataError, match=r"series 'B' has no row at 479 of the 960 times .* grid"):
        clean_frame(table(every_other), ALL)


def test_every_series_in_local_time_across_the_autumn_hour(tiny_series):
    """Sorted by time, each naive local time of the repeated hour appears once per series in
    a row: each series' times are placed in the zone on their own."""
    times = pd.date_range("2021-10-30 00:00", "2021-11-02 00:00", freq="1h", tz="Europe/Berlin")
    naive = times.tz_localize(None).astype(str)
    one = pd.DataFrame({"ts": naive, "load_mw": np.arange(len(times), dtype=float)})
    frame = pd.concat([one.assign(zone="A"), one.assign(zone="B", load_mw=one.load_mw + 1)])
    frame = frame.sort_values(["ts", "zone"], kind="stable").reset_index(drop=True)
    cfg = DataConfig(**{**ALL.__dict__, "timezone": "Europe/Berlin"})
    got, _ = clean_frame(table(frame), cfg)
    assert len(got) == len(times) and (got.index == times).all()
    np.testing.assert_array_equal(got.B.to_numpy(), got.A.to_numpy() + 1)


def test_series_names_that_would_clash_are_refused(tiny_series):
    frame = long_file(tiny_series).drop(columns=["temp_c"]).replace({"zone": {"A": "holiday"}})
    with pytest.raises(DataError, match=r"series named 'holiday' in column 'zone' would take"):
        clean_frame(table(frame), ALL)
    frame = long_file(tiny_series).drop(columns=["temp_c"]).astype({"zone": object})
    frame.loc[frame.zone == "A", "zone"] = 1
    frame.loc[frame.zone == "B", "zone"] = "1"
    with pytest.raises(DataError, match=r"holds different values read as the same name '1'"):
        clean_frame(table(frame), ALL)
    with pytest.raises(ConfigError, match=r"covariates \(temp_c\) differ per series"):
        clean_frame(
            table(long_file(tiny_series)),
            DataConfig(**{**ALL.__dict__, "temperature_col": "temp_c"}),
        )


def test_long_numeric_series_ids_stay_distinct():
    """EAN-18 metering-point IDs: two meters, not one name read twice."""
    from greentune.data.validate import _labels

    ids = pd.Series([871687120050000001, 871687120050000002, 871687120050000001])
    assert list(_labels(ids)) == ["871687120050000001", "871687120050000002", "871687120050000001"]
    floats = _labels(pd.Series([1.0, 2.5, None]))
    assert list(floats[:2]) == ["1", "2.5"] and pd.isna(floats[2])


def test_a_naive_local_time_the_clocks_skip_is_named_not_called_a_duplicate():
    """ISO-NE's 2017 export has 24 rows on 12 March, 02:00 among them (New York skipped it)."""
    times = pd.date_range("2021-03-28 00:00", periods=6, freq="1h")  # naive, 02:00 included
    frame = pd.DataFrame({"ts": times.astype(str), "load_mw": [1.0, 2, 3, 4, 5, 6]})
    cfg = DataConfig(source="csv", time_col="ts", target="load_mw", timezone="Europe/Berlin")
    with pytest.raises(
        DataError,
        match=r"column 'ts' row 3: 2021-03-28 02:00:00 does not exist in Europe/Berlin .* drop "
        r"that row",
    ):
        clean_frame(table(frame), cfg)
    out, _ = clean_frame(table(frame.drop(index=2)), cfg)  # without it: regular in local time
    assert len(out) == 5 and out.index[2].hour == 3


def test_daily_rows_in_a_zone_with_daylight_saving_are_regular():
    """Days of 23 and 25 hours are whole days on the wall clock; a missing day is a gap."""
    times = pd.date_range("2021-03-01", "2021-04-30", freq="D", tz="Europe/Berlin")
    frame = pd.DataFrame({"ts": times.astype(str), "load_mw": np.arange(len(times), dtype=float)})
    cfg = DataConfig(source="csv", time_col="ts", target="load_mw", timezone="Europe/Berlin")
    out, report = clean_frame(table(frame), cfg)
    assert len(out) == 61 and report.gaps == [] and report.step == "1 days 00:00:00"
    holed, report = clean_frame(
        table(frame.drop(index=30)), DataConfig(**{**cfg.__dict__, "fill_gaps": True})
    )
    assert len(holed) == 61 and report.filled_steps == 1
    assert holed.index[30] == pd.Timestamp("2021-03-31", tz="Europe/Berlin")
    assert holed.load_mw.iloc[30] == pytest.approx(30.0, abs=0.05)  # time-interpolated


def test_daily_rows_regular_in_absolute_time_stay_regular_in_a_zone():
    """Stamped at UTC midnight, shown in Berlin: 01:00 in winter, 02:00 in summer."""
    times = pd.date_range("2021-03-01", "2021-04-30", freq="D", tz="UTC")
    frame = pd.DataFrame({"ts": times.astype(str), "load_mw": np.arange(len(times), dtype=float)})
    cfg = DataConfig(source="csv", time_col="ts", target="load_mw", timezone="Europe/Berlin")
    out, report = clean_frame(table(frame), cfg)
    assert len(out) == 61 and report.gaps == []
    filled, report = clean_frame(
        table(frame.drop(index=40)), DataConfig(**{**cfg.__dict__, "fill_gaps": True})
    )
    assert len(filled) == 61 and report.filled_steps == 1  # a missing day is a gap, filled


def test_offsets_across_daylight_saving_with_one_row_without_one():
    """+01:00 and +02:00 (the file spans the change), then a row appended with none."""
    times = pd.date_range("2021-03-27", periods=72, freq="h", tz="Europe/Berlin")
    stamps = [t.isoformat() for t in times]
    stamps[60] = times[60].strftime("%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame({"ts": stamps, "load_mw": np.arange(72, dtype=float)})
    cfg = DataConfig(source="csv", time_col="ts", target="load_mw")
    with pytest.raises(DataError, match=r"row 61: .* is not written as row 1 .* this one none"):
        clean_frame(table(frame), cfg)
    short = [t.isoformat() for t in times]
    short[0] = times[0].strftime("%Y-%m-%dT%H:%M") + "+01:00"  # ISO, no seconds; all offsets
    out, _ = clean_frame(table(frame.assign(ts=short)), cfg)
    assert len(out) == 72 and str(out.index.tz) == "UTC"


def test_a_text_column_of_a_multivariate_file_is_to_be_removed_from_the_file(tiny_series):
    """No setting leaves a column of a wide multivariate file out: say what does."""
    frame = tiny_series.assign(day=pd.to_datetime(tiny_series.ts).dt.strftime("%Y-%m-%d"))
    cfg = DataConfig(source="csv", time_col="ts", multivariate=True)
    with pytest.raises(
        DataError,
        match=r"column 'day' is not numeric: row 1 holds '2021-01-04'; with data.multivariate "
        r"every column but the time column is a target: remove this column from the file",
    ):
        clean_frame(table(frame), cfg)
