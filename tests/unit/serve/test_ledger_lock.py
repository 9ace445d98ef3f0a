"""A command that does not hold the run's lock (serve) writes the ledger under it, or leaves
its journal for the run's next command when another command holds it."""

from __future__ import annotations

from greentune.config import EnergyConfig
from greentune.energy.ledger import Ledger
from greentune.energy.session import metered
from greentune.runlock import acquire

CFG = EnergyConfig(meter="model", journal_interval_s=0)


def serve_session(run, log):
    return metered(run, CFG, "serve", log.append, ledger_lock=lambda: acquire(run, "serve", 0.3))


def test_the_ledger_is_written_under_the_lock(tmp_path):
    log: list[str] = []
    with serve_session(tmp_path, log) as meter, meter.window("serve"):
        sum(range(10_000))
    rows = Ledger.load(tmp_path).rows
    assert [r["phase"] for r in rows] == ["serve"]
    assert not (tmp_path / "energy-journal").exists()
    assert acquire(tmp_path, "next").holder.command == "next"  # the lock was given back


def test_a_held_lock_leaves_the_journal_for_the_next_command(tmp_path):
    log: list[str] = []
    with acquire(tmp_path, "compress"):
        with serve_session(tmp_path, log) as meter, meter.window("serve"):
            sum(range(10_000))
        assert Ledger.load(tmp_path).rows == []
        journals = list((tmp_path / "energy-journal").glob("*.jsonl"))
        assert len(journals) == 1
        assert any(
            "not written to the ledger now" in line
            and "in use by" in line
            and "its journal stays" in line
            for line in log
        ), log
    # while its process lives the journal is read as live rows, never lost
    live = Ledger.load(tmp_path)
    live.fold_journals(tmp_path, live=True)
    assert [r["phase"] for r in live.rows] == ["serve"]
