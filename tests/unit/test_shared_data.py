"""Loaders on the real files in ../shared/data (skipped cleanly where they are absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from greentune.config import DataConfig
from greentune.data.windows import prepare_forecast_data
from tests.conftest import SHARED_DATA

VIC = SHARED_DATA / "demand" / "vic_elec" / "vic_electricity.csv"
ETT = SHARED_DATA / "benchmarks" / "ETT" / "ETTh1.csv"


@pytest.mark.skipif(not VIC.is_file(), reason=f"{VIC} not present")
def test_vic_elec_utc_times_become_melbourne_local():
    cfg = DataConfig(
        source="csv",
        path=str(VIC),
        time_col="Time",
        target="Demand",
        covariates=("Temperature",),
        timezone="Australia/Melbourne",
        country="AU",
        subdivision="VIC",
        temperature_col="Temperature",
        test="92D",
        val="92D",
        train_stride=48,
    )
    d = prepare_forecast_data(cfg)
    assert d.report.rows == 52_608 and d.report.gaps == []
    assert d.frame.index[0] == pd.Timestamp("2012-01-01 00:00", tz="Australia/Melbourne")
    assert d.frame.index[d.test_start] == pd.Timestamp("2014-10-01", tz="Australia/Melbourne")
    assert len(d.test) == 92
    # the file's own holiday flag agrees with the holidays package on Christmas 2013
    noon = pd.Timestamp("2013-12-25 12:00", tz="Australia/Melbourne")
    assert d.frame.loc[noon, "holiday"] == 1.0


@pytest.mark.skipif(not ETT.is_file(), reason=f"{ETT} not present")
def test_ett_layout_multivariate():
    cfg = DataConfig(
        source="ett",
        path=str(ETT),
        multivariate=True,
        calendar=False,
        context_length=336,
        horizon=96,
        val="0.2",
        test="0.2",
        eval_origins="1",
    )
    d = prepare_forecast_data(cfg)
    assert d.target_cols == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert d.known_cols == [] and d.report.rows == 17_420
    assert d.batch(d.test.origins[:1])["y"].shape == (1, 96, 7)
