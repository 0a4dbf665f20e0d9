"""Durability off the compute threads (issue 13, `pipeline.durable`): a manifest record is
never on disk before the file it names is durable under its final name (match files AND
curated files: before, curated files were never fsynced); a failing fsync fails the stage
naming the file and leaves no record; a run killed between the fsync and the append resumes
to the uninterrupted result. The same holds on a dask cluster (a worker fsyncs the files it
wrote, the client appends) and for the worldwide per-image balance, whose curated files were
recorded without any fsync in both."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tsv_shards import write_word_pool

from metaclip_gpu.pipeline.durable import finished_batches, ordered_batches, results_of
from metaclip_gpu.pipeline.files import DELAY_ENV, MATCHES_DIR
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import CURATED_MANIFEST, curated_dir

T = 50
N_SHARDS = 6


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, Path]:
    """`N_SHARDS` TSV shards of 800 rows and their metadata."""
    return write_word_pool(tmp_path, N_SHARDS, 800)


def curate(pool: tuple[Path, Path], out: Path) -> dict:
    return run_curate(pool[0], pool[1], out, ts=[T], progress=False)


def curated_rows(out: Path) -> list[tuple]:
    rows = []
    for path in sorted(curated_dir(out, T).glob("*.parquet")):
        table = pq.read_table(path)
        urls, captions = table.column("url").to_pylist(), table.column("caption").to_pylist()
        rows += zip(urls, captions, strict=True)
    return sorted(rows)


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class Events:
    """``os.fsync``/``os.replace`` calls and manifest appends, in the order they happened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        real_fsync, real_replace = os.fsync, os.replace
        real_append = Manifest.append

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.add("fsync", fd_path(fd))

        def replace(src, dst, *args, **kwargs) -> None:
            real_replace(src, dst, *args, **kwargs)
            self.add("replace", str(src), str(dst))

        def append(manifest: Manifest, record: ShardRecord) -> None:
            assert isinstance(manifest.out_dir, Path)
            if record.output is not None:
                self.add("append", str(manifest.out_dir / record.output))
            real_append(manifest, record)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(Manifest, "append", append)

    def add(self, kind: str, a: str, b: str = "") -> None:
        with self.lock:
            self.log.append((kind, a, b))


def assert_durable_before_recorded(log: list[tuple[str, str, str]]) -> int:
    """Each appended record's file: its data fsynced (under the temporary name before the
    rename, or under its final name after it) and its folder fsynced after the rename, all
    before the append. Returns the number of records checked."""
    checked = 0
    for k, (kind, path, _) in enumerate(log):
        if kind != "append":
            continue
        renames = [i for i in range(k) if log[i][0] == "replace" and log[i][2] == path]
        assert renames, f"{path}: recorded, never renamed into place"
        r, tmp = renames[-1], log[renames[-1]][1]
        data_synced = any(log[i][:2] == ("fsync", tmp) for i in range(r)) or any(
            log[i][:2] == ("fsync", path) for i in range(r + 1, k)
        )
        assert data_synced, f"{path}: recorded before its data was fsynced"
        folder = str(Path(path).parent)
        assert any(log[i][:2] == ("fsync", folder) for i in range(r + 1, k)), (
            f"{path}: recorded before its folder was fsynced after the rename"
        )
        checked += 1
    return checked


