"""``greentune privacy``: audit what a run's model gives away about its training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors

privacy_app = typer.Typer(help="Differential privacy: audit a run's model.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("audit")
@handle_errors
def audit_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    samples: Annotated[
        int, typer.Option(help="Training samples attacked, and as many held-out ones.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for drawing the samples.")] = 0,
) -> None:
    """Membership-inference attack (loss threshold) on a run's model, beside its epsilon.

    Writes privacy-audit.json into the run. Evidence, not a proof: see docs/privacy.md.
    """
    from greentune.energy.session import cost_line, metered_window
    from greentune.errors import ConfigError
    from greentune.io import write_json
    from greentune.privacy.audit import AUDIT_FILE, audit
    from greentune.rundir import RunDir

    if samples < 10:
        raise ConfigError(f"--samples must be >= 10, got {samples}")
    run = RunDir.open(run_dir)
    run.check_finished("audit it")
    with run.lock("privacy-audit"):
        with metered_window(run.path, run.config.energy, "privacy-audit") as window:
            result = audit(run, samples, seed)
        write_json(run.path / AUDIT_FILE, result.to_dict())
    table = Table(title=f"membership inference on {run.path.name} ({result.attack})")
    for header in ("epsilon", "AUC", "TPR @ 1 % FPR", "advantage", "empirical epsilon"):
        table.add_column(header, justify="right")
    eps = "not private" if result.epsilon is None else f"{result.epsilon:.3g}"
    table.add_row(
        eps,
        f"{result.auc:.3f}",
        f"{100 * result.tpr_at_1pct_fpr:.1f} %",
        f"{result.advantage:.3f}",
        f"{result.empirical_epsilon:.2f}",
    )
    console.print(table)
    console.print(
        f"  {result.members} training samples against {result.non_members} "
        f"{result.non_members_from}; median loss {result.member_loss_median:.4g} vs "
        f"{result.non_member_loss_median:.4g}. AUC 0.5 is a coin toss; evidence, not a proof",
        highlight=False,
    )
    console.print(f"  this audit: {cost_line(window.result, 2 * result.members)}", highlight=False)
    console.print(f"wrote {run.path / AUDIT_FILE}")
