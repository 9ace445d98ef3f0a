"""The commands. Each parses its options, builds the config and calls one library function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from greentune.cli.app import (
    app,
    config_app,
    console,
    data_app,
    energy_app,
    err_console,
    handle_errors,
    say,
)
from greentune.cli.report import refresh_report
from greentune.config import RunConfig, dump_yaml, load_config
from greentune.errors import ConfigError

if TYPE_CHECKING:
    from greentune.rundir import RunDir


class RichProgress:
    """The loop's progress reporter: steps, loss, epoch and ETA."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  epoch {task.fields[epoch]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, total_steps: int, done: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(
            "train", total=total_steps, completed=done, loss=0.0, epoch=0
        )

    def update(self, step: int, loss: float, epoch: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=step, loss=loss, epoch=epoch)

    def stop(self) -> None:
        self._bar.stop()


def split_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for item in args or []:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise ConfigError(f"more than one config file given: {config} and {item}")
    return config, overrides


def _data_overrides(
    data: str | None,
    time_col: str | None,
    target: str | None,
    covariates: str | None,
    country: str | None,
    subdivision: str | None,
    fill_gaps: bool,
    series: str | None = None,
) -> list[str]:
    out = []
    if data:
        source = "parquet" if Path(data).suffix.lower() in (".parquet", ".pq") else "csv"
        # A csv/parquet source has no defaults of its own: the demo's temperature, time-zone and
        # holiday settings do not leak into the user's data.
        out += [f"data.source={source}", f"data.path={json.dumps(data)}"]
    # quoted: YAML would read NO (Norway) as false, ON (Ontario) as true, 010 as 8, and a
    # path's " #" as the start of a comment; a name or a path is a string
    pairs = {
        "data.time_col": time_col,
        "data.target": target,
        "data.country": country,
        "data.subdivision": subdivision,
    }
    out += [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]
    if covariates is not None:  # a list, read as YAML
        out.append(f"data.covariates={covariates}")
    if fill_gaps:
        out.append("data.fill_gaps=true")
    if series is not None:
        col, sep, name = series.partition("=")
        if not sep or not col.strip() or not name.strip():
            raise ConfigError(
                f"--series {series!r}: give the long file's series column and the series, "
                "e.g. --series zone=ME"
            )
        out += [
            f"data.series_col={json.dumps(col.strip())}",
            f"data.series={json.dumps(name.strip())}",
        ]
    return out


DataOpt = Annotated[str | None, typer.Option("--data", help="CSV or Parquet file to forecast.")]
TimeOpt = Annotated[str | None, typer.Option("--time-col", help="Timestamp column.")]
TargetOpt = Annotated[str | None, typer.Option("--target", help="Column to forecast.")]
CovOpt = Annotated[
    str | None, typer.Option("--covariates", help="Known-future covariates, comma-separated.")
]
CountryOpt = Annotated[str | None, typer.Option("--country", help="Country for public holidays.")]
SubdivOpt = Annotated[
    str | None, typer.Option("--subdivision", help="State/province for holidays.")
]
FillOpt = Annotated[bool, typer.Option("--fill-gaps", help="Interpolate missing timestamps.")]
SeriesOpt = Annotated[
    str | None,
    typer.Option("--series", help="One series of a long file: COLUMN=NAME (e.g. zone=ME)."),
]