def test_no_record_is_appended_before_its_file_is_durable(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every match file and every curated file: fsynced, its folder fsynced after the rename,
    then its record (the curated ones were recorded without any fsync before)."""
    events = Events(monkeypatch)
    out = tmp_path / "out"
    curate(pool, out)
    appended = [path for kind, path, _ in events.log if kind == "append"]
    assert sum(f"/{MATCHES_DIR}/" in p for p in appended) == N_SHARDS
    assert sum(str(curated_dir(out, T)) in p for p in appended) == N_SHARDS
    assert assert_durable_before_recorded(events.log) == 2 * N_SHARDS


def test_the_compute_threads_do_not_fsync(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, every fsync of the match and balance stages is the main thread's: the
    compute threads go on with the next shard."""
    threads: set[str] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.add(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    curate(pool, tmp_path / "out")
    assert threads == {threading.main_thread().name}


@pytest.fixture
def threads_client():
    """A dask client whose worker runs in this process (threads), so the `Events` wrappers
    see the tasks' fsyncs too: the cluster path of every stage, with the files a worker
    wrote and the records the client appends."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        yield client


def test_on_a_cluster_no_record_is_appended_before_its_file_is_durable(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_client
) -> None:
    """With a dask client the workers write the files and the client appends the records:
    each curated file too is fsynced (by the worker that wrote it) before its record (it was
    recorded without any fsync)."""
    events = Events(monkeypatch)
    out = tmp_path / "out"
    run_curate(pool[0], pool[1], out, ts=[T], progress=False, client=threads_client)
    appended = [path for kind, path, _ in events.log if kind == "append"]
    assert sum(str(curated_dir(out, T)) in p for p in appended) == N_SHARDS
    assert assert_durable_before_recorded(events.log) == 2 * N_SHARDS


@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "cluster"])
def test_worldwide_curated_files_are_durable_before_their_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request, on_cluster: bool
) -> None:
    """MetaCLIP 2's per-image balance: each curated file fsynced, and its folder after the
    rename, before its record (they were recorded without any fsync), in process and on a
    cluster."""
    from test_worldwide_pipeline import METADATA, make_pool, write_shards

    from metaclip_gpu.pipeline.run import run_worldwide

    metadata = tmp_path / "metadata"
    metadata.mkdir()
    for lang, entries in METADATA.items():
        (metadata / f"{lang}.json").write_text(json.dumps(entries, ensure_ascii=False))
    table = make_pool(300, seed=5)
    shards = write_shards(table, tmp_path / "in", [len(table) // 3, 2 * len(table) // 3])
    client = request.getfixturevalue("threads_client") if on_cluster else None
    events = Events(monkeypatch)
    summary = run_worldwide(
        shards, metadata, tmp_path / "out", t_en=[40.0, 1e9], seed=7, progress=False,
        client=client,
    )  # fmt: skip
    n_shards = len(list(shards.glob("*.parquet")))
    curated = [p for kind, p, _ in events.log if kind == "append" and "/curated/" in p]
    assert len(curated) == 2 * n_shards and summary["outputs"]["curated"]
    assert assert_durable_before_recorded(events.log) == 3 * n_shards


@pytest.mark.parametrize("stage", ["match", "balance"])
def test_a_failing_fsync_fails_the_stage_naming_the_file_and_leaves_no_record(
    pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """EIO from the fsync of shard part-2's file: the run fails with an OSError naming that
    file; no record names it; the rerun finishes with the uninterrupted result."""
    out = tmp_path / "out"
    real_fsync = os.fsync
    folder = out / MATCHES_DIR if stage == "match" else curated_dir(out, T)

    def failing(fd: int) -> None:
        path = Path(fd_path(fd))
        if path.parent == folder and path.name.startswith("part-2.tsv"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError) as raised:
        curate(pool, out)
    assert raised.value.errno == errno.EIO
    assert Path(raised.value.filename).parent == folder
    assert Path(raised.value.filename).name.startswith("part-2.tsv")
    name = "manifest.jsonl" if stage == "match" else CURATED_MANIFEST
    manifest = Manifest.load(out if stage == "match" else folder, name)
    assert "part-2.tsv" not in manifest

    monkeypatch.setattr(os, "fsync", real_fsync)
    curate(pool, out)
    curate(pool, tmp_path / "clean")
    assert curated_rows(out) == curated_rows(tmp_path / "clean") and curated_rows(out)


KILLER = """
import os, sys
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.run import run_curate

real, seen = Manifest.append, []

def dying(self, record):
    if self.path.name == sys.argv[4]:
        seen.append(record)
        if len(seen) == 2:  # its file is durable already (durable.commit)
            os._exit(9)
    real(self, record)

Manifest.append = dying
run_curate(sys.argv[1], sys.argv[2], sys.argv[3], ts=[50.0], progress=False)
"""


@pytest.mark.parametrize("manifest_name", ["manifest.jsonl", CURATED_MANIFEST])
def test_killed_between_the_fsync_and_the_append_resumes(
    pool, tmp_path: Path, manifest_name: str
) -> None:
    """A process killed at its 2nd append to the match (curated) manifest, its files durable
    under their final names: durable files that no record names are left; the rerun redoes
    them (and reuses what was recorded), giving the uninterrupted result."""
    out = tmp_path / "killed"
    env = {**os.environ, "METACLIP_GPU_CACHE": str(tmp_path / "index-cache")}
    env.pop(DELAY_ENV, None)
    args = [sys.executable, "-c", KILLER, str(pool[0]), str(pool[1]), str(out), manifest_name]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    folder = out / MATCHES_DIR if manifest_name == "manifest.jsonl" else curated_dir(out, T)
    manifest = Manifest.load(out if folder.name == MATCHES_DIR else folder, manifest_name)
    recorded = {Path(r.output).name for r in manifest.records.values() if r.output}
    files = {p.name for p in folder.glob("*.parquet")}
    assert 1 <= len(recorded) < N_SHARDS
    assert files - recorded, "no durable unrecorded file was left"

    summary = curate(pool, out)
    curate(pool, tmp_path / "clean")
    assert curated_rows(out) == curated_rows(tmp_path / "clean") and curated_rows(out)
    if manifest_name == "manifest.jsonl":
        assert summary["shards_matched_this_run"] == N_SHARDS - len(recorded)


def test_a_batch_of_appends_is_fsynced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several records appended in a `Manifest.batch`: one fsync, at its end, each on its own
    line, after a truncated last line too; outside a batch, one fsync an append."""
    first = json.dumps({"shard": "a", "output": None, "rows": 0})
    (tmp_path / "manifest.jsonl").write_text(first + '\n{"tr')  # a truncated last line
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    manifest = Manifest.load(tmp_path)
    with manifest.batch():
        for i in range(3):
            manifest.append(ShardRecord(f"s{i}", f"f{i}", rows=i))
        assert not calls
    assert len(calls) == 1
    manifest.append(ShardRecord("s3", "f3", rows=3))
    assert len(calls) == 2
    again = Manifest.load(tmp_path)
    assert sorted(again.records) == ["a", "s0", "s1", "s2", "s3"] and again.ignored_lines == 1
    assert again.records["s2"].rows == 2


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def test_batches_keep_the_order_and_stop_at_a_failure() -> None:
    failed: Future = Future()
    failed.set_exception(ValueError("boom"))
    futures = [_done(0), _done(1), failed, _done(3)]
    assert [[f.result() for f in b] for b in ordered_batches(futures[:2])] == [[0, 1]]
    assert sum(len(b) for b in finished_batches(futures)) == 4
    results, failure = results_of(futures)
    assert results == [0, 1] and isinstance(failure, ValueError)
