"""The device's Ed25519 verifier agrees with `cryptography` on valid and forged signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrument_ai.convert.signing import SigningError, generate_keypair, sign
from instrument_ai.device import ed25519


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    private = tmp_path_factory.mktemp("keys") / "k.key"
    _, public_hex = generate_keypair(private)
    return private, bytes.fromhex(public_hex)


def test_pure_python_verifier_accepts_valid_and_rejects_forged(keypair: tuple[Path, bytes]) -> None:
    private, public = keypair
    message = b"bundle sha256 and metadata"
    signature, signer = sign(private, message)
    assert signer == public
    assert ed25519._verify_pure(public, message, signature)
    assert not ed25519._verify_pure(public, message + b"!", signature)
    flipped = bytearray(signature)
    flipped[10] ^= 1
    assert not ed25519._verify_pure(public, message, bytes(flipped))
    other_private = private.with_name("other.key")
    _, other_hex = generate_keypair(other_private)
    assert not ed25519._verify_pure(bytes.fromhex(other_hex), message, signature)
    assert not ed25519._verify_pure(public[:31], message, signature)
    assert not ed25519._verify_pure(public, message, signature[:63])


@settings(max_examples=15, deadline=None)
@given(message=st.binary(max_size=300), corrupt=st.integers(min_value=0, max_value=63))
def test_pure_python_matches_cryptography(keypair: tuple[Path, bytes], message: bytes, corrupt: int) -> None:
    private, public = keypair
    signature, _ = sign(private, message)
    assert ed25519._verify_pure(public, message, signature) is True
    assert ed25519.verify(public, message, signature) is True
    bad = bytearray(signature)
    bad[corrupt] ^= 0x40
    assert ed25519._verify_pure(public, message, bytes(bad)) == ed25519.verify(public, message, bytes(bad)) is False


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    generate_keypair(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(SigningError, match="exists"):
        generate_keypair(key)


def test_load_public_key_from_hex_or_file(tmp_path: Path, keypair: tuple[Path, bytes]) -> None:
    private, public = keypair
    assert ed25519.load_public_key(public.hex()) == public
    assert ed25519.load_public_key(str(private.with_suffix(".key.pub"))) == public
    with pytest.raises(ValueError, match="not 64 hex"):
        ed25519.load_public_key("zz")
