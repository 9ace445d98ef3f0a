"""``greentune schedule plan | run | simulate``: carbon-aware scheduling (docs/schedule.md)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from greentune.cli.app import app, console, handle_errors, say
from greentune.io import write_json

schedule_app = typer.Typer(
    help="Plan, run and simulate jobs in low-carbon hours.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")

JobsArg = Annotated[Path, typer.Argument(help="Job file (YAML): sites and jobs.")]
PolicyOpt = Annotated[
    str | None, typer.Option("--policy", help="run-now, lowest-window, greenest-chunks, spatial.")
]
ForecastOpt = Annotated[
    str | None,
    typer.Option("--forecast", help="seasonal-naive, weekly-naive, lightgbm, noisy:0.05, perfect."),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Folder for plan.json/png/html and state.json.")
]


def _load(jobs_file: Path, forecast: str | None, time_scale: float = 1.0) -> Any:
    import dataclasses

    from greentune.schedule.jobs import load_jobs
    from greentune.schedule.profile import subprocess_profiler

    profiler = subprocess_profiler(jobs_file.parent / ".profile")
    jf = load_jobs(jobs_file, time_scale=time_scale, profiler=profiler)
    if forecast:
        jf = dataclasses.replace(jf, settings=dataclasses.replace(jf.settings, forecast=forecast))
    return jf


def _out(jobs_file: Path, out: Path | None) -> Path:
    folder = out or Path("schedules") / jobs_file.stem
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).strftime("%m-%d %H:%M")


def _print_plan(plan: dict[str, Any]) -> None:
    table = Table(title=f"plan: policy {plan['policy']}, forecast {plan['forecast']}")
    for col in ("job", "site", "chunks (UTC)", "Wh", "expected g", "run-now g", "saving"):
        table.add_column(col, justify="left" if col in ("job", "site", "chunks (UTC)") else "right")
    for job in plan["jobs"]:
        if job["status"] != "planned":
            table.add_row(
                job["name"], "–", f"[red]not scheduled: {job['reason']}[/]", "", "", "", ""
            )
            continue
        chunks = ", ".join(f"{_when(c['start'])}–{_when(c['end'])[6:]}" for c in job["chunks"])
        saving = None
        if job["expected_g"] is not None and job["run_now_g"]:
            saving = 100 * (1 - job["expected_g"] / job["run_now_g"])
        table.add_row(
            job["name"],
            job["site"],
            chunks,
            _fmt(job["energy_wh"]),
            _fmt(job["expected_g"], 2),
            _fmt(job["run_now_g"], 2),
            f"{_fmt(saving)} %",
        )
    console.print(table)
    t = plan["totals"]
    line = (
        f"expected {_fmt(t['expected_g'], 2)} gCO2e against {_fmt(t['run_now_g'], 2)} g "
        f"if run now: saving {_fmt(t['saving_pct'])} %"
    )
    if t["actual_saving_pct"] is not None:
        line += f"; on the trace itself {_fmt(t['actual_saving_pct'])} %"
    console.print(line)
    for site, info in plan["sites"].items():
        err = info["forecast_error"]
        if err and plan["forecast"] != "perfect":
            console.print(
                f"forecast error at {site}: MAPE {_fmt(err['mape_pct'])} % "
                f"over {err['slots']} slots"
            )


def _write_plan(plan: dict[str, Any], folder: Path) -> None:
    from greentune.schedule.plot import plot_html, plot_png

    write_json(folder / "plan.json", plan)
    plot_png(plan, folder / "plan.png")
    plot_html(plan, folder / "plan.html")
    console.print(f"wrote {folder}/plan.json, plan.png, plan.html")


@schedule_app.command()
@handle_errors
def plan(
    jobs_file: JobsArg,
    policy: PolicyOpt = None,
    forecast: ForecastOpt = None,
    out: OutOpt = None,
    emit: Annotated[
        str | None, typer.Option("--emit", help="Print submission lines instead: slurm or at.")
    ] = None,
) -> None:
    """Plan the jobs: table, timeline (PNG/HTML), expected emissions against run-now."""
    from greentune.schedule.emit import emit as emit_lines
    from greentune.schedule.plan import make_plan

    jf = _load(jobs_file, forecast)
    result = make_plan(jf, policy)
    if emit:
        lines = emit_lines(result, {j.name: j for j in jf.jobs}, jf.settings.output_dir, emit)
        typer.echo("\n".join(lines))
        return
    _print_plan(result)
    _write_plan(result, _out(jobs_file, out))


@schedule_app.command()
@handle_errors
def run(
    jobs_file: JobsArg,
    policy: PolicyOpt = None,
    forecast: ForecastOpt = None,
    out: OutOpt = None,
    speedup: Annotated[
        float, typer.Option("--speedup", help="Simulated clock: N simulated seconds per second.")
    ] = 1.0,
) -> None:
    """Execute the plan here: wait, start, pause at checkpoints, resume; restart-safe."""
    from greentune.errors import ScheduleError
    from greentune.schedule.executor import SimClock, execute, started_plan
    from greentune.schedule.measure import measured_emissions
    from greentune.schedule.plan import make_plan

    if not speedup > 0:
        raise ScheduleError(f"--speedup must be > 0, got {speedup}")
    folder = _out(jobs_file, out)
    jf = _load(jobs_file, forecast, time_scale=speedup)
    result = started_plan(folder)
    if result is not None:
        console.print(f"continuing the plan in {folder} (state.json found)")
    else:
        result = make_plan(jf, policy)
        _write_plan(result, folder)
    _print_plan(result)
    clock = SimClock(dt.datetime.fromisoformat(result["now"]), speedup)
    output_dir = Path(jf.settings.output_dir)
    greentune = (sys.executable, "-m", "greentune")
    final = execute(
        result,
        {j.name: j for j in jf.jobs},
        folder,
        clock,
        output_dir=output_dir,
        greentune=greentune,
        log=say,
    )
    measured = measured_emissions(result, final, output_dir)
    write_json(folder / "measured.json", measured)
    for name, m in measured.items():
        console.print(
            f"{name}: executed {m['emissions_g']:.3f} g ({m['energy_wh']:.2f} Wh, "
            f"{m['energy_kind'] or 'no'} energy) "
            f"against planned {_fmt(m['expected_g'], 3)} g"
        )
    failed = [n for n, s in final["jobs"].items() if s["status"] in ("failed", "infeasible")]
    if failed:
        raise ScheduleError(f"not completed: {', '.join(failed)}; see {folder}/state.json")


@schedule_app.command()
@handle_errors
def simulate(
    trace: Annotated[Path, typer.Option("--trace", help="Folder of ZONE_YEAR_hourly.csv files.")],
    zones: Annotated[str, typer.Option("--zones", help="Comma-separated; first is home.")] = "GB",
    year: Annotated[int, typer.Option("--year")] = 2023,
    forecast: Annotated[str, typer.Option("--forecast")] = "noisy:0.05",
    policies: Annotated[
        str, typer.Option("--policies")
    ] = "run-now,lowest-window,greenest-chunks,spatial",
    interruptible: Annotated[bool, typer.Option("--interruptible/--non-interruptible")] = True,
    min_chunk: Annotated[int, typer.Option("--min-chunk", help="Half-hour slots.")] = 1,
    restart: Annotated[
        int,
        typer.Option(
            "--restart",
            help="Half-hour slots every launch costs (restart, data and checkpoint loaded "
            "again); compare greenest-chunks (prices it) with greenest-chunks-unpriced.",
        ),
    ] = 0,
) -> None:
    """Replay a year of a trace with Let's Wait Awhile's ML job mix; savings per policy."""
    import pandas as pd

    from greentune.energy.carbon import TraceIntensity
    from greentune.errors import ScheduleError
    from greentune.schedule.forecast import make_forecaster
    from greentune.schedule.simulate import (
        ZONE_TIMEZONES,
        lwa_jobs,
        requests_from_jobs,
        slot_grid,
        year_window,
    )
    from greentune.schedule.simulate import (
        simulate as run_sim,
    )

    if restart < 0:
        raise ScheduleError(f"--restart must be >= 0 slots, got {restart}")
    sites = tuple(z.strip() for z in zones.split(",") if z.strip())
    series = {}
    for z in sites:
        files = sorted(trace.glob(f"{z}_*_hourly.csv"))
        if not files:
            raise ScheduleError(
                f"no {z}_*_hourly.csv in {trace}; zones there: "
                f"{', '.join(sorted({f.name.split('_')[0] for f in trace.glob('*_hourly.csv')}))}"
            )
        series[z] = TraceIntensity(list[str | Path](files)).series()
    start, end = year_window(year)
    start -= pd.Timedelta(days=366)
    grids = {z: slot_grid(series[z], start, end, 1800.0) for z in sites}
    times = grids[sites[0]][0]
    actual = {z: g[1] for z, g in grids.items()}
    first = int((pd.Timestamp(f"{year}-01-01", tz="UTC") - times[0]) / (times[1] - times[0]))
    forecasters = {}
    for k, z in enumerate(sites):
        f = make_forecaster(
            forecast if not forecast.startswith("noisy") or "," in forecast else f"{forecast},{k}"
        )
        f.fit(actual[z][:first], times[:first], 48)
        forecasters[z] = f
    jobs = lwa_jobs(year, ZONE_TIMEZONES.get(sites[0], "UTC"))
    reqs = requests_from_jobs(jobs, times, sites, interruptible, min_chunk, restart)
    asked = [p.strip() for p in policies.split(",") if p.strip()]
    names = ["run-now", *[p for p in asked if p != "run-now"]]
    res = run_sim(reqs, actual, times, forecasters, names)
    table = Table(title=f"{sites[0]} {year}: {res.jobs} jobs, forecast {forecast}")
    for col in ("policy", "saving vs run-now", "not schedulable", "jobs moved away"):
        table.add_column(col, justify="right")
    for p in names:
        table.add_row(
            p,
            f"{res.saving_pct(p):.2f} %",
            str(res.infeasible[p]),
            str(res.jobs - res.by_site[p][sites[0]]),
        )
    console.print(table)
    err = res.forecast_error[sites[0]]
    console.print(
        f"forecast error at {sites[0]}: MAPE {err['mape_pct']:.1f} %, "
        f"MAE {err['mae_g_per_kwh']:.1f} g/kWh; {res.dropped_no_data} jobs outside the trace"
    )
