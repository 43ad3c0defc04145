"""The source catalogue, reading repositories without a work tree, and `data fetch`, on real local git repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from instrument_ai.train.commands.data import data
from instrument_ai.train.sources import catalogue as cat
from instrument_ai.train.sources import fetch
from instrument_ai.train.sources.gittree import FolderTree, GitTree, MissingBlob

COMMIT = "0" * 40


def entry(**fields: object) -> str:
    base = {
        "name": '"tiny"',
        "repo": '"https://github.com/someone/tiny"',
        "commit": f'"{COMMIT}"',
        "licence": '"CC0"',
        "kind": '"notes"',
        "include": '["**/*.wav"]',
        "exclude": '["**/skip/**"]',
        "pitch": """{ from = "name", pattern = '(?P<note>[A-Ga-g][#sb]?)(?P<octave>-?\\d)\\.wav$' }""",
        "velocity": """{ pattern = '_(?P<dyn>p|f)_', map = { p = 40, f = 100 }, default = 75 }""",
        "other_kind": '"unpitched"',  # it has an `other` rule (noises/**), so it must say what they are
    }
    base.update({k: str(v) for k, v in fields.items()})
    lines = ["schema = 1", "[[source]]", *(f"{k} = {v}" for k, v in base.items() if v != "DROP")]
    lines += ["[[source.rule]]", 'glob = "**/reeds/*"', 'family = "reed"', "[[source.rule]]", 'glob = "**/bells/*"']
    lines += ['family = "mallet"', 'pitch = { from = "estimate" }', "[[source.rule]]", 'glob = "noises/**"']
    lines += ['family = "other"', 'pitch = { from = "none" }']
    return "\n".join(lines)


def test_labels_from_rules_names_and_velocity_maps() -> None:
    (source,) = cat.parse(entry())
    paths = ["a/reeds/sax_f_C#4.wav", "a/reeds/sax_p_bb2.wav", "a/bells/tube.wav", "noises/door.wav",
             "a/skip/reeds/x_C4.wav", "a/reeds/readme.txt", "a/strings/violin_C4.wav"]  # fmt: skip
    chosen = source.select(paths)
    assert chosen == ["a/bells/tube.wav", "a/reeds/sax_f_C#4.wav", "a/reeds/sax_p_bb2.wav", "a/strings/violin_C4.wav",
                      "noises/door.wav"]  # fmt: skip
    sax = source.label("a/reeds/sax_f_C#4.wav")
    assert (sax.family, sax.pitch, sax.velocity, sax.instrument, sax.source) == ("reed", 61, 100, "a/reeds", "acoustic")
    assert source.label("a/reeds/sax_p_bb2.wav").pitch == 46 and source.label("a/reeds/sax_p_bb2.wav").velocity == 40
    bell = source.label("a/bells/tube.wav")
    assert bell.pitch is None and bell.pitch_from == "estimate" and bell.velocity == 75
    assert source.label("noises/door.wav").family == "other" and source.label("noises/door.wav").pitch == 0
    skip = source.label("a/strings/violin_C4.wav")
    assert isinstance(skip, cat.Skip) and skip.reason == "no_rule"
    nopitch = cat.parse(entry())[0].label("a/reeds/sax_f.wav")
    assert isinstance(nopitch, cat.Skip) and nopitch.reason == "no_pitch"


def test_hz_and_midi_patterns_and_octave_offset() -> None:
    hz = """{ from = "name", pattern = '/(?P<hz>[\\d.]+)\\.wav$' }"""
    (source,) = cat.parse(entry(pitch=hz))
    assert source.label("x/reeds/440.0.wav").pitch == 69 and source.label("x/reeds/261.6.wav").pitch == 60
    midi = """{ from = "name", pattern = 'note(?P<midi>\\d+)', octave_offset = 0 }"""
    assert cat.parse(entry(pitch=midi))[0].label("x/reeds/note048.wav").pitch == 48
    shifted = """{ from = "name", pattern = '(?P<note>[A-G])(?P<octave>\\d)', octave_offset = 1 }"""
    assert cat.parse(entry(pitch=shifted))[0].label("x/reeds/C3.wav").pitch == 60
    assert cat.note_to_midi("A", "4") == 69 and cat.note_to_midi("eb", "3") == 51 and cat.note_to_midi("H", "4") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": '"video"'}, "kind must be one of"),
        ({"commit": '"abc123"'}, "full 40-hex commit"),
        ({"name": '"Bad Name"'}, "name must match"),
        ({"pitch": '{ from = "guess" }'}, "pitch.from must be one of"),
        ({"pitch": """{ from = "name", pattern = '(' }"""}, "not a valid regex"),
        ({"pitch": "DROP"}, "pitch is required"),
        ({"source": '"wooden"'}, "source"),
        ({"velocity": "300"}, "outside 1..127"),
    ],
)
def test_bad_entries_are_one_line_errors(fields: dict[str, str], message: str) -> None:
    with pytest.raises(cat.CatalogueError) as info:
        cat.parse(entry(**fields))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_family_and_duplicates() -> None:
    with pytest.raises(cat.CatalogueError, match="unknown family 'piano'"):
        cat.parse(entry().replace('family = "reed"', 'family = "piano"'))
    text = entry()
    with pytest.raises(cat.CatalogueError, match="listed twice"):
        cat.parse(text + "\n" + text.split("\n", 1)[1])


def test_the_shipped_catalogue_loads_and_names_no_reserved_source() -> None:
    sources = cat.load()
    assert len(sources) >= 20 and len({s.name for s in sources}) == len(sources)
    assert {s.kind for s in sources} == set(cat.KINDS)
    text = cat.CATALOGUE.read_text().lower()
    # the reserved names, spelt in halves so that this file itself does not name them
    for head, tail in (("uni-", "iowa"), ("philhar", "monia"), ("salam", "ander"), ("sms-", "tools"), ("fat", "boy")):
        assert head + tail not in text


# ---------------------------------------------------------------------------- git repositories


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository (as a mirror) with three small files, and its commit."""
    work = tmp_path / "work"
    (work / "a" / "reeds").mkdir(parents=True)
    (work / "a" / "reeds" / "sax_f_C4.wav").write_bytes(b"RIFF-one")
    (work / "a" / "reeds" / "sax_p_D4.wav").write_bytes(b"RIFF-two" * 100)
    (work / "notes.txt").write_text("hello")
    git("init", "-q", cwd=work)
    git("add", ".", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work)
    mirrors = tmp_path / "mirrors"
    mirrors.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirrors / "someone+tiny")], check=True)
    return mirrors / "someone+tiny", commit


