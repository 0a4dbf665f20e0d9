"""A run directory owns its state (SPEC section 7): one configuration and one shard list at a
time, checksums verified on reuse, a lock against a second run, and the same summary for the
stage-at-a-time route as for ``curate`` (metaclip_gpu.pipeline.rundir, checksums, run_lock)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xxhash
from click.testing import CliRunner
from test_curate import curated_rows
from tsv_shards import split_lines

from metaclip_gpu.cli import main
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.count import run_count
from metaclip_gpu.pipeline.files import COUNTS_NPY, DELAY_ENV
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import ReadOptions
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import curated_dir

TS = [20.0, 200.0]
SMALL_ENTRIES = ["dog", "beach", "red car", "man", "woman", "city", "the sun", "the"]


# ---------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def index_500k(metadata_500k_path: Path) -> MetadataIndex:
    return MetadataIndex.load(metadata_500k_path)


def curate(shards: Path, metadata: Any, out: Path, **kwargs: Any) -> dict[str, Any]:
    """`run_curate`; its curated files hold ``entry_ids`` (`curated_rows` reads them)."""
    kwargs.setdefault("ts", TS)
    kwargs.setdefault("curated_entry_ids", True)
    return run_curate(shards, metadata, out, progress=False, **kwargs)


def comparable(summary: dict[str, Any], out: Path) -> Any:
    """A summary without its timings and with its output directory as ``<out>``."""
    summary = {k: v for k, v in summary.items() if k != "seconds"}
    return json.loads(json.dumps(summary).replace(str(out), "<out>"))


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), output
    return lines[0]


def corrupt_column_mid_file(path: Path, column: str) -> None:
    """Overwrites 64 bytes in the middle of `column`'s data in row group 0 (footer intact)."""
    meta = pq.ParquetFile(path).metadata
    rg = meta.row_group(0)
    chunk = next(
        rg.column(i)
        for i in range(rg.num_columns)
        if rg.column(i).path_in_schema.startswith(column)
    )
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[middle : middle + 64] = bytes((b ^ 0x5A) for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def match_file(out: Path, shard: str) -> Path:
    record = Manifest.load(out).get(shard)
    assert record is not None and record.output is not None
    return out / record.output


# ---------------------------------------------------------------------- shards and counts
def test_a_removed_shard_is_not_counted_again(cc3m_path, index_500k, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 4, limit=4000)
    out = tmp_path / "out"
    curate(tmp_path / "in", index_500k, out)
    (tmp_path / "in" / "part-002.tsv").rename(tmp_path / "part-002.tsv")
    again = curate(tmp_path / "in", index_500k, out)
    fresh = curate(tmp_path / "in", index_500k, tmp_path / "fresh")
    np.testing.assert_array_equal(
        np.load(out / COUNTS_NPY), np.load(tmp_path / "fresh" / COUNTS_NPY)
    )
    for t in TS:
        assert curated_rows(out, t) == curated_rows(tmp_path / "fresh", t)
    fresh["shards_matched_this_run"] = 0  # the rerun matched nothing
    assert comparable(again, out) == comparable(fresh, tmp_path / "fresh")


def test_count_with_other_metadata_than_match_is_refused(cc3m_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 2, limit=1000)
    m1, m2 = tmp_path / "m1.json", tmp_path / "m2.json"
    m1.write_text(json.dumps(SMALL_ENTRIES))
    m2.write_text(json.dumps(["indians", *SMALL_ENTRIES[1:]]))
    out = tmp_path / "out"
    runner = CliRunner(env={"COLUMNS": "400"})
    shards = str(tmp_path / "in")
    matched = runner.invoke(
        main, ["match", "--metadata", str(m1), "--input", shards, "--output", str(out)]
    )
    assert matched.exit_code == 0, matched.output
    refused = runner.invoke(main, ["count", "--metadata", str(m2), "--output", str(out)])
    assert refused.exit_code != 0
    line = one_line_error(refused.output)
    assert "rerun match" in line and "start afresh" in line
    assert not (out / COUNTS_NPY).exists()

    # Matched again with m2, the counts are those of a fresh run with m2.
    for step in (
        ["match", "--metadata", str(m2), "--input", shards, "--output", str(out)],
        ["count", "--metadata", str(m2), "--output", str(out)],
    ):
        result = runner.invoke(main, step)
        assert result.exit_code == 0, result.output
    run_match(tmp_path / "in", m2, tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(np.load(out / COUNTS_NPY), run_count(tmp_path / "fresh", m2))


def test_balance_refuses_counts_of_other_shards_or_other_read_options(cc3m_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 3, limit=1500)
    index = MetadataIndex.from_entries(SMALL_ENTRIES)
    out = tmp_path / "out"
    run_match(tmp_path / "in", index, out, progress=False)
    run_count(out, index)
    with pytest.raises(RuntimeError, match="run match and count on these shards"):
        run_balance(out, str(tmp_path / "in" / "part-00[01].tsv"), ts=[5], progress=False)
    with pytest.raises(RuntimeError, match="read options"):
        options = ReadOptions(tsv_columns=("caption", "url"))
        run_balance(out, tmp_path / "in", ts=[5], options=options, progress=False)
    assert not curated_dir(out, 5).exists()


# ---------------------------------------------------------------------- checksums
def test_checksums_are_recorded_for_every_output(cc3m_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 2, limit=1000)
    out = tmp_path / "out"
    curate(tmp_path / "in", MetadataIndex.from_entries(SMALL_ENTRIES), out)
    assert len(Manifest.load(out)) == 2
    for t in TS:
        manifest = Manifest.load(curated_dir(out, t), "_manifest.jsonl")
        assert len(manifest) == 2
        for record in manifest.records.values():
            data = (curated_dir(out, t) / record.output).read_bytes()
            assert record.checksum == xxhash.xxh64(data).hexdigest()
    for record in Manifest.load(out).records.values():
        assert record.checksum == xxhash.xxh64((out / record.output).read_bytes()).hexdigest()


def test_a_match_file_damaged_mid_file_is_named_and_redone(
    cc3m_path, metadata_500k_path, tmp_path
) -> None:
    split_lines(cc3m_path, tmp_path / "in", 3, limit=3000)
    runner = CliRunner(env={"COLUMNS": "400"})
    base = ["curate", "--metadata", str(metadata_500k_path), "--input", str(tmp_path / "in")]
    args = ["--t", "20", "--no-report", "--curated-entry-ids"]
    for out in ("out", "fresh"):
        result = runner.invoke(main, [*base, "--output", str(tmp_path / out), *args])
        assert result.exit_code == 0, result.output
    damaged = match_file(tmp_path / "out", "part-001.tsv")
    size = damaged.stat().st_size
    corrupt_column_mid_file(damaged, "entry_ids")
    assert damaged.stat().st_size == size and pq.ParquetFile(damaged).metadata.num_rows == 1000

    with pytest.warns(UserWarning, match=damaged.name):
        rerun = runner.invoke(main, [*base, "--output", str(tmp_path / "out"), *args])
    assert rerun.exit_code == 0, rerun.output
    assert curated_rows(tmp_path / "out", 20) == curated_rows(tmp_path / "fresh", 20)
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / COUNTS_NPY), np.load(tmp_path / "fresh" / COUNTS_NPY)
    )
    summary = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert summary["shards_matched_this_run"] == 1


