"""Hot reload of the daemon's model: the watcher (poll, SIGHUP, refusals not retried, files still being written),
the trial run that decides whether this daemon can use a bundle, swaps that lose no sample, and the real daemon
(`run --model-dir --trusted-key`) refusing an unsigned and a corrupt bundle while it keeps classifying with the old
one, then swapping a good one in; SIGTERM in the middle of a (slow) load exits cleanly."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fakemic import REPO, FakeBundle, sequence, tiny_bundle_bytes, tone
from livehelp import wait_until

from instrument_ai.device import bundle as device_bundle
from instrument_ai.device import model_files, model_watch
from instrument_ai.device.engine import Classifier
from instrument_ai.device.frontend import DEFAULT_SPEC
from instrument_ai.device.settings import EngineSettings

DEADLINE = 30.0  # a guard against a hung child, never a timing assertion


def point(directory: Path, target: str) -> None:
    """Point current.tflite at versions/<target> the way `flash` does: a new symlink renamed over the old."""
    temporary = directory / ".current.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path("versions") / target)
    os.replace(temporary, directory / "current.tflite")


def age(path: Path, seconds: float = 5.0) -> None:
    """Backdate a file's mtime: the watcher leaves files modified in the last moments alone (still being written)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


# -- the watcher -----------------------------------------------------------------------------------------------


