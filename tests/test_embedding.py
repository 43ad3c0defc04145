"""The embedding output (issue 22 item 1): exported by `convert`, added to an existing bundle by
`convert --add-embedding`, described in the metadata, checked by the self-test, and learnt on by the personal head.

Bad input: a bundle whose embedding output is missing or misdescribed is refused with one line; a personal file
with another descriptor kind is re-described from its clips (or refused), an edited one is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_support import rewrite
from clirun import run_main
from fakemic import PREVIOUS_MODEL, tiny_bundle_bytes
from test_personal import PITCHES, SR, synth_note

from instrument_ai.convert.embedding import EmbeddingError, add_embedding_output, add_embedding_to_bundle
from instrument_ai.device import bundle as bundle_module
from instrument_ai.device import enrol as library
from instrument_ai.device import personal, personal_file
from instrument_ai.device.engine import Classifier


@pytest.fixture(scope="module")
def shipped_with_embedding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped 0.4.0 bundle re-exported with its embedding output (as `convert --add-embedding` does)."""
    out = tmp_path_factory.mktemp("embedding") / "default-emb.tflite"
    add_embedding_to_bundle(Path(PREVIOUS_MODEL), out)
    return out


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny float tone classifier (RESHAPE -> FULLY_CONNECTED -> SOFTMAX), without and with an embedding."""
    folder = tmp_path_factory.mktemp("tiny")
    plain = folder / "tiny.tflite"
    plain.write_bytes(tiny_bundle_bytes())
    with_embedding = folder / "tiny-emb.tflite"
    add_embedding_to_bundle(plain, with_embedding)
    return plain, with_embedding


def one_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def window_of(bundle: bundle_module.Bundle, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((bundle.n_features, bundle.window_frames))
    return (bundle.mean[:, None] + bundle.std[:, None] * noise).astype(np.float32)


# -- the bundle ----------------------------------------------------------------------------------------------------


def test_the_shipped_bundle_gains_an_int8_embedding_and_keeps_its_probabilities(shipped_with_embedding: Path) -> None:
    old, new = bundle_module.load(PREVIOUS_MODEL), bundle_module.load(shipped_with_embedding)
    assert old.embedding_size == 0 and old.last_embedding() is None
    declared = new.metadata["embedding"]
    assert declared["output"] == 1 and declared["size"] == new.embedding_size == 128 and declared["dtype"] == "int8"
    assert new.self_test is not None and new.self_test["passed"]
    assert all(len(v["embedding_expected"]) == 128 for v in new.metadata["golden"]["vectors"])
    for seed in range(5):
        window = window_of(old, seed)
        np.testing.assert_array_equal(old.predict(window), new.predict(window))
        embedding = new.last_embedding()
        assert embedding is not None and embedding.shape == (128,) and embedding.dtype == np.float32
        assert np.all(embedding >= 0) and embedding.max() > 0  # ReLU then global average pooling
    # the embedding is the input of the final dense layer: that layer applied to it gives the model's logits
    assert new.metadata["integrity"]["model_sha256"] != old.metadata["integrity"]["model_sha256"]


def test_the_tiny_bundle_embedding_is_its_dense_layers_input(tiny_pair: tuple[Path, Path]) -> None:
    plain, with_embedding = (bundle_module.load(p) for p in tiny_pair)
    window = window_of(plain)
    np.testing.assert_allclose(plain.predict(window), with_embedding.predict(window), atol=1e-6)
    embedding = with_embedding.last_embedding()
    expected = with_embedding.input_tensor(window[None]).reshape(-1)  # RESHAPE of the input feeds the dense layer
    assert embedding is not None
    np.testing.assert_allclose(embedding, expected, rtol=1e-6)


def test_convert_add_embedding_cli(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    plain, with_embedding = tiny_pair
    out = tmp_path / "new.tflite"
    result = run_main("convert", "--add-embedding", plain, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["embedding"]["size"] == 40 * 59 and not summary["signed"] and not summary["was_signed"]
    again = run_main("convert", "--add-embedding", with_embedding, "--out", tmp_path / "twice.tflite")
    assert again.exit_code == 2 and "already has an embedding output" in one_line(again.output)
    assert not (tmp_path / "twice.tflite").exists()
    both = run_main("convert", "some-run", "--add-embedding", plain, "--out", tmp_path / "x.tflite")
    assert both.exit_code == 2 and "give a RUNDIR or --add-embedding BUNDLE" in both.output
    same = run_main("convert", "--add-embedding", plain, "--out", plain)
    assert same.exit_code == 2 and "--out must differ" in same.output
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    refused = run_main("convert", "--add-embedding", junk, "--out", tmp_path / "y.tflite")
    assert refused.exit_code != 0 and "Traceback" not in refused.output and not (tmp_path / "y.tflite").exists()


def test_a_signed_bundle_is_re_signed_or_said_to_be_unsigned(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from instrument_ai.convert import signing

    plain, _ = tiny_pair
    key = tmp_path / "key.pem"
    signing.generate_keypair(key)

    def signer(message: bytes) -> tuple[bytes, bytes]:
        signature, public = signing.sign(key, message)
        return public, signature

    signed = tmp_path / "signed.tflite"
    rewrite(plain, signed, lambda meta: None, signer=signer)
    unsigned_out = run_main("convert", "--add-embedding", signed, "--out", tmp_path / "a.tflite")
    assert unsigned_out.exit_code == 0 and "unsigned; use --sign KEY" in unsigned_out.output
    assert "signature" not in bundle_module.read_metadata(tmp_path / "a.tflite")
    resigned = run_main("convert", "--add-embedding", signed, "--out", tmp_path / "b.tflite", "--sign", key)
    assert resigned.exit_code == 0, resigned.output
    public = signing.sign(key, b"x")[1]
    bundle_module.load(tmp_path / "b.tflite", trusted_key=public)  # verifies with the same key


def _refused(source: Path, target: Path, mutate: Any) -> str:
    rewrite(source, target, mutate)
    with pytest.raises(bundle_module.BundleError) as caught:
        bundle_module.load(target)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_missing_or_misdescribed_embedding_is_refused(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    plain, with_embedding = tiny_pair
    bad = tmp_path / "bad.tflite"

    def size(meta: dict[str, Any]) -> None:
        meta["embedding"]["size"] = 64

    assert "embedding output in the metadata" in _refused(with_embedding, bad, size)

    def scale(meta: dict[str, Any]) -> None:
        meta["embedding"]["dtype"] = "int8"

    assert "differs from the model's" in _refused(with_embedding, bad, scale)

    def position(meta: dict[str, Any]) -> None:
        meta["embedding"]["output"] = 2

    assert "must name model output 1" in _refused(with_embedding, bad, position)

    def undescribed(meta: dict[str, Any]) -> None:
        del meta["embedding"]

    assert "2 outputs but the metadata describes 1" in _refused(with_embedding, bad, undescribed)

    def claimed(meta: dict[str, Any]) -> None:  # the metadata promises an embedding the model does not have
        meta["embedding"] = copy.deepcopy(bundle_module.read_metadata(with_embedding)["embedding"])

    assert "1 outputs but the metadata describes 2" in _refused(plain, bad, claimed)

    def wrong_expectation(meta: dict[str, Any]) -> None:
        vector = meta["golden"]["vectors"][0]
        vector["embedding_expected"] = [v + 5.0 for v in vector["embedding_expected"]]

    assert "embedding differs by" in _refused(with_embedding, bad, wrong_expectation)

    def no_expectation(meta: dict[str, Any]) -> None:
        del meta["golden"]["vectors"][0]["embedding_expected"]

    assert "no valid expected embedding" in _refused(with_embedding, bad, no_expectation)

    def short_expectation(meta: dict[str, Any]) -> None:
        meta["golden"]["vectors"][0]["embedding_expected"] = [0.0, 1.0]

    assert "2 embedding values" in _refused(with_embedding, bad, short_expectation)


def test_inspect_shows_the_embedding(shipped_with_embedding: Path) -> None:
    with_it = run_main("inspect", shipped_with_embedding)
    assert with_it.exit_code == 0 and "embedding: output 1, 128 int8 values" in with_it.output
    without = run_main("inspect", PREVIOUS_MODEL)
    assert without.exit_code == 0 and "embedding: none" in without.output


def test_a_model_without_a_dense_output_layer_has_no_embedding() -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = tiny_bundle_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    graph = model.subgraphs[0]
    graph.outputs = [int(graph.operators[0].outputs[0])]  # the RESHAPE's output: no dense layer behind it
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(EmbeddingError, match="dense"):
        add_embedding_output(bytes(builder.Output()))
    with pytest.raises(EmbeddingError, match="already has 2 outputs"):
        add_embedding_output(add_embedding_output(data))


# -- the personal head on the embedding ------------------------------------------------------------------------------


def _enrol(bundle: Any, kind: str | None = None) -> personal_file.PersonalFile:
    data = personal_file.PersonalFile.new(bundle)
    for seed in range(4):
        data.add(personal.extract_notes(synth_note("odd", PITCHES[seed], seed), SR, bundle, "reed", descriptor=kind))
    return data


def test_the_head_learns_on_the_embedding_when_the_bundle_has_one(shipped_with_embedding: Path) -> None:
    bundle = bundle_module.load(shipped_with_embedding)
    data = _enrol(bundle)
    assert data.descriptor == personal.EMBEDDING and data.width == 128
    assert all(n.descriptors.shape[1] == 128 for n in data.notes)
    head = data.head(bundle)
    assert head.descriptor == personal.EMBEDDING and head.summary()["descriptor"] == "embedding" and head.fits(bundle)
    assert not head.fits(bundle_module.load(PREVIOUS_MODEL))  # no embedding there
    held_out = synth_note("odd", PITCHES[5], 5)  # a pitch between the enrolled ones
    plain, with_head = Classifier(bundle, input_rate=SR), Classifier(bundle, input_rate=SR)
    with_head.set_personal(head)
    plain_hops = [e for e in plain.process_hops(held_out) if e.probs is not None]
    head_hops = [e for e in with_head.process_hops(held_out) if e.probs is not None]
    note = personal.extract_notes(held_out, SR, bundle, "reed")[0]
    for hop, embedding, probs in zip(head_hops, note.descriptors, note.probs, strict=False):  # the engine's hook
        np.testing.assert_allclose(hop.probs, head.adjust(np.zeros(1), probs, embedding), atol=1e-6)
    reed = [e.label for e in head_hops].count("reed")
    assert "reed" not in [e.label for e in plain_hops] and reed > len(head_hops) // 2
    # without the embedding (an engine that could not give it) the head stands back instead of guessing
    window = window_of(bundle)
    probs = bundle.predict(window)
    assert head.adjust(window, probs, None) is probs


def test_an_embedding_file_round_trips_and_refuses_edits(shipped_with_embedding: Path, tmp_path: Path) -> None:
    bundle = bundle_module.load(shipped_with_embedding)
    data = _enrol(bundle)
    path = tmp_path / "mine.bin"
    data.save(path)
    loaded = personal_file.PersonalFile.load(path)
    assert (loaded.descriptor, loaded.width, loaded.families()) == ("embedding", 128, {"reed": 4})
    np.testing.assert_array_equal(loaded.notes[0].descriptors, data.notes[0].descriptors)
    raw = path.read_bytes()
    edited = raw.replace(b'"descriptor":"embedding"', b'"descriptor":"embeddinG"')
    (tmp_path / "edited.bin").write_bytes(edited)
    with pytest.raises(personal.PersonalError, match="damaged"):
        personal_file.PersonalFile.load(tmp_path / "edited.bin")
    resealed = edited[:-32] + hashlib.sha256(edited[:-32]).digest()  # a consistent file of an unknown kind
    (tmp_path / "resealed.bin").write_bytes(resealed)
    with pytest.raises(personal.PersonalError, match="descriptor 'embeddinG' is not one this version knows"):
        personal_file.PersonalFile.load(tmp_path / "resealed.bin")
    wide = raw.replace(b'"descriptor_width":128', b'"descriptor_width":127')
    wide = wide[:-32] + hashlib.sha256(wide[:-32]).digest()
    (tmp_path / "wide.bin").write_bytes(wide)
    with pytest.raises(personal.PersonalError, match="not a valid personal file"):
        personal_file.PersonalFile.load(tmp_path / "wide.bin")


def test_a_file_of_another_descriptor_is_described_again_from_its_clips(
    shipped_with_embedding: Path, tmp_path: Path
) -> None:
    old, new = bundle_module.load(PREVIOUS_MODEL), bundle_module.load(shipped_with_embedding)
    data = _enrol(old)
    assert data.descriptor == personal.MFCC
    path = tmp_path / library.PERSONAL_NAME
    data.save(path)
    with pytest.raises(personal.PersonalError, match="made for model"):
        data.check_bundle(new, str(path))
    head = library.head_for(path, new)  # re-described from the clips, through the new bundle's embedding
    assert head.descriptor == personal.EMBEDDING
    saved = personal_file.PersonalFile.load(path)
    assert saved.descriptor == personal.EMBEDDING and saved.families() == {"reed": 4}
    # same digests but another descriptor (a file written by hand): refused by check_bundle, so re-fitted
    mismatched = personal_file.PersonalFile(saved.bundle, saved.spec, data.notes, descriptor=personal.MFCC)
    with pytest.raises(personal.PersonalError, match="this model offers 128 embedding values"):
        mismatched.check_bundle(new, "mine.bin")
    # embedding notes without clips cannot follow another model: nothing left, one line
    bare = personal_file.PersonalFile(saved.bundle, saved.spec, [
        personal.Note(n.family, n.descriptors, None, n.onset, n.source, n.probs) for n in saved.notes
    ], descriptor=personal.EMBEDDING, width=128)  # fmt: skip
    with pytest.raises(personal.PersonalError, match="enrol again"):
        bare.refit(old)
    with pytest.raises(personal.PersonalError, match="no embedding output"):
        personal.extract_notes(synth_note("odd", 220.0, 0), SR, old, "reed", descriptor=personal.EMBEDDING)


def test_enrol_says_when_it_falls_back_to_mfcc(shipped_with_embedding: Path, tmp_path: Path) -> None:
    note = tmp_path / "odd.wav"
    import soundfile

    soundfile.write(str(note), synth_note("odd", 220.0, 0), SR)
    old = run_main("enrol", "reed", note, "--model", PREVIOUS_MODEL, "--out", tmp_path / "a.bin")
    assert old.exit_code == 0 and old.output.count("falls back to the notes' MFCC statistics") == 1
    new = run_main("enrol", "reed", note, "--model", shipped_with_embedding, "--out", tmp_path / "b.bin")
    assert new.exit_code == 0 and "MFCC" not in new.output
    listed = run_main("enrol", "--list", "--out", tmp_path / "b.bin", "--json")
    assert json.loads(listed.output)["descriptor"] == "embedding"


def test_convert_exports_the_embedding_of_a_keras_run(art: dict[str, Any]) -> None:
    """`convert RUNDIR`: output 1 is the input of the Keras model's final Dense layer, int8, self-tested."""
    bundle = bundle_module.load(art["bundle"])
    dense = art["model"].layers[-1]
    size = int(np.prod(dense.input.shape[1:]))
    assert bundle.embedding_size == size and bundle.metadata["embedding"]["dtype"] == "int8"
    assert all(len(v["embedding_expected"]) == size for v in bundle.metadata["golden"]["vectors"])
    import keras

    window = art["valid_x"][0]
    features = keras.Model(art["model"].inputs, dense.input)
    norm = bundle.mean[:, None], bundle.std[:, None]
    expected = np.asarray(features(((window - norm[0]) / norm[1])[None, ..., None])).reshape(-1)
    bundle.predict(window.astype(np.float32))
    got = bundle.last_embedding()
    assert got is not None
    step = bundle.metadata["embedding"]["scale"]
    assert np.max(np.abs(got - expected)) < 8 * step + 0.05 * np.max(np.abs(expected))  # int8 of the float model


