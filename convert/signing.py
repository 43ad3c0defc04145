"""Ed25519 keys and signatures for bundles (training side; needs `cryptography`).

The device verifies with `instrument_ai.device.ed25519`, which needs nothing
compiled. The private key never leaves the machine that makes bundles.
"""

from __future__ import annotations

import os
from pathlib import Path

from instrument_ai.device.errors import InstrumentAIError


class SigningError(InstrumentAIError, RuntimeError):
    """A key that cannot be used, or no `cryptography` to use it with; one line for the user."""


def _require_cryptography() -> None:
    """SigningError naming the extra when `cryptography` is missing (a `[device]`-only install lacks it)."""
    try:
        import cryptography  # noqa: F401 - only whether it imports
    except ImportError:
        raise SigningError(
            "signing keys need the 'cryptography' package, which the [device] extra does not install: "
            "pip install 'instrument-ai[train]' (or pip install cryptography)"
        ) from None


def generate_keypair(private_path: Path, *, force: bool = False) -> tuple[Path, str]:
    """Write a new private key (PEM, mode 0600) and `<name>.pub` (hex); return (pub path, hex)."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_suffix(private_path.suffix + ".pub")
    if not force and (private_path.exists() or public_path.exists()):
        raise SigningError(f"{private_path}: key exists (use --force to replace it)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_hex = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    public_path.write_text(public_hex + "\n")
    return public_path, public_hex


def load_private_key(path: Path):  # -> Ed25519PrivateKey
    """Read a PEM private key written by `generate_keypair`."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningError(f"{path}: no such key file") from None
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an ed25519 key")
    return key


def sign(private_path: Path, message: bytes) -> tuple[bytes, bytes]:
    """Return (signature, raw public key) for `message`."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(private_path)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key.sign(message), public
