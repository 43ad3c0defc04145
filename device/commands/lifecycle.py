"""`instrument-ai flash`, `models` and `rollback`: the model directory of one or many devices."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import click

from instrument_ai.device import lifecycle
from instrument_ai.device.remote import FlashResult, flash_remote, parse_target, read_hosts_file


def _verifier(trusted_key: str | None) -> lifecycle.Verifier:
    return lambda path: lifecycle.verify_bundle(path, trusted_key=trusted_key)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "targets", multiple=True, help="Model directory, local DIR or [user@]host:DIR; repeatable.")
@click.option("--hosts", "hosts_file", type=click.Path(path_type=Path), help="File with one target per line.")
@click.option("--keep", default=lifecycle.DEFAULT_KEEP, show_default=True, help="Versions to keep per device.")
@click.option("--dry-run", is_flag=True, help="Verify and say what would be done, change nothing.")
@click.option("--trusted-key", help="Refuse bundles not signed by this ed25519 public key (hex or file).")
@click.option("--remote-command", default="instrument-ai", show_default=True, help="The CLI on the devices.")
@click.option(
    "--remove-source", is_flag=True, hidden=True, help="Delete BUNDLE when done, whatever the outcome (remote use)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-device results as JSON.")
def flash(
    bundle: Path,
    targets: tuple[str, ...],
    hosts_file: Path | None,
    keep: int,
    dry_run: bool,
    trusted_key: str | None,
    remote_command: str,
    remove_source: bool,
    as_json: bool,
) -> None:
    """Verify BUNDLE, then install it atomically on every target and make it current.

    Exit status: 0 when every device took the bundle, 1 when the bundle itself
    was refused (nothing changed anywhere), 3 when some devices failed.
    """
    destinations = list(targets)
    if hosts_file is not None:
        try:
            destinations += read_hosts_file(hosts_file)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if not destinations:
        raise click.UsageError("give at least one --to DIR, --to host:DIR or --hosts FILE")
    if keep < 1:
        raise click.UsageError("--keep must be at least 1")
    try:
        if trusted_key is not None:
            lifecycle.trusted_key_hex(trusted_key)  # a bad key is configuration: exit 2, as `run` does
        results = _flash_all(bundle, destinations, keep, dry_run, trusted_key, remote_command)
    finally:
        if remove_source and not dry_run:  # the device's own upload: never left behind, whatever happened
            bundle.unlink(missing_ok=True)
    _print_results(results, as_json)
    if any(r.status not in ("ok", "dry-run") for r in results):
        raise SystemExit(3)


def _flash_all(
    bundle: Path,
    destinations: list[str],
    keep: int,
    dry_run: bool,
    trusted_key: str | None,
    remote_command: str,
) -> list[FlashResult]:
    lifecycle.check_bundle_file(bundle)
    metadata = lifecycle.verify_bundle(bundle, trusted_key=trusted_key)
    try:
        parsed = [parse_target(spec) for spec in destinations]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    results: list[FlashResult] = []
    for spec, target in zip(destinations, parsed, strict=True):
        if target.is_remote:
            results.append(
                flash_remote(
                    bundle,
                    target,
                    keep=keep,
                    remote_command=remote_command,
                    trusted_key=trusted_key,
                    dry_run=dry_run,
                )
            )
            continue
        try:
            entry = lifecycle.install(
                bundle, Path(target.directory), keep=keep, verifier=lambda _p: metadata, dry_run=dry_run
            )
            status = "dry-run" if dry_run else "ok"
            results.append(FlashResult(spec, status, f"{entry.name} {entry.version} -> {entry.file}"))
        except lifecycle.LifecycleError as exc:
            results.append(FlashResult(spec, "refused", str(exc)))
        except OSError as exc:
            where = exc.filename or target.directory
            results.append(FlashResult(spec, "refused", f"{where}: {exc.strerror or exc}"))
    return results


def _print_results(results: list[FlashResult], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results]))
        return
    width = max(len(r.target) for r in results)
    for r in results:
        click.echo(f"{r.target:<{width}}  {r.status:<11}  {r.detail}")


@click.command()
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path), help="Model directory.")
@click.option("--json", "as_json", is_flag=True)
def models(directory: Path, as_json: bool) -> None:
    """List the bundles installed in a model directory (oldest first, * = current)."""
    if not directory.is_dir():
        raise click.ClickException(f"{directory}: no such model directory")
    lifecycle.repair_if_possible(directory)
    rows = lifecycle.list_installed(directory)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"{directory}: no models installed")
        return
    for row in rows:
        when = _dt.datetime.fromtimestamp(row["installed_at"]).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if row["current"] else " "
        size = f"{row['size'] / 1024:.0f} KB" if row["size"] is not None else "missing"
        click.echo(f"{mark} {row['name']:<16} {row['version']:<10} {when}  {size:>8}  {row['file']}")


@click.command()
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path), help="Model directory.")
@click.option("--trusted-key", help="Refuse to roll back to a bundle not signed by this key.")
def rollback(directory: Path, trusted_key: str | None) -> None:
    """Point the model directory's current.tflite back one version."""
    if trusted_key is not None:
        lifecycle.trusted_key_hex(trusted_key)  # a bad key is configuration: exit 2, as `run` does
    if not directory.is_dir():
        raise click.ClickException(f"{directory}: no such model directory")
    old, new = lifecycle.rollback(directory, verifier=_verifier(trusted_key))
    click.echo(f"rolled back: {old.name} {old.version} -> {new.name} {new.version} ({new.file})")
