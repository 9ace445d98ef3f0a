"""API keys, rate limits, masking and settings: exact behaviour without a server."""

from __future__ import annotations

import json

import pytest

from greentune.errors import ConfigError
from greentune.serve.keys import KeyStore
from greentune.serve.limits import RateLimiter, retry_after_header
from greentune.serve.masking import Masker
from greentune.serve.settings import ServeSettings


def test_keys_are_stored_hashed_and_verified_with_scopes(tmp_path):
    path = tmp_path / "k" / "keys.json"
    store = KeyStore(path)
    token, rec = store.add("grid-ops", ["forecast", "admin", "forecast"])
    assert rec.scopes == ["forecast", "admin"] and token.startswith(f"gt_{rec.id}_")
    raw = path.read_text()
    assert token.split("_", 2)[2] not in raw and rec.hash in raw  # only the hash is stored
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(raw)["keys"][0]["kdf"]["name"] == "scrypt"
    other = KeyStore(path)  # a server reading the same file
    assert other.verify(token).id == rec.id
    assert other.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert other.verify("not-a-key") is None and other.verify(f"gt_{rec.id}_") is None
    token2, _ = store.add("app", ["classify"])
    assert store.verify(token2).scopes == ["classify"]
    assert [r["name"] for r in (r.public() for r in store.records())] == ["grid-ops", "app"]
    assert "hash" not in store.records()[0].public()


def test_revoked_keys_stop_and_errors_name_what_to_do(tmp_path):
    clock = [0.0]
    store = KeyStore(tmp_path / "keys.json")
    server = KeyStore(tmp_path / "keys.json", clock=lambda: clock[0])
    token, rec = store.add("a", ["classify"])
    clock[0] += 2
    assert server.verify(token) is not None
    store.revoke(rec.id)
    assert server.verify(token) is not None  # within the re-check interval: still cached
    clock[0] += 2
    assert server.verify(token) is None and not server.has_keys()
    with pytest.raises(ConfigError, match="'a' names no active key; active keys: none"):
        store.revoke("a")
    with pytest.raises(ConfigError, match="scope read: choose from forecast, classify, admin"):
        store.add("b", ["read"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad.json: not a greentune key file"):
        KeyStore(tmp_path / "bad.json")


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0  # per key
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"


@pytest.mark.parametrize(
    ("text", "masked", "kinds"),
    [
        ("write to jane.doe@example.com", "write to [EMAIL]", ["email"]),
        ("call +61 3 9876 5432 today", "call [PHONE] today", ["phone"]),
        ("call (03) 9876-5432", "call [PHONE]", ["phone"]),
        ("my meter number 12345678901 is dead", "my [METER] is dead", ["meter"]),
        ("Account no. AC-998877 overcharged", "[ACCOUNT] overcharged", ["account"]),
        ("card 4111 1111 1111 1111", "card [CARD]", ["card"]),
        ("feeder 12 tripped at 14:05, 35 kV", "feeder 12 tripped at 14:05, 35 kV", []),
    ],
)
def test_masks(text, masked, kinds):
    assert Masker().scan(text) == (masked, kinds)


def test_operator_patterns_run_first():
    assert Masker({"nmi": r"\bVIC\d{8}\b"}).scan("NMI VIC12345678") == ("NMI [NMI]", ["nmi"])


def test_settings_are_checked_and_round_trip():
    s = ServeSettings(run="r", cors_origins=("https://a",), mask_patterns={"x": "a+"})
    assert ServeSettings.from_json(s.to_json()) == s
    with pytest.raises(ConfigError, match=r"serve max_batch_size=0: must be > 0"):
        ServeSettings(run="r", max_batch_size=0)
    with pytest.raises(ConfigError, match=r"mask pattern x='\(': not a regex"):
        ServeSettings(run="r", mask_patterns={"x": "("})
    with pytest.raises(ConfigError, match="TLS needs both"):
        ServeSettings(run="r", ssl_certfile="c.pem")
