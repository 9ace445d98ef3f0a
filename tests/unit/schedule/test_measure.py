"""What an executed plan emitted: each done job's ledger priced at its site, with the kind of
its energy (a modelled figure never reads as measured)."""

from __future__ import annotations

import datetime as dt

import pytest

from greentune.energy.ledger import Ledger
from greentune.schedule.measure import measured_emissions
from tests.unit.test_green import row


def _run(folder, kinds: list[str]) -> None:
    rows = [row(f"w{i}", 1800.0, "2024-01-01T00:00:00+00:00") for i in range(len(kinds))]
    for r, kind in zip(rows, kinds, strict=True):
        r["kind"] = kind
    rows.append(row("w0/inner", 999.0, "2024-01-01T00:00:00+00:00", depth=1))  # inside w0
    Ledger(rows).save(folder)


def test_each_done_job_is_priced_at_its_site_and_says_its_kind(tmp_path):
    for name, kinds in {"gpu": ["measured", "model"], "cpu": ["model", "model"]}.items():
        (tmp_path / name).mkdir()
        _run(tmp_path / name, kinds)
    (tmp_path / "late").mkdir()
    _run(tmp_path / "late", ["model"])
    plan = {
        "jobs": [
            {"name": "gpu", "site": "a", "expected_g": 0.05, "energy_wh": 1.0},
            {"name": "cpu", "site": "b", "expected_g": 0.0, "energy_wh": 1.0},
            {"name": "late", "site": "a", "expected_g": 0.05, "energy_wh": 0.5},
        ],
        "sites": {"a": {"carbon": "fixed:100"}, "b": {"carbon": "fixed:300"}},
    }
    origin = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    state = {
        "sim_origin": origin.isoformat(),
        "real_origin": origin.timestamp(),
        "speedup": 1.0,
        "jobs": {
            "gpu": {"status": "done"},
            "cpu": {"status": "done"},
            "late": {"status": "paused"},
        },
    }
    out = measured_emissions(plan, state, tmp_path)
    assert set(out) == {"gpu", "cpu"}  # a job not done has no bill yet
    gpu, cpu = out["gpu"], out["cpu"]
    assert gpu["energy_kind"] == "mixed" and cpu["energy_kind"] == "model"
    assert gpu["energy_wh"] == pytest.approx(1.0)  # two 1,800 J windows; the nested one once
    assert gpu["emissions_g"] == pytest.approx(0.1)  # 1 Wh at 100 g/kWh
    assert gpu["ratio"] == pytest.approx(2.0)
    assert cpu["emissions_g"] == pytest.approx(0.3) and cpu["ratio"] is None
