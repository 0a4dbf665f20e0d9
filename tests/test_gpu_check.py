"""`./run gpu-check` and bench/bench_gpu.py fail clearly where there is no GPU, and write no
figures: a CPU figure must never be written as a GPU one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _no_gpu() -> None:
    from metaclip_gpu.engine.backends import gpu_count

    if gpu_count():
        pytest.skip("a GPU is visible here: these tests are about machines without one")


def test_gpu_check_stops_before_installing_anything_without_a_gpu(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "nvidia-smi"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(REPO_ROOT / "run"), "gpu-check"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert "no NVIDIA GPU here" in run.stderr and "nothing run" in run.stderr
    assert "Installing" not in run.stdout + run.stderr


def test_bench_gpu_requiring_a_gpu_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    _no_gpu()
    outputs = [tmp_path / "bench_gpu.json", tmp_path / "RESULTS-gpu.md"]
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_gpu.py"), "--require-gpu",
         "--json", str(outputs[0]), "--markdown", str(outputs[1])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no CUDA device" in run.stderr and "nothing written" in run.stderr
    assert not any(p.exists() for p in outputs)


def test_bench_gpu_under_run_all_records_that_it_skipped(tmp_path: Path) -> None:
    _no_gpu()
    outputs = [tmp_path / "bench_gpu.json", tmp_path / "RESULTS-gpu.md"]
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_gpu.py"),
         "--json", str(outputs[0]), "--markdown", str(outputs[1])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(outputs[0].read_text())["skipped"].startswith("no CUDA device")
    assert not outputs[1].exists()
