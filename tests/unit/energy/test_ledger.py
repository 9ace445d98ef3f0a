"""The ledger: schema round-trip, totals over top-level windows, CSV columns, bad files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from greentune.energy import FakeSource, Meter
from greentune.energy.carbon import FixedIntensity
from greentune.energy.ledger import Ledger
from greentune.errors import EnergyError
from tests.unit.energy.fakes import FakeClock


def metered_session(command: str = "run") -> Meter:
    clock = FakeClock()
    meter = Meter(
        [FakeSource(clock, {"cpu": 10.0, "dram": 1.0})],
        FixedIntensity(100.0),
        command=command,
        clock=clock,
        wall_clock=clock.wall,
        rank=0,
    )
    with meter.window("data"):
        clock.advance(1)
    with meter.window("train"):
        for epoch in range(2):
            with meter.window(f"epoch-{epoch}"):
                clock.advance(5)
            with meter.window(f"validate-{epoch}"):
                clock.advance(1)
    return meter


def test_ledger_round_trips_through_energy_json(tmp_path):
    ledger = Ledger()
    ledger.add_session(metered_session(), "2023-01-01T00:00:00+00:00")
    ledger.save(tmp_path)
    again = Ledger.load(tmp_path)
    assert again.rows == ledger.rows
    assert again.sessions == ledger.sessions
    saved = json.loads((tmp_path / "energy.json").read_text())
    assert saved["schema_version"] == 1
    assert [r["window"] for r in saved["rows"]] == [
        "data",
        "train",
        "train/epoch-0",
        "train/validate-0",
        "train/epoch-1",
        "train/validate-1",
    ]
    assert saved["sessions"][0]["sources"]["fake"]["kind"] == "measured"


def test_totals_count_top_level_windows_once():
    ledger = Ledger()
    ledger.add_session(metered_session(), "t")
    totals = ledger.totals()
    train = totals["by_phase"]["train"]
    assert train["windows"] == 1
    assert train["energy_j"] == pytest.approx(12 * 11.0)  # 12 s x 11 W, nested rows not re-added
    assert train["energy_cpu_j"] == pytest.approx(120.0)
    assert totals["all"]["energy_j"] == pytest.approx(13 * 11.0)
    assert totals["all"]["emissions_g"] == pytest.approx(13 * 11.0 / 3.6e6 * 100.0)
    nested = [r for r in ledger.rows if r["parent"] == "train"]
    assert sum(r["energy_j"]["cpu"] for r in nested) == pytest.approx(120.0)


def test_later_commands_append(tmp_path):
    ledger = Ledger()
    ledger.add_session(metered_session(), "t0")
    ledger.save(tmp_path)
    later = Ledger.load(tmp_path)
    later.add_session(metered_session("evaluate"), "t1")
    later.save(tmp_path)
    rows = Ledger.load(tmp_path).rows
    assert len(rows) == 12
    assert {r["command"] for r in rows} == {"run", "evaluate"}


def test_csv_has_one_column_per_component(tmp_path):
    ledger = Ledger()
    ledger.add_session(metered_session(), "t")
    ledger.save(tmp_path)
    frame = pd.read_csv(tmp_path / "energy.csv")
    assert {"energy_cpu_j", "energy_dram_j", "source_cpu", "energy_j", "emissions_g"} <= set(
        frame.columns
    )
    first = frame.iloc[0]
    assert first.window == "data" and first.energy_cpu_j == 10.0 and first.energy_j == 11.0


def test_a_corrupt_ledger_is_named(tmp_path):
    (tmp_path / "energy.json").write_text("{not json")
    with pytest.raises(EnergyError, match="energy.json: not a greentune energy ledger"):
        Ledger.load(tmp_path)


def test_a_missing_ledger_is_empty(tmp_path):
    assert Ledger.load(tmp_path).rows == []