@app.command()
@handle_errors
def run(
    args: Annotated[
        list[str] | None, typer.Argument(help="[CONFIG.yaml] [section.key=value ...]")
    ] = None,
    data: DataOpt = None,
    time_col: TimeOpt = None,
    target: TargetOpt = None,
    covariates: CovOpt = None,
    country: CountryOpt = None,
    subdivision: SubdivOpt = None,
    fill_gaps: FillOpt = False,
    series: SeriesOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue this run directory.")
    ] = None,
    green_target: Annotated[
        str | None,
        typer.Option(
            "--green-target",
            help="Greenest model within this quality distance of the best (default 2%).",
        ),
    ] = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Train with N local processes (torchrun, DDP).")
    ] = 1,
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", help="With --nproc: restarts after a failure.")
    ] = 0,
) -> None:
    """Fine-tune, evaluate against baselines and write a run directory."""
    from greentune.distributed import ranks
    from greentune.train.run import run as run_library

    cfg = None
    if resume is not None:
        if args:
            raise ConfigError(
                "--resume takes the run's own config.yaml; give no config or overrides"
            )
    else:
        path, overrides = split_args(args)
        data_args = _data_overrides(
            data, time_col, target, covariates, country, subdivision, fill_gaps, series
        )
        target_args = [f"energy.target={green_target}"] if green_target else []
        cfg = load_config(path, data_args + target_args + overrides)
    if nproc < 1 or max_restarts < 0:
        raise ConfigError("--nproc must be >= 1 and --max-restarts >= 0")
    if nproc > 1 and not ranks.launched():
        _run_with_torchrun(cfg, resume, nproc, max_restarts)
        return
    run_dir = run_library(cfg, resume, RichProgress(), echo=say)
    if ranks.is_main():
        _print_results(run_dir)
        console.print(f"\nrun directory: [bold]{run_dir.path}[/]")
    if ranks.launched():
        _leave_worker()


