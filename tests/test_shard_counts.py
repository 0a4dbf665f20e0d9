"""Per-shard entry counts the match task stores in its match file's footer (`shard_counts`),
used by the count stage instead of reading the match files again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_gpu.pipeline.checksums import file_checksum
from metaclip_gpu.pipeline.count import (
    count_matches,
    file_counts,
    file_language_counts,
    run_count,
)
from metaclip_gpu.pipeline.files import ENTRY_IDS_TYPE, MATCHES_DIR, output_name
from metaclip_gpu.pipeline.manifest import MANIFEST_NAME, Manifest
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import ReadOptions
from metaclip_gpu.pipeline.shard_counts import ShardCounts, add_footer_counts

ENTRIES = ["cat", "dog", "a dog", "red", ",", "red car", "beach", "blue", "sea"]
WORDS = ["a", "dog", "cat", "red", "car", "on", "the", "beach", "blue", "sea", ",", "x"]
OPTIONS = ReadOptions(batch_rows=7)  # several chunks a shard: the counts add up over chunks


def write_shards(root: Path, n_shards: int = 3, rows: int = 40) -> None:
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        lines = []
        for j in range(rows):
            words = rng.choice(WORDS, size=int(rng.integers(0, 9)))
            lines.append(f"{' '.join(words)}\thttp://x/{s}/{j}\n")
        (root / f"s{s}.tsv").write_text("".join(lines))


@pytest.fixture
def matched(tmp_path: Path) -> Path:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    write_shards(tmp_path / "in")
    out = tmp_path / "out"
    run_match(tmp_path / "in", metadata, out, options=OPTIONS, progress=False)
    return out


def read_footer_counts(path: Path, sizes: dict[str, int]) -> dict[str, np.ndarray] | None:
    totals = {lang: np.zeros(n, np.uint64) for lang, n in sizes.items()}
    return totals if add_footer_counts(path, totals) else None


def recount(out: Path) -> np.ndarray:
    """The counts read back from every match file (what the count stage did before)."""
    manifest = Manifest.load(out)
    total = np.zeros(len(ENTRIES), np.uint64)
    for record in manifest.records.values():
        total += file_counts(out / record.output, len(ENTRIES))
    return total


def test_counts_from_the_match_task_equal_the_recount(matched: Path) -> None:
    manifest = Manifest.load(matched)
    assert len(manifest) == 3
    for record in manifest.records.values():
        from_task = read_footer_counts(matched / record.output, {"": len(ENTRIES)})
        assert from_task is not None
        np.testing.assert_array_equal(
            from_task[""], file_counts(matched / record.output, len(ENTRIES))
        )
    expected = recount(matched)
    assert expected.sum() > 0
    np.testing.assert_array_equal(count_matches(matched, len(ENTRIES)), expected)


def test_count_stage_does_not_read_the_entry_ids_again(
    matched: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = recount(matched)

    def no_read(*args, **kwargs):
        raise AssertionError("the count stage read a match file's entry_ids")

    monkeypatch.setattr("metaclip_gpu.pipeline.count.file_counts", no_read)
    np.testing.assert_array_equal(count_matches(matched, len(ENTRIES)), expected)


def test_an_old_run_dir_without_footer_counts_is_counted_from_its_match_files(
    matched: Path,
) -> None:
    """The previous layout: match files without the footer key (the record's checksum is of
    those bytes); one such file among new ones is counted from its entry_ids."""
    expected = recount(matched)
    manifest = Manifest.load(matched)
    lines = []
    for name, record in sorted(manifest.records.items()):
        path = matched / record.output
        if name != "s2.tsv":
            table = pq.read_table(path)
            pq.write_table(table.replace_schema_metadata(None), path)
            assert read_footer_counts(path, {"": len(ENTRIES)}) is None
            record.checksum = file_checksum(path)
        lines.append(record.to_json())
    (matched / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(count_matches(matched, len(ENTRIES)), expected)


def test_a_run_killed_before_the_record_redoes_the_shard_and_counts_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the match file (its counts in its footer) was renamed into place but
    before the manifest append: the shard has no record, is redone, and counted once."""
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    write_shards(tmp_path / "in")
    fresh = tmp_path / "fresh"
    run_match(tmp_path / "in", metadata, fresh, options=OPTIONS, progress=False)
    expected = run_count(fresh, metadata)

    out = tmp_path / "out"
    real_append = Manifest.append

    def killed_at_s1(self: Manifest, record) -> None:
        if record.shard == "s1.tsv":
            raise KeyboardInterrupt  # the process dies here
        real_append(self, record)

    monkeypatch.setattr(Manifest, "append", killed_at_s1)
    with pytest.raises(KeyboardInterrupt):
        run_match(tmp_path / "in", metadata, out, options=OPTIONS, progress=False)
    monkeypatch.setattr(Manifest, "append", real_append)
    unrecorded = out / MATCHES_DIR / output_name("s1.tsv")
    assert unrecorded.exists() and "s1.tsv" not in Manifest.load(out)

    reports = run_match(tmp_path / "in", metadata, out, options=OPTIONS, progress=False)
    assert not next(r for r in reports if r.shard.name == "s1.tsv").reused
    np.testing.assert_array_equal(run_count(out, metadata), expected)


def test_shard_counts_per_language_equal_the_file_language_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sizes = {"en": 30, "de": 12, "fr": 5}
    names = list(sizes)
    counts = ShardCounts()
    path = tmp_path / "m.parquet"
    writer = None
    for _chunk in range(4):
        langs, lists = [], []
        for _ in range(25):
            lang = names[int(rng.integers(0, 3))] if rng.random() > 0.1 else None
            n = sizes[lang] if lang else 3
            langs.append(lang)
            k = int(rng.integers(0, min(n, 6))) if lang else 0
            lists.append(sorted(rng.choice(n, size=k, replace=False).tolist()))
        table = pa.table(
            {
                "lang": pa.array(langs, pa.string()).dictionary_encode(),
                "entry_ids": pa.array(lists, ENTRY_IDS_TYPE),
            }
        )
        counts.add(table)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema))
    writer.close()
    stored = tmp_path / "c.parquet"
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata(counts.footer()), stored)
    got = read_footer_counts(stored, sizes)
    assert got is not None
    want = file_language_counts(path, sizes)
    assert set(got) == set(want)
    for lang in sizes:
        np.testing.assert_array_equal(got[lang], want[lang])
    assert sum(int(c.sum()) for c in got.values()) > 0
