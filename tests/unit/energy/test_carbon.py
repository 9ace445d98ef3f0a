"""Carbon-intensity providers: exact values, traces and their errors, fallback, specs, live APIs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from greentune.energy.base import Segment
from greentune.energy.carbon import (
    SPEC_ARGUMENTS,
    FixedIntensity,
    StaticIntensity,
    TraceIntensity,
    WithFallback,
    emissions_g,
    make_provider,
    parse_provider_spec,
)
from greentune.energy.carbon_api import ElectricityMapsApi, UkCarbonIntensityApi
from greentune.errors import ConfigError, EnergyError
from tests.conftest import SHARED_DATA

UTC = dt.UTC
EM_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method"
)
KWH_J = 3.6e6


def at(hour: int, minute: int = 0, day: int = 1, month: int = 1, year: int = 2024) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def em_rows(zone: str, rows: Sequence[tuple[str, float, float]]) -> str:
    lines = [f"{t},Somewhere,Somewhere,{zone},{d},{lca},80,50,src,false," for t, d, lca in rows]
    return "\n".join([EM_HEADER, *lines]) + "\n"


@pytest.fixture
def hourly(tmp_path: Path) -> Path:
    """100, 200, 300 g/kWh from 00:00 UTC, one hour each: covers 00:00 .. 03:00."""
    text = "timestamp,intensity,note\n2024-01-01 00:00,100,a\n2024-01-01 01:00,200,b\n"
    return write(tmp_path, "hourly.csv", text + "2024-01-01 02:00,300,c\n")


# --- fixed, static, emissions -------------------------------------------------------------------


def test_fixed_covers_everything_and_prices_exactly() -> None:
    fixed = FixedIntensity(250)
    assert fixed.segments(at(0), at(2)) == [Segment(at(0), at(2), 250.0)]
    assert emissions_g(KWH_J, at(0), at(2), fixed) == (250.0, 250.0)
    assert emissions_g(KWH_J, at(0), at(2), fixed, pue=1.5) == (375.0, 250.0)
    assert "250 g/kWh" in fixed.describe()


def test_fixed_refuses_negative() -> None:
    with pytest.raises(ConfigError, match="-1"):
        FixedIntensity(-1)
    with pytest.raises(ConfigError, match=">= 0"):
        make_provider("fixed", intensity_g_per_kwh=-5)


@pytest.mark.parametrize("region", ["DE", "DEU", "de"])
def test_static_country(region: str) -> None:
    static = StaticIntensity(region)
    assert static.intensity_g_per_kwh == 380.95
    assert static.year == 2023
    assert static.describe() == (
        "static DEU: 380.95 g/kWh (yearly average 2023, Ember/Our World in Data via "
        "CodeCarbon's global_energy_mix.json)"
    )
    assert static.segments(at(0), at(1)) == [Segment(at(0), at(1), 380.95)]


def test_static_world_and_aliases() -> None:
    assert StaticIntensity().intensity_g_per_kwh == 475
    assert StaticIntensity("WORLD").year is None
    assert StaticIntensity("UK").region == StaticIntensity("GB").region == "GBR"
    assert StaticIntensity("AU").region == "AUS"


def test_static_unknown_region() -> None:
    with pytest.raises(ConfigError, match=r"unknown region 'XX'.*e\.g\. DE, DEU, GB"):
        StaticIntensity("XX")


def test_emissions_zero_window_pue_and_naive_times() -> None:
    fixed = FixedIntensity(300)
    assert emissions_g(KWH_J, at(1), at(1), fixed) == (300.0, 300.0)
    assert emissions_g(0.0, at(1), at(2), fixed) == (0.0, 300.0)
    with pytest.raises(ConfigError, match="PUE"):
        emissions_g(1.0, at(0), at(1), fixed, pue=0.9)
    with pytest.raises(EnergyError, match="no timezone"):
        emissions_g(1.0, dt.datetime(2024, 1, 1), at(1), fixed)
    with pytest.raises(EnergyError, match="before its start"):
        fixed.segments(at(2), at(1))


# --- generic traces ---------------------------------------------------------------------------


def test_trace_lookup_across_hours(hourly: Path) -> None:
    trace = TraceIntensity(hourly)
    assert trace.segments(at(0, 30), at(2, 15)) == [
        Segment(at(0, 30), at(1), 100.0),
        Segment(at(1), at(2), 200.0),
        Segment(at(2), at(2, 15), 300.0),
    ]
    # 1.75 kWh over 1 h 45 min is 1 kW: 0.5 kWh at 100 + 1 kWh at 200 + 0.25 kWh at 300.
    grams, mean = emissions_g(1.75 * KWH_J, at(0, 30), at(2, 15), trace)
    assert grams == pytest.approx(325.0, rel=1e-12)
    assert mean == pytest.approx(325.0 / 1.75, rel=1e-12)
    assert emissions_g(KWH_J, at(1, 20), at(1, 20), trace) == (200.0, 200.0)
    assert trace.resolution == pd.Timedelta(hours=1)
    assert trace.coverage == (at(0), at(3))
    series = trace.series()
    assert str(series.index.tz) == "UTC" and series.tolist() == [100.0, 200.0, 300.0]
    assert "every 1 h" in trace.describe()


def test_trace_timezones(tmp_path: Path) -> None:
    utc = TraceIntensity(
        write(tmp_path, "u.csv", "timestamp,intensity\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n")
    )
    local = "timestamp,intensity\n2024-01-01 11:00,1\n2024-01-01 12:00,2\n"  # AEDT = UTC+11
    melbourne = TraceIntensity(write(tmp_path, "m.csv", local), timezone="Australia/Melbourne")
    assert melbourne.series().equals(utc.series())
    as_utc = TraceIntensity(write(tmp_path, "m2.csv", local))
    assert as_utc.coverage[0] == at(11)
    aware = "timestamp,intensity\n2024-01-01T11:00+11:00,1\n2024-01-01T01:00Z,2\n"
    assert TraceIntensity(write(tmp_path, "a.csv", aware)).series().equals(utc.series())
    with pytest.raises(ConfigError, match="unknown timezone"):
        TraceIntensity(write(tmp_path, "x.csv", local), timezone="Mars/Olympus")


def test_trace_local_times_across_dst_end(tmp_path: Path) -> None:
    # Melbourne clocks go back at 03:00 AEDT on 2024-04-07: 02:00 local happens twice.
    text = "timestamp,intensity\n" + "".join(
        f"2024-04-07 {h},{v}\n" for h, v in [("01:00", 1), ("02:00", 2), ("02:00", 3), ("03:00", 4)]
    )
    trace = TraceIntensity(write(tmp_path, "dst.csv", text), timezone="Australia/Melbourne")
    assert list(trace.series().index) == list(
        pd.date_range("2024-04-06 14:00", periods=4, freq="1h", tz="UTC")
    )


def test_electricity_maps_format_lca_and_direct(tmp_path: Path) -> None:
    rows = [("2024-01-01 00:00:00", 10, 110), ("2024-01-01 01:00:00", 20, 120)]
    path = write(tmp_path, "DE_2024_hourly.csv", em_rows("DE", rows))
    lca, direct = TraceIntensity(path), TraceIntensity(path, basis="direct")
    assert lca.series().tolist() == [110.0, 120.0]
    assert direct.series().tolist() == [10.0, 20.0]
    assert lca.segments(at(1), at(2)) == [Segment(at(1), at(2), 120.0)]
    assert "Electricity Maps export, LCA" in lca.describe()
    assert "DIRECT" in direct.describe()
    with pytest.raises(ConfigError, match="basis"):
        TraceIntensity(path, basis="scope3")  # type: ignore[arg-type]


def test_directory_and_zone_across_a_year_boundary(tmp_path: Path) -> None:
    write(
        tmp_path,
        "GB_2023_hourly.csv",
        em_rows("GB", [("2023-12-31 22:00:00", 1, 50), ("2023-12-31 23:00:00", 2, 60)]),
    )
    write(
        tmp_path,
        "GB_2024_hourly.csv",
        em_rows("GB", [("2024-01-01 00:00:00", 3, 70), ("2024-01-01 01:00:00", 4, 80)]),
    )
    write(tmp_path, "DE_2024_hourly.csv", em_rows("DE", [("2024-01-01 00:00:00", 5, 999)]))
    trace = parse_provider_spec(f"trace:{tmp_path}@GB")
    assert isinstance(trace, TraceIntensity)
    assert [f.name for f in trace.files] == ["GB_2023_hourly.csv", "GB_2024_hourly.csv"]
    assert trace.segments(at(23, 30, day=31, month=12, year=2023), at(0, 30)) == [
        Segment(at(23, 30, day=31, month=12, year=2023), at(0), 60.0),
        Segment(at(0), at(0, 30), 70.0),
    ]
    assert trace.coverage == (at(22, day=31, month=12, year=2023), at(2))
    with pytest.raises(ConfigError, match="directory.*zones there: DE, GB"):
        TraceIntensity(tmp_path)
    with pytest.raises(EnergyError, match="no FR_\\*_hourly.csv.*DE, GB"):
        TraceIntensity(tmp_path, zone="FR")


def test_window_outside_coverage(hourly: Path) -> None:
    trace = TraceIntensity(hourly)
    with pytest.raises(EnergyError) as err:
        trace.segments(at(2), at(4))
    message = str(err.value)
    assert "hourly.csv" in message
    assert "2024-01-01 02:00 UTC .. 2024-01-01 04:00 UTC" in message
    assert "it covers 2024-01-01 00:00 UTC .. 2024-01-01 03:00 UTC" in message
    with pytest.raises(EnergyError, match="does not cover"):
        trace.segments(at(23, day=31, month=12, year=2023), at(0, 30))


def test_gap_is_not_covered(tmp_path: Path) -> None:
    text = "timestamp,intensity\n" + "".join(f"2024-01-01 0{h}:00,{h}\n" for h in [0, 1, 2, 5, 6])
    trace = TraceIntensity(write(tmp_path, "gappy.csv", text))
    assert trace.resolution == pd.Timedelta(hours=1)
    assert len(trace.segments(at(0), at(3))) == 3
    with pytest.raises(EnergyError, match="gap 2024-01-01 03:00 UTC .. 2024-01-01 05:00 UTC"):
        trace.segments(at(2, 30), at(5, 30))


def test_fallback_fills_uncovered_stretches_exactly(hourly: Path) -> None:
    provider = make_provider("trace", path=hourly, fallback="fixed:50")
    assert isinstance(provider, WithFallback)
    assert provider.segments(at(23, day=31, month=12, year=2023), at(0, 30)) == [
        Segment(at(23, day=31, month=12, year=2023), at(0), 50.0),
        Segment(at(0), at(0, 30), 100.0),
    ]
    # 1 kW for 2 h: 1 kWh at 300 (trace) and 1 kWh at 50 (fallback).
    grams, mean = emissions_g(2 * KWH_J, at(2), at(4), provider)
    assert (grams, mean) == (pytest.approx(350.0), pytest.approx(175.0))
    assert provider.fallback_s == 3600 + 3600
    assert "where it has no data: fixed: 50 g/kWh" in provider.describe()


def test_fallback_fills_a_gap(tmp_path: Path) -> None:
    text = "timestamp,intensity\n" + "".join(f"2024-01-01 0{h}:00,{h}0\n" for h in [0, 1, 4, 5])
    provider = parse_provider_spec(f"trace:{write(tmp_path, 'g.csv', text)}|fixed:7")
    assert provider.segments(at(1, 30), at(4, 30)) == [
        Segment(at(1, 30), at(2), 10.0),
        Segment(at(2), at(4), 7.0),
        Segment(at(4), at(4, 30), 40.0),
    ]


# --- bad files -------------------------------------------------------------------------------

BAD_FILES = [
    (
        "time,value\n2024-01-01 00:00,1\n",
        r"bad\.csv has columns \['time', 'value'\].*"
        r"\['timestamp', 'intensity'\].*'Datetime \(UTC\)'",
    ),
    (
        "Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct)\n2024-01-01,DE,1\n",
        r"bad\.csv looks like an Electricity Maps export but lacks "
        r"\['Carbon Intensity gCO₂eq/kWh \(LCA\)'\]",
    ),
    (
        "timestamp,intensity\n2024-01-01T00:00Z,1\n2024-01-01 01:00,2\n",
        r"bad\.csv line 3: timestamp '2024-01-01 01:00' lacks a UTC offset unlike line 2",
    ),
    (
        "timestamp,intensity\n2024-01-01 00:00,1\nnot-a-date,2\n",
        r"bad\.csv line 3: cannot parse timestamp 'not-a-date'",
    ),
    (
        "timestamp,intensity\n2024-01-01 00:00,1\n2024-01-01 01:00,abc\n",
        r"bad\.csv line 3: intensity 'abc' is not a number",
    ),
    (
        "timestamp,intensity\n2024-01-01 00:00,1\n2024-01-01 01:00,\n",
        r"bad\.csv line 3: intensity '' is not a number",
    ),
    (
        "timestamp,intensity\n2024-01-01 00:00,-5\n2024-01-01 01:00,1\n",
        r"bad\.csv line 2: negative intensity -5",
    ),
    (
        "timestamp,intensity\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 01:00,3\n",
        r"duplicate timestamp 2024-01-01 01:00 UTC in \S*bad\.csv line 3 and \S*bad\.csv line 4",
    ),
    (
        "timestamp,intensity\n2024-01-01 01:00,1\n2024-01-01 00:00,2\n",
        r"out of order: 2024-01-01 00:00 UTC in \S*bad\.csv line 3 comes after",
    ),
    ("timestamp,intensity\n", r"bad\.csv has no rows"),
    ("timestamp,intensity\n2024-01-01 00:00,1\n", r"bad\.csv has a single timestamp"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_file_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EnergyError, match=message):
        TraceIntensity(write(tmp_path, "bad.csv", text))


def test_bad_concatenation_and_missing_files(tmp_path: Path) -> None:
    late = write(tmp_path, "late.csv", "timestamp,intensity\n2024-02-01 00:00,1\n")
    early = write(tmp_path, "early.csv", "timestamp,intensity\n2024-01-01 00:00,1\n")
    with pytest.raises(
        EnergyError,
        match=r"out of order: .*early\.csv line 2 comes after "
        r".*late\.csv line 2",
    ):
        TraceIntensity([late, early])
    with pytest.raises(EnergyError, match=r"nope\.csv does not exist"):
        TraceIntensity(tmp_path / "nope.csv")
    zoned = write(tmp_path, "DE_2024_hourly.csv", em_rows("FR", [("2024-01-01 00:00:00", 1, 2)]))
    with pytest.raises(EnergyError, match=r"holds zone\(s\) \['FR'\], not 'DE'"):
        TraceIntensity(zoned, zone="DE")
    renamed = write(
        tmp_path,
        "DE-LU_2024_hourly.csv",
        em_rows("DE", [("2024-01-01 00:00:00", 1, 2), ("2024-01-01 01:00:00", 3, 4)]),
    )
    assert TraceIntensity(renamed, zone="DE-LU").zone == "DE-LU"  # the export's old zone id


# --- specs and options ------------------------------------------------------------------------


def test_provider_specs(hourly: Path) -> None:
    assert isinstance(parse_provider_spec("static"), StaticIntensity)
    assert parse_provider_spec("static").intensity_g_per_kwh == 475  # type: ignore[attr-defined]
    assert parse_provider_spec(" static:DE ").region == "DEU"  # type: ignore[attr-defined]
    assert parse_provider_spec("fixed:250").intensity_g_per_kwh == 250  # type: ignore[attr-defined]
    assert isinstance(parse_provider_spec(f"trace:{hourly}"), TraceIntensity)
    assert isinstance(parse_provider_spec("uk"), UkCarbonIntensityApi)
    chain = parse_provider_spec(f"trace:{hourly}|static:DE|fixed:1")
    assert isinstance(chain, WithFallback) and isinstance(chain.fallback, WithFallback)
    assert chain.name == "trace+static+fixed"
    trace_arg = SPEC_ARGUMENTS.get("trace")
    assert trace_arg("/d@GB") == {"path": "/d", "zone": "GB"}
    assert trace_arg("/d/x@y.csv") == {"path": "/d/x@y.csv"}
    assert trace_arg("/me@host/d") == {"path": "/me@host/d"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("solar:DE", r"unknown carbon provider 'solar'.*valid: electricitymaps, fixed, static"),
        ("fixed:lots", r"fixed needs a number of g/kWh, e\.g\. fixed:250, got 'lots'"),
        ("fixed", r"fixed needs a number"),
        ("uk:london", r"uk takes no argument"),
        ("static:DE|", r"empty carbon provider spec"),
        ("trace", r"trace needs a file or directory"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_provider_spec(spec)


def test_make_provider_options() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'static' has no option 'zone'; valid options: "
        r"region, fallback",
    ):
        make_provider("static", zone="DE")
    with pytest.raises(ConfigError, match=r"'fixed' needs the option 'intensity_g_per_kwh'"):
        make_provider("fixed")
    with pytest.raises(ConfigError, match=r"unknown carbon provider 'wind'"):
        make_provider("wind")
    assert make_provider("static", region="FR").region == "FRA"  # type: ignore[attr-defined]


# --- live APIs with a fake network --------------------------------------------------------------


class FakeFetch:
    """Records what was asked and answers with a canned payload."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str]) -> Any:
        self.calls.append((url, headers))
        if isinstance(self.payload, Exception):
            raise self.payload
        return self.payload