def catalogue_file(tmp_path: Path, repo_url: str, commit: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    text = entry(name=f'"{name}"', repo=f'"{repo_url}"', commit=f'"{commit}"')
    path.write_text(text)
    return path


def test_gittree_reads_blobs_without_a_work_tree(repo: tuple[Path, str]) -> None:
    mirror, commit = repo
    tree = GitTree(mirror, commit)
    assert tree.has_commit() and tree.paths() == ["a/reeds/sax_f_C4.wav", "a/reeds/sax_p_D4.wav", "notes.txt"]
    assert tree.read("a/reeds/sax_p_D4.wav") == b"RIFF-two" * 100 and tree.read("notes.txt") == b"hello"
    with pytest.raises(MissingBlob):
        tree.read("no/such.wav")
    assert not GitTree(mirror, "1" * 40).has_commit()


def test_folder_tree_has_the_same_interface(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "C4.wav").write_bytes(b"abc")
    tree = FolderTree(tmp_path)
    assert tree.paths() == ["x/C4.wav"] and tree.read("x/C4.wav") == b"abc"
    with pytest.raises(MissingBlob):
        tree.read("x/D4.wav")


def test_fetch_clones_at_the_commit_and_reuses_the_cache(repo: tuple[Path, str], tmp_path: Path) -> None:
    mirror, commit = repo
    (source,) = cat.load(catalogue_file(tmp_path, f"file://{mirror}", commit))
    source = cat.Source(**{**source.__dict__, "repo": f"file://{mirror.parent}/someone/tiny"})
    (mirror.parent / "someone").mkdir()
    (mirror.parent / "someone" / "tiny").symlink_to(mirror)
    cache = tmp_path / "cache"
    tree = fetch.open_source(source, cache=cache)
    assert tree.read("a/reeds/sax_f_C4.wav") == b"RIFF-one"
    made = (cache / "someone+tiny").stat().st_mtime_ns
    fetch.open_source(source, cache=cache)  # verified cache: not fetched again
    assert (cache / "someone+tiny").stat().st_mtime_ns == made
    assert [p.name for p in cache.iterdir()] == ["someone+tiny"]  # no temporary leftovers


def test_fetch_command_lines_and_failures(repo: tuple[Path, str], tmp_path: Path) -> None:
    mirror, commit = repo
    good = catalogue_file(tmp_path, "https://example.invalid/someone/tiny", commit)
    runner = CliRunner()
    result = runner.invoke(data, ["fetch", "--from", str(mirror.parent), "--catalogue", str(good)])
    assert result.exit_code == 0 and "tiny: ok" in result.output, result.output
    # the OWNER/NAME layout works too
    (tmp_path / "layout" / "someone").mkdir(parents=True)
    (tmp_path / "layout" / "someone" / "tiny").symlink_to(mirror)
    result = runner.invoke(data, ["fetch", "--from", str(tmp_path / "layout"), "--catalogue", str(good)])
    assert "tiny: ok" in result.output
    # a commit the repository does not have, and a repository that cannot be cloned: failed lines, exit 1
    missing = catalogue_file(tmp_path, f"file://{tmp_path}/nowhere/someone/tiny", "2" * 40, name="gone")
    result = runner.invoke(data, ["fetch", "--cache", str(tmp_path / "c"), "--catalogue", str(missing)])
    assert result.exit_code == 1 and "gone: failed: " in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "c").iterdir())  # nothing half-made in the cache
    result = runner.invoke(data, ["fetch", "--from", str(mirror.parent), "--catalogue", str(missing)])
    assert result.exit_code == 1 and "gone: failed: " in result.output and "has no commit 222222222222" in result.output
    # unknown names are a usage error
    result = runner.invoke(data, ["fetch", "nosuch", "--from", str(mirror.parent), "--catalogue", str(good)])
    assert result.exit_code == 2 and "unknown source 'nosuch'" in result.output


def test_a_mirror_with_a_missing_blob_is_counted(repo: tuple[Path, str], tmp_path: Path) -> None:
    mirror, commit = repo
    blob = git("rev-parse", f"{commit}:a/reeds/sax_p_D4.wav", cwd=mirror)
    loose = mirror / "objects" / blob[:2] / blob[2:]
    if not loose.exists():  # packed by clone: unpack so one object can be removed
        for pack in (mirror / "objects" / "pack").glob("*.pack"):
            moved = tmp_path / pack.name
            pack.rename(moved)
            (mirror / "objects" / "pack" / pack.with_suffix(".idx").name).unlink()
            subprocess.run(["git", "unpack-objects", "-q"], cwd=mirror, stdin=moved.open("rb"), check=True)
    loose.unlink()
    good = catalogue_file(tmp_path, "https://example.invalid/someone/tiny", commit)
    result = CliRunner().invoke(data, ["fetch", "--from", str(mirror.parent), "--catalogue", str(good)])
    assert result.exit_code == 0 and "tiny: missing blobs 1 (first: a/reeds/sax_p_D4.wav)" in result.output
    with pytest.raises(MissingBlob):
        GitTree(mirror, commit).read("a/reeds/sax_p_D4.wav")
