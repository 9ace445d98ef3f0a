"""Node authentication's key handling (greentune.privacy.federated.nodeauth) and the CLI's
refusals; a deployment with registered and unregistered clients is in
tests/integration/test_federate.py (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from greentune.cli import app, federate  # noqa: F401
from greentune.errors import ConfigError
from greentune.privacy.federated import deploy
from greentune.privacy.federated.nodeauth import (
    check_private_key,
    check_public_keys,
    public_key,
    refused,
)
from tests.integration.test_federate import _node_keys

# what Flower 1.42's SuperNode logs when the SuperLink refuses it (flwr_exit 305)
UNREGISTERED = (
    "ERROR :   Exit Code: 305\nFailed to initialize the connection to the SuperLink.\n"
    "[code: 2004] Failed to activate SuperNode.\n"
)
KEYLESS = "[code: 2001] SuperNode authentication is enabled. All SuperNodes must be registered"


def _rsa(folder: Path) -> tuple[Path, Path]:
    return _node_keys(folder, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_keys_are_read_as_flower_reads_them(tmp_path: Path) -> None:
    private, public = _node_keys(tmp_path, "a")
    check_private_key(private)
    assert isinstance(public_key(public), ec.EllipticCurvePublicKey)
    pems = check_public_keys([public, _node_keys(tmp_path, "b")[1]])
    assert len(pems) == 2 and all(p.startswith(b"-----BEGIN PUBLIC KEY-----") for p in pems)


def test_bad_keys_name_the_file_and_the_fix(tmp_path: Path) -> None:
    private, public = _node_keys(tmp_path, "a")
    with pytest.raises(ConfigError, match=r"missing\.pub: public key file not found"):
        public_key(tmp_path / "missing.pub")
    with pytest.raises(ConfigError, match=r"a: not an OpenSSH public key .*`ssh-keygen -t ecdsa"):
        public_key(private)  # the private half given where the public one belongs
    rsa_private, rsa_public = _rsa(tmp_path)
    with pytest.raises(ConfigError, match=r"rsa\.pub: a RSAPublicKey key; .* elliptic-curve"):
        public_key(rsa_public)
    with pytest.raises(ConfigError, match=r"rsa: Flower's node authentication takes elliptic"):
        check_private_key(rsa_private)
    with pytest.raises(ConfigError, match=r"a\.pub: not an unencrypted OpenSSH private key"):
        check_private_key(public)
    copy = tmp_path / "copy.pub"
    copy.write_bytes(public.read_bytes())
    with pytest.raises(ConfigError, match=r"copy\.pub: the same key as .*a\.pub; each client"):
        check_public_keys([public, copy])


def test_a_refused_supernode_becomes_a_clear_error(tmp_path: Path) -> None:
    assert refused(UNREGISTERED) and refused(KEYLESS)
    assert not refused("INFO : Connection attempt failed, retrying in 2.1 seconds")
    key = tmp_path / "client_a"
    deploy._check_refused("INFO : round 1", key)  # another failure: left to the exit code
    with pytest.raises(ConfigError, match=r"refused this client's key .*client_a: .* --node-key"):
        deploy._check_refused(UNREGISTERED, key)
    with pytest.raises(ConfigError, match="start this client with --auth-key PRIVATE_KEY"):
        deploy._check_refused(KEYLESS, None)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["server", "--expect", "3", "--insecure", "--node-auth"],
            "--node-auth needs TLS (Flower authenticates nodes over TLS only)",
        ),
        (
            ["server", "--expect", "3", "--insecure", "--node-key", "a.pub"],
            "--node-key registers keys for node authentication: add --node-auth",
        ),
        (
            ["client", "--partition", "a", "--server", "h:1", "--insecure", "--auth-key", "k"],
            "--auth-key needs TLS",
        ),
    ],
)
def test_the_cli_refuses_node_auth_without_tls(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["federate", *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_tls_files_travel_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower's connection config (read by the server's `flwr run`) refuses a relative CA."""
    monkeypatch.chdir(tmp_path)
    for name in ("ca.pem", "server.pem"):
        (tmp_path / name).write_text("x")
    args = deploy.tls_args(False, {"ssl-ca-certfile": "ca.pem", "ssl-certfile": "server.pem"})
    assert args == [
        f"--ssl-ca-certfile={tmp_path.resolve() / 'ca.pem'}",
        f"--ssl-certfile={tmp_path.resolve() / 'server.pem'}",
    ]
    assert deploy._root_cert_line(args) == f'root-certificates = "{tmp_path.resolve()}/ca.pem"\n'
    with pytest.raises(ConfigError, match="missing.pem: TLS file not found"):
        deploy.tls_args(False, {"root-certificates": "missing.pem"})
    with pytest.raises(ConfigError, match="--insecure and TLS files do not go together"):
        deploy.tls_args(True, {"root-certificates": "ca.pem"})