# -- the background bank of known sounds -----------------------------------------------------------------------------


def _toy_corpus(folder: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_bank", Path(__file__).with_name("test_evaluate_toycorpus.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_corpus(folder, families=("organ", "flute"), libraries=("LibA",),  # type: ignore[no-any-return]
                              pitches=(48, 55, 60, 67))  # fmt: skip


def test_convert_ships_a_background_bank_and_the_head_uses_it(tmp_path: Path) -> None:
    corpus = _toy_corpus(tmp_path / "corpus")
    out = tmp_path / "bank.tflite"
    result = run_main("convert", "--add-embedding", PREVIOUS_MODEL, "--background", corpus, "--background-notes", "3",
                      "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["background_points"] == 6  # 3 notes of each of the corpus' two families
    bundle = bundle_module.load(out)
    bank = personal.bundle_background(bundle, personal.EMBEDDING)
    assert [n.family for n in bank].count("organ") == 3 and all(n.descriptors.shape == (1, 128) for n in bank)
    assert personal.bundle_background(bundle, personal.MFCC) == []  # a bank of another descriptor is not used
    head = _enrol(bundle).head(bundle)
    assert head.background is not None and head.background.shape[0] == 6 and head.summary()["background"] == 6
    assert _enrol(bundle).head(bundle, background=[]).background is None  # the caller may turn it off

    def broken(meta: dict[str, Any]) -> None:
        meta["personal_background"]["labels"][0] = "kazoo"

    rewrite(out, tmp_path / "broken.tflite", broken)
    damaged = bundle_module.load(tmp_path / "broken.tflite")
    with pytest.raises(personal.PersonalError, match="personal_background metadata is malformed"):
        _enrol(damaged).head(damaged)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_main("convert", "--add-embedding", PREVIOUS_MODEL, "--background", empty, "--out", tmp_path / "z")
    assert refused.exit_code == 2 and "examples.json is missing" in one_line(refused.output)
    assert not (tmp_path / "z").exists()


def test_adjust_batch_decides_as_adjust_hop_by_hop(shipped_with_embedding: Path) -> None:
    bundle = bundle_module.load(shipped_with_embedding)
    data = _enrol(bundle)
    others = [personal.extract_notes(synth_note(kind, 300.0, 9), SR, bundle, "flute") for kind in ("bright", "hiss")]
    background = [n for found in others for n in found]
    for head in (data.head(bundle), data.head(bundle, background=background)):
        hops = [note for seed in range(6) for note in personal.extract_notes(
            synth_note("odd" if seed % 2 else "bright", PITCHES[seed], seed), SR, bundle, "reed")]  # fmt: skip
        descriptors = np.concatenate([n.descriptors for n in hops])
        probs = np.concatenate([n.probs for n in hops if n.probs is not None])
        batch = head.adjust_batch(descriptors, probs)
        single = np.stack([head.adjust(np.zeros(1), p, d) for d, p in zip(descriptors, probs, strict=True)])
        np.testing.assert_allclose(batch, single, atol=1e-6)
        assert np.any(batch != probs)  # the head did move some hops


def test_experiment_enrol_measures_both_descriptors_and_the_background(
    shipped_with_embedding: Path, tmp_path: Path
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_exp", Path(__file__).with_name("test_evaluate_toycorpus.py"))
    assert spec is not None and spec.loader is not None
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    data = toy.make_corpus(tmp_path / "corpus", families=("reed", "organ", "flute"),  # type: ignore[attr-defined]
                           libraries=("LibA", "LibB", "LibC", "RealA", "RealB"),
                           pitches=(48, 52, 55, 60, 64, 67))  # fmt: skip
    out = tmp_path / "out"
    result = run_main("experiment", "enrol", "--data", data, "--holdout", "RealA,RealB", "--shots", "2,3",
                      "--repeats", "1", "--model", shipped_with_embedding, "--descriptor", "mfcc,embedding",
                      "--background", "2", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "enrol.json").read_text())
    variants = figures["variants"]
    assert [(v["descriptor"], v["background_notes"] > 0) for v in variants] == [
        ("mfcc_mean_std", False), ("embedding", False), ("embedding", True)]  # fmt: skip
    assert figures["descriptor"] == "embedding" and figures["instruments"] == variants[-1]["instruments"]
    assert variants[-1]["timing"]["background_points"] == variants[-1]["background_notes"]
    for variant in variants:
        by_source: dict[str, list[dict[str, Any]]] = {}
        for row in variant["instruments"]:
            by_source.setdefault(row["source"], []).append(row["settings"])
        for settings in by_source.values():  # one setting per source for every K, chosen on the other source
            assert len(settings) == 2 and settings[0] == settings[1] and settings[0]["over_shots"] == [2, 3]
    table = (out / "enrol.md").read_text()
    assert "Descriptor: mfcc_mean_std, no background" in table and "background of" in table
    plain = run_main("experiment", "enrol", "--data", data, "--holdout", "RealA", "--descriptor", "embedding",
                     "--model", PREVIOUS_MODEL, "--out", tmp_path / "x")  # fmt: skip
    assert plain.exit_code == 1 and "no embedding output" in one_line(plain.output)
    bad = run_main("experiment", "enrol", "--data", data, "--holdout", "RealA", "--descriptor", "mel", "--out", out)
    assert bad.exit_code == 2 and "--descriptor takes mfcc and/or embedding" in bad.output


def test_the_pairwise_radius_does_not_shrink_as_notes_are_added() -> None:
    """Why 10 notes scored below 3: the nearest-note radius shrinks as notes are added (a denser sample has nearer
    neighbours); the pairwise one estimates the same spread from 3 notes or 10 (on average over draws)."""
    rng = np.random.default_rng(0)

    def radius(k: int, rule: str) -> float:
        draws = []
        for _ in range(40):
            notes = [rng.normal(size=(4, 16)) * 0.3 + rng.normal(size=16) for _ in range(k)]
            draws.append(personal._leave_one_note_out(notes, 0.5, rule))
        return float(np.mean(draws))

    nearest = [radius(k, "nearest") for k in (3, 10)]
    pairwise = [radius(k, "pairwise") for k in (3, 10)]
    assert nearest[1] < 0.92 * nearest[0]
    assert abs(pairwise[1] - pairwise[0]) < 0.05 * pairwise[0]
    with pytest.raises(ValueError, match="radius rule"):
        personal._leave_one_note_out([rng.normal(size=(2, 4))] * 2, 0.5, "farthest")


def test_evaluate_applies_an_embedding_head_to_every_window(shipped_with_embedding: Path, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_eval", Path(__file__).with_name("test_evaluate_toycorpus.py"))
    assert spec is not None and spec.loader is not None
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    data = toy.make_corpus(tmp_path / "corpus", families=("reed", "organ"), libraries=("LibA",),  # type: ignore[attr-defined]
                           pitches=(48, 55, 60, 67, 72, 77))  # fmt: skip
    reed = sorted((data / "audio").glob("reed_*.wav"))[:3]
    path = tmp_path / "mine.bin"
    assert run_main("enrol", "reed", *reed, "--model", shipped_with_embedding, "--out", path).exit_code == 0

    def reed_recall(*extra: object) -> tuple[float, dict[str, Any]]:
        out = tmp_path / f"eval{len(extra)}"
        done = run_main("evaluate", "--model", shipped_with_embedding, "--data", data, "--out", out, "--quiet", *extra)
        assert done.exit_code == 0, done.output
        figures = json.loads((out / "evaluation.json").read_text())
        return figures["per_family"]["reed"]["recall"], figures["model"]

    before, _ = reed_recall()
    after, model = reed_recall("--personal", path)
    assert model["personal"]["descriptor"] == "embedding" and after > before
