"""Curated files hold the input's columns only by default (as MetaCLIP's reference writes them);
``entry_ids`` only with ``curated_entry_ids`` / ``--curated-entry-ids``, and then they are the
match files' ids of the kept rows. Toggling the option never reuses curated files of the other
setting. (The column order of Parquet and JSONL inputs: `test_downstream`.)"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.read import find_shards, read_shard
from metaclip_gpu.pipeline.run import run_curate, run_worldwide
from metaclip_gpu.pipeline.write import curated_dir

ENTRIES = ["red car", "blue sky", "dog", "cat", "the", "photo"]
RARE = ["red car", "blue sky", "dog", "cat"]
TS = [3.0, 1e9]


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, Path]:
    """(shards folder, metadata file): two Parquet shards of (url, caption, photo_id, lang)."""
    shards = tmp_path / "pool"
    shards.mkdir()
    n = 90
    captions = [
        f"the {RARE[i % 4]} photo {i}" if i % 3 else f"the photo number {i}" for i in range(n)
    ]
    table = pa.table(
        {
            "url": [f"https://img.example/{i}.jpg" for i in range(n)],
            "caption": captions,
            "photo_id": list(range(n)),
            "lang": ["en"] * n,
        }
    )
    for k, (lo, hi) in enumerate([(0, 50), (50, n)]):
        pq.write_table(table.slice(lo, hi - lo), shards / f"part-{k}.parquet")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    return shards, metadata


def curated_tables(out: Path, t: float) -> list[pa.Table]:
    files = sorted(curated_dir(out, t).glob("*.parquet"))
    assert files
    return [pq.ParquetFile(path).read() for path in files]  # no hive column from t=...


def match_ids(out: Path, shards: Path) -> dict[str, list[int]]:
    """url -> entry ids, from the match files (shard, row, entry_ids; no input column) joined
    back to the input's urls by (shard, row)."""
    urls = {}
    for shard in find_shards(shards):
        for chunk in read_shard(shard):
            for i, url in enumerate(chunk.table.column("key").to_pylist()):
                urls[(shard.name, chunk.first_row + i)] = url
    table = pa.concat_tables(pq.read_table(p) for p in sorted((out / "matches").glob("*.parquet")))
    columns = (table.column(c).to_pylist() for c in ("shard", "row", "entry_ids"))
    ids = {urls[(shard, row)]: row_ids for shard, row, row_ids in zip(*columns, strict=True)}
    assert len(ids) == len(urls)  # one row per url in this pool
    return ids


def test_default_curated_files_hold_the_input_columns_only(pool, tmp_path: Path) -> None:
    shards, metadata = pool
    out = tmp_path / "run"
    summary = run_curate(shards, metadata, out, ts=TS, seed=0, progress=False)
    for t, figure in zip(TS, summary["ts"], strict=True):
        tables = curated_tables(out, t)
        for table in tables:
            assert table.column_names == ["url", "caption", "photo_id", "lang"]
        assert sum(table.num_rows for table in tables) == figure["kept"] > 0
    assert "entry_ids" in pq.read_schema(next((out / "matches").glob("*.parquet"))).names


def test_with_the_option_entry_ids_are_the_match_files_ids(pool, tmp_path: Path) -> None:
    shards, metadata = pool
    out = tmp_path / "run"
    run_curate(shards, metadata, out, ts=TS, seed=0, progress=False, curated_entry_ids=True)
    ids = match_ids(out, shards)
    for t in TS:
        rows = 0
        for table in curated_tables(out, t):
            assert table.column_names == ["url", "caption", "photo_id", "lang", "entry_ids"]
            assert table.schema.field("entry_ids").type == pa.list_(pa.int32())
            for url, kept_ids in zip(
                table.column("url").to_pylist(), table.column("entry_ids").to_pylist(), strict=True
            ):
                assert kept_ids and kept_ids == ids[url]
                rows += 1
        assert rows > 0


def _curated_urls(out: Path, t: float) -> list[str]:
    return sorted(u for table in curated_tables(out, t) for u in table.column("url").to_pylist())


def test_toggling_the_option_rewrites_the_curated_files(pool, tmp_path: Path) -> None:
    """Each setting's rerun reuses its own files; the other setting rewrites every shard, with
    the same kept rows."""
    shards, metadata = pool
    out = tmp_path / "run"
    run_curate(shards, metadata, out, ts=TS, seed=0, progress=False)
    plain = {t: _curated_urls(out, t) for t in TS}

    def balance(entry_ids: bool) -> dict:
        return run_balance(out, shards, ts=TS, seed=0, progress=False, curated_entry_ids=entry_ids)

    assert all(s["reused"] for s in balance(False)["shards"])
    with_ids = balance(True)
    assert not any(s["reused"] for s in with_ids["shards"])
    for t in TS:
        assert all("entry_ids" in table.column_names for table in curated_tables(out, t))
        assert _curated_urls(out, t) == plain[t]
    assert all(s["reused"] for s in balance(True)["shards"])

    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["balance", "--input", str(shards), "--output", str(out), "--no-report"]
    args += [arg for t in TS for arg in ("--t", repr(t))]
    result = runner.invoke(main, args)  # the default again: every shard rewritten
    assert result.exit_code == 0, result.output
    for t in TS:
        assert all("entry_ids" not in table.column_names for table in curated_tables(out, t))
        assert _curated_urls(out, t) == plain[t]
    result = runner.invoke(main, [*args, "--curated-entry-ids"])
    assert result.exit_code == 0, result.output
    for t in TS:
        assert all("entry_ids" in table.column_names for table in curated_tables(out, t))


