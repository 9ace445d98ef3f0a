"""``greentune search``: an Optuna study over a config's settings with two objectives, the
validation metric and the energy, where every trial is a run directory.

Storage is an Optuna RDB URL (SQLite beside the trials by default): a killed search resumes
where it stopped (its running trial is failed by the heartbeat and counted), and several
``greentune search`` processes on different machines given the same ``--storage`` database
share one study. The front is the non-dominated completed trials; the recommendation is the
greenest of them within ``target`` of the best validation metric, scored once on test.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import greentune as gt
from greentune.config import RunConfig, load_config
from greentune.errors import ConfigError
from greentune.report.choose import Candidate, pareto_front
from greentune.results import Quality
from greentune.search.prune import Curve, EnergyMedianStop
from greentune.search.space import Dimension, base_values, check_space, load_space, trial_config
from greentune.tasks import TASKS
from greentune.tasks.base import check_select_on
from greentune.tracking.base import require
from greentune.train.callbacks import CallbackContext
from greentune.train.defaults import with_train_defaults

Log = Callable[[str], None]
SAMPLERS = ("nsga2", "tpe", "random")
HEARTBEAT_S = 30
"""How often a running trial tells the storage it is alive."""
GRACE_S = 90
"""A running trial silent this long belongs to a dead worker: it is failed, and counted."""
PRUNE_MIN_TRIALS = 3
"""Completed trials the median stopping rule waits for."""
STORAGE_ATTEMPTS = 5
SQLITE_LOCK_S = 120
"""How long a worker waits for SQLite's write lock."""
# Trials compare configurations of the network: baselines, ensembles and the report would be
# the same work in every trial (a user's own eval.* overrides win).
TRIAL_DEFAULTS = ("eval.baselines=[]", "eval.ensembles=[]", "eval.report=false")


@dataclass(frozen=True)
class SearchOptions:
    space: Path
    trials: int
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    budget_wh: float | None = None
    """Stop starting trials once the study's trials have spent this much (all workers)."""
    target: float = 0.02
    storage: str | None = None
    study: str | None = None
    sampler: str = "nsga2"
    seed: int = 0
    prune: bool = True
    with_default: bool = True
    """Run the config's own values of the searched keys as the first trial."""


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    """The validation metric (or validation loss where the task has no validation scores)."""
    energy_wh: float | None
    run: str | None
    run_wh: float | None
    test: float | None
    note: str = ""
    energy_kind: str | None = None
    """How the trial's energy was obtained: measured, model or mixed."""
    repeat_of: int | None = None
    """The completed trial whose configuration this one repeated: its result, nothing trained."""


@dataclass
class SearchResult:
    study: str
    storage: str
    metric: str
    """What ``value`` is: ``val_mape``, ``val_macro_f1`` or ``val_loss``."""
    higher_is_better: bool
    trials: list[TrialRow]
    front: list[int] = field(default_factory=list)
    best: int | None = None
    greenest: int | None = None
    cheaper: int | None = None
    """The next trade-off down the front: the best front trial that uses less energy than the
    recommended one (outside the target, or it would be the recommendation), or None."""
    default: int | None = None
    target: float = 0.02
    spent_wh: float = 0.0
    root: str = ""
    """The folder of the trials' run directories (and of search.json)."""

    def row(self, number: int | None) -> TrialRow | None:
        return next((t for t in self.trials if t.number == number), None)


