"""One metered command: build the meter, hand out its windows, append to the run's ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from greentune.config import EnergyConfig
from greentune.distributed import ranks
from greentune.energy import build_meter
from greentune.energy.ledger import Ledger
from greentune.energy.meter import Meter, NullMeter, WindowHandle, WindowResult, utc_now

AnyMeter = Meter | NullMeter


@contextmanager
def metered(
    run_dir: Path | None,
    cfg: EnergyConfig,
    command: str,
    log: Callable[[str], None] = lambda message: None,
    children: bool = False,
) -> Iterator[AnyMeter]:
    """Yield a meter (a ``NullMeter`` when ``energy.enabled`` is false). On exit, also after an
    error, its windows are appended to ``run_dir``'s ledger: energy spent is energy spent."""
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
    ok = False
    try:
        yield meter
        ok = True
    except BaseException as exc:
        ok = getattr(exc, "every_rank", False) is True  # a pause stops all ranks together
        raise
    finally:
        meter.close()
        # With several processes rank 0 writes every rank's rows. After an error no collective
        # is attempted (a dead peer would make it wait): rank 0 then writes only its own rows.
        results = _gather(meter.results) if ok else meter.results
        if run_dir is not None and results and ranks.is_main():
            ledger = Ledger.load(run_dir)
            ledger.add_session(meter, started, results)
            ledger.save(run_dir)


def _gather(results: list[WindowResult]) -> list[WindowResult]:
    return [r for part in ranks.gather_objects(results) for r in part or []]


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
