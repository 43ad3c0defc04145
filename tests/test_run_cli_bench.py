"""`instrument-ai bench runtime` with the tiny bundle: every section is measured and reported."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from livehelp import demo_hops

from instrument_ai.device.bench_runtime import float_companion, format_runtime_report, run_runtime_benchmark
from instrument_ai.device.cli import cli


def test_runtime_benchmark_measures_every_section(tiny_bundle_path: Path, tmp_path: Path) -> None:
    float_copy = tmp_path / "tiny-float.tflite"
    float_copy.write_bytes(tiny_bundle_path.read_bytes())
    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_bundle_path.read_bytes())
    assert float_companion(model) == float_copy
    report = run_runtime_benchmark(model, repeats=10, threads=2, process_runs=1, compare_tensorflow=False)
    interpreter = report["interpreter"]
    assert [(e["model"], e["threads"]) for e in interpreter] == [
        (str(model), 1),
        (str(model), 2),
        (str(float_copy), 1),
        (str(float_copy), 2),
    ]
    assert all(
        0 < e["invoke_ms"]["median"] <= e["invoke_ms"]["p99"] and e["predict_ms"]["n"] == 10 for e in interpreter
    )
    rates = [(e["input_rate"], e["hops"]) for e in report["end_to_end"]]
    assert rates[0] == (16000, demo_hops()) and rates[1][0] == 48000 and rates[1][1] >= demo_hops() - 1
    assert all(0 < e["real_time_factor"] < 1 for e in report["end_to_end"])
    latency = report["decision_latency"]
    assert len(latency["notes"]) == 8 and all(r["first_latency_s"] is not None for r in latency["notes"])
    process = report["process"]
    assert process["heavy_modules"] == [] and process["hops"] == demo_hops()
    assert process["runtime"].startswith("ai-edge-litert")
    assert 20 < process["peak_rss_mb"] < 1000 and process["process_to_first_hop_s"] > 0
    assert report["bundle_load"]["golden_vectors"] == 3
    assert {"hop_median_ms", "hop_p99_ms", "rss_mb", "startup_s", "no_heavy_imports"} <= set(report["verdicts"])
    head = report["personal_head"]  # the enrolment head's cost beside the plain engine
    assert head["families"] and head["prototypes"] >= 2 and 0 < head["adjust_ms"]["median"] <= head["adjust_ms"]["p99"]
    assert head["plain_sounding_hop_ms"]["n"] == head["personal_sounding_hop_ms"]["n"] > 0
    text = format_runtime_report(report)
    assert "interpreter per 1 s window" in text and "end to end per 0.25 s hop" in text and "peak RSS" in text
    assert "head alone per sounding hop" in text and "end to end, with the head" in text


def test_bench_runtime_cli_json_and_missing_model(tiny_bundle_path: Path, tmp_path: Path) -> None:
    args = ["bench", "runtime", "--json", "--repeats", "5", "--process-runs", "0", "--no-tensorflow"]
    result = CliRunner().invoke(cli, [*args, "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["benchmark"] == "runtime" and report["repeats"] == 5
    assert "float_model" in report["unavailable"] and "process" in report["unavailable"]
    assert report["end_to_end"][0]["hops"] == demo_hops()
    result = CliRunner().invoke(cli, [*args, "--model", str(tmp_path / "none.tflite")])
    assert result.exit_code == 1 and "no such bundle" in result.output