def test_a_damaged_curated_file_is_named_and_redone(cc3m_path, index_500k, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 3, limit=3000)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    curate(tmp_path / "in", index_500k, out)
    curate(tmp_path / "in", index_500k, fresh)
    damaged = sorted(curated_dir(out, TS[1]).glob("*.parquet"))[1]
    corrupt_column_mid_file(damaged, "caption")
    with pytest.warns(UserWarning, match=damaged.name):
        curate(tmp_path / "in", index_500k, out)
    for t in TS:
        assert curated_rows(out, t) == curated_rows(fresh, t)


# ---------------------------------------------------------------------- the lock
def test_a_second_curate_into_a_directory_in_use_is_refused(
    cc3m_path, metadata_500k_path, index_500k, tmp_path
) -> None:
    """A run (slowed by the delay hook) holds the directory; a second `curate` with other
    metadata is refused with one line naming it, and deletes nothing of the first run's."""
    split_lines(cc3m_path, tmp_path / "in", 3, limit=3000)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(SMALL_ENTRIES))
    out = tmp_path / "out"
    code = (
        "import sys; from metaclip_gpu.pipeline.run import run_curate; "
        f"run_curate(sys.argv[1], sys.argv[2], sys.argv[3], ts={TS!r}, progress=False, "
        "curated_entry_ids=True)"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "in"), str(metadata_500k_path), str(out)]
    proc = subprocess.Popen(args, env={**os.environ, DELAY_ENV: "0.6"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "manifest.jsonl").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "the first run ended too soon"
            time.sleep(0.01)
        runner = CliRunner(env={"COLUMNS": "400"})
        second = runner.invoke(
            main,
            ["curate", "--metadata", str(other), "--input", str(tmp_path / "in"),
             "--output", str(out), "--t", "3", "--no-report"],
        )  # fmt: skip
        assert proc.poll() is None, "the first run ended before the second one started"
    finally:
        assert proc.wait(timeout=120) == 0
    assert second.exit_code != 0
    line = one_line_error(second.output)
    assert f"pid {proc.pid}" in line and socket.gethostname() in line
    assert not (out / "run.lock").exists()
    fresh = tmp_path / "fresh"
    curate(tmp_path / "in", index_500k, fresh)
    for t in TS:
        assert curated_rows(out, t) == curated_rows(fresh, t)
    assert not curated_dir(out, 3).exists()


def test_a_stale_lock_is_taken_over_and_another_hosts_lock_is_not(cc3m_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "in", 2, limit=500)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(SMALL_ENTRIES))
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead = {"host": socket.gethostname(), "pid": int(done.stdout), "token": "t", "what": "curate"}
    (out / "run.lock").write_text(json.dumps(dead))
    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["curate", "--metadata", str(meta), "--input", str(tmp_path / "in"), "--t", "5"]
    taken = runner.invoke(main, [*args, "--output", str(out), "--no-report"])
    assert taken.exit_code == 0, taken.output
    assert not (out / "run.lock").exists()

    elsewhere = {"host": "elsewhere.invalid", "pid": 1, "token": "t", "what": "curate"}
    (out / "run.lock").write_text(json.dumps(elsewhere))
    refused = runner.invoke(main, [*args, "--output", str(out), "--no-report"])
    assert refused.exit_code != 0
    line = one_line_error(refused.output)
    assert "elsewhere.invalid" in line and "run.lock" in line
    assert json.loads((out / "run.lock").read_text()) == elsewhere  # left as it was


