"""One metered command: build the meter, hand out its windows, append to the run's ledger."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from greentune.config import EnergyConfig
from greentune.distributed import ranks
from greentune.energy import build_meter
from greentune.energy.journal import JOURNAL_DIR, Journal, journal_path
from greentune.energy.ledger import Ledger, remove_journals
from greentune.energy.meter import Meter, NullMeter, WindowHandle, WindowResult, utc_now
from greentune.errors import StorageError
from greentune.procs import boot_id, process_started
from greentune.runlock import RunLockedError

AnyMeter = Meter | NullMeter


@contextmanager
def metered(
    run_dir: Path | None,
    cfg: EnergyConfig,
    command: str,
    log: Callable[[str], None] = lambda message: None,
    children: bool = False,
    journal_dir: Path | None = None,
    ledger_lock: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Iterator[AnyMeter]:
    """Yield a meter (a ``NullMeter`` when ``energy.enabled`` is false). Its windows are
    journaled in ``journal_dir`` (default ``run_dir``) as they happen, and on exit, also after
    an error, appended to ``run_dir``'s ledger: energy spent is energy spent. Journals left by
    dead processes are folded into the ledger first. A command that does not hold the run's
    lock passes ``ledger_lock`` (taken around the final ledger write); when it cannot be taken
    the journal stays for the run's next command to fold in."""
    if not cfg.enabled:
        yield NullMeter(command)
        return
    meter, notes = build_meter(cfg, command, children)
    for note in notes:
        log(f"energy: {note}")
    for source in meter.sources:
        rule = source.details().get("cpu_rule")
        log(f"energy: {source.name} ({source.kind})" + (f": CPU {rule}" if rule else ""))
    started = utc_now().isoformat()
    journal = None
    journal_dir = journal_dir or run_dir
    try:
        if run_dir is not None and ranks.is_main():
            _fold_crashed(run_dir, meter, log)
        if journal_dir is not None:
            journal = _open_journal(journal_dir, meter, started, cfg.journal_interval_s)
            meter.attach_journal(journal, cfg.journal_interval_s)
    except BaseException:
        meter.close()
        raise
    ok = False
    try:
        yield meter
        ok = True
    except BaseException as exc:
        ok = getattr(exc, "every_rank", False) is True  # a pause stops all ranks together
        with contextlib.suppress(StorageError):  # the error in flight says more; the journal
            meter.close()  # stays and the next command folds it in
            _write_session(run_dir, meter, started, journal, ok, ledger_lock, log)
        raise
    meter.close()
    _write_session(run_dir, meter, started, journal, ok, ledger_lock, log)


def _open_journal(folder: Path, meter: Meter, started: str, interval_s: float) -> Journal:
    session_id = uuid.uuid4().hex[:12]
    pid = os.getpid()
    session = {
        "id": session_id,
        "command": meter.command,
        "started": started,
        "rank": meter.rank,
        "pid": pid,
        "host": socket.gethostname(),
        "process_started": process_started(pid),
        "boot_id": boot_id(),
        "interval_s": interval_s,
        "owners": meter.owners_record(),
        **meter.details(),
    }
    return Journal(journal_path(folder, session_id, meter.rank), session)


def _fold_crashed(run_dir: Path, meter: Meter, log: Callable[[str], None]) -> None:
    """Journals of dead processes into the ledger, priced by this meter's carbon provider."""
    if not (run_dir / JOURNAL_DIR).is_dir():
        return
    ledger = Ledger.load(run_dir)
    folded = ledger.fold_journals(run_dir, meter.price)
    if not folded:
        return
    ledger.save(run_dir)
    remove_journals(run_dir, [jf.path.stem for jf in folded])
    for jf in folded:
        rows = jf.recovered_rows(None)
        top = [r for r in rows if r["depth"] == 0]
        guessed = sum(sum(r["energy_j"].values()) for r in top if r["kind"] == "estimated")
        total = sum(sum(r["energy_j"].values()) for r in top)
        log(
            f"energy: recovered {len(rows)} windows ({total / 3600:.3g} Wh, of which "
            f"{guessed / 3600:.2g} Wh estimated) from the journal of the `{jf.session['command']}`"
            f" process {jf.session.get('pid')} that died after {jf.last_seen}"
        )


def _write_session(
    run_dir: Path | None,
    meter: Meter,
    started: str,
    journal: Journal | None,
    ok: bool,
    ledger_lock: Callable[[], AbstractContextManager[Any]] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> None:
    """Rank 0 writes every rank's rows, then drops the journals they came from. After an error
    no collective is attempted (a dead peer would make it wait): rank 0 then writes only its
    own rows, and the other ranks' journals are folded in once their processes are gone."""
    stem = journal.path.stem if journal is not None else None
    if journal is not None:
        journal.close()
    parts = ranks.gather_objects((meter.results, stem)) if ok else [(meter.results, stem)]
    if run_dir is None or not ranks.is_main():
        return
    results = [r for rows, _ in parts for r in rows or []]
    stems = [s for _, s in parts if s]
    folded = []
    if results:
        try:
            with ledger_lock() if ledger_lock is not None else contextlib.nullcontext():
                ledger = Ledger.load(run_dir)
                # this session first: a rank whose rows came through the gather and that has
                # already exited must not be folded in again from its journal as dead
                ledger.add_session(
                    meter, started, results, stems, stem.split(".")[0] if stem else None
                )
                # e.g. a rank that died before this one failed: its journal joins now
                folded = [jf.path.stem for jf in ledger.fold_journals(run_dir, meter.price)]
                ledger.save(run_dir)
        except RunLockedError as exc:
            log(
                f"energy: not written to the ledger now ({exc}); its journal stays and the "
                "run's next command adds it"
            )
            return
    remove_journals(run_dir, folded)
    remove_journals(journal.path.parents[1] if journal else run_dir, stems)


@contextmanager
def metered_window(
    run_dir: Path | None,
    cfg: EnergyConfig,
    command: str,
    log: Callable[[str], None] = lambda message: None,
    children: bool = False,
) -> Iterator[WindowHandle]:
    """A command that is one phase: one top-level window named after the command. Its
    handle's ``result`` is None when metering is off."""
    with metered(run_dir, cfg, command, log, children) as meter, meter.window(command) as handle:
        yield handle


def cost_line(result: WindowResult | None, predictions: int = 0) -> str:
    """'energy (model): 1.23 Wh, 0.58 gCO2e in 4.1 s; 0.05 Wh per 1,000 predictions'."""
    if result is None:
        return "energy: not metered (energy.enabled=false)"
    grams = result.emissions_g
    line = (
        f"energy ({result.kind}): {result.total_j / 3600:.3g} Wh"
        + (f", {grams:.3g} gCO2e" if grams is not None else "")
        + f" in {result.duration_s:.1f} s"
    )
    if predictions:
        line += f"; {1000 * result.total_j / 3600 / predictions:.3g} Wh per 1,000 predictions"
    return line
