"""Defects found by trying every command as a new user (issue 15): each one's input now gets the answer it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from instrument_ai.device.cli import cli
from instrument_ai.device.remote import parse_target

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    t = np.arange(16000 * 2) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    return path


@pytest.mark.parametrize("spec", ["nobody@127.0.0.1:", "", ":/tmp/x", "   "])
def test_malformed_flash_target_is_a_usage_error(
    tiny_bundle_path: Path, tmp_path: Path, spec: str, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        parse_target(spec)
    result = CliRunner().invoke(cli, ["flash", str(tiny_bundle_path), "--to", spec])
    assert result.exit_code == 2, result.output
    assert not list(tmp_path.iterdir()), "nothing installed anywhere"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("option", ["--reload-poll", "--stats", "--duration"])
def test_run_float_options_refuse_non_finite(tiny_bundle_path: Path, tone: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--model", str(tiny_bundle_path), "--source", str(tone), "--fast", option, value]
    )
    assert result.exit_code == 2, result.output
    assert "finite" in result.output or "range" in result.output


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_classify_max_seconds_refuses_non_finite(tiny_bundle_path: Path, tone: Path, value: str) -> None:
    result = CliRunner().invoke(cli, ["classify", "--model", str(tiny_bundle_path), "--max-seconds", value, str(tone)])
    assert result.exit_code == 2, result.output


def test_max_seconds_message_says_seconds(tiny_bundle_path: Path, tone: Path) -> None:
    result = CliRunner().invoke(cli, ["classify", "--model", str(tiny_bundle_path), "--max-seconds", "0.5", str(tone)])
    assert result.exit_code == 1
    assert "2.0 s of audio, longer than --max-seconds 0.5 s" in result.output
    assert " h of audio" not in result.output


def test_bad_trusted_key_is_a_configuration_error(tiny_bundle_path: Path, tone: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--model", str(tiny_bundle_path), "--source", str(tone), "--fast", "--trusted-key", "zzzz"]
    )
    assert result.exit_code == 2, result.output
    assert "--trusted-key" in result.output and "Traceback" not in result.output


def test_service_unit_does_not_restart_on_configuration_errors() -> None:
    result = CliRunner().invoke(cli, ["service", "install", "--print"])
    assert result.exit_code == 0, result.output
    assert "RestartPreventExitStatus=2" in result.output


def test_classify_into_a_closed_pipe_stops_cleanly(tiny_bundle_path: Path, tone: Path) -> None:
    files = [str(tone)] * 40
    done = subprocess.run(
        f"{sys.executable} -m instrument_ai.device.cli classify --model {tiny_bundle_path} --timeline "
        + " ".join(files)
        + " | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        executable="/bin/bash",
        timeout=120,
    )
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    check = subprocess.run(
        f"set -o pipefail; {sys.executable} -m instrument_ai.device.cli classify --model {tiny_bundle_path} --timeline "
        + " ".join(files)
        + " | head -1 >/dev/null",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        executable="/bin/bash",
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert "Traceback" not in check.stderr and "Error" not in check.stderr


def test_xnnpack_info_line_is_silent_unless_verbose(tiny_bundle_path: Path, tone: Path) -> None:
    base = [sys.executable, "-m", "instrument_ai.device.cli"]
    args = ["classify", "--model", str(tiny_bundle_path), str(tone)]
    quiet = subprocess.run([*base, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "INFO:" not in quiet.stderr
    loud = subprocess.run([*base, "--verbose", *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert loud.returncode == 0, loud.stderr
    from instrument_ai.device.interpreter import interpreter_class

    if "litert" in interpreter_class()[1].lower():  # the runtime that prints it
        assert "XNNPACK" in loud.stderr


def test_features_refuses_a_truncated_wav_like_classify(tiny_bundle_path: Path, tone: Path, tmp_path: Path) -> None:
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(tone.read_bytes()[:3000])
    for args in (["features", str(trunc)], ["classify", "--model", str(tiny_bundle_path), str(trunc)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output


def _hop(label: str, probs: list[float] | None, i: int) -> Any:
    from instrument_ai.device.engine import Event

    top = [] if probs is None else [(label, max(probs))]
    arr = None if probs is None else np.array(probs, dtype=np.float32)
    return Event(i * 0.1, label, max(probs or [0.0]), top, -20.0, 0.0, 0.0, i, probs=arr)


def test_file_answer_agrees_with_the_timeline() -> None:
    """A loud guitar-like attack then a long keyboard hold: the mean favours guitar, the timeline says keyboard."""
    from instrument_ai.device.file_answer import file_answer

    labels = ["guitar", "keyboard", "flute"]
    hops = [_hop("guitar", [0.99, 0.01, 0.0], 0), _hop("guitar", [0.99, 0.01, 0.0], 1)]
    hops += [_hop("keyboard", [0.45, 0.5, 0.05], i) for i in range(2, 5)]
    hops += [_hop("silence", None, 5)]
    mean = np.mean([h.probs for h in hops if h.probs is not None], axis=0)
    assert labels[int(np.argmax(mean))] == "guitar", "the old answer (mean) disagrees with the timeline"
    answer = file_answer(hops, labels, 3)
    assert answer["label"] == "keyboard"
    assert answer["share"] == pytest.approx(0.6)
    assert answer["top_k"][0]["label"] == "guitar"  # the detail still shows the mean


def test_file_answer_of_silence_and_of_only_unknown() -> None:
    from instrument_ai.device.file_answer import file_answer

    assert file_answer([_hop("silence", None, 0)], ["a"], 3)["label"] == "silence"
    assert file_answer([_hop("unknown", [0.3, 0.3], 0)], ["a", "b"], 3)["label"] == "unknown"


def test_service_unit_quotes_paths_warns_about_hidden_ones_and_links_real_docs() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "service",
            "install",
            "--print",
            "--executable",
            "/home/pi/my venv/bin/instrument-ai",
            "--model-dir",
            "/srv/a b",
        ],
    )
    assert result.exit_code == 0, result.output
    assert 'ExecStart="/home/pi/my venv/bin/instrument-ai" run --source mic --model-dir "/srv/a b"' in result.output
    assert 'ReadWritePaths="/srv/a b"' in result.output
    assert "ProtectHome=yes hides" in result.output  # the warning (stderr, mixed in by CliRunner)
    docs = next(line for line in result.output.splitlines() if line.startswith("Documentation="))
    for link in docs.removeprefix("Documentation=").split():
        assert link.startswith("man:") or Path(link.removeprefix("file://")).is_file(), link
    plain = CliRunner().invoke(cli, ["service", "install", "--print", "--executable", "/opt/ia/bin/instrument-ai"])
    assert "warning" not in plain.output and "ExecStart=/opt/ia/bin/instrument-ai run" in plain.output


@pytest.mark.parametrize("bundle", ["tiny", "shipped"])
def test_no_label_from_padding_alone(tiny_bundle_path: Path, tmp_path: Path, bundle: str) -> None:
    import json

    chosen = tiny_bundle_path if bundle == "tiny" else REPO / "models" / "default.tflite"
    result = CliRunner().invoke(
        cli, ["run", "--model", str(chosen), "--source", "-", "--samplerate", "16000", "--json"], input=b"abc"
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [row["type"] for row in rows] == ["start", "change", "stop"], result.output
    # one loud sample (b"ab"; the odd byte is not a sample) padded to a hop: a sound, but too short to name
    hop = rows[1]
    assert (hop["hop"], hop["time"], hop["label"], hop["confidence"], hop["top_k"]) == (0, 0.25, "unknown", 0.0, [])
    assert hop["level_db"] > -6.0  # loud, so "unknown" comes from the length rule, not from the silence gate
    assert (rows[2]["hops"], rows[2]["reason"]) == (1, "end of source")
    clip = tmp_path / "short.wav"
    t = np.arange(400) / 16000  # 25 ms, under engine.MIN_SOUND_SECONDS
    soundfile.write(clip, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    answer = CliRunner().invoke(cli, ["classify", "--model", str(chosen), "--json", str(clip)])
    assert answer.exit_code == 0, answer.output
    summary = json.loads(answer.output.splitlines()[-1])
    assert (summary["hops"], summary["label"], summary["confidence"], summary["top_k"]) == (1, "unknown", 0.0, [])


def test_inspect_metrics_line_is_whole_json() -> None:
    import json

    from instrument_ai.device.commands.inspect import _metrics_line

    metrics = {f"key{i}": {"accuracy": i / 100, "notes": list(range(5))} for i in range(40)}
    line = _metrics_line(metrics)
    head = line.split(" (+")[0]
    assert json.loads(head) and len(head) <= 300
    assert "more; --json for all" in line
    assert json.loads(_metrics_line({"a": 1})) == {"a": 1}


def test_live_panel_has_no_literal_markup() -> None:
    import io

    from rich.console import Console

    from instrument_ai.device.engine import Event
    from instrument_ai.device.live_view import LiveView

    view = LiveView(io.StringIO())
    event = Event(0.5, "silence", 0.0, [], -80.0, 0.1, 0.0, 1)
    panel = view._render(event, {})
    for console in (Console(file=io.StringIO(), force_terminal=True), Console(file=io.StringIO(), color_system=None)):
        console.print(panel)
        text = console.file.getvalue()
        assert "SILENCE" in text and "[dim]" not in text and "[/]" not in text


def test_messages_name_the_path_once_and_give_the_right_reason(tmp_path: Path, tiny_bundle_path: Path) -> None:
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(tiny_bundle_path.read_bytes()[:2000])
    result = CliRunner().invoke(cli, ["flash", str(trunc), "--to", str(tmp_path / "d")])
    assert result.exit_code == 1 and result.output.count(str(trunc)) == 1, result.output
    adir = tmp_path / "adir.tflite"
    adir.mkdir()
    result = CliRunner().invoke(cli, ["flash", str(adir), "--to", str(tmp_path / "d")])
    assert "is a directory" in result.output, result.output
    result = CliRunner().invoke(cli, ["run", "--model-dir", str(tmp_path / "nosuchdir"), "--source", "demo"])
    assert result.exit_code != 0 and "no such model directory" in result.output, result.output


def test_stdin_at_an_unsupported_samplerate_is_a_configuration_error(tiny_bundle_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--model", str(tiny_bundle_path), "--source", "-", "--samplerate", "44101"], input=b"\0\0" * 1000
    )
    assert result.exit_code == 2, result.output
    assert "--samplerate" in result.output


def test_every_runtime_error_has_one_wording(tiny_bundle_path: Path, tmp_path: Path) -> None:
    """Defect 11: the installed command prints `instrument-ai CMD: PATH: what is wrong` once, with no `Error:`."""
    script = Path(sys.executable).parent / "instrument-ai"
    missing = tmp_path / "nosuch.wav"
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(tiny_bundle_path.read_bytes()[:100])
    cases = [
        (["classify", str(missing), "--model", str(tiny_bundle_path)], "classify", str(missing)),
        (["inspect", str(trunc)], "inspect", str(trunc)),
        (["flash", str(trunc), "--to", str(tmp_path / "dev")], "flash", str(trunc)),
    ]
    for args, command, path in cases:
        done = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith(f"instrument-ai {command}: {path}"), lines[0]
        assert "Error" not in lines[0] and lines[0].count(path) == 1, lines[0]
