"""The package's levels (README, Layout): a level imports only from the levels under it, and
the public API is exported from `metaclip_gpu`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import metaclip_gpu

PACKAGE = Path(metaclip_gpu.__file__).resolve().parent
# Each level with the packages it must not import (those above it).
ABOVE = {
    "engine": ("pipeline", "metadata_builder", "report", "cli"),
    "pipeline": ("metadata_builder", "report", "cli"),
    "metadata_builder": ("report", "cli"),
    "report": ("cli",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports in functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("level", sorted(ABOVE))
def test_a_level_imports_nothing_above_it(level: str) -> None:
    files = sorted((PACKAGE / level).rglob("*.py"))
    assert files, level
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if any(name.startswith(f"metaclip_gpu.{above}") for above in ABOVE[level])
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_of_the_old_flat_layout_is_left() -> None:
    """The modules that moved into engine/, pipeline/, metadata_builder/ and report/ (issue 12)
    have no copy, and no re-exporting shim, left at the top."""
    moved = {
        "arrays", "balance", "build_metadata", "checksums", "cluster", "count", "curate",
        "english_only", "index", "keys", "languages", "lid", "manifest", "match", "metadata",
        "ngrams", "oserrors", "outcome", "plots", "reference", "report", "run_lock",
        "run_summary", "rundir", "stages", "target_size", "texts", "wordnet", "worldwide",
    }  # fmt: skip
    assert not moved & {p.stem for p in PACKAGE.glob("*.py")}
    assert not {"backends", "read", "_native", "templates"} & {p.name for p in PACKAGE.iterdir()}


def test_the_public_api() -> None:
    from metaclip_gpu.pipeline.balance import run_balance
    from metaclip_gpu.pipeline.count import run_count
    from metaclip_gpu.pipeline.match import run_match
    from metaclip_gpu.pipeline.run import curate

    assert metaclip_gpu.curate is curate
    assert metaclip_gpu.run_match is run_match
    assert metaclip_gpu.run_count is run_count
    assert metaclip_gpu.run_balance is run_balance
    assert {"match", "MatchResult", "MetadataIndex", "load_metadata"} <= set(metaclip_gpu.__all__)


def test_every_package_is_a_regular_package_listed_in_pyproject() -> None:
    """``[tool.setuptools] packages`` is an explicit list: a folder missing there (or without
    ``__init__.py``) is left out of the wheel although an editable install still finds it."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"]) - set(config.get("package-dir", {}))
    folders = {
        ".".join(path.parent.relative_to(PACKAGE.parent).parts)
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders == listed
    root = PACKAGE.parent
    assert all((root / name.replace(".", "/") / "__init__.py").is_file() for name in listed)


def test_the_storage_seam_is_at_the_bottom() -> None:
    """`metaclip_gpu.storage` (paths and URLs, issue 14) is imported by engine, pipeline,
    report and cli alike, so it imports no other module of the package."""
    names = imported_modules(PACKAGE / "storage.py")
    assert not [name for name in names if name.startswith("metaclip_gpu")]