def em_payload(key: str = "data") -> dict[str, Any]:
    points = [
        ("2024-01-01T00:00:00.000Z", 100),
        ("2024-01-01T01:00:00.000Z", 200),
        ("2024-01-01T02:00:00.000Z", 300),
    ]
    rows = [{"datetime": t, "carbonIntensity": v, "isEstimated": False} for t, v in points]
    return {"zone": "DE", key: rows}


def test_electricity_maps_past_range() -> None:
    fetch = FakeFetch(em_payload())
    api = ElectricityMapsApi("DE", token="tok", fetch=fetch, clock=lambda: at(0, month=6))
    assert api.segments(at(0, 30), at(2, 15)) == [
        Segment(at(0, 30), at(1), 100.0),
        Segment(at(1), at(2), 200.0),
        Segment(at(2), at(2, 15), 300.0),
    ]
    assert fetch.calls == [
        (
            "https://api.electricitymaps.com/v3/carbon-intensity/past-range?zone=DE"
            "&start=2024-01-01T00%3A00Z&end=2024-01-01T03%3A00Z",
            {"auth-token": "tok"},
        )
    ]
    api.segments(at(1), at(2, 30))  # inside the fetched hours: answered from the cache
    assert len(fetch.calls) == 1
    with pytest.raises(EnergyError, match=r"Electricity Maps API \(zone DE\) does not cover"):
        api.segments(at(2), at(3, 30))


