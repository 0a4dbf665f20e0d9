"""The compiled index: statistics, the on-disk cache keyed by content, and rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.index import INDEX_FORMAT, MAX_LOAD
from metaclip_gpu.engine.reference import FastOracle

ENTRIES = ["dog", "hot dog", "St. Louis", "tab\there", "a b c d", "", "dog", "café"]


def test_stats_describe_the_metadata() -> None:
    index = MetadataIndex.from_entries(ENTRIES)
    stats = index.stats
    assert stats.n_entries == len(ENTRIES) == len(index)
    # "St. Louis" and "tab\there" can never equal text tokens.
    assert stats.n_unmatchable == 2
    assert stats.max_tokens == 4  # "a b c d"
    # distinct keys: dog, hot, hot dog, a, a b, a b c, a b c d, "", café
    assert stats.n_keys == 9
    assert stats.n_keys <= MAX_LOAD * stats.table_slots
    assert stats.table_slots & (stats.table_slots - 1) == 0  # a power of two


def test_entries_round_trip() -> None:
    index = MetadataIndex.from_entries(ENTRIES)
    assert index.entries.to_pylist() == ENTRIES
    assert [index.entry(i) for i in range(len(ENTRIES))] == ENTRIES


def _write(path: Path, entries: list[str]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    meta = _write(tmp_path / "metadata.json", ENTRIES)
    first = MetadataIndex.load(meta, cache=cache)
    cached_dirs = list(cache.glob(f"index-v{INDEX_FORMAT}-*"))
    assert len(cached_dirs) == 1
    second = MetadataIndex.load(meta, cache=cache)
    assert second.stats == first.stats  # read back, build time included
    for name in ("slots", "blob", "entry_offsets", "entry_chars"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    _write(meta, [*ENTRIES, "cat"])
    third = MetadataIndex.load(meta, cache=cache)
    assert third.stats.n_entries == len(ENTRIES) + 1
    assert len(list(cache.glob(f"index-v{INDEX_FORMAT}-*"))) == 2


def test_unreadable_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    meta = _write(tmp_path / "metadata.json", ENTRIES)
    MetadataIndex.load(meta, cache=cache)
    (cached,) = cache.glob("index-*")
    (cached / "slots.npy").write_bytes(b"not a numpy file")
    index = MetadataIndex.load(meta, cache=cache)
    assert match(["a hot dog"], index, backend="cpu").to_lists() == [[0, 1, 6]]


def test_cache_false_always_builds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "env-cache"))
    meta = _write(tmp_path / "metadata.json", ENTRIES)
    MetadataIndex.load(meta, cache=False)
    assert not (tmp_path / "env-cache").exists()
    MetadataIndex.load(meta)  # default cache dir comes from the environment
    assert list((tmp_path / "env-cache").glob("index-*"))


def test_text_metadata_file(tmp_path: Path) -> None:
    meta = tmp_path / "metadata.txt"
    meta.write_text("dog\nhot dog\n", encoding="utf-8")
    index = MetadataIndex.load(meta, cache=False)
    assert match(["hot dog"], index, backend="cpu").to_lists() == [[0, 1]]


def test_entries_longer_than_the_token_ring_use_the_stream_scan() -> None:
    """Entries of 60+ tokens exceed the host's token ring (64 tokens, 16 read ahead), so the
    kernels take the general (stream) scan; an index of short entries takes the ring scan."""
    long_entry = " ".join(f"w{i}" for i in range(60))
    entries = [long_entry, "w3 w4", "w59", "w0", long_entry + " tail", ""]
    index = MetadataIndex.from_entries(entries)
    assert index.stats.max_tokens == 61
    texts = [long_entry, "x " + long_entry + " tail", long_entry[:50], "w3  w4", "w59."]
    expected = FastOracle(entries).match_many(texts)
    assert match(texts, index, backend="cpu").to_lists() == expected
    assert expected[0] == [0, 1, 2, 3]
    assert expected[1] == [0, 1, 2, 3, 4]  # "" needs two adjacent spaces
    # The same texts with the short entries alone (ring scan) agree with the oracle too.
    short = entries[1:4]
    assert match(texts, MetadataIndex.from_entries(short), backend="cpu").to_lists() == (
        FastOracle(short).match_many(texts)
    )


def test_cache_is_keyed_by_the_hash_signature(tmp_path: Path) -> None:
    """An index cached by code that hashes differently is never read back (it is rebuilt)."""
    from metaclip_gpu.engine.index import build_signature

    cache = tmp_path / "cache"
    meta = _write(tmp_path / "metadata.json", ENTRIES)
    index = MetadataIndex.load(meta, cache=cache)
    assert index.stats.signature == build_signature()
    (cached,) = cache.glob("index-*")
    assert f"{build_signature():016x}" in cached.name
    # A cache entry whose recorded signature disagrees (e.g. written by an older build into
    # the same directory name) is treated as unreadable and rebuilt.
    stats = json.loads((cached / "stats.json").read_text())
    stats["signature"] ^= 1
    (cached / "stats.json").write_text(json.dumps(stats))
    rebuilt = MetadataIndex.load(meta, cache=cache)
    assert rebuilt.stats.signature == build_signature()
    assert match(["a hot dog"], rebuilt, backend="cpu").to_lists() == [[0, 1, 6]]
