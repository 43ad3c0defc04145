"""`instrument-ai keygen`: make the ed25519 key pair that signs bundles."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("instrument-ai.key"), show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key.")
def keygen(out: Path, force: bool) -> None:
    """Write a private key (keep it secret) and OUT.pub, the public key devices trust (--trusted-key)."""
    from instrument_ai.convert.signing import generate_keypair

    public_path, public_hex = generate_keypair(out, force=force)
    click.echo(f"private key: {out} (mode 0600, never copy it to a device)")
    click.echo(f"public key:  {public_path}  {public_hex}")