class Recorder:
    """A `prepare` that records the paths it loads; refuses files whose content starts with b"bad"."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: Path) -> Any:
        self.paths.append(path.name)
        content = path.read_bytes()
        if content.startswith(b"bad"):
            raise model_watch.ModelRefused(f"{path}: bad content")
        if content.startswith(b"boom"):
            raise KeyError("a bug in a loader")
        return {"file": path.name}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "versions").mkdir()
    for name, content in {"a": b"good a", "b": b"good b", "bad": b"bad one", "boom": b"boom"}.items():
        (tmp_path / "versions" / f"{name}.tflite").write_bytes(content)
        age(tmp_path / "versions" / f"{name}.tflite")
    point(tmp_path, "a.tflite")
    return tmp_path


def take(watcher: model_watch.ModelWatcher) -> model_watch.Candidate:
    return wait_until(watcher.take, DEADLINE, "a candidate")


def test_watcher_polls_the_resolved_target_and_refuses_once(model_dir: Path) -> None:
    prepare = Recorder()
    current = model_dir / "current.tflite"
    watcher = model_watch.ModelWatcher(
        current, prepare, poll_seconds=0.02, loaded=model_watch.fingerprint(current)
    ).start()
    try:
        time.sleep(0.15)
        assert watcher.take() is None and prepare.paths == []  # unchanged: nothing loaded
        point(model_dir, "b.tflite")
        candidate = take(watcher)
        assert candidate.bundle == {"file": "b.tflite"} and candidate.trigger == "poll"
        assert candidate.path == str((model_dir / "versions" / "b.tflite").resolve())
        point(model_dir, "bad.tflite")
        refused = take(watcher)
        assert refused.bundle is None and refused.reason.endswith("bad content")
        time.sleep(0.15)
        assert watcher.take() is None and prepare.paths == ["b.tflite", "bad.tflite"]  # not retried every poll
        watcher.request("SIGHUP")  # ... but on SIGHUP
        again = take(watcher)
        assert again.trigger == "SIGHUP" and again.bundle is None and prepare.paths[-1] == "bad.tflite"
        point(model_dir, "boom.tflite")  # a loader bug is a refusal too, and the watcher survives it
        assert "KeyError" in take(watcher).reason
        point(model_dir, "a.tflite")
        assert take(watcher).bundle == {"file": "a.tflite"}
    finally:
        assert watcher.close()


def test_watcher_waits_for_a_file_still_being_written_and_reports_a_missing_one(model_dir: Path) -> None:
    prepare = Recorder()
    current = model_dir / "current.tflite"
    watcher = model_watch.ModelWatcher(
        current, prepare, poll_seconds=0.02, settle_seconds=0.5, loaded=model_watch.fingerprint(current)
    ).start()
    try:
        (model_dir / "versions" / "a.tflite").write_bytes(b"good a, rewritten in place")  # mtime: now
        time.sleep(0.2)
        assert prepare.paths == []  # too fresh: maybe half written
        assert take(watcher).bundle == {"file": "a.tflite"}  # once it has settled
        (model_dir / "current.tflite").unlink()
        missing = take(watcher)
        assert missing.bundle is None and "no such file" in missing.reason
    finally:
        watcher.close()


def test_close_does_not_hang_on_a_stuck_load(tmp_path: Path) -> None:
    release = threading.Event()
    target = tmp_path / "m.tflite"
    target.write_bytes(b"x")
    watcher = model_watch.ModelWatcher(target, lambda p: release.wait(30), poll_seconds=None).start()
    watcher.request("SIGHUP")
    wait_until(lambda: watcher.busy and not watcher._idle.is_set(), DEADLINE, "the load to start")
    assert watcher.close(timeout=0.2) is False  # gave up waiting; the thread is a daemon
    release.set()


# -- swaps in the engine ----------------------------------------------------------------------------------------


def _decisions(events: list[Any]) -> list[tuple]:
    return [(e.hop, round(e.time, 6), e.label, round(e.confidence, 6), round(e.level_db, 6)) for e in events]


def test_a_swap_to_a_bundle_with_the_same_frontend_loses_no_sample() -> None:
    signal_ = sequence([(None, 0.4), (200.0, 1.3), (1000.0, 1.1), (None, 0.3), (4000.0, 1.2)], rate=44100)
    blocks = np.array_split(signal_, 97)
    reference = Classifier(FakeBundle(), input_rate=44100)
    expected = [e for block in blocks for e in reference.process_hops(block)] + reference.flush()
    swapped = Classifier(FakeBundle(), input_rate=44100)
    got, kept = [], []
    for i, block in enumerate(blocks):
        got += swapped.process_hops(block)
        if i % 13 == 5:  # mid-hop, at arbitrary sample positions
            kept.append(swapped.swap_bundle(FakeBundle(version=str(i))))
    got += swapped.flush()
    assert all(kept) and len(kept) == 8
    assert _decisions(got) == _decisions(expected)
    assert swapped.bundle.version == "96" and swapped.hops == reference.hops == len(expected)


def test_a_swap_with_new_labels_restarts_smoothing_and_a_new_frontend_restarts_the_stream() -> None:
    engine = Classifier(FakeBundle(), smooth=3)
    engine.process_hops(tone(200.0, 1.0))
    assert engine.swap_bundle(FakeBundle(labels=["grave", "medio", "acuto"])) is True
    event = engine.process_hops(tone(200.0, 0.25))[0]
    assert event.label == "grave" and event.previous == "low"
    assert event.confidence == pytest.approx(float(event.probs.max()), abs=1e-6)  # only this hop: history cleared
    other = FakeBundle(spec=dataclasses.replace(DEFAULT_SPEC, n_mels=48))
    assert engine.swap_bundle(other) is False  # another frontend: a fresh stream, same clock
    after = engine.process_hops(tone(200.0, 0.5))
    assert [e.hop for e in after] == [5, 6] and after[-1].time == pytest.approx(1.75)


def test_a_bundle_the_engine_refuses_leaves_it_unchanged() -> None:
    engine = Classifier(FakeBundle())
    engine.process_hops(tone(200.0, 0.6))

    @dataclasses.dataclass
    class WrongRate(FakeBundle):
        @property
        def sample_rate(self) -> int:
            return 22050

    with pytest.raises(ValueError, match="differs from its frontend"):
        engine.swap_bundle(WrongRate())
    assert engine.bundle.name == "fake" and engine.labels == ["low", "mid", "high"]
    assert [e.hop for e in engine.process_hops(tone(200.0, 0.5))] == [2, 3]


# -- the trial run ------------------------------------------------------------------------------------------------


def _make_engine(bundle: Any) -> Classifier:
    return Classifier(bundle, input_rate=48000, channels=2, silence_db=-200.0)


@dataclasses.dataclass
class BrokenBundle(FakeBundle):
    mode: str = "nan"

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.mode == "raise":
            raise RuntimeError("tensor arena exhausted\nsecond line")
        if self.mode == "size":
            return np.full(5, 0.2, np.float32)
        if self.mode == "sum":
            return np.full(3, 0.9, np.float32)
        return np.full(3, np.nan, np.float32)


@pytest.mark.parametrize(
    ("bundle", "reason"),
    [
        (FakeBundle(labels=["silence", "a", "b"]), "clash with the daemon's own reports"),
        (BrokenBundle(mode="nan"), "not 3 finite probabilities"),
        (BrokenBundle(mode="size"), "cannot run this bundle (the model returned 5 probabilities for 3 labels)"),
        (BrokenBundle(mode="sum"), "does not sum to 1"),
        (BrokenBundle(mode="raise"), "cannot run this bundle (tensor arena exhausted)"),
    ],
)
def test_check_runnable_refuses_what_the_daemon_cannot_use(bundle: Any, reason: str) -> None:
    with pytest.raises(model_watch.ModelRefused) as info:
        model_watch.check_runnable(bundle, _make_engine, 48000, 2)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_check_runnable_accepts_a_real_bundle_at_the_daemons_rate(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_bundle_bytes())
    bundle = model_files.prepare_bundle(path, 1, None, EngineSettings(), 44100, 2)
    assert bundle.name == "tiny-test" and bundle.self_test["passed"]


# -- the real daemon ----------------------------------------------------------------------------------------------


def _signed(data: bytes, key: Path) -> bytes:
    from instrument_ai.convert import signing
    from instrument_ai.convert.bundle_writer import attach_metadata

    def signer(message: bytes) -> tuple[bytes, bytes]:
        signature, public = signing.sign(key, message)
        return public, signature

    return attach_metadata(data, device_bundle.parse_bundle(data)[0], signer=signer)


class Daemon:
    """`instrument-ai run` in a child process; its JSON records arrive in a queue read by one thread."""

    def __init__(self, args: list[str], code: str = "") -> None:
        program = code + f"from instrument_ai.device.cli import main\nmain({args!r})\n"
        self.process = subprocess.Popen(
            [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        self.lines: queue.Queue = queue.Queue()
        self.records: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def until(self, predicate: Any, what: str) -> dict:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if record is None:
                break
            self.records.append(record)
            if predicate(record):
                return record
        raise AssertionError(f"no {what}; stderr: {''.join(self.stderr)[-800:]}; last: {self.records[-3:]}")

    def hops_after(self, count: int) -> list[dict]:
        first = len(self.records)
        self.until(lambda r: sum(x["type"] in ("hop", "change") for x in self.records[first:]) >= count, "hops")
        return [r for r in self.records[first:] if r["type"] in ("hop", "change")]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE)
        while (record := self.lines.get(timeout=DEADLINE)) is not None:
            self.records.append(record)
        return code


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "long.wav"
    soundfile.write(str(path), sequence([(200.0, 1.5), (4000.0, 1.5)] * 20, rate=16000), 16000)
    return path


def test_daemon_refuses_unsigned_and_corrupt_bundles_keeps_classifying_then_swaps(
    tmp_path: Path, long_clip: Path
) -> None:
    from instrument_ai.convert import signing

    public, _ = signing.generate_keypair(tmp_path / "key.pem")
    versions = tmp_path / "models" / "versions"
    versions.mkdir(parents=True)
    signed_v1 = _signed(tiny_bundle_bytes(), tmp_path / "key.pem")
    (versions / "v1.tflite").write_bytes(signed_v1)
    (versions / "v2.tflite").write_bytes(_signed(tiny_bundle_bytes(version="2"), tmp_path / "key.pem"))
    (versions / "unsigned.tflite").write_bytes(tiny_bundle_bytes(version="3"))
    corrupt = bytearray(signed_v1)
    start, length = max(device_bundle.tflite_file.parse(signed_v1, tensors=False).buffers, key=lambda b: b[1])
    assert length == 3 * 40 * 59 * 4  # the weights
    corrupt[start + length // 2] ^= 0x40  # one flipped bit in the weights: the model hash no longer matches
    (versions / "corrupt.tflite").write_bytes(bytes(corrupt))
    for path in versions.iterdir():
        age(path)
    directory = versions.parent
    point(directory, "v1.tflite")
    daemon = Daemon(
        ["run", "--source", str(long_clip), "--json", "--every-hop", "--model-dir", str(directory)]
        + ["--trusted-key", str(public), "--reload-poll", "0.1"]
    )
    try:
        daemon.until(lambda r: r["type"] in ("hop", "change"), "first hop")
        point(directory, "unsigned.tflite")
        daemon.process.send_signal(signal.SIGHUP)
        # The poll may refuse the new target before the SIGHUP is handled; the SIGHUP then loads it once more.
        # Wait for the SIGHUP's own refusal, so that it cannot land on the next target.
        unsigned = daemon.until(
            lambda r: r["type"] == "model_refused" and r["trigger"] == "SIGHUP", "SIGHUP refusal of the unsigned bundle"
        )
        assert "not signed" in unsigned["reason"] and unsigned["keeping"] == "tiny-test 1"
        assert all("not signed" in r["reason"] for r in daemon.records if r["type"] == "model_refused")
        point(directory, "corrupt.tflite")  # no signal: the poll notices it
        bad = daemon.until(
            lambda r: r["type"] == "model_refused" and "not signed" not in r["reason"], "refusal of the corrupt bundle"
        )
        assert bad["trigger"] == "poll" and "hash mismatch" in bad["reason"] and bad["keeping"] == "tiny-test 1"
        kept = daemon.hops_after(12)  # still classifying (3 s: a low and a high tone), with the old model
        assert {h["label"] for h in kept} == {"low", "high"}, [(h["time"], h["label"]) for h in kept]
        point(directory, "v2.tflite")
        swap = daemon.until(lambda r: r["type"] == "swap", "swap to version 2")
        assert (swap["old"], swap["new"], swap["trigger"]) == ("tiny-test 1", "tiny-test 2", "poll")
        assert swap["stream_kept"] is True and swap["path"].endswith("v2.tflite")
        assert {h["label"] for h in daemon.hops_after(4)} <= {"low", "high"}
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.stderr)
    hops = [r["hop"] for r in daemon.records if r["type"] in ("hop", "change")]
    assert hops == list(range(len(hops)))  # not one hop lost across two refusals and a swap
    stop = daemon.records[-1]
    assert stop["type"] == "stop" and stop["reason"] == "SIGTERM"
    refusals = [r for r in daemon.records if r["type"] == "model_refused"]
    assert len(refusals) in (2, 3)  # unsigned by SIGHUP (and perhaps first by the poll), corrupt by the poll
    assert (stop["swaps"], stop["refused"]) == (1, len(refusals))
    assert "Traceback" not in "".join(daemon.stderr)


SLOW_SECOND_LOAD = """
import sys, time
from instrument_ai.device import model_files
_load = model_files.load_bundle
_calls = []
def slow_load(*args, **kwargs):
    _calls.append(args)
    if len(_calls) > 1:
        print("LOADING", file=sys.stderr, flush=True)
        time.sleep(60)
    return _load(*args, **kwargs)
