"""Shared fixtures: the real-data files in ``../shared/data``, the ``gpu`` auto-skip and the
emulated device (``emulated_cupy`` fixture / ``emulated_gpu`` marker, tests/gpu_emulation).

Real-data tests need ``cc3m_val.tsv`` and ``metadata_wordnet_wordfreq_500k.json``; they are
looked up in ``$METACLIP_SHARED_DATA`` when set, else in ``../shared/data`` next to the
repository root, and the tests skip with a clear reason where the files are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from metaclip_gpu.engine.backends import gpu_available

REPO_ROOT = Path(__file__).resolve().parent.parent
CC3M_FILE = "cc3m_val.tsv"
METADATA_FILE = "metadata_wordnet_wordfreq_500k.json"
SKIP_REASON = "../shared/data not found: real-data tests need the CC3M/metadata files (see README)"


def find_shared_data_dir() -> Path | None:
    """``$METACLIP_SHARED_DATA`` if set, else ``<repo>/../shared/data``; None if not a folder."""
    env = os.environ.get("METACLIP_SHARED_DATA")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def require_shared_file(name: str) -> Path:
    """The path of a shared data file, or skip the test when it is absent."""
    data_dir = find_shared_data_dir()
    if data_dir is None or not (data_dir / name).is_file():
        pytest.skip(SKIP_REASON)
    return data_dir / name


def read_cc3m_texts(path: Path) -> list[str]:
    """The first tab-separated column of each line (no header, no CSV quoting)."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t", 1)[0] for line in lines]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding the real-data files (skips when absent)."""
    data_dir = find_shared_data_dir()
    if data_dir is None:
        pytest.skip(SKIP_REASON)
    return data_dir


@pytest.fixture(scope="session")
def cc3m_path() -> Path:
    return require_shared_file(CC3M_FILE)


@pytest.fixture(scope="session")
def metadata_500k_path() -> Path:
    return require_shared_file(METADATA_FILE)


@pytest.fixture(scope="session")
def cc3m_texts(cc3m_path: Path) -> list[str]:
    """The 15,833 CC3M validation alt-texts."""
    return read_cc3m_texts(cc3m_path)


@pytest.fixture(scope="session")
def metadata_500k(metadata_500k_path: Path) -> list[str]:
    """The 500k-entry metadata list."""
    entries = json.loads(metadata_500k_path.read_bytes())
    assert isinstance(entries, list)
    return entries


@pytest.fixture(scope="session")
def oracle_500k(metadata_500k: list[str]):
    """A `FastOracle` over the 500k metadata (built once per session)."""
    from metaclip_gpu.engine.reference import FastOracle

    return FastOracle(metadata_500k)


@pytest.fixture
def emulated_cupy():
    """The emulated `cupy` (tests/gpu_emulation), installed in sys.modules for this test.

    `metaclip_gpu.engine.backends.gpu` is imported afresh against it and dropped again afterwards;
    `gpu_available()` is True (the emulated runtime reports one device). The launch log
    `gpu_emulation.launch_log` and `gpu_emulation.last_launch` start empty.
    """
    import gpu_emulation

    module = gpu_emulation.install()
    gpu_emulation.launch_log.clear()
    gpu_emulation.last_launch.clear()
    try:
        yield module
    finally:
        gpu_emulation.uninstall()


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index cache in this test's own folder (no test sees another's cached index), and
    no stage delay (`files.DELAY_ENV`) left over from the environment. Modules that run the
    pipeline take it for every test: ``pytestmark = pytest.mark.usefixtures("private_cache")``."""
    from metaclip_gpu.pipeline.files import DELAY_ENV

    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "index-cache"))
    monkeypatch.delenv(DELAY_ENV, raising=False)


@pytest.fixture(autouse=True)
def _emulated_gpu_marker(request: pytest.FixtureRequest) -> None:
    """A test marked ``emulated_gpu`` runs with the `emulated_cupy` fixture installed."""
    if request.node.get_closest_marker("emulated_gpu") is not None:
        request.getfixturevalue("emulated_cupy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` unless CuPy imports and sees at least one CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy (none found)")
    for item in gpu_items:
        item.add_marker(skip_gpu)
