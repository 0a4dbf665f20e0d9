"""The curate pipeline on a real dask cluster (`distributed.LocalCluster`, worker processes).

The curated output and the entry counts with 2 workers equal the in-process run's and a
1-worker cluster's exactly; the manifest gets one record per shard, appended by the client
only; a rerun on the cluster does no work.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tsv_shards import split_lines

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline import checksums
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.count import load_entry_counts, run_count
from metaclip_gpu.pipeline.files import COUNTS_NPY
from metaclip_gpu.pipeline.manifest import MANIFEST_NAME
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.shard_counts import RunCounts
from metaclip_gpu.pipeline.write import curated_dir

distributed = pytest.importorskip("distributed")

# only the scheduler's HTTP (metrics) server of a second cluster; the dashboard is off
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

TS = [20.0, 200.0]
N_SHARDS = 4


def curated(out_dir: Path, t: float) -> list[tuple[str, tuple[int, ...]]]:
    """Every kept row for `t` as sorted (url, entry ids): runs with ``curated_entry_ids``."""
    rows: list[tuple[str, tuple[int, ...]]] = []
    for path in sorted(curated_dir(out_dir, t).glob("*.parquet")):
        table = pq.read_table(path, columns=["url", "entry_ids"])
        rows += zip(
            table.column("url").to_pylist(),
            (tuple(ids) for ids in table.column("entry_ids").to_pylist()),
            strict=True,
        )
    return sorted(rows)


def manifest_lines(out_dir: Path) -> list[dict]:
    raw = (out_dir / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in raw if line.strip()]


def _cluster(n_workers: int):
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )


@pytest.fixture(scope="module")
def client2():
    with _cluster(2) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cc3m_path: Path, metadata_500k_path: Path):
    """(shards dir, cache dir, in-process output dir) on CC3M val in 4 TSV shards."""
    root = tmp_path_factory.mktemp("dask")
    split_lines(cc3m_path, root / "shards", N_SHARDS)
    cache = root / "cache"
    out = root / "local"
    run_curate(
        root / "shards", metadata_500k_path, out, ts=TS, seed=0, progress=False,
        cache_dir=cache, curated_entry_ids=True,
    )  # fmt: skip
    return root / "shards", cache, out


def test_two_workers_equal_in_process_and_rerun_does_nothing(
    setup, client2, metadata_500k_path, tmp_path
) -> None:
    shards, cache, local = setup
    out = tmp_path / "two"
    summary = run_curate(
        shards,
        metadata_500k_path,
        out,
        ts=TS,
        seed=0,
        progress=False,
        client=client2,
        cache_dir=cache,
        curated_entry_ids=True,
    )
    assert summary["shards"] == N_SHARDS
    assert summary["shards_matched_this_run"] == N_SHARDS
    assert summary["texts_read"] > 15000
    for t in TS:
        assert curated(out, t) == curated(local, t)
        assert curated(out, t)  # something kept
    np.testing.assert_array_equal(
        load_entry_counts(out / COUNTS_NPY), load_entry_counts(local / COUNTS_NPY)
    )
    local_summary = json.loads((local / "summary.json").read_text())
    assert [f["kept"] for f in summary["ts"]] == [f["kept"] for f in local_summary["ts"]]

    # one record per shard, all written by the client
    records = manifest_lines(out)
    assert sorted(r["shard"] for r in records) == [f"part-{i:03d}.tsv" for i in range(N_SHARDS)]
    # every task ran in a worker process, not here
    worker_pids = set(client2.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert not list((out / "matches").glob("*.tmp-*"))

    # a rerun on the cluster does no work: no match or curated file is rewritten
    def written() -> dict[Path, int]:
        files = [*(out / "matches").iterdir(), *(out / "curated").rglob("*")]
        return {p: p.stat().st_mtime_ns for p in files}

    before = written()
    again = run_curate(
        shards,
        metadata_500k_path,
        out,
        ts=TS,
        seed=0,
        progress=False,
        client=client2,
        cache_dir=cache,
        curated_entry_ids=True,
    )
    assert again["shards_matched_this_run"] == 0
    assert manifest_lines(out) == records
    assert written() == before
    for t in TS:
        assert curated(out, t) == curated(local, t)


def test_counts_come_back_with_the_tasks_and_the_client_hashes_no_match_file(
    setup, client2, metadata_500k_path, tmp_path, monkeypatch
) -> None:
    """On the cluster each match task's counts come back with its result (the client reads no
    footer) and the checksum the worker computed is adopted (the client hashes no match file
    the workers wrote, nor the counts files it writes itself)."""
    shards, cache, local = setup
    out = tmp_path / "in-memory"
    matched = RunCounts()
    run_match(
        shards,
        metadata_500k_path,
        out,
        progress=False,
        client=client2,
        cache_dir=cache,
        matched=matched,
    )
    assert len(matched.files) == N_SHARDS
    hashed: list[str] = []
    real = checksums.file_checksum
    monkeypatch.setattr(checksums, "file_checksum", lambda p: hashed.append(str(p)) or real(p))
    footers: list[str] = []
    monkeypatch.setattr(
        "metaclip_gpu.pipeline.count.add_footer_counts", lambda p, t: footers.append(str(p))
    )
    counts = run_count(out, metadata_500k_path, client=client2, matched=matched)
    np.testing.assert_array_equal(counts, load_entry_counts(local / COUNTS_NPY))
    assert hashed == [] and footers == []
    run_balance(out, shards, ts=TS, seed=0, progress=False, client=client2, curated_entry_ids=True)
    for t in TS:
        assert curated(out, t) == curated(local, t)


def test_one_worker_equals_two_workers(setup, metadata_500k_path, tmp_path) -> None:
    shards, cache, local = setup
    out = tmp_path / "one"
    with _cluster(1) as cluster, distributed.Client(cluster) as client:
        run_curate(
            shards,
            metadata_500k_path,
            out,
            ts=TS,
            seed=0,
            progress=False,
            client=client,
            cache_dir=cache,
            curated_entry_ids=True,
        )
    assert len(manifest_lines(out)) == N_SHARDS
    for t in TS:
        assert curated(out, t) == curated(local, t)
    np.testing.assert_array_equal(
        load_entry_counts(out / COUNTS_NPY), load_entry_counts(local / COUNTS_NPY)
    )


def test_cli_curate_on_a_local_cluster(cc3m_path, metadata_500k_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "shards", 2, limit=2000)
    base = ["curate", "--metadata", str(metadata_500k_path), "--input", str(tmp_path / "shards")]
    base += ["--t", "20", "--backend", "cpu", "--curated-entry-ids"]
    runner = CliRunner()
    plain = runner.invoke(main, [*base, "--output", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    dask_run = runner.invoke(
        main, [*base, "--output", str(tmp_path / "dask"), "--cluster", "local", "--workers", "2"]
    )
    assert dask_run.exit_code == 0, dask_run.output
    assert curated(tmp_path / "dask", 20.0) == curated(tmp_path / "plain", 20.0)
    assert len(manifest_lines(tmp_path / "dask")) == 2


def test_rmm_pool_size_needs_a_gpu_cluster(metadata_500k_path, tmp_path) -> None:
    (tmp_path / "s.tsv").write_text("a dog\thttp://x\n")
    args = ["curate", "--metadata", str(metadata_500k_path), "--input", str(tmp_path / "s.tsv")]
    args += ["--output", str(tmp_path / "o"), "--t", "20", "--rmm-pool-size", "1GB"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "--rmm-pool-size" in result.output


def test_english_only_identifies_on_every_worker_as_in_process(setup, client2, tmp_path) -> None:
    pytest.importorskip("fasttext", reason="needs the 'lid' extra (fasttext-predict)")
    shards, _, _ = setup
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog", "beach", "man", "woman", "city", "de", "la", "der"]))
    kwargs = {"ts": [200.0], "seed": 0, "progress": False, "english_only": True}
    kwargs["curated_entry_ids"] = True
    local = run_curate(shards, metadata, tmp_path / "local", **kwargs)
    two = run_curate(shards, metadata, tmp_path / "two", client=client2, **kwargs)
    assert two["skipped"]["not_english"] == local["skipped"]["not_english"] > 0
    assert two["shards_matched_this_run"] == N_SHARDS
    assert curated(tmp_path / "two", 200.0) == curated(tmp_path / "local", 200.0)
    np.testing.assert_array_equal(
        load_entry_counts(tmp_path / "two" / COUNTS_NPY),
        load_entry_counts(tmp_path / "local" / COUNTS_NPY),
    )


def test_target_size_on_the_cluster_equals_in_process(setup, client2, tmp_path) -> None:
    """`--target-size` solved from per-file tasks on the workers: the t of the in-process run."""
    shards, _, local = setup
    in_process = tmp_path / "here"
    on_cluster = tmp_path / "there"
    shutil.copytree(local, in_process, ignore=shutil.ignore_patterns("curated"))
    shutil.copytree(local, on_cluster, ignore=shutil.ignore_patterns("curated"))
    kwargs = {"target_size": 6000, "progress": False, "curated_entry_ids": True}
    here = run_balance(in_process, shards, **kwargs)
    there = run_balance(on_cluster, shards, client=client2, **kwargs)
    assert there["ts"][0]["t"] == pytest.approx(here["ts"][0]["t"], rel=1e-12)
    assert abs(there["ts"][0]["expected_kept"] - 6000) < 1e-3
    assert curated(on_cluster, there["ts"][0]["t"]) == curated(in_process, here["ts"][0]["t"])