def _leave_worker() -> None:
    """A torchrun worker whose run is complete, written and its process group destroyed exits
    without interpreter teardown: in about 1 of 6 2-process FSDP runs a native thread left by
    torch.distributed aborted a finished worker there ("terminate called without an active
    exception", SIGABRT), and torchrun then reported the complete run as failed."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_with_torchrun(
    cfg: RunConfig | None, resume: Path | None, nproc: int, max_restarts: int
) -> None:
    from greentune.distributed.launch import launch_local
    from greentune.rundir import RunDir
    from greentune.runlock import read_holder
    from greentune.tasks import TASKS
    from greentune.tasks.base import check_select_on
    from greentune.train import pause
    from greentune.train.run import record_crash, run_logger

    if resume is None:
        cfg = cfg or RunConfig()
        task = TASKS.get(cfg.task)
        check_select_on(task, cfg)
        cfg = task.resolve_config(cfg)
        run_dir = RunDir.create(cfg)
    else:
        run_dir = RunDir.open(resume)
    before = run_dir.info
    dead = read_holder(run_dir.path)
    with run_dir.lock("run --nproc") as lock:
        if cfg is not None and resume is None:
            run_dir.start(cfg)
            # the workers start with --resume, so the run's own "default:" lines are said here
            log = run_logger(run_dir.log_path, say)
            for note in cfg.train.chosen:
                log(f"default: {note}")
        elif before.status == "crashed":
            echo = say
            record_crash(run_dir, before, dead, run_logger(run_dir.log_path, echo))
        console.print(f"launching {nproc} processes (torchrun) for [bold]{run_dir.path}[/]")
        status = launch_local(run_dir, nproc, max_restarts, lock)
    if status == "paused":
        console.print(
            f"paused: continue with greentune run --resume {run_dir.path} --nproc {nproc}"
        )
        raise typer.Exit(code=pause.EXIT_CODE)
    _print_results(run_dir)
    console.print(f"\nrun directory: [bold]{run_dir.path}[/]")


def _print_results(run_dir: RunDir) -> None:
    from greentune.ensemble_file import is_ensemble_of_runs
    from greentune.evaluate.table import energy_lines
    from greentune.tasks import TASKS
    from greentune.tasks.forecast.rows import kept_names

    metrics = run_dir.metrics
    task = TASKS.get(metrics.task)
    for item in task.render(metrics, task.quality_of(run_dir.config)):
        console.print(item, highlight=False)
    for line in energy_lines(metrics.to_dict()):
        console.print(f"  {line}", highlight=False)
    green = metrics.energy.greenest if metrics.energy else None
    if green and is_ensemble_of_runs(run_dir):
        console.print(
            f"  serve it: greentune serve {run_dir.path} --row recommended ({green}; "
            "Predictor.from_run takes it too, and predict a forecasting one)",
            highlight=False,
        )
    elif green and green != metrics.model and green in kept_names(run_dir.path):
        console.print(
            f"  forecast with it: greentune predict {run_dir.path} --row recommended ... "
            f"(serve: greentune serve {run_dir.path} --row recommended)",
            highlight=False,
        )


@app.command()
@handle_errors
def evaluate(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Score a run's saved model on its test split again and print the comparison."""
    from greentune.energy.session import cost_line, metered_window
    from greentune.ensemble_file import is_ensemble_of_runs, scored_when_made
    from greentune.rundir import RunDir
    from greentune.tasks import TASKS, Predictor

    run = RunDir.open(run_dir)
    run.check_finished("evaluate it")  # before metering: a refusal costs no ledger row
    if is_ensemble_of_runs(run):
        raise scored_when_made(run)
    cfg = run.config
    with run.lock("evaluate"), metered_window(run.path, cfg.energy, "evaluate") as window:
        TASKS.get(cfg.task).evaluate(run, Predictor.from_run(run))
    _print_results(run)
    console.print(f"  this evaluation: {cost_line(window.result)}", highlight=False)


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A forecasting run directory.")],
    data: Annotated[Path, typer.Option("--data", help="CSV/Parquet with recent history.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the forecast (CSV).")],
    origins: Annotated[
        str, typer.Option(help="'last' (next horizon) or 'daily' (backtest).")
    ] = "last",
    row: Annotated[
        str | None,
        typer.Option(
            help="Forecast with this row of the run's table instead of its network: a baseline "
            "(lightgbm, linear_clock, ...), an ensemble (ensemble-weighted, ...) or "
            "'recommended'."
        ),
    ] = None,
) -> None:
    """Forecast from new data with a run's model (or another row of its table, --row)."""
    from greentune.energy.session import cost_line, metered_window
    from greentune.errors import CheckpointError
    from greentune.io import write_csv
    from greentune.rundir import RunDir
    from greentune.tasks import Predictor
    from greentune.tasks.ensemble_predictor import RunsPredictor
    from greentune.tasks.forecast import ForecastPredictor

    run = RunDir.open(run_dir)
    run.check_finished("predict with it")
    with run.lock("predict"), metered_window(run.path, run.config.energy, "predict") as window:
        predictor = Predictor.from_run(run)
        if predictor.task != ForecastPredictor.task:
            raise CheckpointError(
                f"{run} is a {predictor.task} run; predict takes forecasting runs"
            )
        if row is not None:
            predictor = predictor.with_row(row)
        assert isinstance(predictor, ForecastPredictor | RunsPredictor)
        frame = predictor.predict_file(data, origins=origins)  # type: ignore[arg-type]
    write_csv(out, frame)
    console.print(f"wrote {len(frame):,} rows to [bold]{out}[/] (row {predictor.info['row']})")
    forecasts = frame["origin"].nunique() if "origin" in frame else 0
    console.print(cost_line(window.result, forecasts), highlight=False)


@app.command()
@handle_errors
def ensemble(
    members: Annotated[
        list[str],
        typer.Argument(
            help="Finished runs of one task: RUN (its network) or, for forecasts, RUN:ROW (any "
            "row of it)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The ensemble's run directory (new).")],
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            help="Comma-separated. Forecasts: weighted, mean, median (default: all three); "
            "classifiers: mean, median (default) and selected (weights chosen on the members' "
            "shared validation texts), of the class probabilities.",
        ),
    ] = None,
    green_target: Annotated[
        str | None,
        typer.Option(
            "--green-target",
            help="Greenest model within this quality distance of the best (default: the first "
            "member's energy.target).",
        ),
    ] = None,
) -> None:
    """Combine the models of finished runs (forecasters or classifiers) without retraining;
    every row scored and billed, the greenest within the target recommended."""
    from greentune.tasks import ensemble as ensemble_members

    chosen = None if kinds is None else tuple(k.strip() for k in kinds.split(",") if k.strip())
    run = ensemble_members(
        members,
        out,
        chosen,
        green_target,
        log=say,
    )
    _print_results(run)
    refresh_report(run.path)
    console.print(f"\nrun directory: [bold]{run.path}[/]")