def test_electricity_maps_recent_direct_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    fetch = FakeFetch(em_payload("history"))
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", "from-env")
    api = ElectricityMapsApi("DE", fetch=fetch, basis="direct", clock=lambda: at(3))
    assert api.segments(at(1), at(2)) == [Segment(at(1), at(2), 200.0)]
    assert fetch.calls == [
        (
            "https://api.electricitymaps.com/v3/carbon-intensity/history?zone=DE"
            "&emissionFactorType=direct",
            {"auth-token": "from-env"},
        )
    ]
    monkeypatch.delenv("ELECTRICITYMAPS_TOKEN")
    with pytest.raises(EnergyError, match="set the environment variable ELECTRICITYMAPS_TOKEN"):
        make_provider("electricitymaps", zone="DE", fetch=fetch)


def test_live_cache_asks_again_for_unpublished_hours() -> None:
    fetch = FakeFetch(em_payload("history"))
    now = [at(3, 10)]
    api = ElectricityMapsApi("DE", token="t", fetch=fetch, clock=lambda: now[0])
    for _ in range(2):  # 03:00 .. 04:00 is not published yet; the second edge uses the cache
        with pytest.raises(EnergyError, match="does not cover"):
            api.segments(at(2, 30), at(3, 5))
    assert len(fetch.calls) == 1
    assert api.segments(at(2, 30), at(2, 45)) == [Segment(at(2, 30), at(2, 45), 300.0)]
    assert len(fetch.calls) == 1
    now[0] = at(3, 20)  # five minutes later the missing hour is asked for again
    fetch.payload["history"].append({"datetime": "2024-01-01T03:00:00Z", "carbonIntensity": 9})
    assert api.segments(at(2, 30), at(3, 5))[-1] == Segment(at(3), at(3, 5), 9.0)
    assert len(fetch.calls) == 2


