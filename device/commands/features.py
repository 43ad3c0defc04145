"""`instrument-ai features`: run the device frontend on a file and summarise the result."""

from __future__ import annotations

import json

import click

from instrument_ai.device.audio_io import demo_path, read_audio
from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec, librosa_preset, mfcc, psf_preset

PRESETS = {"default": lambda: DEFAULT_SPEC, "librosa": librosa_preset, "psf": psf_preset}


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option("--demo", is_flag=True, help="Use the demo recording that ships with the package.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def features(path: str | None, demo: bool, preset: str, as_json: bool) -> None:
    """Compute MFCCs of PATH (mono or downmixed) with the device frontend and print a summary."""
    if demo == (path is not None):
        raise click.UsageError("give exactly one of PATH or --demo")
    source = demo_path() if demo or path is None else path
    spec: FrontendSpec = PRESETS[preset]()
    data, rate = read_audio(source)
    if rate != spec.sample_rate:
        raise click.ClickException(
            f"{source}: sample rate {rate} Hz, the {preset} frontend expects {spec.sample_rate} Hz"
        )
    coefficients = mfcc(data.mean(axis=1), spec)
    summary = {
        "file": str(source),
        "seconds": round(data.shape[0] / rate, 3),
        "preset": preset,
        "shape": list(coefficients.shape),
        "c0_mean": float(coefficients[0].mean()) if coefficients.size else None,
        "mean": [round(float(v), 3) for v in coefficients.mean(axis=1)] if coefficients.size else [],
        "std": [round(float(v), 3) for v in coefficients.std(axis=1)] if coefficients.size else [],
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{summary['file']}: {summary['seconds']} s -> MFCC {coefficients.shape[0]} x {coefficients.shape[1]}")
    if coefficients.size:
        click.echo(f"  frames per second: {rate / spec.hop_length:.1f}; c0 mean {summary['c0_mean']:.1f}")
        click.echo("  coefficient  mean     std")
        for i in range(min(8, coefficients.shape[0])):
            click.echo(f"  c{i:<10d} {summary['mean'][i]:8.2f} {summary['std'][i]:7.2f}")
        click.echo(f"  ({coefficients.shape[0] - min(8, coefficients.shape[0])} more; --json for all)")
