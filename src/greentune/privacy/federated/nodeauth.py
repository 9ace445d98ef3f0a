"""Node authentication for a deployed federation: which clients' keys may join.

Flower 1.42's SuperLink, started with ``--enable-supernode-auth`` (TLS only), lets a SuperNode
join only when its public key was registered through the Control API beforehand; an
unregistered one is refused at once (it does not retry). ``greentune federate server
--node-auth --node-key a.pub ...`` registers the given keys as soon as its SuperLink listens,
before it says it is waiting for clients; keys can also be registered by hand with
``flwr supernode register``. Keys are elliptic-curve (NIST) key pairs in OpenSSH format, as
``ssh-keygen -t ecdsa -b 384 -N "" -f client_a`` writes them (``client_a``, ``client_a.pub``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from greentune.errors import ConfigError, GreentuneError

REFUSED = ("[code: 2004]", "[code: 2001]")
"""What a SuperNode's log says when the SuperLink refuses its key (unregistered, or none)."""


def public_key(path: Path) -> Any:
    """An OpenSSH elliptic-curve public key, or a ConfigError naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _load(path, "public", "an OpenSSH public key", serialization.load_ssh_public_key)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            f"{path}: a {type(key).__name__.removeprefix('_')} key; Flower's node "
            "authentication takes elliptic-curve keys (ssh-keygen -t ecdsa -b 384)"
        )
    return key


def check_private_key(path: Path) -> None:
    """The client's key file as Flower's SuperNode reads it (OpenSSH, elliptic curve,
    unencrypted), checked before the SuperNode starts so that the error names the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def unencrypted(data: bytes) -> Any:
        return serialization.load_ssh_private_key(data, None)

    key = _load(path, "private", "an unencrypted OpenSSH private key", unencrypted)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"{path}: Flower's node authentication takes elliptic-curve keys "
            "(ssh-keygen -t ecdsa -b 384)"
        )


def check_public_keys(paths: Sequence[Path]) -> list[bytes]:
    """Each key file loaded and told apart (a key given twice would be refused by the
    SuperLink half-way through); returns them as the PEM the Control API takes."""
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    seen: dict[bytes, Path] = {}
    for path in paths:
        pem = public_key_to_bytes(public_key(path))
        if pem in seen:
            raise ConfigError(f"{path}: the same key as {seen[pem]}; each client needs its own")
        seen[pem] = path
    return list(seen)


def register(
    address: str, ca_certfile: str, keys: Sequence[Path], log: Callable[[str], None]
) -> list[int]:
    """Register ``keys`` with the SuperLink at ``address`` (TLS, trusting ``ca_certfile``);
    returns the node ids it gave them."""
    import httpx
    from flwr.proto.control_pb2 import RegisterNodeRequest
    from flwr.supercore.control import ControlHttpClient

    pems = check_public_keys(keys)
    ids = []
    with ControlHttpClient.from_server_address(
        address, insecure=False, root_certificates=ca_certfile, interceptors=[]
    ) as control:
        for path, pem in zip(keys, pems, strict=True):
            try:
                reply = control.RegisterNode(RegisterNodeRequest(public_key=pem, name=path.stem))
            except httpx.HTTPError as err:
                raise GreentuneError(f"registering the client key {path} failed: {err}") from None
            ids.append(int(reply.node_id))
    log(f"federate: {len(ids)} client key(s) registered: {', '.join(p.name for p in keys)}")
    return ids


def refused(log_text: str) -> bool:
    """Whether a SuperNode's log ends in the SuperLink refusing its key."""
    return any(code in log_text for code in REFUSED)


def _load(path: Path, kind: str, what: str, loader: Callable[[bytes], Any]) -> Any:
    """``loader`` on the ``kind`` (public or private) key file's bytes; a ConfigError naming
    the file and the fix."""
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} key file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the key ({err.strerror})") from None
    try:
        return loader(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError(
            f"{path}: not {what} ({err}); write one with "
            f'`ssh-keygen -t ecdsa -b 384 -N "" -f NAME` and give '
            + ("NAME.pub" if kind == "public" else "NAME")
        ) from None