model_files.load_bundle = slow_load
"""


def test_sigterm_during_a_model_load_stops_cleanly_and_audio_flows_during_the_load(
    tmp_path: Path, long_clip: Path
) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "v1.tflite").write_bytes(tiny_bundle_bytes())
    point(tmp_path, "v1.tflite")
    daemon = Daemon(
        ["run", "--source", str(long_clip), "--json", "--every-hop", "--model-dir", str(tmp_path)],
        code=SLOW_SECOND_LOAD,
    )
    daemon.until(lambda r: r["type"] in ("hop", "change"), "first hop")
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any("LOADING" in line for line in daemon.stderr), DEADLINE, "the reload to start")
    during = daemon.hops_after(3)  # the load blocks for a minute; the audio keeps being classified
    assert {h["label"] for h in during} <= {"low", "high"}
    code = daemon.stop()  # a bound (DEADLINE) well under the load's minute
    assert code == 0
    stop = daemon.records[-1]
    assert stop["type"] == "stop" and stop["reason"] == "SIGTERM" and stop["swaps"] == 0
    assert not [r for r in daemon.records if r["type"] in ("swap", "model_refused")]
    assert "Traceback" not in "".join(daemon.stderr)


def test_a_device_requiring_other_refuses_a_reload_to_an_11_family_bundle(tmp_path: Path, long_clip: Path) -> None:
    """`--require-other`: a flash of model 0.3.0 (no `other` output) is refused and 0.4 keeps classifying."""
    versions = tmp_path / "models" / "versions"
    versions.mkdir(parents=True)
    (versions / "new.tflite").write_bytes((REPO / "models" / "default.tflite").read_bytes())
    (versions / "old.tflite").write_bytes((REPO / "tests" / "fixtures" / "model-0.3.0.tflite").read_bytes())
    for path in versions.iterdir():
        age(path)
    directory = versions.parent
    point(directory, "new.tflite")
    daemon = Daemon(["run", "--source", str(long_clip), "--json", "--every-hop", "--model-dir", str(directory),
                     "--reload-poll", "0", "--require-other"])  # fmt: skip
    try:
        daemon.until(lambda r: r["type"] in ("hop", "change"), "first hop")
        point(directory, "old.tflite")
        daemon.process.send_signal(signal.SIGHUP)
        refused = daemon.until(lambda r: r["type"] == "model_refused", "the refusal of the 11-family bundle")
        assert "no 'other' label" in refused["reason"] and "\n" not in refused["reason"]
        assert len(daemon.hops_after(4)) >= 4  # still classifying after the refusal
    finally:
        assert daemon.stop() == 0
    assert not [r for r in daemon.records if r["type"] == "swap"]  # the 0.4 bundle was never replaced
