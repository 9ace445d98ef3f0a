"""Crash safety in pieces: the run lock and the crashed status, the energy journal and its
recovery, folding into the ledger, and writes that fail cleanly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from greentune import faults
from greentune.config import EnergyConfig, build_config
from greentune.energy.journal import Journal, journal_path, read_journal, read_journals
from greentune.energy.ledger import Ledger, remove_journals
from greentune.energy.meter import FakeSource, Meter
from greentune.energy.session import metered
from greentune.errors import CheckpointError, EnergyError, StorageError
from greentune.io import atomic_write, staged_dir, write_json
from greentune.rundir import RunDir
from greentune.runlock import RunLockedError, acquire, live_holder, read_holder
from tests.unit.energy.fakes import FakeClock


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    cfg = build_config(overrides=[f"output_dir={tmp_path}", "name=r"])
    made = RunDir.create(cfg)
    made.write_config(cfg)
    return made


# ---------------------------------------------------------------------------- lock and status


def test_one_writer_at_a_time_and_the_second_is_told_who(run):
    with run.lock("run") as lock:
        assert live_holder(run.path) == lock.holder and lock.holder.command == "run"
        with pytest.raises(RunLockedError) as err:
            acquire(run.path, "evaluate")
        text = str(err.value)
        assert f"pid {os.getpid()}" in text and "`greentune run`" in text
        assert f"kill -TERM {os.getpid()}" in text and f"--resume {run.path}" in text
    assert live_holder(run.path) is None
    with run.lock("evaluate"):  # free again
        pass


def _hold_lock_then_die(run: RunDir, how: int) -> int:
    """A child process takes the lock, marks the run running and is killed with ``how``."""
    code = textwrap.dedent(f"""
        import sys, time
        from greentune.rundir import RunDir
        run = RunDir({str(run.path)!r})
        lock = run.lock("run")
        run.set_status("running")
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    assert run.status == "running" and live_holder(run.path).pid == child.pid
    os.kill(child.pid, how)
    child.wait(timeout=30)
    return child.pid


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_whose_process_died_reads_crashed_with_the_command_to_continue(run, how):
    (run.checkpoint_dir).mkdir()
    (run.checkpoint_dir / "step-00000040.pt").write_bytes(b"x")
    pid = _hold_lock_then_die(run, how)
    info = run.info
    assert info.status == "crashed"
    assert f"pid {pid}" in info.error and "died without finishing" in info.error
    assert "newest checkpoint is at step 40" in info.error
    assert info.resume_command == f"greentune run --resume {run.path}"
    assert json.loads((run.path / "run.json").read_text())["status"] == "running"  # as left
    with pytest.raises(CheckpointError, match=r"is crashed: .* Continue it with greentune run"):
        run.check_finished("evaluate it")
    with run.lock("evaluate"):  # a dead holder's lock is free; evaluate does not run it
        assert run.status == "crashed" and f"pid {pid}" in run.info.error
    with run.lock("run"):
        assert run.status == "running"


def test_a_live_run_is_refused_by_commands_that_need_it_finished(run):
    with run.lock("run"):
        run.set_status("running")
        with pytest.raises(CheckpointError, match=r"still being written by `greentune run`"):
            run.check_finished("evaluate it")
    run.set_status("paused", resume_command="greentune run --resume X")
    with pytest.raises(CheckpointError, match=r"is paused\. Continue it with greentune run"):
        run.check_finished("compress it")
    run.set_status("complete")
    run.check_finished("evaluate it")


