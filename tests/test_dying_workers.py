"""Fault injection with a real dask cluster whose workers die (issue 11, item 7).

A scheduler runs in this process; its workers are ``dask worker --no-nanny`` processes, so a
SIGKILL removes one for good (as a nanny does once workers keep dying). `curate` runs as
its own process against the scheduler, slowed by the delay hook, as a user runs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from metaclip_gpu.pipeline.files import DELAY_ENV, MATCHES_DIR
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import curated_dir

pytest.importorskip("distributed")

T = 5.0
ENTRIES = ["dog", "cat", "red car", "beach", "a dog"]


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "index-cache"))
    root = tmp_path / "in"
    root.mkdir()
    words = ["dog", "cat", "red car", "beach", "a dog", "sun", "tree"]
    for s in range(6):
        lines = [f"{words[(s + r) % 7]} {words[(s * r) % 7]}\thttp://x/{s}/{r}" for r in range(200)]
        (root / f"part-{s}.tsv").write_text("\n".join(lines) + "\n")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    return root, metadata


@pytest.fixture
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def start_worker(address: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny"]
    command += ["--nthreads", "1", "--memory-limit", "0", "--no-dashboard"]
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)


def wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: its pid is gone, as a nanny reaps a dead worker


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, f"curate ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def curate_command(pool: tuple[Path, Path], out: Path, address: str, *extra: str) -> list[str]:
    root, metadata = pool
    args = ["curate", "--metadata", str(metadata), "--input", str(root), "--output", str(out)]
    args += ["--t", str(T), "--no-report", "--curated-entry-ids"]
    args += ["--scheduler-address", address, *extra]
    return [sys.executable, "-m", "metaclip_gpu.cli", *args]


def curated(out: Path) -> list[tuple]:
    rows = []
    for path in sorted(curated_dir(out, T).glob("*.parquet")):
        table = pq.read_table(path, columns=["url", "entry_ids"])
        rows += [(r["url"], tuple(r["entry_ids"])) for r in table.to_pylist()]
    return sorted(rows)


def tmp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_no_worker_left_fails_in_bounded_time_naming_the_scheduler(
    pool, scheduler: str, tmp_path: Path
) -> None:
    """The only worker is killed mid-run and nothing restarts it: curate used to wait forever
    with no message. With --no-worker-timeout 2 it ends within seconds, exit 1, one line
    naming the scheduler; with a worker back, the rerun finishes."""
    env = {**os.environ, DELAY_ENV: "0.6"}
    worker = start_worker(scheduler, env)
    try:
        wait_for_workers(scheduler, 1)
        out = tmp_path / "out"
        command = curate_command(pool, out, scheduler, "--no-worker-timeout", "2")
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: len(Manifest.load(out)) >= 1, proc, "a finished shard")
            kill(worker)
            killed_at = time.monotonic()
            _, stderr = proc.communicate(timeout=60)
            waited = time.monotonic() - killed_at
        finally:
            proc.kill()
            proc.wait()
        err = stderr.decode()
        assert proc.returncode == 1, err
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"Error: the dask scheduler {scheduler} has had no worker for 2 s")
        assert waited < 20, waited
    finally:
        kill(worker)

    worker = start_worker(scheduler, {**os.environ})
    try:
        rerun = subprocess.run(curate_command(pool, out, scheduler), capture_output=True)
        assert rerun.returncode == 0, rerun.stderr.decode()
    finally:
        kill(worker)
    run_curate(pool[0], pool[1], tmp_path / "clean", ts=[T], progress=False, curated_entry_ids=True)
    assert curated(out) == curated(tmp_path / "clean")


@pytest.mark.slow
def test_a_killed_workers_temporary_file_is_removed_by_the_run_that_finishes(
    pool, scheduler: str, tmp_path: Path
) -> None:
    """Two workers; one is killed while it holds a half-written ``matches/*.tmp-<pid>``. Its
    task is redone on the other worker, and the same run removes the orphan."""
    env = {**os.environ, DELAY_ENV: "1.0"}
    workers = [start_worker(scheduler, env) for _ in range(2)]
    try:
        wait_for_workers(scheduler, 2)
        pids = {w.pid for w in workers}
        out = tmp_path / "out"
        proc = subprocess.Popen(
            curate_command(pool, out, scheduler), env=env, stderr=subprocess.PIPE
        )
        try:

            def orphan() -> Path | None:
                for path in (out / MATCHES_DIR).glob("*.tmp-*"):
                    found = re.search(r"\.tmp-(\d+)$", path.name)
                    if found and int(found.group(1)) in pids:
                        return path
                return None

            wait_until(lambda: orphan() is not None, proc, "a worker's temporary file")
            victim_file = orphan()
            assert victim_file is not None
            victim_pid = int(victim_file.name.rsplit("-", 1)[1])
            kill(next(w for w in workers if w.pid == victim_pid))
            assert victim_file.exists()  # killed before its rename: an orphan
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, stderr.decode()
        assert tmp_files(out) == []
        assert len(Manifest.load(out)) == 6
    finally:
        for w in workers:
            kill(w)
    run_curate(pool[0], pool[1], tmp_path / "clean", ts=[T], progress=False, curated_entry_ids=True)
    assert curated(out) == curated(tmp_path / "clean")


@pytest.mark.slow
def test_a_task_that_kills_its_workers_is_a_cluster_error_naming_the_scheduler() -> None:
    """dask's KilledWorker (a task whose workers died more than allowed-failures times)
    becomes `ClusterError`, a RuntimeError the command line prints as one line."""
    import dask
    from distributed import Client, LocalCluster

    from metaclip_gpu.pipeline.cluster import ClusterError, results_as_completed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    try:
        with Client(cluster) as client:
            futures = [client.submit(_die, pure=False)]
            with pytest.raises(ClusterError, match=f"scheduler {cluster.scheduler_address}"):
                list(results_as_completed(client, futures))
    finally:
        cluster.close()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
