"""The layout rules of docs/INTERFACES.md "Where things live", checked on the source with `ast`.

Only the command shells import click, and `train/sources/` (where notes come from) never reaches the
trainer or the experiments: a source importer must stay usable without training code.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND_SHELLS = {"convert/cli.py", "convert/signing_cli.py"}
"""Click shells outside a `commands/` folder."""
TRAINING = ("instrument_ai.train.trainer", "instrument_ai.train.prepare", "instrument_ai.train.windows",
            "instrument_ai.train.config", "instrument_ai.train.run_folder", "instrument_ai.train.experiments",
            "instrument_ai.train.commands")  # fmt: skip
"""What `train/sources/` must not import: the trainer's modules, the experiments and the command shells."""


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports, at any depth (lazy imports inside functions count),
    as absolute names; `from a import b` counts both `a` and `a.b`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    """What the repository file `path` imports (its package: instrument_ai + its folder)."""
    return imported_modules(path.read_text(), "instrument_ai." + ".".join(path.relative_to(REPO).parent.parts))


def library_modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def is_shell(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return relative in COMMAND_SHELLS or "commands" in path.relative_to(REPO).parts


def test_the_folders_hold_python_modules() -> None:
    """The checks below read real files (an emptied glob would pass them vacuously)."""
    modules = library_modules("train", "convert")
    assert len(modules) > 40
    assert {"train/sources/catalogue.py", "train/corpus/nsynth.py", "convert/converter.py"} <= {
        p.relative_to(REPO).as_posix() for p in modules
    }


def test_only_command_shells_import_click() -> None:
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(m for m in imports_of(path) if m.split(".")[0] == "click")
        for path in library_modules("train", "convert")
        if not is_shell(path)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sources_never_import_the_trainer_or_the_experiments() -> None:
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(m for m in imports_of(path) if m.startswith(TRAINING))
        for path in library_modules("train/sources")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_lazy_relative_and_aliased_imports() -> None:
    """The rules cannot pass by not seeing an import: a function-level, a relative and an aliased one are found."""
    source = (
        "def f():\n    import click as c\n    from ..experiments import holdout\n"
        "    from instrument_ai.train.trainer import load_run\n"
    )
    found = imported_modules(source, "instrument_ai.train.sources")
    assert "click" in found
    assert "instrument_ai.train.experiments.holdout" in found
    assert "instrument_ai.train.trainer.load_run" in found
    assert any(m.startswith(TRAINING) for m in found)
