"""Meter windows: nesting, names, sums, failures, pricing, polling."""

from __future__ import annotations

import threading

import pytest

from greentune.energy import FakeSource, Meter
from greentune.energy.carbon import FixedIntensity
from greentune.errors import EnergyError
from tests.unit.energy.fakes import FakeClock


def make_meter(clock: FakeClock, **kwargs) -> Meter:
    source = FakeSource(clock, {"cpu": 10.0, "gpu0": 50.0})
    return Meter(
        [source],
        FixedIntensity(300.0),
        clock=clock,
        wall_clock=clock.wall,
        rank=0,
        **kwargs,
    )


def test_nested_windows_add_up_and_are_named_by_their_path():
    clock = FakeClock()
    meter = make_meter(clock)
    with meter.window("train") as outer:
        clock.advance(2)
        with meter.window("epoch-0") as inner:
            clock.advance(4)
        clock.advance(4)
    child, parent = inner.result, outer.result
    assert child.window == "train/epoch-0" and child.parent == "train" and child.depth == 1
    assert parent.window == "train" and parent.parent is None and parent.depth == 0
    assert child.phase == parent.phase == "train"
    assert child.energy_j == {"cpu": 40.0, "gpu0": 200.0}
    assert parent.energy_j == {"cpu": 100.0, "gpu0": 500.0}
    assert parent.duration_s == 10.0
    assert parent.start == "2023-01-01T00:00:00+00:00"
    assert parent.end == "2023-01-01T00:00:10+00:00"
    assert parent.emissions_g == pytest.approx(600.0 / 3.6e6 * 300.0)
    assert parent.intensity_g_per_kwh == 300.0
    assert parent.sources == {"cpu": "fake", "gpu0": "fake"} and parent.kind == "measured"
    assert [r.window for r in meter.results] == ["train/epoch-0", "train"]


def test_pue_scales_emissions_not_energy():
    clock = FakeClock()
    meter = make_meter(clock, pue=1.5)
    with meter.window("data") as w:
        clock.advance(6)
    assert w.result.total_j == 360.0
    assert w.result.emissions_g == pytest.approx(360.0 / 3.6e6 * 300.0 * 1.5)


def test_a_failing_window_is_still_billed_and_the_error_propagates():
    clock = FakeClock()
    meter = make_meter(clock)
    with pytest.raises(ZeroDivisionError), meter.window("train"):
        clock.advance(1)
        _ = 1 / 0
    (result,) = meter.results
    assert result.ok is False and result.energy_j["cpu"] == 10.0
    with meter.window("after") as w:  # the stack was unwound
        pass
    assert w.result.window == "after"


def test_two_sources_claiming_one_component_are_refused():
    clock = FakeClock()
    with pytest.raises(EnergyError, match="'cpu' comes from both fake and fake"):
        Meter([FakeSource(clock), FakeSource(clock)], None)


def test_components_from_model_and_measured_sources_make_a_mixed_row():
    clock = FakeClock()
    meter = Meter(
        [FakeSource(clock, {"cpu": 1.0}, kind="model"), FakeSource(clock, {"gpu0": 2.0})],
        None,
        clock=clock,
        wall_clock=clock.wall,
    )
    with meter.window("train") as w:
        clock.advance(3)
    assert w.result.kind == "mixed"
    assert w.result.energy_j == {"cpu": 3.0, "gpu0": 6.0}
    assert w.result.emissions_g is None  # no provider: nothing is made up


def test_sources_that_ask_for_polling_are_polled_on_a_thread():
    clock = FakeClock()
    polled = threading.Event()

    class Polled(FakeSource):
        def poll(self) -> None:
            polled.set()

    source = Polled(clock)
    source.poll_interval_s = 0.01
    meter = Meter([source], None, clock=clock, wall_clock=clock.wall)
    assert polled.wait(2.0)
    meter.close()
    assert meter._poller is not None and not meter._poller.is_alive()


def test_meter_without_polled_sources_starts_no_thread():
    meter = make_meter(FakeClock())
    assert meter._poller is None


def test_rank_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    clock = FakeClock()
    assert Meter([FakeSource(clock)], None).rank == 3


def test_metering_off_yields_a_null_meter_whose_windows_record_nothing(tmp_path):
    from greentune.config import EnergyConfig
    from greentune.energy.meter import NullMeter
    from greentune.energy.session import metered, metered_window

    with metered(tmp_path, EnergyConfig(enabled=False), "run") as meter:
        assert isinstance(meter, NullMeter) and not meter.enabled
        with meter.window("train") as outer, meter.window("epoch-0") as inner:
            pass
    assert outer.result is None and inner.result is None and meter.results == []
    with metered_window(tmp_path, EnergyConfig(enabled=False), "evaluate") as handle:
        pass
    assert handle.result is None
    assert not (tmp_path / "energy.json").exists()


class _FailsLater(FixedIntensity):
    """Prices the start, then fails (a live API timing out, a trace ending mid-run)."""

    def __init__(self) -> None:
        super().__init__(300.0)
        self.calls = 0

    def segments(self, start, end):
        self.calls += 1
        if self.calls > 1:
            raise EnergyError("electricitymaps: HTTP 503 for DE at 2023-01-01T00:00Z")
        return super().segments(start, end)


def test_a_pricing_failure_when_a_window_closes_keeps_the_row_and_the_work(caplog):
    clock = FakeClock()
    source = FakeSource(clock, {"cpu": 10.0})
    meter = Meter([source], _FailsLater(), clock=clock, wall_clock=clock.wall, rank=0)
    meter.check_coverage()
    with meter.window("train") as w:
        clock.advance(3)
    assert w.result.energy_j == {"cpu": 30.0} and w.result.ok
    assert w.result.emissions_g is None and w.result.intensity_g_per_kwh is None
    assert "HTTP 503" in w.result.extra["pricing_error"]
    assert meter.results == [w.result]
    assert "energy kept, emissions not priced" in caplog.text


def test_a_gathered_rank_that_has_exited_is_not_folded_in_again(tmp_path, monkeypatch):
    """Rank 1 sends its rows through the gather and exits at once; rank 0 then finds its
    journal with no live process. Its rows must be in energy.json once, not twice."""
    import json
    import socket

    from greentune.energy import session
    from greentune.energy.journal import Journal, journal_path

    clock = FakeClock()
    meter = make_meter(clock)
    with meter.window("train"):
        clock.advance(2)
    theirs = make_meter(clock)
    theirs.rank = 1
    with theirs.window("train") as w1:
        clock.advance(3)
    w1.result.rank = 1
    gone = Journal(
        journal_path(tmp_path, "s1", 1),
        {
            "id": "s1",
            "command": "run",
            "rank": 1,
            "pid": 2**22 + 17,
            "host": socket.gethostname(),
            "started": "2023-01-01T00:00:00+00:00",
        },
    )
    gone.write({"type": "row", **w1.result.to_dict()})
    gone.close()
    mine = Journal(journal_path(tmp_path, "s1", 0), {"id": "s1", "rank": 0})
    monkeypatch.setattr(session.ranks, "is_main", lambda: True)
    monkeypatch.setattr(
        session.ranks,
        "gather_objects",
        lambda own: [own, ([w1.result], "s1.rank1")],
    )
    session._write_session(tmp_path, meter, "2023-01-01T00:00:00+00:00", mine, True)
    saved = json.loads((tmp_path / "energy.json").read_text())
    assert sorted((r["rank"], r["window"]) for r in saved["rows"]) == [(0, "train"), (1, "train")]
    assert not any(s.get("recovered") for s in saved["sessions"])