@pytest.mark.parametrize("entry_ids", [False, True])
def test_worldwide_curated_files_follow_the_option(pool, tmp_path: Path, entry_ids) -> None:
    shards, metadata = pool
    world = tmp_path / "world"
    world.mkdir()
    (world / "en.json").write_text(metadata.read_text())
    out = tmp_path / "run"
    summary = run_worldwide(
        shards, world, out, t_en=[3.0], seed=0, progress=False, curated_entry_ids=entry_ids
    )
    folder = Path(next(iter(summary["outputs"]["curated"].values())))
    tables = [pq.ParquetFile(path).read() for path in sorted(folder.glob("*.parquet"))]
    assert sum(table.num_rows for table in tables) > 0
    ids = match_ids(out, shards)
    for table in tables:
        extra = ["entry_ids"] if entry_ids else []
        assert table.column_names == ["url", "caption", "photo_id", "lang", *extra]
        if entry_ids:
            for url, kept in zip(
                table.column("url").to_pylist(), table.column("entry_ids").to_pylist(), strict=True
            ):
                assert kept == ids[url]


def curate_at_t3(
    shards: Path, metadata: Path, out: Path, worldwide: bool, entry_ids: bool
) -> tuple[dict, Path]:
    """(summary, curated folder) of a curate (or worldwide, with `metadata` as English's) run
    at t = 3."""
    if worldwide:
        world = out.parent / "world"
        world.mkdir()
        (world / "en.json").write_text(metadata.read_text())
        summary = run_worldwide(
            shards, world, out, t_en=[3.0], seed=0, progress=False, curated_entry_ids=entry_ids
        )
        return summary, Path(next(iter(summary["outputs"]["curated"].values())))
    summary = run_curate(
        shards, metadata, out, ts=[3.0], progress=False, curated_entry_ids=entry_ids
    )
    return summary, curated_dir(out, 3.0)


@pytest.mark.parametrize("entry_ids", [False, True])
@pytest.mark.parametrize("worldwide", [False, True])
def test_a_shard_with_no_rows_gets_the_columns_of_the_others(
    pool, tmp_path: Path, entry_ids: bool, worldwide: bool
) -> None:
    """A Parquet shard with no rows gets a curated file with the input's columns (its schema),
    not a file without columns: `pq.read_table(folder)` takes the first file's schema, and such
    a file first in the folder dropped every column of every file (seen: 26 rows, no column)."""
    shards, metadata = pool
    empty = pq.read_table(shards / "part-0.parquet").slice(0, 0)
    pq.write_table(empty, shards / "a-empty.parquet")  # sorts first
    out = tmp_path / "run"
    summary, folder = curate_at_t3(shards, metadata, out, worldwide, entry_ids)
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == 3 and files[0].name.startswith("a-empty")
    on_disk = json.loads((out / "summary.json").read_text())
    assert summary["curated_entry_ids"] is on_disk["curated_entry_ids"] is entry_ids
    extra = ["entry_ids"] if entry_ids else []
    columns = ["url", "caption", "photo_id", "lang", *extra]
    assert [pq.read_schema(path).names for path in files] == [columns] * 3
    assert pq.read_metadata(files[0]).num_rows == 0
    whole = pq.ParquetFile(files[1]).schema_arrow
    assert pq.read_schema(files[0]).equals(whole)
    table = pq.read_table(folder)
    assert table.num_rows == sum(pq.read_metadata(p).num_rows for p in files) > 0
    assert table.column_names[: len(columns)] == columns


@pytest.mark.parametrize("entry_ids", [False, True])
@pytest.mark.parametrize("worldwide", [False, True])
def test_a_jsonl_shard_with_no_rows_gets_the_columns_of_another(
    tmp_path: Path, entry_ids: bool, worldwide: bool
) -> None:
    """A JSONL shard with no rows names no columns: its curated file gets those of the first
    shard with rows (`write.curated_template`), not none, so `pq.read_table(folder)` keeps
    every column."""
    shards = tmp_path / "pool"
    shards.mkdir()
    (shards / "a-empty.jsonl").write_text("")
    rows = [
        {"url": f"https://img.example/{i}.jpg", "caption": f"the {RARE[i % 4]} {i}", "lang": "en"}
        for i in range(40)
    ]
    for k in range(2):
        lines = [json.dumps(row) for row in rows[20 * k : 20 * k + 20]]
        (shards / f"part-{k}.jsonl").write_text("\n".join(lines) + "\n")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    out = tmp_path / "run"
    _, folder = curate_at_t3(shards, metadata, out, worldwide, entry_ids)
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == 3 and files[0].name.startswith("a-empty")
    columns = ["url", "caption", "lang", *(["entry_ids"] if entry_ids else [])]
    assert [pq.read_schema(path).names for path in files] == [columns] * 3
    assert pq.read_metadata(files[0]).num_rows == 0
    table = pq.read_table(folder)
    assert table.num_rows == sum(pq.read_metadata(p).num_rows for p in files) > 0
    assert table.column_names[: len(columns)] == columns
