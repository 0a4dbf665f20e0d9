"""Stage ``read`` (pipeline.read): every shard format, chunking, shard discovery, bad input."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    ShardReport,
    find_shards,
    iter_shard_checked,
    read_shard,
    read_shard_checked,
    read_table,
    shard_format,
    to_backend,
)

N = 1000
SPECIALS = [
    "",
    "café au lait, s'il vous plaît",
    "東京タワー の 夜景",
    "emoji 🎉 party",
    'quotes "inside" and \\backslash',
    "Ünïcödé; punctuation: yes! really?",
    "2020-01-01",  # pyarrow's JSON reader would infer a timestamp from this
    "12345",
]


def make_texts(n: int = N, seed: int = 0) -> list[str | None]:
    """`n` texts with non-ASCII, tabs/newlines, empty strings and None (a fixed mix)."""
    rng = random.Random(seed)
    words = ["a", "dog", "on", "the", "beach", "red", "car", "photo", "of", "sunset", "Ω", "ñ"]
    texts: list[str | None] = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            texts.append(None)
        elif kind == 1:
            texts.append(SPECIALS[(i // 10) % len(SPECIALS)])
        elif kind == 2:
            texts.append("tab\tinside " + str(i) + "\nand newline")
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
    return texts


TEXTS = make_texts()
URLS = [f"http://example.com/img/{i}.jpg" for i in range(N)]


def plain(texts: list[str | None]) -> list[str]:
    """What a headerless TSV can hold: no tabs/newlines, no nulls (empty strings instead)."""
    return ["" if t is None else t.replace("\t", " ").replace("\n", " ") for t in texts]


def csv_texts(texts: list[str | None]) -> list[str]:
    """What a CSV can hold: quoted tabs and newlines, but no nulls."""
    return ["" if t is None else t for t in texts]


# ---------------------------------------------------------------------- writers
def write_parquet(path: Path, texts, urls, *, row_group_size: int = 300, **extra) -> Path:
    table = pa.table({"caption": pa.array(texts, pa.string()), "url": urls, **extra})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, texts, urls, *, opener=open, **extra) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for i, (text, url) in enumerate(zip(texts, urls, strict=True)):
            row = {"caption": text, "url": url, **{k: v[i] for k, v in extra.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_tsv(path: Path, texts, urls) -> Path:
    lines = [f"{t}\t{u}\n" for t, u in zip(plain(texts), urls, strict=True)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_csv(path: Path, texts, urls) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["caption", "url"])
        writer.writerows(zip(csv_texts(texts), urls, strict=True))
    return path


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(path: Path, texts, urls) -> Path:
    """Even samples carry a .json caption (with url and a width), odd ones a .txt caption."""
    with tarfile.open(path, "w") as tar:
        for i, (text, url) in enumerate(zip(texts, urls, strict=True)):
            key = f"{i:09d}"
            add_member(tar, f"{key}.jpg", b"\xff\xd8fakejpeg")
            if i % 2 == 0 or text is None:
                meta = {"caption": text, "url": url, "key": key, "width": i}
                add_member(tar, f"{key}.json", json.dumps(meta).encode())
            else:
                add_member(tar, f"{key}.txt", text.encode())
    return path


WRITERS = {
    "parquet": ("shard.parquet", write_parquet, TEXTS),
    "jsonl": ("shard.jsonl", write_jsonl, TEXTS),
    "tsv": ("shard.tsv", write_tsv, plain(TEXTS)),
    "csv": ("shard.csv", write_csv, csv_texts(TEXTS)),
    "wds": ("shard.tar", write_wds, TEXTS),
}


def write_format(tmp_path: Path, fmt: str) -> tuple[Path, list[str | None]]:
    name, writer, expected = WRITERS[fmt]
    return writer(tmp_path / name, TEXTS, URLS), expected


def read_all(shard: Shard, options: ReadOptions | None = None) -> tuple[pa.Table, list]:
    chunks = list(read_shard(shard, options))
    table = pa.concat_tables([c.table for c in chunks], promote_options="permissive")
    return table, chunks


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_round_trips_the_same_texts(tmp_path: Path, fmt: str) -> None:
    path, expected = write_format(tmp_path, fmt)
    [shard] = find_shards(path)
    assert shard.format == fmt and shard.index == 0 and shard.name == path.name
    table, chunks = read_all(shard)
    assert table.column("text").to_pylist() == expected
    assert pa.types.is_string(table.schema.field("text").type) or pa.types.is_large_string(
        table.schema.field("text").type
    )
    if fmt == "wds":
        assert table.column("key").to_pylist() == [f"{i:09d}" for i in range(N)]
        assert chunks[0].key_column == "__key__"
    else:
        assert table.column("key").to_pylist() == URLS
        assert (chunks[0].text_column, chunks[0].key_column) == ("caption", "url")
    report = ShardReport(shard)
    for chunk in chunks:
        report.add(chunk)
    assert report.rows == N and not report.skipped and report.error is None
    assert report.null_texts == sum(t is None for t in expected)


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_text_only_reads_the_texts_alone_and_the_same_rows(tmp_path: Path, fmt: str) -> None:
    """``text_only`` (what the match stage reads): chunks of ``text`` alone, with the same
    texts, rows and counts as a full read; a named key column must still exist."""
    path, expected = write_format(tmp_path, fmt)
    [shard] = find_shards(path)
    options = ReadOptions(batch_rows=300, text_only=True, columns=["url"])
    table, chunks = read_all(shard, options)
    assert table.column_names == ["text"]
    assert table.column("text").to_pylist() == expected
    full = list(read_shard(shard, ReadOptions(batch_rows=300)))
    assert [(c.first_row, c.num_rows) for c in chunks] == [(c.first_row, c.num_rows) for c in full]
    if fmt == "parquet":
        with pytest.raises(ShardError, match="no key column 'nope'"):
            list(read_shard(shard, ReadOptions(key_column="nope", text_only=True)))


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_small_batches_give_identical_tables_and_first_rows(tmp_path: Path, fmt: str) -> None:
    path, _ = write_format(tmp_path, fmt)
    [shard] = find_shards(path)
    whole, _ = read_all(shard)
    table, chunks = read_all(shard, ReadOptions(batch_rows=37))
    assert all(0 < c.num_rows <= 37 for c in chunks)
    assert [c.first_row for c in chunks] == list(range(0, N, 37))
    assert table.equals(whole)


def test_jsonl_small_blocks_give_identical_tables(tmp_path: Path, monkeypatch) -> None:
    """Many line blocks (and a block boundary inside each line) change nothing."""
    import metaclip_gpu.pipeline.read.text_formats as read_mod  # the JSONL reader reads it there

    path, expected = write_format(tmp_path, "jsonl")
    [shard] = find_shards(path)
    monkeypatch.setattr(read_mod, "JSON_BLOCK_BYTES", 1000)
    table, chunks = read_all(shard, ReadOptions(batch_rows=100))
    assert table.column("text").to_pylist() == expected
    assert [c.first_row for c in chunks] == list(range(0, N, 100))


def test_gzip_jsonl_and_zstd_tsv(tmp_path: Path) -> None:
    gz = write_jsonl(tmp_path / "a.jsonl.gz", TEXTS, URLS, opener=gzip.open)
    with pa.output_stream(str(tmp_path / "b.tsv.zst"), compression="zstd") as out:
        out.write(write_tsv(tmp_path / "plain.tsv", TEXTS, URLS).read_bytes())
    shards = find_shards([gz, tmp_path / "b.tsv.zst"])
    assert [(s.format, s.compression) for s in shards] == [("jsonl", "gzip"), ("tsv", "zstd")]
    assert read_table([shards[0]]).column("text").to_pylist() == TEXTS
    assert read_table([shards[1]]).column("text").to_pylist() == plain(TEXTS)


# ---------------------------------------------------------------------- finding shards
def test_find_shards_directory_glob_list_sorted_and_deterministic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ["b.parquet", "a.jsonl", "c.tsv", "d.csv.gz", "e.tar"]:
        (data / name).write_bytes(b"")
    (data / "sub" / "f.parquet").write_bytes(b"")
    for ignored in ["_SUCCESS", ".hidden.parquet", "README.md", "x.parquet~"]:
        (data / ignored).write_bytes(b"")

    shards = find_shards(data)
    assert [s.name for s in shards] == ["a.jsonl", "b.parquet", "c.tsv", "d.csv.gz", "e.tar"]
    assert [s.index for s in shards] == list(range(5))
    assert [s.format for s in shards] == ["jsonl", "parquet", "tsv", "csv", "wds"]
    assert find_shards(str(data)) == shards  # deterministic, str or Path
    assert [s.name for s in find_shards(data, formats=["parquet"])] == ["b.parquet"]

    deep = find_shards(str(data / "**" / "*.parquet"))
    assert [s.name for s in deep] == ["b.parquet", "sub/f.parquet"]

    listed = find_shards([data / "c.tsv", data / "sub", data / "a.jsonl", data / "c.tsv"])
    assert [s.path.name for s in listed] == ["a.jsonl", "c.tsv", "f.parquet"]  # deduplicated
    assert [s.index for s in listed] == [0, 1, 2]

    other = tmp_path / "other"
    other.mkdir()
    (other / "b.parquet").write_bytes(b"")
    clash = find_shards([data / "b.parquet", other / "b.parquet"])
    assert len({s.name for s in clash}) == 2 and all(s.name.startswith("b.parquet~") for s in clash)


def test_find_shards_errors_name_the_file(tmp_path: Path) -> None:
    odd = tmp_path / "notes.md"
    odd.write_text("x")
    with pytest.raises(ValueError, match=r"notes\.md.*unknown shard format"):
        find_shards(odd)
    with pytest.raises(ValueError, match=r"x\.parquet\.gz"):
        shard_format("x.parquet.gz")
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        find_shards(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        find_shards(str(tmp_path / "*.jsonl"))
    with pytest.raises(FileNotFoundError, match="no shards"):
        find_shards(tmp_path)  # only notes.md


# ---------------------------------------------------------------------- columns
def test_auto_text_and_key_columns(tmp_path: Path) -> None:
    a = tmp_path / "a.parquet"
    pq.write_table(pa.table({"URL": ["u0", "u1"], "TEXT": ["x", "y"], "n": [1, 2]}), a)
    b = tmp_path / "b.jsonl"
    b.write_text('{"uid": 7, "alt_text": "p", "text": "q"}\n{"uid": 8, "alt_text": "r"}\n')
    c = tmp_path / "c.jsonl"
    c.write_text('{"alt": "only text"}\n')
    ta = read_table(a)
    assert ta.column_names == ["text", "key", "n"]
    assert ta.column("text").to_pylist() == ["x", "y"]
    assert ta.column("key").to_pylist() == ["u0", "u1"]
    tb = read_table(b)  # "text" wins over "alt_text" (candidate order, not column order)
    assert tb.column("text").to_pylist() == ["q", None]
    assert tb.column("key").to_pylist() == [7, 8]
    assert tb.column("alt_text").to_pylist() == ["p", "r"]
    tc = read_table(c)
    assert tc.column_names == ["text"]
    # Explicit names; a kept column called "text" is renamed text_orig.
    tb2 = read_table(b, ReadOptions(text_column="alt_text", key_column="uid"))
    assert tb2.column("text").to_pylist() == ["p", "r"]
    assert tb2.column("text_orig").to_pylist() == ["q", None]
    # `columns` keeps only the named other columns.
    assert read_table(a, ReadOptions(columns=[])).column_names == ["text", "key"]
    with pytest.raises(ShardError, match=r"b\.jsonl.*no key column 'nope'"):
        read_table(b, ReadOptions(key_column="nope"))


def test_tsv_headerless_default_columns_and_options(tmp_path: Path) -> None:
    two = tmp_path / "two.tsv"
    two.write_text('a "quoted" caption\thttp://x/1\n\thttp://x/2\nthird\thttp://x/3\n')
    table = read_table(two)
    assert table.column_names == ["text", "key"]
    assert table.column("text").to_pylist() == ['a "quoted" caption', "", "third"]
    assert table.column("key").to_pylist() == ["http://x/1", "http://x/2", "http://x/3"]

    three = tmp_path / "three.tsv"
    three.write_text("cap one\tu1\t640\ncap two\tu2\t480\n")
    assert read_table(three).column_names == ["text", "key", "f2"]
    named = read_table(three, ReadOptions(tsv_columns=("alt", "URL", "width")))
    assert named.column_names == ["text", "key", "width"]
    assert named.column("width").to_pylist() == ["640", "480"]  # TSV columns stay strings

    one = tmp_path / "one.txt"
    one.write_text("just a caption\nanother\n")
    assert read_table(one).column("text").to_pylist() == ["just a caption", "another"]
    assert read_table(one).column_names == ["text"]

    headed = tmp_path / "headed.tsv"
    headed.write_text("url\tcaption\nu1\thello\nu2\tworld\n")
    table = read_table(headed, ReadOptions(header=True))
    assert table.column("text").to_pylist() == ["hello", "world"]
    assert table.column("key").to_pylist() == ["u1", "u2"]

    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("a\tu1\nb\tu2\textra\nc\tu3\n")
    chunks, report = read_shard_checked(find_shards(ragged)[0])
    assert chunks is not None and report.rows == 2
    assert report.skipped == Counter(invalid_row=1) and report.invalid_lines == [2]


def test_real_cc3m_tsv(cc3m_path: Path, cc3m_texts: list[str]) -> None:
    """The real CC3M validation file (conftest fixtures; skipped without ../shared/data)."""
    [shard] = find_shards(cc3m_path)
    chunks, report = read_shard_checked(shard, ReadOptions(batch_rows=5000))
    assert chunks is not None and report.error is None
    assert report.rows == 15_833 and not report.skipped
    assert [c.first_row for c in chunks] == [0, 5000, 10000, 15000]
    table = pa.concat_tables([c.table for c in chunks])
    assert table.column("text").to_pylist() == cc3m_texts
    assert all(u.startswith("http") for u in table.column("key").to_pylist()[:100])


# ---------------------------------------------------------------------- WebDataset
def test_webdataset_json_and_txt_captions_and_missing_caption(tmp_path: Path) -> None:
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "d/000.jpg", b"img")
        add_member(tar, "d/000.json", json.dumps({"caption": "a\tdog", "url": "u0"}).encode())
        add_member(tar, "d/001.jpg", b"img")
        add_member(tar, "d/001.txt", "ü txt caption".encode())
        add_member(tar, "d/002.jpg", b"img")  # no caption at all
        add_member(tar, "d/003.json", b'{"text": "other field", "meta": {"w": 3}}')
        add_member(tar, "d/004.json", b'{"status": "failed_to_download"}')  # no caption
        add_member(tar, "d/005.json", b"{broken")
        add_member(tar, "d/005.txt", b"txt rescues it")
    chunks, report = read_shard_checked(find_shards(path)[0])
    assert chunks is not None and report.error is None
    table = pa.concat_tables([c.table for c in chunks], promote_options="permissive")
    assert table.column("text").to_pylist() == [
        "a\tdog",
        "ü txt caption",
        "other field",
        "txt rescues it",
    ]
    assert table.column("key").to_pylist() == ["d/000", "d/001", "d/003", "d/005"]
    assert table.column("url").to_pylist() == ["u0", None, None, None]
    assert table.column("meta").to_pylist() == [None, None, '{"w": 3}', None]
    assert report.skipped == Counter(missing_caption=2)
    assert report.rows == 4

    custom = read_table(path, ReadOptions(text_column="status", batch_rows=1))
    assert custom.column("text").to_pylist() == [
        "ü txt caption",
        "failed_to_download",
        "txt rescues it",
    ]


# ---------------------------------------------------------------------- bad input
def test_missing_text_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"description": ["x"], "link": ["u"]}), path)
    with pytest.raises(ShardError, match=r"wrong\.parquet.*columns found: 'description', 'link'"):
        list(read_shard(find_shards(path)[0]))
    jsonl = tmp_path / "wrong.jsonl"
    jsonl.write_text('{"description": "x"}\n')
    with pytest.raises(ShardError, match=r"wrong\.jsonl.*no text column 'caption'.*description"):
        list(read_shard(find_shards(jsonl)[0], ReadOptions(text_column="caption")))
    assert issubclass(ShardError, ValueError)


def test_corrupt_parquet_is_reported_and_the_run_continues(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", TEXTS[:10], URLS[:10])
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet at all")
    truncated = (tmp_path / "a.parquet").read_bytes()[:-20]
    (tmp_path / "c.parquet").write_bytes(truncated)
    write_parquet(tmp_path / "d.parquet", TEXTS[10:20], URLS[10:20])
    reports = []
    rows = []
    for shard in find_shards(tmp_path):
        chunks, report = read_shard_checked(shard)
        reports.append(report)
        if chunks is not None:
            rows += [t for c in chunks for t in c.table.column("text").to_pylist()]
    assert [r.ok for r in reports] == [True, False, False, True]
    assert "b.parquet" in reports[1].error and "Parquet" in reports[1].error
    assert "c.parquet" in reports[2].error
    assert rows == TEXTS[:20]
    with pytest.raises(ShardError, match=r"b\.parquet"):
        list(read_shard(find_shards(tmp_path / "b.parquet")[0]))


def test_truncated_tar_and_gzip_are_shard_errors(tmp_path: Path) -> None:
    gz = write_jsonl(tmp_path / "j.jsonl.gz", TEXTS[:50], URLS[:50], opener=gzip.open)
    gz.write_bytes(gz.read_bytes()[:200])
    report = ShardReport(find_shards(gz)[0])
    list(iter_shard_checked(report.shard, None, report))
    assert report.error is not None and "j.jsonl.gz" in report.error


def test_a_cut_tar_never_loses_samples_silently(tmp_path: Path) -> None:
    """Cut anywhere (block boundaries included): a ShardError, or every sample read."""
    full = write_wds(tmp_path / "full.tar", TEXTS[:40], URLS[:40]).read_bytes()
    cut = tmp_path / "cut.tar"
    silent = []
    for size in [*range(512, len(full), 512), 700, 3000, 5000, len(full) - 1]:
        cut.write_bytes(full[:size])
        chunks, report = read_shard_checked(find_shards(cut)[0])
        if chunks is not None and report.rows + report.skipped.total() != 40:
            silent.append(size)
        if chunks is None:
            assert "cut.tar" in report.error
    assert not silent, f"cuts at {silent} lost samples without an error"
    with tarfile.open(tmp_path / "full.tar") as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + (last.size + 511) // 512 * 512  # the end-of-archive block
    garbled = bytearray(full)
    garbled[end : end + 512] = b"\x01" * 512  # tarfile's stream mode would just stop here
    cut.write_bytes(bytes(garbled))
    _, report = read_shard_checked(find_shards(cut)[0])
    assert report.error is not None and "invalid member header" in report.error


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "tsv", "csv", "wds"])
def test_empty_shard_yields_nothing(tmp_path: Path, fmt: str) -> None:
    name, writer, _ = WRITERS[fmt]
    path = writer(tmp_path / name, [], [])
    chunks, report = read_shard_checked(find_shards(path)[0])
    assert chunks == [] and report.rows == 0 and report.error is None and report.empty
    zero = tmp_path / ("zero" + Path(name).suffix)
    zero.write_bytes(b"")
    chunks, report = read_shard_checked(find_shards(zero)[0])
    if fmt == "parquet":  # a 0-byte file is not Parquet
        assert chunks is None and "zero.parquet" in report.error
    else:
        assert chunks == [] and report.error is None


def test_jsonl_invalid_lines_are_skipped_counted_and_located(tmp_path: Path) -> None:
    lines = [json.dumps({"caption": f"text {i}", "url": f"u{i}"}) for i in range(100)]
    lines[16] = '{"caption": "unterminated'
    lines[70] = "not json at all"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    chunks, report = read_shard_checked(find_shards(path)[0], ReadOptions(batch_rows=40))
    assert chunks is not None and report.error is None
    assert report.rows == 98
    assert report.skipped == Counter(invalid_json=2)
    assert report.invalid_lines == [17, 71]  # 1-based line numbers
    texts = [t for c in chunks for t in c.table.column("text").to_pylist()]
    assert texts == [f"text {i}" for i in range(100) if i not in (16, 70)]
    assert [c.first_row for c in chunks] == [0, 40, 80]


def test_null_and_non_string_texts_are_kept_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "nulls.jsonl"
    rows = [{"caption": "ok"}, {"caption": None}, {"caption": 3}, {"url": "no caption"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    chunks, report = read_shard_checked(find_shards(path)[0])
    assert chunks is not None
    assert report.rows == 4 and report.null_texts == 3 and not report.skipped
    assert chunks[0].table.column("text").to_pylist() == ["ok", None, None, None]
    assert chunks[0].null_texts == 3

    pq_path = write_parquet(tmp_path / "n.parquet", ["a", None, None], ["u", "v", "w"])
    _, report = read_shard_checked(find_shards(pq_path)[0])
    assert report.rows == 3 and report.null_texts == 2
    assert report.to_dict()["null_texts"] == 2


def test_non_string_text_column_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"caption": [1, 2]}), path)
    with pytest.raises(ShardError, match=r"ints\.parquet.*'caption' has type int64"):
        read_table(path)


# ---------------------------------------------------------------------- backends
def test_to_backend_cpu_is_the_arrow_table(tmp_path: Path) -> None:
    [chunk] = list(read_shard(find_shards(write_parquet(tmp_path / "a.parquet", ["x"], ["u"]))[0]))
    assert isinstance(chunk, ShardChunk)
    assert to_backend(chunk.table, "cpu") is chunk.table
    assert chunk.to_backend("cpu") is chunk.table
    with pytest.raises(ValueError, match="unknown backend"):
        to_backend(chunk.table, "tpu")


@pytest.mark.gpu
def test_to_backend_gpu_is_a_cudf_frame(tmp_path: Path) -> None:
    cudf = pytest.importorskip("cudf")
    path = write_parquet(tmp_path / "a.parquet", TEXTS[:100], URLS[:100])
    table = read_table(path)
    frame = to_backend(table, "gpu")
    assert isinstance(frame, cudf.DataFrame)
    assert frame["text"].to_arrow().to_pylist() == TEXTS[:100]


def test_a_shard_error_crosses_process_boundaries_intact() -> None:
    """A `ShardError` raised in a dask task is pickled on the worker and rebuilt on the client;
    it used to fail there (``__init__`` wants path and reason, pickle passed the message)."""
    import pickle

    from metaclip_gpu.pipeline.read import ShardError

    err = pickle.loads(pickle.dumps(ShardError("/data/a.tsv.gz", "not a gzip file")))
    assert isinstance(err, ShardError)
    assert str(err) == "/data/a.tsv.gz: not a gzip file"
    assert (str(err.path), err.reason) == ("/data/a.tsv.gz", "not a gzip file")