def search(opts: SearchOptions, log: Log = print) -> SearchResult:
    """Run (or continue) the study until it has ``opts.trials`` finished trials or the
    budget is spent, and return every trial with the front and the recommendation."""
    optuna = require("optuna", extra="search", hint="")
    if opts.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {opts.sampler!r}; valid choices: {', '.join(SAMPLERS)}")
    if opts.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {opts.trials}")
    base = load_config(opts.config, list(opts.overrides))
    if not base.energy.enabled:
        raise ConfigError(
            "search needs the energy meter (its second objective): set energy.enabled=true"
        )
    space = load_space(opts.space)
    check_space(base, space)
    check_select_on(TASKS.get(base.task), base)
    name = opts.study or f"search-{opts.space.stem}"
    root = Path(base.output_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    url = opts.storage or f"sqlite:///{root.resolve() / 'study.db'}"
    task = TASKS.get(base.task)
    quality = task.quality_of(base)
    study = _study(optuna, name, url, opts, quality.higher_is_better)
    _same_metric(study, quality.metric, url)
    if opts.with_default and not study.trials:
        # the values an untouched run trains with: train.lr auto is a number by then
        values = base_values(with_train_defaults(base, task.train_defaults, task.name), space)
        if values is None:
            log("search: the config's own values are not all in the space; no default trial")
        else:
            study.enqueue_trial(values, user_attrs={"default": True})
    objective = _objective(optuna, base, space, root, opts, log)
    callbacks = [
        optuna.study.MaxTrialsCallback(opts.trials, states=_finished(optuna)),
        _budget_stop(opts.budget_wh, log),
    ]
    if _spent_wh(study) < (opts.budget_wh or math.inf) and _count(study) < opts.trials:
        # a trial that fails (a refused combination, out of memory) is recorded as failed and
        # the study goes on; Ctrl-C and SIGTERM (BaseException) still stop it
        study.optimize(objective, callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
    result = summarise(study, url, opts.target, quality.metric, quality.higher_is_better)
    result.root = str(root)
    return result


def _study(optuna: Any, name: str, url: str, opts: SearchOptions, higher: bool) -> Any:
    # heartbeats are "experimental" in Optuna since 2.9; they are what makes a killed
    # worker's trial fail instead of running forever
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            population_size=population_size(opts.trials), seed=opts.seed
        ),
        "tpe": lambda: optuna.samplers.TPESampler(seed=opts.seed, multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=opts.seed),
    }
    # SQLite lets one writer in at a time: workers wait for the lock instead of failing
    # ("database is locked" after SQLite's default 5 s)
    engine = {"connect_args": {"timeout": SQLITE_LOCK_S}} if url.startswith("sqlite") else {}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
            )
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=samplers[opts.sampler](),
                directions=["maximize" if higher else "minimize", "minimize"],
                load_if_exists=True,
            )
            break
        except Exception as exc:
            # workers starting together on a new database race to create its tables or the
            # study: the loser finds them made on its next attempt
            if attempt + 1 == STORAGE_ATTEMPTS:
                raise ConfigError(
                    f"search storage {url} cannot be used ({str(exc)[:300]})"
                ) from None
            time.sleep(0.5 * (attempt + 1))
    # a killed worker's trial: failed by the heartbeat, counted, and the study goes on
    optuna.storages.fail_stale_trials(study)
    return study


def _same_metric(study: Any, metric: str, url: str) -> None:
    """A study keeps the score its first run ranked by: trials scored by another (a resumed
    study under a new ``eval.metric``) would share one front with it."""
    kept = study.user_attrs.get("metric")
    if kept is None:
        study.set_user_attr("metric", metric)
    elif kept != metric:
        raise ConfigError(
            f"search study {study.study_name} in {url} ranks by {kept}; this config ranks by "
            f"{metric} (eval.metric): use eval.metric={kept} or another --study name"
        )


def count_in_generation(trial: Any) -> None:
    """Give the trial its NSGA-II generation now, so that it counts toward one. Optuna tags a
    trial with its generation only when it samples relative to finished ones: the first trial
    of a study (the default configuration) never is, so the first generation waited for one
    completed trial more. On Victoria 2012-14 with 8 trials and 3 pruned, that left every trial
    in the first (random) generation."""
    sampler = trial.study.sampler
    if hasattr(sampler, "get_trial_generation"):  # the genetic samplers
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        sampler.get_trial_generation(trial.study, frozen)


def repeat_of(trial: Any) -> Any:
    """The completed trial with exactly this trial's configuration, if any. A genetic sampler
    breeds copies of its parents (on Victoria 2012-14 NSGA-II's first bred trial was the
    default's configuration again); training it again would spend the same energy on the same
    seeded run."""
    import optuna

    done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return next((t for t in done if same_config(t.params, trial.params) and t.values), None)


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal values for the same keys, floats to 1e-9 relative: NSGA-II's crossover in log
    space gives the default's lr back as 0.00010000000000000009."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def reuse(trial: Any, same: Any, log: Log) -> tuple[float, float]:
    """The repeated configuration's result for this trial, nothing trained: it points at the
    same run directory and spends nothing (``run_wh`` 0). Its curve is left out, so the
    pruning median counts each configuration once."""
    for key in ("run", "energy_kind", "test", "metric"):
        if key in same.user_attrs:
            trial.set_user_attr(key, same.user_attrs[key])
    trial.set_user_attr("run_wh", 0.0)
    trial.set_user_attr("repeat_of", same.number)
    note = f"the configuration of trial {same.number}: its result reused, nothing trained"
    trial.set_user_attr("note", note)
    log(f"trial {trial.number}: {note}")
    value, energy = same.values
    return float(value), float(energy)


