"""API keys: stored only as salted scrypt hashes (``hashlib.scrypt``, RFC 7914), each with its
scopes; checked in constant time.

A key reads ``gt_<id>_<secret>``: the id finds its record without trying every hash, the secret
is what is hashed. A verified key is remembered (by a SHA-256 of the whole key) so only its first
request pays the KDF; the memory is dropped whenever the file changes, so a revoked key stops
working within ``RECHECK_S``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greentune.errors import CheckpointError, ConfigError
from greentune.io import write_json

if TYPE_CHECKING:
    from greentune.serve.settings import ServeSettings

SCOPES = ("forecast", "classify", "admin")
KDF = {"name": "scrypt", "n": 2**14, "r": 8, "p": 1, "dklen": 32}
RECHECK_S = 1.0
SCHEMA_VERSION = 1


@dataclass
class KeyRecord:
    """One key as stored: never the key itself."""

    id: str
    name: str
    scopes: list[str]
    salt: str
    hash: str
    created: str
    kdf: dict[str, Any] = field(default_factory=lambda: dict(KDF))
    revoked: str | None = None

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows."""
        return {k: v for k, v in asdict(self).items() if k not in ("salt", "hash", "kdf")}


def _derive(secret: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    return hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
        dklen=int(kdf["dklen"]),
        maxmem=256 * 1024 * 1024,
    )


def _parse(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "gt" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    """The key file: ``add`` / ``revoke`` / ``records`` for the CLI, ``verify`` for the app."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._verified: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -1e18
        self._load()

    # ------------------------------------------------------------------ file

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> None:
        stamp = self._file_stamp()
        records: dict[str, KeyRecord] = {}
        if stamp is not None:
            try:
                raw = json.loads(self.path.read_text())
                for i, row in enumerate(raw["keys"]):
                    try:
                        rec = KeyRecord(**row)
                    except TypeError as exc:
                        raise ConfigError(
                            f"{self.path}: key {i + 1} is not a greentune key record ({exc}); "
                            "remove it or re-create the file with greentune serve keys add"
                        ) from None
                    records[rec.id] = rec
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{self.path}: not a greentune key file ({exc}); move it aside and add "
                    "keys again with greentune serve keys add"
                ) from None
        self._records, self._verified, self._stamp = records, {}, stamp

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RECHECK_S:
            return
        self._checked = now
        if self._file_stamp() != self._stamp:
            self._load()

    def _save(self) -> None:
        rows = [asdict(r) for r in self._records.values()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"schema_version": SCHEMA_VERSION, "keys": rows})
        self.path.chmod(0o600)  # hashes only, but nobody else needs to read them
        self._stamp = self._file_stamp()
        self._verified = {}

    # ------------------------------------------------------------------ CLI

    def add(self, name: str, scopes: list[str]) -> tuple[str, KeyRecord]:
        """A new key with ``scopes``: returns (the key, shown once, and its record)."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ConfigError(
                f"scope {', '.join(bad) or '(none)'}: choose from {', '.join(SCOPES)}"
            )
        with self._lock:
            self._load()
            key_id = secrets.token_hex(4)
            while key_id in self._records:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            record = KeyRecord(
                id=key_id,
                name=name,
                scopes=sorted(set(scopes), key=SCOPES.index),
                salt=salt.hex(),
                hash=_derive(secret, salt, KDF).hex(),
                created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            self._records[key_id] = record
            self._save()
        return f"gt_{key_id}_{secret}", record

    def revoke(self, key_id_or_name: str) -> KeyRecord:
        with self._lock:
            self._load()
            hits = [
                r
                for r in self._records.values()
                if key_id_or_name in (r.id, r.name) and r.revoked is None
            ]
            if len(hits) != 1:
                known = ", ".join(f"{r.id} ({r.name})" for r in self.records(active=True))
                why = "matches several keys; use the id" if hits else "names no active key"
                raise ConfigError(f"{key_id_or_name!r} {why}; active keys: {known or 'none'}")
            hits[0].revoked = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self._save()
        return hits[0]

    def records(self, active: bool = False) -> list[KeyRecord]:
        return [r for r in self._records.values() if not (active and r.revoked)]

    # ------------------------------------------------------------------ app

    def has_keys(self) -> bool:
        self._refresh()
        return any(r.revoked is None for r in self._records.values())

    def verify(self, token: str) -> KeyRecord | None:
        """The key's record when ``token`` is an active key, else None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            self._refresh()
            if digest in self._verified:
                return self._verified[digest]
            parsed = _parse(token)
            record = self._records.get(parsed[0]) if parsed else None
        if parsed is None or record is None or record.revoked:
            return None
        # the KDF (tens of ms) runs outside the lock: other keys' requests do not queue on it
        got = _derive(parsed[1], bytes.fromhex(record.salt), record.kdf)
        if not hmac.compare_digest(got, bytes.fromhex(record.hash)):
            return None
        with self._lock:
            if self._records.get(record.id) is record:  # not revoked meanwhile
                self._verified[digest] = record
        return record


def open_keys(settings: ServeSettings) -> KeyStore | None:
    """The key file; a service with auth and no active key refuses to start (never open by
    accident)."""
    if not settings.auth:
        return None
    keys = KeyStore(settings.keys_path)
    if not keys.has_keys():
        raise CheckpointError(
            f"no API keys in {settings.keys_path}: add one with greentune serve keys add NAME "
            "--scope forecast (or classify, admin), or pass --no-auth for a local test"
        )
    return keys