def test_workers_under_a_supervisor_share_its_lock(run):
    """The supervisor's record names this process's parent: a worker works under it."""
    with run.lock("run --nproc") as lock:
        code = textwrap.dedent(f"""
            from greentune.runlock import acquire
            lock = acquire({str(run.path)!r}, "run")
            print(lock.inherited)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == "True", out.stderr
        lock.add_pid(12345)
        assert read_holder(run.path).pids == [12345]


# ---------------------------------------------------------------------------- the journal


def _meter(clock: FakeClock, watts: float = 10.0) -> Meter:
    return Meter(
        [FakeSource(clock, {"cpu": watts})],
        command="run",
        rank=0,
        wall_clock=clock.wall,
        clock=clock,
    )


def _journal(tmp_path: Path, meter: Meter, interval_s: float = 4.0, pid: int | None = None):
    session = {
        "id": "abc",
        "command": meter.command,
        "started": "2023-01-01T00:00:00+00:00",
        "rank": 0,
        "pid": pid or os.getpid(),
        "host": os.uname().nodename,
        "process_started": 0.0 if pid else _started(),
        "interval_s": interval_s,
        "owners": meter.owners_record(),
        **meter.details(),
    }
    journal = Journal(journal_path(tmp_path, "abc", 0), session)
    meter.attach_journal(journal, 0)  # ticks by hand
    return journal


def _started() -> float:
    from greentune.procs import process_started

    started = process_started(os.getpid())
    assert started is not None
    return started


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_crash_keeps_closed_windows_prices_open_ones_to_the_last_tick_and_estimates_the_rest(
    tmp_path,
):
    clock = FakeClock()
    meter = _meter(clock)
    _journal(tmp_path, meter, interval_s=4.0, pid=_dead_pid())
    with meter.window("data"):
        clock.advance(3)
    train = meter.window("train")
    train.__enter__()
    epoch = meter.window("epoch-0")
    epoch.__enter__()
    clock.advance(5)
    meter.tick()
    clock.advance(2)
    meter.tick()
    clock.advance(1)  # ... and the process dies here: nothing after the last tick is on disk
    jf = read_journal(journal_path(tmp_path, "abc", 0))
    assert jf is not None and not jf.alive(lock_held=False)
    rows = jf.recovered_rows(lambda j, a, b: (100.0, j / 3.6e6 * 100.0))
    by_name = {(r["window"], r["kind"]): r for r in rows}
    assert by_name[("data", "measured")]["energy_j"] == {"cpu": 30.0}
    assert by_name[("data", "measured")]["ok"] is True
    partial = by_name[("train", "measured")]
    assert partial["energy_j"] == {"cpu": 70.0} and partial["duration_s"] == 7.0
    assert partial["ok"] is False and "last reading" in partial["extra"]["crashed"]
    assert partial["emissions_g"] == pytest.approx(70.0 / 3.6e6 * 100.0)
    assert by_name[("train/epoch-0", "measured")]["energy_j"] == {"cpu": 70.0}
    assert by_name[("train/epoch-0", "measured")]["depth"] == 1
    lost = by_name[("train", "estimated")]
    # readings at 0, 3 (data closed, train and epoch opened), 8 and 10 s: their usual spacing
    # is 3 s (under the 4 s interval), half of it at the last 2 s's power (10 W)
    assert lost["energy_j"] == {"cpu": 15.0} and lost["duration_s"] == 1.5
    assert lost["depth"] == 0 and lost["sources"] == {"cpu": "estimate"}
    assert "half the usual spacing" in lost["extra"]["estimated"]
    top = Ledger(rows).totals()["all"]
    assert top["energy_j"] == 30.0 + 70.0 + 15.0 and top["kinds"] == ["estimated", "measured"]

    def trace_ended(joules, start, end):
        raise EnergyError("trace.csv does not cover 2023-01-01 00:00 UTC .. 00:00:10 UTC")

    unpriced = {(r["window"], r["kind"]): r for r in jf.recovered_rows(trace_ended)}
    for key in (("train", "measured"), ("train", "estimated")):  # folded, not failed
        assert unpriced[key]["energy_j"] == by_name[key]["energy_j"]
        assert unpriced[key]["emissions_g"] is None
        assert "does not cover" in unpriced[key]["extra"]["pricing_error"]


def test_the_lost_interval_is_capped_by_the_journal_interval(tmp_path):
    clock = FakeClock()
    meter = _meter(clock, watts=6.0)
    _journal(tmp_path, meter, interval_s=2.0, pid=_dead_pid())
    train = meter.window("train")  # kept: a collected window would close itself
    train.__enter__()
    clock.advance(4)
    meter.tick()
    rows = read_journal(journal_path(tmp_path, "abc", 0)).recovered_rows(None)
    lost = next(r for r in rows if r["kind"] == "estimated")
    assert lost["energy_j"] == {"cpu": 6.0} and lost["emissions_g"] is None  # 6 W x 2 s / 2


def test_every_record_is_a_reading_and_a_torn_last_line_is_ignored(tmp_path):
    clock = FakeClock()
    meter = _meter(clock)
    journal = _journal(tmp_path, meter, pid=_dead_pid())
    with meter.window("data"):
        clock.advance(1)
    train = meter.window("train")
    train.__enter__()
    journal._fh.write('{"type": "tick", "time": "2023-01-01T00:0')  # the crash, mid-line
    journal.close()
    rows = read_journal(journal.path).recovered_rows(None)
    # no tick, but "data" closed and "train" opened at 1 s: 10 W over the last second; train
    # has nothing measured inside it yet, only the estimate (half the 1 s spacing)
    assert [(r["window"], r["kind"], r["energy_j"]["cpu"]) for r in rows] == [
        ("data", "measured", 10.0),
        ("train", "estimated", 5.0),
    ]


def test_folding_adds_dead_journals_once_and_leaves_live_ones(tmp_path):
    clock = FakeClock()
    dead_meter = _meter(clock)
    dead = _journal(tmp_path, dead_meter, pid=_dead_pid())
    with dead_meter.window("data"):
        clock.advance(2)
    live_meter = _meter(clock)
    live_session = {**read_journal(dead.path).session, "id": "live", "pid": os.getpid()}
    live_session["process_started"] = _started()
    live = Journal(journal_path(tmp_path, "live", 0), live_session)
    live_meter.attach_journal(live, 0)
    with live_meter.window("evaluate"):
        clock.advance(1)
    ledger = Ledger.load(tmp_path)
    folded = ledger.fold_journals(tmp_path)
    assert [jf.path.stem for jf in folded] == ["abc.rank0"]
    assert [r["window"] for r in ledger.rows] == ["data"]
    assert ledger.sessions[0]["journals"] == ["abc.rank0"]
    assert "the process died" in ledger.sessions[0]["recovered"]
    ledger.save(tmp_path)
    again = Ledger.load(tmp_path)
    assert again.fold_journals(tmp_path) == []  # listed: never twice
    reading = Ledger.load(tmp_path)
    reading.fold_journals(tmp_path, live=True)
    assert [r["window"] for r in reading.rows] == ["data", "evaluate"]
    remove_journals(tmp_path, ["abc.rank0", "live.rank0"])
    assert read_journals(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="Linux /proc only")
def test_a_clock_step_does_not_make_a_live_process_look_dead(tmp_path, monkeypatch):
    # A VM resumed from a pause (or a suspend, an NTP step) moves the boot time the kernel
    # derives from the wall clock; a run's own journal was then folded as a dead process's,
    # and its windows entered the ledger twice.
    import psutil
    import psutil._pslinux

    from greentune.procs import process_started, same_process

    epoch_start = psutil.Process().create_time()  # what greentune wrote before
    from greentune.energy.session import _open_journal

    live = read_journal(_open_journal(tmp_path, _meter(FakeClock()), "2023-01-01", 4.0).path)
    assert live is not None
    stepped = psutil._pslinux.boot_time() + 3600.0
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: stepped)
    monkeypatch.setattr(psutil, "boot_time", lambda: stepped)
    assert same_process(os.getpid(), _started())
    assert same_process(os.getpid(), live.session["process_started"])
    assert Ledger.load(tmp_path).fold_journals(tmp_path) == []  # alive: not folded
    monkeypatch.undo()
    assert live.session["boot_id"] is not None
    rebooted = {**live.session, "boot_id": "an-earlier-boot"}
    assert not same_process(os.getpid(), rebooted["process_started"], rebooted["boot_id"])
    assert same_process(os.getpid(), epoch_start)  # an older journal's epoch start still reads
    dead = _dead_pid()
    assert process_started(dead) is None
    assert not same_process(dead, epoch_start)
    assert not same_process(os.getpid(), live.session["process_started"] + 5)


def test_a_ledger_that_holds_a_live_session_twice_is_repaired_on_load(tmp_path):
    clock = FakeClock()
    meter = _meter(clock)
    for name in ("data", "train"):
        with meter.window(name):
            clock.advance(3)
    ledger = Ledger()
    ledger.add_session(meter, "2023-01-01T00:00:00+00:00", None, ["abc.rank0"], "abc")
    ledger.save(tmp_path)
    once = json.loads((tmp_path / "energy.json").read_text())
    # what a clock step made: the command's own journal folded as recovered, then its session
    twin = {**once["sessions"][0], "recovered": "the process died; rows read back ..."}
    damaged = {**once, "sessions": [twin, *once["sessions"]], "rows": once["rows"] * 2}
    write_json(tmp_path / "energy.json", damaged)
    repaired = Ledger.load(tmp_path)
    assert repaired.sessions == once["sessions"]
    assert repaired.rows == once["rows"]
    assert repaired.totals() == once["totals"]
    # folded by another command while a window was open: a partial row and an estimate too
    train = next(r for r in once["rows"] if r["window"] == "train")
    partial = {**train, "end": train["start"], "ok": False, "extra": {"crashed": "..."}}
    guess = {**train, "start": train["end"], "kind": "estimated", "extra": {"estimated": "."}}
    damaged["rows"] = [*once["rows"][:1], partial, guess, *once["rows"]]
    write_json(tmp_path / "energy.json", damaged)
    assert Ledger.load(tmp_path).rows == once["rows"]
    # a real recovery (another journal) and its rows stay
    other = {**twin, "journals": ["dead.rank0"]}
    real = {**once, "sessions": [other, *once["sessions"]], "rows": once["rows"] * 2}
    write_json(tmp_path / "energy.json", real)
    assert len(Ledger.load(tmp_path).rows) == 2 * len(once["rows"])


def test_metered_journals_as_it_goes_then_leaves_only_the_ledger(run):
    cfg = EnergyConfig(meter="model", carbon="fixed:100", journal_interval_s=0.05)
    with metered(run.path, cfg, "evaluate") as meter, meter.window("evaluate"):
        (journal,) = read_journals(run.path)
        assert journal.open["evaluate"]["depth"] == 0
        assert journal.alive(lock_held=False)
    assert read_journals(run.path) == [] and not (run.path / "energy-journal").exists()
    ledger = Ledger.load(run.path)
    assert [r["window"] for r in ledger.rows] == ["evaluate"]
    assert ledger.sessions[0]["journals"][0].endswith(".rank0")


def test_metered_folds_a_crashed_journal_first_and_says_so(run):
    clock = FakeClock()
    meter = _meter(clock)
    _journal(run.path, meter, pid=_dead_pid())
    train = meter.window("train")
    train.__enter__()
    clock.advance(3)
    meter.tick()
    lines: list[str] = []
    cfg = EnergyConfig(meter="model", carbon="fixed:100")
    with metered(run.path, cfg, "run", lines.append):
        ledger = Ledger.load(run.path)
        assert [r["kind"] for r in ledger.rows] == ["measured", "estimated"]
        # priced with this meter's provider: fixed 100 g/kWh
        assert ledger.rows[0]["emissions_g"] == pytest.approx(30.0 / 3.6e6 * 100)
    assert any("recovered 2 windows" in line and "Wh estimated" in line for line in lines)
    assert [s.get("recovered") is not None for s in Ledger.load(run.path).sessions] == [True]


# ---------------------------------------------------------------------------- failed writes


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"old": 1})

    def half_then_full(tmp: Path) -> None:
        tmp.write_text('{"new": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with pytest.raises(StorageError) as err:
        atomic_write(path, half_then_full)
    assert str(err.value) == (
        f"cannot write {path}: No space left on device; the disk is full: free some space, "
        "or write the run elsewhere (output_dir=...)"
    )
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("enospc", "No space left on device; the disk is full"),
        ("erofs", "Read-only file system; the file system is read-only: write the run elsewhere"),
        ("eacces", "Permission denied; permission denied: make the folder writable"),
    ],
)
def test_injected_write_faults_name_the_file_and_what_to_do(tmp_path, monkeypatch, fault, message):
    monkeypatch.setenv(faults.ENV, f"{fault}@model")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_text("old")
    with pytest.raises(StorageError, match=message), staged_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_text("new")
    assert (tmp_path / "model" / "weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_fault_spec_that_cannot_be_read_is_refused(monkeypatch):
    monkeypatch.setenv(faults.ENV, "explode@train")
    with pytest.raises(ValueError, match=r"cannot read 'explode@train' \(e.g. kill@train/epoch-1"):
        faults.point("train")


def test_the_nth_arrival_at_a_point_fires(monkeypatch):
    fired: list[int] = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: fired.append(sig))
    monkeypatch.setattr(faults, "_seen", faults.Counter())
    monkeypatch.setenv(faults.ENV, "term@save#2")
    faults.point("save")
    faults.point("other")
    assert fired == []
    faults.point("save")
    assert fired == [signal.SIGTERM]


# ---------------------------------------------------------------------------- leftovers


def test_leftovers_of_killed_writes_are_cleaned_and_a_cut_swap_is_undone(run):
    dead = _dead_pid()
    (run.path / f".metrics.json.tmp-{dead}").write_text("{")
    (run.path / f".run.json.tmp-{os.getppid()}").write_text("{")  # a live writer's: kept
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / f".step-00000005.pt.tmp-{dead}").write_bytes(b"x")
    (run.path / ".model.tmp").mkdir()  # the new model, staged
    (run.path / f".model.old-{dead}").mkdir()  # the old one, moved aside; then the kill
    (run.path / f".model.old-{dead}" / "weights").write_text("old")
    from greentune.rundir import clean_stale_temporaries

    gone = {p.name for p in clean_stale_temporaries(run.path)}
    assert gone == {
        f".metrics.json.tmp-{dead}",
        f".step-00000005.pt.tmp-{dead}",
        ".model.tmp",
        f".model.old-{dead}",
    }
    assert (run.path / "model" / "weights").read_text() == "old"
    assert (run.path / f".run.json.tmp-{os.getppid()}").exists()


def test_a_start_killed_before_its_config_can_start_again(tmp_path):
    cfg = build_config(overrides=[f"output_dir={tmp_path}", "name=r"])
    first = RunDir.create(cfg)
    first.lock("run").release()  # killed here: only run.lock is left
    with pytest.raises(CheckpointError, match="stopped before its run began.*start it again"):
        RunDir.open(first.path)
    assert RunDir.create(cfg) == first  # the same command starts it again
    first.write_config(cfg)
    with pytest.raises(CheckpointError, match="already exists"):
        RunDir.create(cfg)


def test_a_dead_journal_folded_when_a_session_ends_is_removed_too(run, tmp_path):
    """A rank that died after rank 0 started and before it failed: rank 0's write takes the
    dead rank's journal along."""
    clock = FakeClock()
    dead = _meter(clock)
    elsewhere = tmp_path / "elsewhere"
    _journal(elsewhere, dead, pid=_dead_pid())
    with dead.window("data"):
        clock.advance(1)
    cfg = EnergyConfig(meter="model", carbon="fixed:100")
    with metered(run.path, cfg, "run") as meter, meter.window("train"):
        os.replace(journal_path(elsewhere, "abc", 0), journal_path(run.path, "abc", 0))
    assert not (run.path / "energy-journal").exists()
    sessions = Ledger.load(run.path).sessions
    assert [s["journals"][0].startswith("abc.") for s in sessions] == [True, False]
    assert sessions[0]["recovered"]
