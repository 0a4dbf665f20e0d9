"""Stages ``match`` (persisted, idempotent, resumable) and ``count`` (pipeline.match, .count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tsv_shards import split_lines

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.reference import FastOracle
from metaclip_gpu.pipeline.checksums import file_checksum
from metaclip_gpu.pipeline.count import count_matches, load_entry_counts, run_count
from metaclip_gpu.pipeline.files import (
    COUNTS_NPY,
    COUNTS_PARQUET,
    DELAY_ENV,
    MATCHES_DIR,
    output_name,
)
from metaclip_gpu.pipeline.manifest import MANIFEST_NAME, Manifest
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import ReadOptions, find_shards
from metaclip_gpu.pipeline.shard_match import MatchReport

SMALL_ENTRIES = ["cat", "dog", "a dog", "red", ",", "red car", "beach", "dog"]


# ---------------------------------------------------------------------- helpers
def match_table(out_dir: Path) -> pa.Table:
    """Every recorded match file of `out_dir`, concatenated and sorted by (shard, row)."""
    manifest = Manifest.load(out_dir)
    tables = []
    for record in manifest.records.values():
        if record.output is not None:
            table = pq.read_table(out_dir / record.output)
            tables.append(
                table.select(["shard", "row", "entry_ids"]).cast(
                    pa.schema(
                        [
                            ("shard", pa.string()),
                            ("row", pa.int64()),
                            ("entry_ids", pa.list_(pa.int32())),
                        ]
                    )
                )
            )
    return pa.concat_tables(tables).sort_by([("shard", "ascending"), ("row", "ascending")])


def oracle_counts(lists: list[list[int]], n_entries: int) -> np.ndarray:
    counter = Counter(i for ids in lists for i in ids)
    counts = np.zeros(n_entries, dtype=np.uint64)
    for entry_id, n in counter.items():
        counts[entry_id] = n
    return counts


def no_tmp_files(out_dir: Path) -> bool:
    return not [p for p in (out_dir / MATCHES_DIR).iterdir() if ".tmp-" in p.name]


@pytest.fixture
def small_metadata(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(SMALL_ENTRIES))
    return path


# ---------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def cc3m_oracle_lists(cc3m_texts: list[str], oracle_500k: FastOracle) -> list[list[int]]:
    return oracle_500k.match_many(cc3m_texts)


def test_counts_equal_oracle_any_split_and_rerun(
    tmp_path: Path,
    cc3m_path: Path,
    cc3m_texts: list[str],
    metadata_500k_path: Path,
    cc3m_oracle_lists: list[list[int]],
) -> None:
    index = MetadataIndex.load(metadata_500k_path)
    expected = oracle_counts(cc3m_oracle_lists, len(index))

    split_lines(cc3m_path, tmp_path / "in5", 5)
    reports = run_match(tmp_path / "in5", metadata_500k_path, tmp_path / "out5", progress=False)
    assert [r.error for r in reports] == [None] * 5
    assert sum(r.rows for r in reports) == len(cc3m_texts)
    assert not any(r.reused for r in reports if isinstance(r, MatchReport))
    counts5 = run_count(tmp_path / "out5", metadata_500k_path)
    assert counts5.dtype == np.uint64
    np.testing.assert_array_equal(counts5, expected)
    np.testing.assert_array_equal(load_entry_counts(tmp_path / "out5" / COUNTS_NPY), expected)
    table = pq.read_table(tmp_path / "out5" / COUNTS_PARQUET)
    assert table.column_names == ["entry_id", "entry", "count"]
    np.testing.assert_array_equal(table.column("count").to_numpy(), expected)

    # Per-row match lists, in input order (shard names sort like the split), equal the oracle.
    rows = match_table(tmp_path / "out5")
    assert rows.column("entry_ids").to_pylist() == cc3m_oracle_lists
    first = pq.read_table(tmp_path / "out5" / MATCHES_DIR / output_name("part-000.tsv"))
    assert first.column_names == ["shard", "row", "entry_ids"]  # no input column: (shard, row)
    assert first.column("row").to_pylist() == list(range(first.num_rows))

    split_lines(cc3m_path, tmp_path / "in3", 3)
    run_match(tmp_path / "in3", metadata_500k_path, tmp_path / "out3", progress=False)
    np.testing.assert_array_equal(run_count(tmp_path / "out3", metadata_500k_path), expected)

    # A rerun does no work: every shard is found done, nothing is appended or rewritten.
    manifest_before = (tmp_path / "out5" / MANIFEST_NAME).read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out5" / MATCHES_DIR).iterdir()}
    again = run_match(tmp_path / "in5", metadata_500k_path, tmp_path / "out5", progress=False)
    assert all(isinstance(r, MatchReport) and r.reused for r in again)
    assert [r.rows for r in again] == [r.rows for r in reports]
    assert (tmp_path / "out5" / MANIFEST_NAME).read_bytes() == manifest_before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    np.testing.assert_array_equal(run_count(tmp_path / "out5", metadata_500k_path), expected)


@pytest.mark.parametrize(
    ("wait", "state"), [(0.08, "temporary file left"), (0.3, "output renamed, not recorded")]
)
def test_resume_after_sigkill(
    tmp_path: Path,
    cc3m_path: Path,
    metadata_500k_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wait: float,
    state: str,
) -> None:
    """SIGKILL a run `wait` s after its 2nd record; with the 0.4 s per-shard delay hook (half
    before the rename, half after it) that lands in the 3rd shard while its temporary file
    exists (0.08) or after its rename but before its record (0.3). The rerun must give exactly
    the uninterrupted result."""
    monkeypatch.delenv(DELAY_ENV, raising=False)
    n_shards = 20
    split_lines(cc3m_path, tmp_path / "in", n_shards, limit=4000)
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    code = (
        "import sys; from metaclip_gpu.pipeline.match import run_match; "
        "run_match(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)"
    )
    env = {**os.environ, DELAY_ENV: "0.4"}
    args = [sys.executable, "-c", code, str(tmp_path / "in"), str(metadata_500k_path)]
    proc = subprocess.Popen([*args, str(killed_dir)], env=env)
    try:
        deadline = time.monotonic() + 20
        while len(Manifest.load(killed_dir)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.005)
        time.sleep(wait)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(Manifest.load(killed_dir))
    assert 1 <= done_before < n_shards
    files = [p.name for p in (killed_dir / MATCHES_DIR).iterdir()]
    tmp_left = sum(".tmp-" in name for name in files)
    unrecorded = len(files) - tmp_left - done_before
    if tmp_left:
        seen = "temporary file left"
    else:
        seen = "output renamed, not recorded" if unrecorded else "between shards"
    assert seen == state, (files, done_before)

    reports = run_match(tmp_path / "in", metadata_500k_path, killed_dir, progress=False)
    reused = sum(1 for r in reports if isinstance(r, MatchReport) and r.reused)
    assert reused == done_before
    run_match(tmp_path / "in", metadata_500k_path, clean_dir, progress=False)

    assert match_table(killed_dir).equals(match_table(clean_dir))
    assert match_table(killed_dir).num_rows == 4000
    assert no_tmp_files(killed_dir)
    assert len(list((killed_dir / MATCHES_DIR).glob("*.parquet"))) == n_shards
    assert len(Manifest.load(killed_dir)) == n_shards
    np.testing.assert_array_equal(
        run_count(killed_dir, metadata_500k_path), run_count(clean_dir, metadata_500k_path)
    )


# ---------------------------------------------------------------------- manifest and redo
def write_small_shards(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    texts = ["a dog on the beach", "red car, red cat", "nothing here", "a  dog", "dog dog"]
    for i in range(3):
        (root / f"s{i}.tsv").write_text(
            "".join(f"{t} {i}\thttp://x/{i}/{j}\n" for j, t in enumerate(texts))
        )
    return texts


def test_truncated_manifest_line_is_ignored(tmp_path: Path, small_metadata: Path) -> None:
    write_small_shards(tmp_path / "in")
    out = tmp_path / "out"
    run_match(tmp_path / "in", small_metadata, out, progress=False)
    expected = count_matches(out, len(SMALL_ENTRIES))
    with open(out / MANIFEST_NAME, "ab") as f:
        f.write(b'{"shard": "s9.tsv", "output": "matc')  # a run killed mid-append
    manifest = Manifest.load(out)
    assert len(manifest) == 3 and manifest.ignored_lines == 1 and "s9.tsv" not in manifest
    again = run_match(tmp_path / "in", small_metadata, out)  # a progress bar, off: no TTY
    assert all(isinstance(r, MatchReport) and r.reused for r in again)

    # The next record starts on a new line, so it is not lost to the truncated one.
    (out / MATCHES_DIR / output_name("s1.tsv")).unlink()
    redone = run_match(tmp_path / "in", small_metadata, out, progress=False)
    assert [isinstance(r, MatchReport) and r.reused for r in redone] == [True, False, True]
    manifest = Manifest.load(out)
    assert manifest.ignored_lines == 1 and len(manifest) == 3
    np.testing.assert_array_equal(count_matches(out, len(SMALL_ENTRIES)), expected)


def test_missing_corrupt_or_changed_output_is_redone(tmp_path: Path, small_metadata: Path) -> None:
    texts = write_small_shards(tmp_path / "in")
    out = tmp_path / "out"
    run_match(tmp_path / "in", small_metadata, out, progress=False)
    expected = count_matches(out, len(SMALL_ENTRIES))
    shards = find_shards(tmp_path / "in")
    (out / MATCHES_DIR / output_name("s0.tsv")).unlink()
    corrupt = out / MATCHES_DIR / output_name("s2.tsv")
    corrupt.write_bytes(corrupt.read_bytes()[:-20])  # footer cut off
    manifest = Manifest.load(out)
    assert [manifest.is_done(s) for s in shards] == [False, True, False]
    with pytest.raises(FileNotFoundError, match="rerun match"):
        count_matches(out, len(SMALL_ENTRIES))

    reports = run_match(tmp_path / "in", small_metadata, out, progress=False)
    assert [isinstance(r, MatchReport) and r.reused for r in reports] == [False, True, False]
    np.testing.assert_array_equal(count_matches(out, len(SMALL_ENTRIES)), expected)

    # A changed input (new size/mtime) is redone, and its new content counted.
    (tmp_path / "in" / "s1.tsv").write_text("red\tk\n" * 7)
    reports = run_match(tmp_path / "in", small_metadata, out, progress=False)
    assert [isinstance(r, MatchReport) and r.reused for r in reports] == [True, False, True]
    oracle = FastOracle(SMALL_ENTRIES)
    lists = oracle.match_many([f"{t} {i}" for i in (0, 2) for t in texts] + ["red"] * 7)
    np.testing.assert_array_equal(
        count_matches(out, len(SMALL_ENTRIES)), oracle_counts(lists, len(SMALL_ENTRIES))
    )
    # Other read options (another text column choice) make every shard stale.
    opts = ReadOptions(tsv_columns=("caption", "url"))
    reports = run_match(tmp_path / "in", small_metadata, out, options=opts, progress=False)
    assert not any(isinstance(r, MatchReport) and r.reused for r in reports)


def test_bad_shards_are_recorded_and_the_rest_completes(
    tmp_path: Path, small_metadata: Path
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a_corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all")
    pq.write_table(pa.table({"caption": pa.array([], pa.string())}), root / "b_empty.parquet")
    rows = [
        {"caption": "a dog, a cat", "url": "u0"},
        {"caption": None, "url": "u1"},
        {"caption": "red car", "url": "u2"},
        {"url": "u3"},  # no caption: a null text
    ]
    lines = [json.dumps(r) for r in rows[:2]] + ["{not json"] + [json.dumps(r) for r in rows[2:]]
    (root / "c_nulls.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"

    reports = run_match(root, small_metadata, out, progress=False)
    by_name = {r.shard.name: r for r in reports}
    bad, empty, nulls = (
        by_name["a_corrupt.parquet"],
        by_name["b_empty.parquet"],
        by_name["c_nulls.jsonl"],
    )
    assert bad.error is not None and "a_corrupt.parquet" in bad.error
    assert isinstance(bad, MatchReport) and bad.output is None
    assert empty.error is None and empty.rows == 0
    assert nulls.error is None and nulls.rows == 4 and nulls.null_texts == 2
    assert sum(nulls.skipped.values()) == 1

    manifest = Manifest.load(out)
    assert manifest.get("a_corrupt.parquet").error == bad.error
    assert manifest.get("a_corrupt.parquet").output is None
    assert manifest.get("b_empty.parquet").rows == 0
    assert manifest.get("c_nulls.jsonl").null_texts == 2
    assert pq.read_table(out / manifest.get("b_empty.parquet").output).num_rows == 0
    table = pq.read_table(out / manifest.get("c_nulls.jsonl").output)
    oracle = FastOracle(SMALL_ENTRIES)
    assert table.column("entry_ids").to_pylist() == oracle.match_many(
        [r.get("caption") for r in rows]
    )
    assert table.column("entry_ids").to_pylist()[1] == [] == table.column("entry_ids")[3].as_py()
    assert table.column_names == ["shard", "row", "entry_ids"]  # (shard, row) joins the input
    assert table.column("row").to_pylist() == [0, 1, 2, 3]
    # ids and rows plain-encoded (a dictionary of them costs half the write, for nothing)
    columns = pq.ParquetFile(out / manifest.get("c_nulls.jsonl").output).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(3)}
    assert "RLE_DICTIONARY" in encodings["shard"]
    assert "RLE_DICTIONARY" not in encodings["row"]
    assert "RLE_DICTIONARY" not in encodings["entry_ids.list.element"]

    counts = run_count(out, small_metadata)
    lists = oracle.match_many([r.get("caption") for r in rows])
    np.testing.assert_array_equal(counts, oracle_counts(lists, len(SMALL_ENTRIES)))

    # Unchanged unreadable shards are not retried, unless asked.
    again = run_match(root, small_metadata, out, progress=False)
    assert all(isinstance(r, MatchReport) and r.reused for r in again)
    assert again[0].error == bad.error
    retried = run_match(root, small_metadata, out, progress=False, retry_errors=True)
    assert [isinstance(r, MatchReport) and r.reused for r in retried] == [False, True, True]
    assert no_tmp_files(out)


def test_the_match_stage_reads_only_the_text_column(
    tmp_path: Path, small_metadata: Path, monkeypatch
) -> None:
    """Match needs the texts alone: a Parquet shard's urls and other columns (most of its
    bytes) are not read (`ReadOptions.text_only`), and the match file is the same."""
    from metaclip_gpu.pipeline import shard_match

    root = tmp_path / "in"
    root.mkdir()
    texts = ["a red car", "the blue sky", None, "green trees"]
    pq.write_table(
        pa.table({"url": [f"http://x/{i}" for i in range(4)], "caption": texts, "n": range(4)}),
        root / "s.parquet",
    )
    seen: list[list[str]] = []
    real = shard_match.iter_shard_checked

    def spy(shard, options, report):
        for chunk in real(shard, options, report):
            seen.append(chunk.table.column_names)
            yield chunk

    monkeypatch.setattr(shard_match, "iter_shard_checked", spy)
    out = tmp_path / "out"
    [report] = run_match(root, small_metadata, out, progress=False)
    assert seen == [["text"]]
    record = Manifest.load(out).get("s.parquet")
    assert record.checksum == file_checksum(out / report.output)  # hashed as it was written
    table = pq.read_table(out / report.output)
    oracle = FastOracle(SMALL_ENTRIES)
    assert table.column("entry_ids").to_pylist() == oracle.match_many(texts)
    assert report.rows == 4 and report.null_texts == 1
