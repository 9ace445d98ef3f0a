"""``ServeSettings``: everything ``greentune serve`` is told, checked once, passed to every
worker process as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greentune.errors import ConfigError

SETTINGS_ENV = "GREENTUNE_SERVE_SETTINGS"
"""Worker processes (``--workers N``) read their settings from this variable."""
KEYS_ENV = "GREENTUNE_SERVE_KEYS"


def default_keys_file() -> Path:
    """``$GREENTUNE_SERVE_KEYS``, else ``$XDG_CONFIG_HOME/greentune/serve-keys.json``."""
    if os.environ.get(KEYS_ENV):
        return Path(os.environ[KEYS_ENV])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "greentune" / "serve-keys.json"


@dataclass(frozen=True)
class ServeSettings:
    """How one service runs. Limits are per worker process."""

    run: str
    """The run directory whose model is served."""
    variant: str | None = None
    """None/fp32: the run's model; else a compressed variant (int8-dynamic, onnx-int8, NAME)."""
    row: str | None = None
    """A forecasting run's kept row to serve instead of its network (a baseline, an ensemble,
    ``recommended``); None: the network."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    """Processes (uvicorn workers); each loads the model and meters its own energy."""
    keys_file: str | None = None
    """API keys (hashed); None: the default file (see ``default_keys_file``)."""
    auth: bool = True
    """False serves without keys (local tests only): every route is open."""
    max_batch_size: int = 32
    """Predictions (windows or texts) per forward pass; 1 switches batching off."""
    max_wait_ms: float = 5.0
    """How long the first request of a batch waits for others to join it."""
    queue_size: int = 256
    """Requests waiting for the model; beyond it new ones get 503 with Retry-After."""
    timeout_s: float = 30.0
    """A request not answered by then gets 504; it is dropped if it had not run yet."""
    max_body_bytes: int = 2_000_000
    """Larger request bodies get 413."""
    max_items: int = 256
    """Most predictions one request may ask for (texts, or forecast windows); more get 413."""
    rate_per_s: float = 50.0
    """Requests per second per API key (token bucket); beyond it 429 with Retry-After."""
    burst: int = 100
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty: CORS off."""
    mask_inputs: bool = False
    """Also mask personal data in texts before the model sees them (logs are always masked)."""
    mask_patterns: dict[str, str] = field(default_factory=dict)
    """Extra masks, name -> regular expression (e.g. a utility's meter-number format)."""
    log_requests: bool = True
    """One access-log line per request (route, status, latency, key id; never the body)."""
    energy: bool = True
    """Meter every batch and append the service's energy to the run's ledger."""
    ssl_certfile: str | None = None
    """TLS certificate (PEM); with ``ssl_keyfile`` the service speaks HTTPS only."""
    ssl_keyfile: str | None = None
    ledger_wait_s: float = 60.0
    """At shutdown, how long to wait for another command's lock on the run to write the
    ledger; after it the journal stays and the run's next command folds it in."""

    def __post_init__(self) -> None:
        positive = {
            "port": self.port,
            "workers": self.workers,
            "max_batch_size": self.max_batch_size,
            "queue_size": self.queue_size,
            "timeout_s": self.timeout_s,
            "max_body_bytes": self.max_body_bytes,
            "max_items": self.max_items,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"serve {key}={value!r}: must be > 0")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve max_wait_ms={self.max_wait_ms!r}: must be >= 0")
        if self.port > 65535:
            raise ConfigError(f"serve port={self.port}: must be 1..65535")
        for name, pattern in self.mask_patterns.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
                raise ConfigError(f"mask pattern name {name!r}: use letters, digits, - and _")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"mask pattern {name}={pattern!r}: not a regex ({exc})") from None

        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("TLS needs both --ssl-certfile and --ssl-keyfile")
        for tls in (self.ssl_certfile, self.ssl_keyfile):
            if tls and not Path(tls).is_file():
                raise ConfigError(f"{tls}: no such file (a PEM certificate or key for TLS)")

    @property
    def keys_path(self) -> Path:
        return Path(self.keys_file) if self.keys_file else default_keys_file()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        raw: dict[str, Any] = json.loads(text)
        raw["cors_origins"] = tuple(raw.get("cors_origins") or ())
        return cls(**raw)
