"""The match tasks' counts handed to the count stage in memory (`shard_counts.RunCounts`), the
compact footer (and the first format still read), match files without input columns, and the
count files written from memory (``entry_counts.parquet`` on a thread, crash-safe)."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_shard_counts import ENTRIES, OPTIONS, recount, write_shards

from metaclip_gpu.pipeline import checksums, counts_files, rundir
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.checksums import file_checksum
from metaclip_gpu.pipeline.count import count_matches, run_count
from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET
from metaclip_gpu.pipeline.manifest import MANIFEST_NAME, Manifest
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import find_shards, read_shard
from metaclip_gpu.pipeline.run import run_curate, run_worldwide
from metaclip_gpu.pipeline.shard_counts import (
    COUNTS_KEY,
    OLD_COUNTS_KEY,
    RunCounts,
    ShardCounts,
    add_footer_counts,
)
from metaclip_gpu.pipeline.write import curated_dir


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    write_shards(tmp_path / "in")
    return tmp_path / "in", metadata


def footer_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The match files whose footer counts the count stage reads from now on."""
    seen: list[Path] = []

    def counting(path, totals):
        seen.append(path)
        return add_footer_counts(path, totals)

    monkeypatch.setattr("metaclip_gpu.pipeline.count.add_footer_counts", counting)
    return seen


def matched_in_memory(inputs: tuple[Path, Path], out: Path) -> tuple[RunCounts, np.ndarray]:
    """The match stage run into `out` with its counts handed over in memory (every shard's),
    and the counts recounted from the match files."""
    shards, metadata = inputs
    matched = RunCounts()
    run_match(shards, metadata, out, options=OPTIONS, progress=False, matched=matched)
    assert sorted(matched.files) == ["s0.tsv", "s1.tsv", "s2.tsv"]
    return matched, recount(out)


