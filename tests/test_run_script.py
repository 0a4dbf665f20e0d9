"""``./run``: says what it does while it installs, and installs only when an input changed.

The script runs in a copy of the repository's build inputs with a stand-in ``.venv`` whose
``python`` records its arguments (a pip install there "compiles" by touching the extension),
so the test checks the script's decisions without installing anything.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$FAKE_CALLS"
case "$*" in
  *"pip install"*"-e "*) sleep "${FAKE_PIP_SECONDS:-0}"; touch metaclip_gpu/_cpu_kernels.abi3.so ;;
esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(REPO / "run", root / "run")
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "kernels", root / "kernels")
    shutil.copytree(
        REPO / "metaclip_gpu" / "engine" / "_native",
        root / "metaclip_gpu" / "engine" / "_native",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool, body in (("python", FAKE_PYTHON), ("ruff", "#!/bin/sh\nexit 0\n")):
        (bin_dir / tool).write_text(body)
        (bin_dir / tool).chmod(stat.S_IRWXU)
    return root


def _outer_env() -> dict[str, str]:
    """This process's environment less ``./run``'s own switches: CI runs the tests under
    ``METACLIP_TEST_GPU_EXTRA=1 ./run test``, which must not leak into the calls made here."""
    switches = {"METACLIP_TEST_GPU_EXTRA", "METACLIP_RUN_REINSTALL"}
    return {k: v for k, v in os.environ.items() if k not in switches}


def _run(root: Path, *args: str, **env: str) -> tuple[list[str], str]:
    """(the stand-in python's calls, stderr) of one ``./run`` call."""
    calls = root / "calls.txt"
    calls.unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", str(root / "run"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_outer_env(), "FAKE_CALLS": str(calls), **env},
    )
    assert done.returncode == 0, done.stderr
    return (calls.read_text().splitlines() if calls.exists() else []), done.stderr


def _installs(calls: list[str]) -> list[str]:
    return [c for c in calls if "pip install" in c and "-e " in c]


def test_run_installs_once_then_only_when_an_input_changes(checkout: Path) -> None:
    calls, err = _run(checkout, "lint", FAKE_PIP_SECONDS="1.5", METACLIP_RUN_HEARTBEAT_S="0.2")
    assert _installs(calls) == ["-m pip install --disable-pip-version-check -e .[test]"]
    said = err.splitlines()
    assert said[0].startswith("./run: installing metaclip-gpu[test] into .venv")
    assert any(line.startswith("./run:   ... ") for line in said[1:-1])  # while it works
    assert said[-1].startswith("./run: metaclip-gpu[test] installed in")

    calls, err = _run(checkout, "lint")  # nothing changed: no pip at all
    assert calls == [] and "up to date" in err

    for changed in (
        "kernels/match.cu",
        "metaclip_gpu/engine/_native/cpu_launch.cpp",
        "pyproject.toml",
    ):
        with (checkout / changed).open("a") as f:
            f.write("\n")
        calls, _ = _run(checkout, "lint")
        assert len(_installs(calls)) == 1, changed
        assert _run(checkout, "lint")[0] == [], changed

    (checkout / "metaclip_gpu" / "_cpu_kernels.abi3.so").unlink()  # the build is gone
    assert len(_installs(_run(checkout, "lint")[0])) == 1
    assert len(_installs(_run(checkout, "lint", METACLIP_RUN_REINSTALL="1")[0])) == 1


def test_each_set_of_extras_has_its_own_stamp_and_the_gpu_switch_works(checkout: Path) -> None:
    calls, _ = _run(checkout, "test", "-q", METACLIP_TEST_GPU_EXTRA="1")
    assert _installs(calls) == ["-m pip install --disable-pip-version-check -e .[gpu,test,report]"]
    assert calls[-1] == "-m pytest -q"
    calls, _ = _run(checkout, "test", "-q")  # without the gpu extra: another set
    assert _installs(calls) == ["-m pip install --disable-pip-version-check -e .[test,report]"]
    calls, _ = _run(checkout, "test", "-q", METACLIP_TEST_GPU_EXTRA="1")
    assert _installs(calls) == [] and calls == ["-m pytest -q"]
