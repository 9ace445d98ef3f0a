"""Which clients a federated run has, and each client's own series (read on the client only).

Three layouts of ``data.path`` (``federated.partition``):

    columns   a wide file, one target column per client (time, AEP, COMED, ..., covariates);
              a deployed client's own file (``--data AEP.csv``) is read as its one series
    column    a long file, one row per (time, client): ``federated.partition_col`` names it
    files     a folder with one CSV or Parquet file per client (its stem is the client's name)

Each client's series then goes through the same validation, features, chronological
train/val/test split and scaler as ``greentune run`` (``greentune.data``), fitted on its own
rows only: nothing of one client's data reaches another or the server.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from greentune.config import SERIES_AUGMENTS, TEXT_AUGMENTS, RunConfig, replace
from greentune.data.sources import RawTable, load_table, resolve
from greentune.data.validate import clean_frame
from greentune.data.windows import ForecastData, build_forecast_data
from greentune.errors import ConfigError, DataError
from greentune.tasks import TASKS
from greentune.tasks.base import check_select_on
from greentune.train.optim import check_layer_lr_decay

SUFFIXES = (".csv", ".parquet")


def layout(cfg: RunConfig) -> str:
    """``federated.partition`` with ``auto`` decided."""
    fed = cfg.federated
    if fed.partition != "auto":
        return fed.partition
    if cfg.data.path and Path(cfg.data.path).expanduser().is_dir():
        return "files"
    return "column" if fed.partition_col else "columns"


def client_names(cfg: RunConfig) -> list[str]:
    """The clients, in order (a client's partition id is its place in this list). Reads the
    file's header, the partition column or the folder's listing: never a client's values."""
    cfg = _checked(cfg)
    kind = layout(cfg)
    if kind == "files":
        found = [p.stem for p in _client_files(cfg)]
    elif kind == "column":
        col = cfg.federated.partition_col
        header = _read(cfg, nrows=0)
        if col not in header.columns:
            raise DataError(
                f"{cfg.data.path}: no column {col!r} (federated.partition_col); columns: "
                f"{', '.join(map(str, header.columns))}"
            )
        found = sorted(map(str, _read(cfg, columns=[col])[col].dropna().unique()))
    else:
        found = _value_columns(cfg, _read(cfg, nrows=0))
    return _select(cfg, found)


def _value_columns(cfg: RunConfig, frame: pd.DataFrame) -> list[str]:
    """A wide file's columns besides time and covariates: one client each."""
    skip = {cfg.data.time_col, *(cfg.data.covariates or ()), *cfg.data.past_covariates}
    return [str(c) for c in frame.columns if c not in skip]


def client_table(cfg: RunConfig, name: str) -> tuple[RunConfig, RawTable]:
    """The client's config (its target named) and its rows, the last ``federated.last`` kept."""
    cfg = _checked(cfg)
    kind = layout(cfg)
    origin = f"{cfg.data.path} [client {name}]"
    if kind == "files":
        path = next((p for p in _client_files(cfg) if p.stem == name), None)
        if path is None:
            raise DataError(f"{cfg.data.path}: no file for client {name!r}")
        source = "parquet" if path.suffix == ".parquet" else "csv"
        frame = load_table(replace(cfg, data={"source": source, "path": str(path)}).data).frame
        target = _file_target(cfg, frame, path)
        origin = str(path)
    elif kind == "column":
        frame = _read(cfg)
        col = cfg.federated.partition_col
        frame = frame[frame[col].astype(str) == name].drop(columns=[col])
        target = cfg.data.target or ""
        if not target:
            raise ConfigError("federated.partition=column needs data.target (the value column)")
    else:
        frame = _read(cfg)
        if name in frame.columns:  # a wide file: this client's column
            others = [c for c in _value_columns(cfg, frame) if c != name]
            frame = frame.drop(columns=others)
            target = name
        else:  # a deployed client's own file: its one series, whatever its column is named
            target = _file_target(cfg, frame, Path(str(cfg.data.path)))
            origin = f"{cfg.data.path} [client {name}]"
    if frame.empty:
        raise DataError(f"{origin}: client {name!r} has no rows")
    client = replace(cfg, data={"target": target, "multivariate": False})
    if name in cfg.federated.bounds:  # this client's public ranges over the shared ones
        client = replace(client, data={"bounds": {**cfg.data.bounds, **cfg.federated.bounds[name]}})
    frame = _last(frame, client, origin)
    return client, RawTable(frame.reset_index(drop=True), origin)


def client_data(cfg: RunConfig, name: str) -> tuple[RunConfig, ForecastData]:
    """The client's resolved config and windows: its own split and its own scaler."""
    client, table = client_table(cfg, name)
    data_cfg = resolve(client.data)
    frame, report = clean_frame(table, data_cfg)
    try:
        data = build_forecast_data(frame, data_cfg, report)
    except DataError as e:
        if "data.scaler=bounds" not in str(e):
            raise
        raise DataError(
            f"{e} In a federation each client can have its own: "
            f"federated.bounds.{name}.<column>=[low, high]"
        ) from None
    return replace(client, data=data.config), data


def _checked(cfg: RunConfig) -> RunConfig:
    task = TASKS.get(cfg.task)
    if not task.federated:
        raise ConfigError(f"greentune federate trains forecasters, not task: {cfg.task}")
    check_select_on(task, cfg)
    if cfg.train.select_on != "loss":
        raise ConfigError(
            f"greentune federate keeps the round with the lowest pooled validation loss, not "
            f"train.select_on={cfg.train.select_on}: set train.select_on=loss"
        )
    if cfg.eval.metric not in (None, "mape"):
        raise ConfigError(
            f"greentune federate pools and compares its rows by MAPE, not eval.metric="
            f"{cfg.eval.metric}: leave eval.metric out"
        )
    if cfg.data.source not in ("csv", "parquet"):
        raise ConfigError(
            f"greentune federate reads clients from data.path (data.source csv or parquet), "
            f"not data.source={cfg.data.source}"
        )
    if not cfg.data.path:
        raise ConfigError("greentune federate needs data.path: a file or a folder of files")
    if not cfg.data.time_col:
        raise ConfigError("greentune federate needs data.time_col (the time column's name)")
    if cfg.data.series_col:
        raise ConfigError(
            f"greentune federate trains every series of a long file, one client each: name its "
            f"column with federated.partition_col={cfg.data.series_col} (--partition-col), not "
            "data.series_col, which picks one series for greentune run"
        )
    if not Path(cfg.data.path).expanduser().exists():
        raise DataError(f"{cfg.data.path}: file or folder not found")
    return cfg


def _client_files(cfg: RunConfig) -> list[Path]:
    folder = Path(str(cfg.data.path)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"federated.partition=files needs data.path to be a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no .csv or .parquet file (one per client)")
    return files


def _read(cfg: RunConfig, **kwargs: object) -> pd.DataFrame:
    path = Path(str(cfg.data.path)).expanduser()
    try:
        if path.suffix == ".parquet":
            cols = kwargs.get("columns")
            frame = pd.read_parquet(path, columns=cols)  # type: ignore[arg-type]
            return frame.head(0) if kwargs.get("nrows") == 0 else frame
        usecols = kwargs.get("columns")
        return pd.read_csv(path, usecols=usecols, nrows=kwargs.get("nrows"))  # type: ignore[arg-type]
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def _file_target(cfg: RunConfig, frame: pd.DataFrame, path: Path) -> str:
    """The target column of one client's file: data.target when the file has it, else its one
    column besides time and covariates (PJM's files each name theirs: AEP_MW, COMED_MW...)."""
    if cfg.data.target and cfg.data.target in frame.columns:
        return cfg.data.target
    skip = {cfg.data.time_col, *(cfg.data.covariates or ()), *cfg.data.past_covariates}
    rest = [str(c) for c in frame.columns if c not in skip]
    if len(rest) != 1:
        raise DataError(
            f"{path}: cannot tell the target column among {', '.join(rest)}; set data.target"
        )
    return rest[0]


def _select(cfg: RunConfig, found: list[str]) -> list[str]:
    wanted = list(cfg.federated.clients)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ConfigError(
            f"federated.clients: no client {', '.join(missing)} in {cfg.data.path}; "
            f"there are: {', '.join(found)}"
        )
    names = wanted or found
    if len(names) < 2:
        raise DataError(
            f"{cfg.data.path}: federated training needs at least 2 clients, found "
            f"{len(names)} ({', '.join(names) or 'none'})"
        )
    return names


def _last(frame: pd.DataFrame, cfg: RunConfig, origin: str) -> pd.DataFrame:
    """The rows of the last ``federated.last`` period (by the time column)."""
    if not cfg.federated.last:
        return frame
    time_col = str(cfg.data.time_col)
    if time_col not in frame.columns:
        raise DataError(f"{origin}: no time column {time_col!r} (data.time_col)")
    try:
        span = pd.Timedelta(cfg.federated.last)
    except ValueError:
        raise ConfigError(
            f"federated.last={cfg.federated.last!r} is not a period (e.g. 400D, 12W)"
        ) from None
    try:  # as data.validate parses it: the format inferred from the first row
        times = pd.to_datetime(frame[time_col])
    except (ValueError, TypeError):
        times = pd.to_datetime(frame[time_col], utc=True, errors="coerce")
    return frame[(times > times.max() - span).to_numpy()]


def ridge_start(cfg: RunConfig) -> bool:
    """Whether the skip path starts at a ridge fitted on the clients' rows."""
    return cfg.model.linear_skip and cfg.model.skip_init == "ridge"


def skip_start(cfg: RunConfig) -> str:
    """The skip path's start, in words for a message."""
    return cfg.model.skip_init if cfg.model.linear_skip else "no skip path"


def federation_config(cfg: RunConfig) -> RunConfig:
    """The config a federation runs (server and clients alike). Under ``privacy.dp`` it makes
    ``greentune run``'s private choices: the scaler maps public ranges (``data.bounds``, per
    client ``federated.bounds``) instead of each client's training statistics, and the skip path
    starts at the seasonal naive instead of a ridge of the clients' rows, whose sums would
    otherwise travel outside DP-SGD's guarantee. ``federated.personal_skip`` left unset is
    decided here: on over a ridge start outside DP. Idempotent: a client applies it to what
    the server sent."""
    from greentune.privacy.dp import private_config

    cfg = private_config(TASKS.get(cfg.task), cfg)
    if cfg.federated.personal_skip is None:
        mine = ridge_start(cfg) and not cfg.privacy.dp.enabled
        cfg = replace(cfg, federated={"personal_skip": mine})
    check_model(cfg)
    return cfg


def federation_notes(cfg: RunConfig) -> list[str]:
    """What ``privacy.dp`` changed in a federation, in words (the log, metrics.json)."""
    from greentune.privacy.dp import privacy_notes

    notes = privacy_notes(TASKS.get(cfg.task), cfg)
    if notes and cfg.federated.references:
        refs = " and ".join(cfg.federated.references)
        notes.append(
            f"the {refs} reference rows are trained on the raw rows without DP: non-private "
            "references, as greentune run's baselines (federated.references=[] leaves them out)"
        )
    return notes


def check_model(cfg: RunConfig) -> None:
    """What a federation can train: the patch encoder, with a skip start the clients can
    share (a LightGBM base would have to be fitted on pooled raw data)."""
    if cfg.model.encoder != "patch":
        raise ConfigError("greentune federate trains the patch encoder: set model.encoder=patch")
    if cfg.model.linear_skip and cfg.model.skip_init == "lightgbm":
        raise ConfigError(
            "model.skip_init=lightgbm cannot be federated (LightGBM would need the pooled raw "
            "data); use skip_init=ridge, which is fitted from the clients' summed statistics"
        )
    if cfg.federated.personal_skip and cfg.privacy.dp.enabled:
        raise ConfigError(
            "federated.personal_skip fits each client's own ridge on its training rows, outside "
            "DP-SGD's guarantee: under privacy.dp set federated.personal_skip=false"
        )
    if cfg.federated.personal_skip and not ridge_start(cfg):
        raise ConfigError(
            "federated.personal_skip blends each client's own ridge with the federated one: it "
            f"needs model.linear_skip=true and model.skip_init=ridge, not {skip_start(cfg)}; "
            "set federated.personal_skip=false"
        )
    if cfg.train.ema_decay > 0:
        raise ConfigError(
            "train.ema_decay averages one network's weights over its own steps; a federated "
            "client trains a few steps per round from the global model: leave it at 0 for "
            "greentune federate"
        )
    check_layer_lr_decay(cfg)
    if cfg.regularize.enabled or cfg.augment.active((*SERIES_AUGMENTS, *TEXT_AUGMENTS)):
        raise ConfigError(
            "augment and regularize are not federated yet (a client trains with the plain "
            "objective): leave them off for greentune federate"
        )