@data_app.command("check")
@handle_errors
def data_check(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file.")],
    time_col: TimeOpt = None,
    target: TargetOpt = None,
    covariates: CovOpt = None,
    country: CountryOpt = None,
    subdivision: SubdivOpt = None,
    fill_gaps: FillOpt = False,
    series: SeriesOpt = None,
    args: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
) -> None:
    """Validate a file as greentune would, and show the windows it yields."""
    from greentune.data.windows import prepare_forecast_data

    overrides = _data_overrides(
        str(path), time_col, target, covariates, country, subdivision, fill_gaps, series
    )
    cfg = load_config(None, overrides + list(args or []))
    data = prepare_forecast_data(cfg.data)
    r = data.report
    warned = f", with {len(r.warnings)} warning(s)" if r.warnings else ""
    table = Table(title=escape(f"{r.origin}: OK{warned}"))
    table.add_column("check")
    table.add_column("result")
    rows = [
        ("rows", f"{r.rows:,}"),
        ("span", f"{r.start} .. {r.end}"),
        ("step", r.step),
        ("gaps filled", str(r.filled_steps)),
        (
            "missing values",
            escape(", ".join(f"{k}: {v}" for k, v in r.missing_values.items())) or "none",
        ),
        ("targets", escape(", ".join(data.target_cols))),
        ("known covariates", ", ".join(data.known_cols) or "none"),
        ("past covariates", ", ".join(data.past_cols) or "none"),
        ("windows train/val/test", f"{len(data.train):,} / {len(data.val):,} / {len(data.test):,}"),
        ("test starts", str(data.frame.index[data.test_start])),
    ]
    rows += [("note", n) for n in r.notes]
    rows += [("[bold yellow]warning[/]", escape(w)) for w in r.warnings]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@config_app.command("show")
@handle_errors
def config_show(
    args: Annotated[
        list[str] | None, typer.Argument(help="[CONFIG.yaml] [section.key=value ...]")
    ] = None,
) -> None:
    """Print the resolved config, every default written out."""
    path, overrides = split_args(args)
    console.print(dump_yaml(load_config(path, overrides)), highlight=False, end="")


@energy_app.command(
    "measure", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@handle_errors
def energy_measure(
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    meter: Annotated[
        str | None, typer.Option("--meter", help="auto, or sources: rapl,nvml,model.")
    ] = None,
    carbon: Annotated[
        str | None, typer.Option("--carbon", help="Provider spec: static:DE, trace:FILE, ...")
    ] = None,
    ledger: Annotated[
        Path | None, typer.Option("--ledger", help="Append the row to DIR/energy.json + .csv.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON to this file.")
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="energy.KEY=VALUE, repeatable.")
    ] = None,
) -> None:
    """Meter any command, like `time`: energy per component, source, gCO2e."""
    from greentune.energy.measure import measure_command
    from greentune.energy.session import cost_line
    from greentune.io import write_json

    overrides = [*(settings or [])]
    overrides += [f"energy.meter={meter}"] if meter else []
    overrides += [f"energy.carbon={carbon}"] if carbon else []
    cfg = load_config(None, overrides).energy
    code, result = measure_command(list(command), cfg, ledger)
    parts = ", ".join(
        f"{c} {j / 3600:.3g} Wh ({result.sources[c]})" for c, j in result.energy_j.items()
    )
    err_console.print(f"{cost_line(result)}: {parts}", highlight=False)
    if json_out is not None:
        write_json(json_out, result.to_dict())
    raise typer.Exit(code=code)