def population_size(trials: int) -> int:
    """NSGA-II's generation size for a study of ``trials``: Optuna's 50 samples the whole of a
    small study at random (its first generation is random), so a study gets about three
    generations, between 4 and 50 trials each."""
    return max(4, min(50, trials // 3))


def _objective(
    optuna: Any,
    base: RunConfig,
    space: list[Dimension],
    root: Path,
    opts: SearchOptions,
    log: Log,
) -> Callable[[Any], tuple[float, float]]:
    quality = TASKS.get(base.task).quality_of(base)

    def objective(trial: Any) -> tuple[float, float]:
        values = {d.key: d.suggest(trial) for d in space}
        count_in_generation(trial)
        same = repeat_of(trial)
        if same is not None:
            return reuse(trial, same, log)
        name = f"trial-{trial.number:04d}"
        own = [o for o in opts.overrides if o.split("=", 1)[0].startswith("eval.")]
        extra = [*TRIAL_DEFAULTS, *own, f"output_dir={root}", f"name={name}"]
        cfg = trial_config(base, values, extra)
        curves = _curves(trial.study, cfg.train.select_on) if opts.prune else []
        pruners: list[EnergyMedianStop] = []

        def pruner(ctx: CallbackContext) -> EnergyMedianStop:
            if ctx.read_j is None:  # pragma: no cover - search checks energy.enabled
                raise ConfigError("search pruning needs the energy meter")
            pruners.append(EnergyMedianStop(curves, ctx.read_j, min_trials=PRUNE_MIN_TRIALS))
            return pruners[-1]

        shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        log(f"trial {trial.number}: {shown}")
        try:
            run = gt.run(cfg, echo=lambda m: None, callbacks=[pruner] if opts.prune else [])
        except Exception as exc:  # the study records it as failed and goes on
            log(f"trial {trial.number} failed: {exc}")
            path = root / name
            trial.set_user_attr("run", str(path))
            trial.set_user_attr("run_wh", _ledger_wh(path))  # what it spent counts too
            raise
        m = run.metrics
        result = m.result
        val = (m.validation or {}).get(m.model, {}).get(quality.metric)
        fallback = m.training.best_val_loss if m.training is not None else None
        if val is not None:
            value = float(val)
        else:  # no validation scores (classify): the validation loss, signed as the metric
            loss = float(fallback if fallback is not None else math.nan)
            value = -loss if quality.higher_is_better else loss
        energy = result.bill.energy_wh if result.bill else math.nan
        trial.set_user_attr("run", str(run.path))
        trial.set_user_attr("run_wh", m.energy.run_wh if m.energy else 0.0)
        trial.set_user_attr("energy_kind", result.bill.energy_kind if result.bill else None)
        trial.set_user_attr("test", result.scores.get(quality.metric))
        fallback_name = "minus_val_loss" if quality.higher_is_better else "val_loss"
        trial.set_user_attr("metric", f"val_{quality.metric}" if val is not None else fallback_name)
        stopped = pruners[0] if pruners else None
        if stopped is not None:
            trial.set_user_attr("curve", stopped.curve)
            trial.set_user_attr("curve_score", cfg.train.select_on)
        if stopped is not None and stopped.pruned:
            trial.set_user_attr("note", stopped.pruned)
            log(f"trial {trial.number}: {stopped.pruned}")
            raise optuna.TrialPruned(stopped.pruned)
        log(f"trial {trial.number}: {trial.user_attrs['metric']} {value:.4g}, {energy:.4g} Wh")
        return value, energy

    return objective


def _ledger_wh(run: Path) -> float:
    """Every metered window of a run directory, in Wh (0 when it has no ledger)."""
    from greentune.energy.ledger import Ledger

    if not (run / "energy.json").is_file():
        return 0.0
    ledger = Ledger.load(run)
    ledger.fold_journals(run, live=True)
    return float(ledger.totals()["all"]["energy_j"]) / 3600


def _finished(optuna: Any) -> tuple[Any, ...]:
    state = optuna.trial.TrialState
    return (state.COMPLETE, state.PRUNED, state.FAIL)


def _count(study: Any) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=_finished(optuna)))