def test_uk_api_actual_else_forecast() -> None:
    rows = [
        {
            "from": "2024-01-01T00:00Z",
            "to": "2024-01-01T00:30Z",
            "intensity": {"forecast": 150, "actual": 140, "index": "moderate"},
        },
        {
            "from": "2024-01-01T00:30Z",
            "to": "2024-01-01T01:00Z",
            "intensity": {"forecast": 160, "actual": None, "index": "moderate"},
        },
    ]
    fetch = FakeFetch({"data": rows})
    api = UkCarbonIntensityApi(fetch=fetch)
    assert api.segments(at(0, 15), at(1)) == [
        Segment(at(0, 15), at(0, 30), 140.0),
        Segment(at(0, 30), at(1), 160.0),
    ]
    assert fetch.calls == [
        (
            "https://api.carbonintensity.org.uk/intensity/2024-01-01T00:00Z/2024-01-01T01:00Z",
            {"Accept": "application/json"},
        )
    ]


def test_live_failure_uses_the_fallback() -> None:
    fetch = FakeFetch(EnergyError("cannot fetch: offline"))
    provider = make_provider("uk", fetch=fetch, fallback="fixed:42")
    assert provider.segments(at(0), at(1)) == [Segment(at(0), at(1), 42.0)]
    with pytest.raises(EnergyError, match="offline"):
        UkCarbonIntensityApi(fetch=fetch).segments(at(0), at(1))


# --- the shared data ------------------------------------------------------------------------


def test_real_electricity_maps_gb_trace() -> None:
    folder = SHARED_DATA / "carbon" / "electricitymaps"
    if not (folder / "GB_2023_hourly.csv").is_file():
        pytest.skip(f"shared data not available at {folder}")
    trace = parse_provider_spec(f"trace:{folder}@GB")
    start = at(0, year=2023)
    assert trace.segments(start, start + dt.timedelta(hours=1)) == [
        Segment(start, start + dt.timedelta(hours=1), 91.44)
    ]