# ---------------------------------------------------------------------- stage at a time
def test_stage_at_a_time_writes_the_summary_and_report_of_curate(
    cc3m_path, metadata_500k_path, tmp_path
) -> None:
    split_lines(cc3m_path, tmp_path / "in", 3, limit=3000)
    runner = CliRunner(env={"COLUMNS": "400"})
    shards, meta = str(tmp_path / "in"), str(metadata_500k_path)
    whole, staged = tmp_path / "whole", tmp_path / "staged"
    curated = runner.invoke(
        main,
        ["curate", "--metadata", meta, "--input", shards, "--output", str(whole), "--t", "20",
         "--no-report"],
    )  # fmt: skip
    assert curated.exit_code == 0, curated.output
    for step in (
        ["match", "--metadata", meta, "--input", shards, "--output", str(staged)],
        ["count", "--metadata", meta, "--output", str(staged)],
        ["balance", "--input", shards, "--output", str(staged), "--t", "20"],
    ):
        result = runner.invoke(main, step)
        assert result.exit_code == 0, result.output
    on_disk = json.loads((staged / SUMMARY_NAME).read_text())
    expected = json.loads((whole / SUMMARY_NAME).read_text())
    assert comparable(on_disk, staged) == comparable(expected, whole)
    assert set(on_disk["seconds"]) >= {"match", "count", "balance", "total"}
    pytest.importorskip("matplotlib")
    pytest.importorskip("jinja2")
    shutil.rmtree(staged / "report", ignore_errors=True)
    report = runner.invoke(main, ["report", str(staged)])
    assert report.exit_code == 0, report.output
    assert (staged / "report" / "index.html").is_file()


def test_the_lock_is_reentrant_and_a_reused_pid_of_this_process_is_stale(tmp_path) -> None:
    from metaclip_gpu.pipeline.run_lock import LOCK_NAME, RunDirBusy, run_lock

    lock = tmp_path / LOCK_NAME
    earlier = {"host": socket.gethostname(), "pid": os.getpid(), "token": "earlier"}
    lock.write_text(json.dumps(earlier))  # a killed process that had this pid
    with run_lock(tmp_path, "outer"):
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["token"] != "earlier"
        with run_lock(tmp_path, "inner"):  # curate -> match: the same process goes on
            assert json.loads(lock.read_text()) == held
        assert json.loads(lock.read_text()) == held
        code = (
            "import sys; from metaclip_gpu.pipeline.run_lock import run_lock\n"
            "with run_lock(sys.argv[1]): pass"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert other.returncode != 0 and RunDirBusy.__name__ in other.stderr
        assert f"pid {os.getpid()}" in other.stderr
    assert not lock.exists()
