"""FrontendSpec documents every field where it is declared, and its string choices are written once (the Literals)."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest

from instrument_ai.device import frontend
from instrument_ai.device.frontend import FrontendSpec


def test_every_field_has_a_docstring_under_it() -> None:
    body = ast.parse(inspect.getsource(FrontendSpec)).body[0]
    assert isinstance(body, ast.ClassDef)
    documented = set()
    for declared, following in zip(body.body, body.body[1:], strict=False):
        if isinstance(declared, ast.AnnAssign) and isinstance(declared.target, ast.Name):
            is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if is_doc and isinstance(following.value.value, str) and following.value.value.strip():
                documented.add(declared.target.id)
    assert documented == {field.name for field in dataclasses.fields(FrontendSpec)}


def test_string_choices_come_from_the_literal_types() -> None:
    assert frontend._CHOICES == {
        "window": ("hann", "hamming", "rect"),
        "power_scale": ("none", "1/n_fft"),
        "mel_scale": ("slaney", "htk"),
        "mel_triangles": ("exact", "bin_floor"),
        "mel_norm": ("slaney", "none"),
        "log": ("db", "ln"),
        "dct_norm": ("ortho", "none"),
        "stage": ("mfcc", "log_mel"),
    }


@pytest.mark.parametrize(
    "name", ["window", "power_scale", "mel_scale", "mel_triangles", "mel_norm", "log", "dct_norm", "stage"]
)
def test_a_value_outside_the_literal_is_refused_with_the_choices(name: str) -> None:
    choices = frontend._CHOICES[name]
    with pytest.raises(ValueError, match=rf"^frontend spec: {name}='nope' is not one of {', '.join(choices)}$"):
        FrontendSpec(**{name: "nope"})