def _spent_wh(study: Any) -> float:
    return sum(float(t.user_attrs.get("run_wh") or 0.0) for t in study.get_trials(deepcopy=False))


def _budget_stop(budget_wh: float | None, log: Log) -> Callable[[Any, Any], None]:
    def stop(study: Any, trial: Any) -> None:
        spent = _spent_wh(study)
        if budget_wh is not None and spent >= budget_wh:
            log(f"search: {spent:.3g} Wh spent of the {budget_wh:.3g} Wh budget; stopping")
            study.stop()

    return stop


def _curves(study: Any, select_on: str) -> list[Curve]:
    """Finished trials' best-score curves, of those that selected on ``select_on`` only: a
    MAPE of 3 against losses of 0.01 would prune every trial (trials from before the score
    was recorded selected on the loss)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [
        [tuple(p) for p in t.user_attrs.get("curve", [])]  # type: ignore[misc]
        for t in done
        if t.user_attrs.get("curve_score", "loss") == select_on
    ]


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summarise(study: Any, storage: str, target: float, metric: str, higher: bool) -> SearchResult:
    """Every trial, the front of completed ones, the best and the greenest within target
    (both on the validation metric)."""
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t) for t in trials]
    _mark_repeats(rows)
    labels = {t.user_attrs.get("metric") for t in trials} - {None}
    shown = labels.pop() if len(labels) == 1 else f"val_{metric}"
    result = SearchResult(study.study_name, storage, shown, higher, rows, target=target)
    result.spent_wh = sum(r.run_wh or 0.0 for r in rows)
    defaults = [t.number for t in trials if t.user_attrs.get("default")]
    result.default = defaults[0] if defaults else None
    # a repeat is its original's configuration and result: one point each
    scored = [
        (r.number, float(r.value), float(r.energy_wh))
        for r in rows
        if r.value is not None
        and math.isfinite(r.value)
        and r.energy_wh is not None
        and r.repeat_of is None
    ]
    if not scored:
        return result
    sign = -1.0 if higher else 1.0
    points = [Candidate(str(n), "", "", v, v, wh, None, False) for n, v, wh in scored]
    front = pareto_front(points, lambda c: c.test, Quality(metric, higher))
    result.front = [int(label) for label in front]
    best_number, best_value, _ = min(scored, key=lambda s: sign * s[1])
    margin = target * abs(best_value)
    bound = best_value - margin if higher else best_value + margin
    ok = [s for s in scored if (s[1] >= bound if higher else s[1] <= bound)]
    result.best = best_number
    greenest = min(ok, key=lambda s: s[2])
    result.greenest = greenest[0]
    below = [s for s in scored if s[0] in result.front and s[2] < greenest[2]]
    if below:
        result.cheaper = min(below, key=lambda s: sign * s[1])[0]
    return result


def _mark_repeats(rows: list[TrialRow]) -> None:
    """A completed trial with an earlier completed trial's configuration is a repeat of it,
    whether its result was reused or it trained again (a study from before reuse, or two
    workers that drew it at once): the first draw is the configuration's point."""
    firsts: list[TrialRow] = []
    for row in sorted(rows, key=lambda r: r.number):
        if row.state != "COMPLETE":
            continue
        first = next((f for f in firsts if same_config(f.params, row.params)), None)
        if first is None:
            firsts.append(row)
        elif row.repeat_of is None:
            row.repeat_of = first.number


def _row(t: Any) -> TrialRow:
    values = t.values
    return TrialRow(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        value=values[0] if values is not None else None,
        energy_wh=values[1] if values is not None else None,
        run=t.user_attrs.get("run"),
        run_wh=t.user_attrs.get("run_wh"),
        test=t.user_attrs.get("test"),
        note=str(t.user_attrs.get("note", "")),
        energy_kind=t.user_attrs.get("energy_kind"),
        repeat_of=t.user_attrs.get("repeat_of"),
    )
