"""Fault injection (issue 11): each failure ends in identical output after a rerun, or in one
clear line and the right exit status.

- a kill at each stage, then a rerun: `test_stages.test_resume_after_sigkill` (match: killed
  with a temporary file left, or after a rename before its record) and
  `test_curate.test_curate_killed_in_the_balance_stage_resumes_to_the_same_result`; here,
  Ctrl-C (SIGINT) of the command line: exit 130, and the rerun resumes;
- a disk that fills up: a real tmpfs of a few hundred KiB where this machine lets the test
  mount one (root), else skipped with the reason; and the same error injected everywhere;
- read-only output (a read-only tmpfs as root, a folder without write permission otherwise),
  and output under a file;
- dask workers that keep dying: `test_dying_workers.py`.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tsv_shards import write_word_pool

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline.files import DELAY_ENV
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.write import curated_dir

T = 50


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, Path]:
    """8 TSV shards of 1,500 rows (keys that compress badly, so match files take room) and
    their metadata."""
    return write_word_pool(tmp_path, 8, 1500)


def curate_args(pool: tuple[Path, Path], out: Path) -> list[str]:
    root, metadata = pool
    args = ["curate", "--metadata", str(metadata), "--input", str(root), "--output", str(out)]
    return [*args, "--t", str(T), "--no-report", "--curated-entry-ids"]


def invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def curated(out: Path) -> list[tuple]:
    rows = []
    for path in sorted(curated_dir(out, T).glob("*.parquet")):
        table = pq.read_table(path)
        rows += zip(
            table.column("url").to_pylist(), table.column("entry_ids").to_pylist(), strict=True
        )
    return sorted((url, tuple(ids)) for url, ids in rows)


def assert_one_clear_line(result, *needles: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output, result.output
    assert len(lines) <= 3, result.output
    assert lines[-1].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[-1], result.output


def no_tmp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if ".tmp-" in p.name or p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- small file systems
def _mount(*args: str) -> bool:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An empty folder on a tmpfs of 1 MiB mounted for this test (remount it to resize)."""
    where = tmp_path / "fs"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test runs as a normal user")
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)):
        pytest.skip("mount -t tmpfs failed here (no mount permission in this container)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


def test_disk_full_is_one_line_and_the_rerun_on_a_larger_disk_resumes(
    pool, tmp_path: Path, tmpfs: Path
) -> None:
    """A real tmpfs fills up part-way through the match stage: one line naming the file and
    what to do, exit 1; what was written stays valid; grown, the rerun finishes and gives
    exactly the curated set of an uninterrupted run elsewhere."""
    # match files take ~20 KB a shard here (six 4 KiB pages; ~110 KB while they held the
    # input's keys, with 400 KB here) and two shards are written at once: 96 KB holds the first
    # two whatever the order and never all 8 (less let both in-flight writes fail: a flaky 0)
    assert _mount("-o", "remount,size=96k", str(tmpfs))
    out = tmpfs / "run"
    result = invoke(curate_args(pool, out))
    assert result.exit_code == 1, result.output
    assert_one_clear_line(result, "No space left on device", "errno 28", str(out))
    done = len(Manifest.load(out))
    assert 1 <= done < 8, done  # part-way: some shards finished and recorded
    assert no_tmp_files(out)

    assert _mount("-o", "remount,size=64m", str(tmpfs))
    rerun = invoke(curate_args(pool, out))
    assert rerun.exit_code == 0, rerun.output
    clean = invoke(curate_args(pool, tmp_path / "clean"))
    assert clean.exit_code == 0, clean.output
    assert curated(out) == curated(tmp_path / "clean") and curated(out)
    assert no_tmp_files(out)


def test_read_only_output_is_one_line(pool, tmp_path: Path) -> None:
    """A read-only file system as root (a tmpfs mounted ``ro``), else a folder without write
    permission: one line, exit 1; once writable, the run finishes."""
    where = tmp_path / "ro"
    where.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = _mount("-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(where))
        if not mounted:
            pytest.skip("as root, a read-only folder needs a read-only mount, and mount failed")
    else:
        where.chmod(0o555)
    try:
        result = invoke(curate_args(pool, where / "run"))
        assert result.exit_code == 1, result.output
        needle = "Read-only file system" if mounted else "Permission denied"
        assert_one_clear_line(result, needle, str(where / "run"), "--output")
        if mounted:
            assert _mount("-o", "remount,rw", str(where))
        else:
            where.chmod(0o755)
        rerun = invoke(curate_args(pool, where / "run"))
        assert rerun.exit_code == 0, rerun.output
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)
        else:
            where.chmod(0o755)


def test_output_under_a_file_is_one_line(pool, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    result = invoke(curate_args(pool, tmp_path / "afile" / "run"))
    assert result.exit_code == 1, result.output
    assert_one_clear_line(result, str(tmp_path / "afile"), "Not a directory", "errno 20")


def test_disk_full_injected_in_the_balance_stage_is_one_line(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC raised, as the OS raises it (an errno, no file name), while the third curated
    file is written to disk (its Parquet bytes are made in memory, then written by
    `checksums.put_bytes`): one line naming that file; the rerun resumes to the uninterrupted
    result."""
    from metaclip_gpu.pipeline import checksums

    real = open
    calls = {"n": 0}

    def failing(path, *args, **kwargs):
        handle = real(path, *args, **kwargs)
        calls["n"] += "curated" in str(path)
        if calls["n"] == 3 and "curated" in str(path):
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return handle

    out = tmp_path / "out"
    monkeypatch.setattr(checksums, "open", failing, raising=False)
    result = invoke(curate_args(pool, out))
    monkeypatch.delattr(checksums, "open")
    if calls["n"] < 3:
        pytest.fail("the balance stage wrote fewer curated files than expected")
    assert result.exit_code == 1, result.output
    assert_one_clear_line(result, str(curated_dir(out, T)), "errno 28", "rerun the same command")
    assert not list(curated_dir(out, T).glob("*.tmp-*"))  # the half-written file is gone
    assert invoke(curate_args(pool, out)).exit_code == 0
    assert invoke(curate_args(pool, tmp_path / "clean")).exit_code == 0
    assert curated(out) == curated(tmp_path / "clean")


def test_debug_shows_the_traceback(pool, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(main, ["--debug", *curate_args(pool, tmp_path / "afile" / "r")])
    assert isinstance(result.exception, NotADirectoryError)


def test_a_known_cluster_error_is_one_line(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. LocalCUDACluster without NVML: make_client raises a RuntimeError saying so.
    (CuPy is said to see a GPU: without one, --backend gpu stops earlier, where the run's
    backend is resolved before the cluster starts, with its own line.)"""
    import metaclip_gpu.engine.backends as backends
    import metaclip_gpu.pipeline.cluster as cluster

    def no_nvml(**kwargs):
        raise RuntimeError("NVML is not available: no NVIDIA driver [libnvidia-ml.so.1]")

    monkeypatch.setattr(backends, "gpu_available", lambda: True)
    monkeypatch.setattr(cluster, "make_client", no_nvml)
    args = curate_args(pool, tmp_path / "out")
    result = invoke([*args, "--cluster", "local", "--backend", "gpu"])
    assert result.exit_code == 1
    assert_one_clear_line(result, "NVML is not available", "[libnvidia-ml.so.1]")


# ---------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("stage", ["match", "balance"])
def test_ctrl_c_exits_130_saying_a_rerun_resumes_and_it_does(
    pool, tmp_path: Path, stage: str
) -> None:
    """SIGINT (Ctrl-C) once the stage has finished some shards (the delay hook slows each):
    exit 130 and a line saying that rerunning resumes (it used to be "Aborted!", exit 1);
    the rerun gives exactly the uninterrupted run's curated set."""
    out = tmp_path / "out"
    env = {**os.environ, DELAY_ENV: "0.4"}
    command = [sys.executable, "-m", "metaclip_gpu.cli", *curate_args(pool, out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reached() -> bool:
        if stage == "match":
            return len(Manifest.load(out)) >= 2
        return len(list(curated_dir(out, T).glob("*.parquet"))) >= 2

    try:
        deadline = time.monotonic() + 60
        while not reached():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the stage"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, (stdout, stderr)
    err = stderr.decode()
    assert "Traceback" not in err and "Aborted" not in err, err
    assert "interrupted: rerun the same command to resume" in err.strip().splitlines()[-1]

    assert invoke(curate_args(pool, out)).exit_code == 0
    assert invoke(curate_args(pool, tmp_path / "clean")).exit_code == 0
    assert curated(out) == curated(tmp_path / "clean")
    assert no_tmp_files(out)


def test_describe_names_the_path_the_errno_and_what_to_do(tmp_path: Path) -> None:
    from metaclip_gpu.pipeline.oserrors import describe, with_path

    with pytest.raises(OSError) as caught, with_path(tmp_path / "x.parquet"):
        raise OSError(errno.ENOSPC, "No space left on device")  # as pyarrow raises it
    line = describe(caught.value)
    assert line.startswith(f"{tmp_path / 'x.parquet'}: No space left on device (errno 28")
    assert "free space" in line and "\n" not in line
    assert describe(OSError(errno.EROFS, "Read-only file system"), "run").startswith("under run:")
    moved = describe(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"))
    assert moved.startswith("a -> b: Invalid cross-device link (errno 18, EXDEV)")
    assert describe(OSError("no errno")) == "no errno"