def test_counts_handed_over_in_memory_read_no_footer(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = inputs[1]
    out = tmp_path / "out"
    matched, expected = matched_in_memory(inputs, out)
    seen = footer_reads(monkeypatch)
    np.testing.assert_array_equal(run_count(out, metadata, matched=matched), expected)
    assert seen == []
    # without them (the standalone count command) every footer is read, same counts
    np.testing.assert_array_equal(run_count(out, metadata), expected)
    assert len(seen) == 3


def test_counts_of_another_file_than_recorded_are_not_used(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard rematched after the counts were handed over (another record): the footers."""
    out = tmp_path / "out"
    matched, expected = matched_in_memory(inputs, out)
    output, _ = matched.files["s1.tsv"]
    matched.files["s1.tsv"] = (output, "0" * 16)  # what a rematch of s1 would record
    matched.totals.parts[""][0] += 7  # and counts that are not the file's
    seen = footer_reads(monkeypatch)
    np.testing.assert_array_equal(count_matches(out, len(ENTRIES), matched=matched), expected)
    assert len(seen) == 3
    # a shard handed over twice is not trusted either
    again = RunCounts()
    record = Manifest.load(out).records["s0.tsv"]
    again.add(record, ShardCounts())
    again.add(record, ShardCounts())
    assert again.broken and not again.covered_by(Manifest.load(out).records)


def matched_and_counted(inputs: tuple[Path, Path], out: Path) -> np.ndarray:
    """The match and count stages run into `out`; the counts."""
    shards, metadata = inputs
    run_match(shards, metadata, out, options=OPTIONS, progress=False)
    return run_count(out, metadata)


def test_curate_counts_without_reading_a_file_again(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """curate: no footer read and no file hashed again (match files, the counts files)."""
    shards, metadata = inputs
    expected = matched_and_counted(inputs, tmp_path / "fresh")
    seen = footer_reads(monkeypatch)
    hashed: list[str] = []
    real = checksums.file_checksum

    def counting(path):
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(checksums, "file_checksum", counting)
    out = tmp_path / "out"
    run_curate(shards, metadata, out, ts=[3.0], options=OPTIONS, progress=False)
    assert seen == []
    assert not [p for p in hashed if "entry_counts" in p or p.endswith(".parquet")]
    np.testing.assert_array_equal(np.load(out / COUNTS_NPY), expected)
    state = rundir.load_state(out)
    assert state is not None
    files = state["counts"]["files"]
    assert files == {n: real(out / n) for n in (COUNTS_NPY, COUNTS_PARQUET)}
    table = pq.ParquetFile(out / COUNTS_PARQUET).read()
    np.testing.assert_array_equal(table.column("count").to_numpy(), expected)
    assert table.column("entry").to_pylist() == ENTRIES


def test_a_killed_table_write_leaves_no_table_recorded_and_a_rerun_redoes_it(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = inputs[1]
    out = tmp_path / "out"
    expected = matched_and_counted(inputs, out)
    old_table = (out / COUNTS_PARQUET).read_bytes()
    real = counts_files.parquet_bytes

    def killed(table):
        raise KeyboardInterrupt  # the process dies while writing the table

    monkeypatch.setattr(counts_files, "parquet_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        run_count(out, metadata)
    assert not (out / COUNTS_PARQUET).exists()  # the earlier one is gone, no partial one
    assert not list(out.glob("*.tmp"))
    state = rundir.load_state(out)
    assert state is not None and set(state["counts"]["files"]) == {COUNTS_NPY}
    monkeypatch.setattr(counts_files, "parquet_bytes", real)
    np.testing.assert_array_equal(run_count(out, metadata), expected)
    assert (out / COUNTS_PARQUET).read_bytes() == old_table
    state = rundir.load_state(out)
    assert state is not None
    assert state["counts"]["files"][COUNTS_PARQUET] == file_checksum(out / COUNTS_PARQUET)


def write_old_footer(counts: ShardCounts) -> dict[bytes, bytes]:
    """The first footer format: a ``lang`` string a row and uint64 counts."""
    sparse = counts.sparse()
    table = pa.table(
        {
            "lang": pa.array([lang for lang, (ids, _) in sparse.items() for _ in ids], pa.string()),
            "entry_id": pa.array(np.concatenate([i for i, _ in sparse.values()]), pa.int32()),
            "count": pa.array(np.concatenate([c for _, c in sparse.values()]), pa.uint64()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {OLD_COUNTS_KEY: base64.b64encode(sink.getvalue().to_pybytes())}


def test_footer_is_compact_exact_past_uint32_and_the_old_format_still_reads(
    tmp_path: Path,
) -> None:
    counts = ShardCounts()
    counts.parts["en"] = np.array([0, 3, 0, 2**32 + 5, 1], np.int64)
    counts.parts["de"] = np.array([0, 0, 9], np.int64)
    small = ShardCounts()
    small.parts[""] = np.array([4, 0, 70000], np.int64)
    assert small.to_table().schema.field("count").type == pa.uint32()
    assert small.to_table().schema.field("lang").type == pa.dictionary(pa.int16(), pa.string())
    assert counts.to_table().schema.field("count").type == pa.uint64()
    for name, footer in (("new", counts.footer()), ("old", write_old_footer(counts))):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"x": [1]}).replace_schema_metadata(footer), path)
        totals = {"en": np.zeros(6, np.uint64), "de": np.zeros(3, np.uint64)}
        assert add_footer_counts(path, totals)
        assert totals["en"].tolist() == [0, 3, 0, 2**32 + 5, 1, 0]
        assert totals["de"].tolist() == [0, 0, 9]
    assert list(counts.footer()) == [COUNTS_KEY]
    # pickled sparse (a dask task's result): the same counts
    back = pickle.loads(pickle.dumps(counts))
    assert {k: (i.tolist(), c.tolist()) for k, (i, c) in back.sparse().items()} == {
        k: (i.tolist(), c.tolist()) for k, (i, c) in counts.sparse().items()
    }


def test_an_old_run_dir_with_key_columns_and_old_footers_counts_and_balances(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Match files of the earlier layout (the input's key column, the first footer format):
    count and balance give what a fresh run gives."""
    shards, metadata = inputs
    fresh = tmp_path / "fresh"
    expected = matched_and_counted(inputs, fresh)
    run_balance(fresh, shards, ts=[3.0], options=OPTIONS, progress=False)

    old = tmp_path / "old"
    run_match(shards, metadata, old, options=OPTIONS, progress=False)
    manifest = Manifest.load(old)
    by_name = {s.name: s for s in find_shards(shards)}
    lines = []
    for name, record in sorted(manifest.records.items()):
        path = old / record.output
        table = pq.ParquetFile(path).read()
        assert "key" not in table.column_names
        keys = [k for c in read_shard(by_name[name], OPTIONS) for k in c.table["key"].to_pylist()]
        table = table.add_column(2, "key", pa.array(keys, pa.string()))
        counts = ShardCounts()
        counts.add(table)
        pq.write_table(table.replace_schema_metadata(write_old_footer(counts)), path)
        record.checksum = file_checksum(path)
        lines.append(record.to_json())
    (old / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(run_count(old, metadata), expected)
    run_balance(old, shards, ts=[3.0], options=OPTIONS, progress=False)
    for path in sorted(curated_dir(fresh, 3.0).glob("*.parquet")):
        got = pq.ParquetFile(curated_dir(old, 3.0) / path.name).read()
        assert got.equals(pq.ParquetFile(path).read())
    assert expected.sum() > 0


def test_the_counts_file_is_np_save_s_bytes(tmp_path: Path) -> None:
    """``entry_counts.npy`` is written from the array's memory with numpy's header: the very
    bytes ``np.save`` writes (MetaCLIP reads it with ``np.load``)."""
    for counts in (np.arange(70_000, dtype=np.uint64) * 3, np.zeros(0, np.uint64)):
        mine = tmp_path / "mine.npy"
        counts_files.put_bytes(mine, counts_files.npy_parts(counts))
        np.save(tmp_path / "numpy.npy", counts, allow_pickle=False)
        assert mine.read_bytes() == (tmp_path / "numpy.npy").read_bytes()
        assert file_checksum(mine) == file_checksum(tmp_path / "numpy.npy")


def test_shard_counts_of_sliced_and_null_lists_count_only_the_listed_rows() -> None:
    """`ShardCounts.add` reads the ids without a copy only when every value is listed."""
    lists = pa.array([[0, 2], [1], None, [2, 3], [3]], pa.list_(pa.int32()))
    for table, want in (
        (pa.table({"entry_ids": lists}), [1, 1, 2, 2]),
        (pa.table({"entry_ids": lists}).slice(1, 3), [0, 1, 1, 1]),
        (pa.table({"entry_ids": lists.slice(3)}), [0, 0, 1, 2]),
    ):
        counts = ShardCounts()
        counts.add(table)
        got = np.zeros(4, np.int64)
        got[: len(counts.parts[""])] = counts.parts[""]
        assert got.tolist() == want


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_what_a_count_killed_mid_write_left_is_deleted_by_the_next_count(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A count process killed (SIGKILL) while writing its files leaves them under their
    temporary names (``<name>.tmp-<pid>``, or ``.<name>.XXXXXXXX.tmp`` from versions that
    used mkstemp); the next count (under the run lock) deletes them and writes its own."""
    shards, metadata = inputs
    out = tmp_path / "out"
    run_match(shards, metadata, out, options=OPTIONS, progress=False)
    pid = dead_pid()
    left = [out / f"{name}.tmp-{pid}" for name in (COUNTS_NPY, COUNTS_PARQUET)]
    left += [out / f".{name}.k2x_9q0a.tmp" for name in (COUNTS_NPY, COUNTS_PARQUET)]  # mkstemp's
    for path in left:
        path.write_bytes(b"half a file")
    counts = run_count(out, metadata)
    assert not [path for path in left if path.exists()]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    np.testing.assert_array_equal(np.load(out / COUNTS_NPY), counts)


def test_a_worldwide_count_deletes_what_a_killed_one_left(tmp_path: Path) -> None:
    """The same for the per-language counts folder of a worldwide run."""
    shards = tmp_path / "in"
    shards.mkdir()
    texts = [" ".join(ENTRIES[i % len(ENTRIES) : i % len(ENTRIES) + 2]) for i in range(60)]
    table = pa.table(
        {"caption": texts, "url": [f"http://x/{i}" for i in range(60)], "lang": ["en"] * 60}
    )
    pq.write_table(table, shards / "part-0.parquet")
    world = tmp_path / "world"
    world.mkdir()
    (world / "en.json").write_text(json.dumps(ENTRIES))
    out = tmp_path / "run"
    run_worldwide(shards, world, out, t_en=[3.0], seed=0, progress=False)
    stale = out / "entry_counts" / f"en.npy.tmp-{dead_pid()}"
    stale.write_bytes(b"half a file")
    run_worldwide(shards, world, out, t_en=[3.0], seed=0, progress=False)
    assert not stale.exists()
    assert (out / "entry_counts" / "en.npy").exists()


def test_a_worldwide_counts_table_is_written_while_balancing_and_killed_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worldwide runs write ``entry_counts.parquet`` (every language's counts, a ``lang``
    column first) on a thread during balance, as MetaCLIP 1 runs do; a run killed while
    writing it leaves no table (the earlier one deleted first), and the next run writes it."""
    shards = tmp_path / "in"
    shards.mkdir()
    texts = [" ".join(ENTRIES[i % len(ENTRIES) : i % len(ENTRIES) + 2]) for i in range(60)]
    langs = ["en", "de"] * 30
    table = pa.table({"caption": texts, "url": [f"http://x/{i}" for i in range(60)], "lang": langs})
    pq.write_table(table, shards / "part-0.parquet")
    world = tmp_path / "world"
    world.mkdir()
    for lang in ("en", "de"):
        (world / f"{lang}.json").write_text(json.dumps(ENTRIES))
    out = tmp_path / "run"
    threads: list[str] = []
    real = counts_files.parquet_bytes

    def spy(table):
        threads.append(threading.current_thread().name)
        return real(table)

    monkeypatch.setattr(counts_files, "parquet_bytes", spy)
    run_worldwide(shards, world, out, t_en=[3.0], seed=0, progress=False)
    assert threads and all(name.startswith("entry-counts-parquet") for name in threads)
    written = pq.ParquetFile(out / COUNTS_PARQUET).read()
    assert written.column_names[0] == "lang"
    for lang in ("de", "en"):
        rows = written.filter(pc.equal(written["lang"].cast(pa.string()), lang))
        np.testing.assert_array_equal(
            rows["count"].to_numpy(), np.load(out / "entry_counts" / f"{lang}.npy")
        )

    def killed(table):
        raise KeyboardInterrupt

    monkeypatch.setattr(counts_files, "parquet_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        run_worldwide(shards, world, out, t_en=[5.0], seed=0, progress=False)
    assert not (out / COUNTS_PARQUET).exists()
    monkeypatch.setattr(counts_files, "parquet_bytes", real)
    run_worldwide(shards, world, out, t_en=[5.0], seed=0, progress=False)
    assert pq.ParquetFile(out / COUNTS_PARQUET).read().equals(written)
