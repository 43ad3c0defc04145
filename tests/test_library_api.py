"""The library entry points: the README's three lines classify a file, every docstring example runs, and
`import instrument_ai.device` stays cheap (the names are imported on first use)."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCTESTED = [
    "instrument_ai.device.settings",
    "instrument_ai.device.decision",
    "instrument_ai.device.engine",
    "instrument_ai.device.files",
]


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def _readme_file_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### As a library") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_classifies_a_file_in_three_lines(tmp_path: Path) -> None:
    snippet = _readme_file_snippet()
    assert len(snippet.strip().splitlines()) == 3
    note = tmp_path / "note.wav"
    import numpy as np
    import soundfile

    t = np.arange(16000) / 16000
    soundfile.write(note, 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-2 * t), 16000)
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    label, confidence = out.stdout.split()
    assert label and 0.0 <= float(confidence) <= 1.0


def test_the_package_import_is_light_and_exports_the_entry_points() -> None:
    probe = (
        "import json, sys; import instrument_ai.device as d; before = sorted(sys.modules);"
        "names = {n: getattr(d, n).__name__ for n in ('Classifier', 'classify_file', 'EngineSettings', 'FileResult')};"
        "print(json.dumps({'numpy': 'numpy' in before, 'names': names}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["numpy"] is False  # nothing but the package itself until a name is used
    assert report["names"] == {"Classifier": "Classifier", "classify_file": "classify_file",
                               "EngineSettings": "EngineSettings", "FileResult": "FileResult"}  # fmt: skip


def test_classifier_open_takes_settings_and_refuses_unknown_ones() -> None:
    from instrument_ai.device import Classifier

    clf = Classifier.open(REPO / "models" / "default.tflite", input_rate=48000, channels=2, smooth=5, top_k=2)
    assert (clf.smooth, clf.top_k, clf.input_rate, clf.channels) == (5, 2, 48000, 2)
    with pytest.raises(TypeError):
        Classifier.open(smoothing=5)
