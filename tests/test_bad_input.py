"""Bad input never crashes a run nor loses good rows (issue 11): empty shards, lone
surrogates, invalid UTF-8 rows, unreadable shards and the exit codes that say so."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import curated_dir

ENTRIES = ["dog", "red car", "beach", "cat"]
GOOD_TEXTS = ["a dog on the beach", "red car, red cat", "nothing here", "a cat"]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(ENTRIES), encoding="utf-8")
    return path


def write_good_shard(root: Path, name: str = "good.tsv") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(f"{t}\thttp://x/{i}\n" for i, t in enumerate(GOOD_TEXTS)))


def curate(metadata: Path, inputs: Path, out: Path, *extra: str):
    args = ["curate", "--metadata", str(metadata), "--input", str(inputs), "--output", str(out)]
    return CliRunner().invoke(main, [*args, "--t", "1000", "--no-report", *extra])


def curated_captions(out: Path) -> list[str]:
    folder = curated_dir(out, 1000)
    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    return sorted(
        c for t in tables if "caption" in t.column_names for c in t.column("caption").to_pylist()
    )


def summary_of(out: Path) -> dict:
    return json.loads((out / SUMMARY_NAME).read_text())


# ---------------------------------------------------------------------- item 1: 0-row shards
def test_zero_row_shards_next_to_good_ones_curate_the_good_rows(
    tmp_path: Path, metadata: Path
) -> None:
    """An empty JSONL, a 0-byte TSV and a 0-row Parquet used to raise KeyError in the balance
    stage, on every rerun too. Now: exit 0, the good rows curated, and a rerun is the same."""
    root = tmp_path / "in"
    write_good_shard(root)
    (root / "empty.jsonl").write_bytes(b"")
    (root / "empty.tsv").write_bytes(b"")
    pq.write_table(pa.table({"caption": pa.array([], pa.string())}), root / "empty.parquet")
    out = tmp_path / "out"
    for _ in range(2):  # the rerun reuses every stage's output
        result = curate(metadata, root, out)
        assert result.exit_code == 0, result.output
        assert curated_captions(out) == sorted(t for t in GOOD_TEXTS if t != "nothing here")
        summary = summary_of(out)
        assert summary["texts_read"] == len(GOOD_TEXTS)
        assert summary["shards"] == 4 and summary["shards_unreadable"] == []
        assert summary["ts"][0]["kept"] == 3


# ---------------------------------------------------------------------- item 2: lone surrogates
def test_jsonl_row_with_a_lone_surrogate_is_skipped_and_counted(
    tmp_path: Path, metadata: Path
) -> None:
    """``{"caption": "bad \\ud800 text"}`` is valid JSON but no UTF-8 string: it aborted the
    whole run (exit 1, no file named). Now that row is skipped and counted with its line, the
    rest of its shard and the other shards are curated, exit 0."""
    root = tmp_path / "in"
    write_good_shard(root)
    lines = [
        json.dumps({"caption": "a dog", "url": "j0"}),
        '{"caption": "bad \\ud800 text dog", "url": "j1"}',
        json.dumps({"caption": "red car", "url": "j2"}),
        '{"caption": "fine", "url": "j3", "note": "\\udfff"}',  # in another field: same
    ]
    (root / "s.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = curate(metadata, root, out)
    assert result.exit_code == 0, result.output
    assert "lone_surrogate: 2" in result.output
    assert curated_captions(out) == sorted(
        [t for t in GOOD_TEXTS if t != "nothing here"] + ["a dog", "red car"]
    )
    summary = summary_of(out)
    assert summary["texts_read"] == len(GOOD_TEXTS) + 2
    assert summary["skipped"] == {"lone_surrogate": 2}
    [bad] = summary["skipped_rows"]
    assert bad["shard"] == "s.jsonl" and bad["path"] == str(root / "s.jsonl")
    assert bad["skipped"] == {"lone_surrogate": 2} and bad["lines"] == [2, 4]


def test_match_matches_a_str_with_a_lone_surrogate_as_bytes() -> None:
    from metaclip_gpu import MetadataIndex, match

    index = MetadataIndex.from_entries(ENTRIES)
    result = match(["a dog \ud800 on the beach", "red car"], index, backend="cpu")
    assert result.to_lists() == [[0, 2], [1]]


def test_metadata_with_a_lone_surrogate_names_the_file_and_element(tmp_path: Path) -> None:
    from metaclip_gpu import MetadataIndex
    from metaclip_gpu.engine.metadata import MetadataError

    path = tmp_path / "meta.json"
    path.write_text('["dog", "bad \\ud800 x", "red"]')
    with pytest.raises(MetadataError, match=r"meta\.json: element 1 .*surrogate"):
        MetadataIndex.load(path, cache=False)
    with pytest.raises(MetadataError, match=r"element 1 .*surrogate"):
        MetadataIndex.from_entries(["dog", "bad \ud800 x"])
    result = CliRunner().invoke(
        main, ["build-index", "--metadata", str(path), "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 1 and "element 1" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------- item 3: invalid UTF-8
@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_one_invalid_utf8_row_loses_only_that_row(tmp_path: Path, fmt: str) -> None:
    """One line with a byte that is not UTF-8 made the whole TSV/CSV shard unreadable. Now it
    is skipped and counted as ``invalid_utf8`` with its line: 999 of 1,000 rows are read, the
    rows after it keep their texts and keys."""
    from metaclip_gpu.pipeline.read import ReadOptions, find_shards, read_shard_checked

    sep = "\t" if fmt == "tsv" else ","
    head = [f"caption{sep}url"] if fmt == "csv" else []
    lines = [f"dog number {i}{sep}http://x/{i}".encode() for i in range(1000)]
    lines[500] = b"bad \xff\xfe dog" + sep.encode() + b"http://x/500"
    lines[700] = b"wrong field count"  # a row pyarrow skips (its handler), before line 702
    lines[800] = b"dog" + sep.encode() + b"http://x/\xc3"  # a bad byte in another column
    path = tmp_path / f"s.{fmt}"
    path.write_bytes(b"\n".join([h.encode() for h in head] + lines) + b"\n")
    [shard] = find_shards(path)
    # A small batch size, so rows after the bad ones come in other batches too.
    chunks, report = read_shard_checked(shard, ReadOptions(batch_rows=64))
    assert report.error is None and chunks is not None
    assert report.rows == 997
    assert report.skipped == {"invalid_utf8": 2, "invalid_row": 1}
    offset = len(head) + 1  # line of lines[0]
    assert sorted(report.invalid_lines) == [500 + offset, 700 + offset, 800 + offset]
    texts = [t for c in chunks for t in c.table.column("text").to_pylist()]
    keys = [k for c in chunks for k in c.table.column("key").to_pylist()]
    kept = [i for i in range(1000) if i not in (500, 700, 800)]
    assert texts == [f"dog number {i}" for i in kept]
    assert keys == [f"http://x/{i}" for i in kept]
    assert [c.first_row for c in chunks][:2] == [0, 64]


def test_tsv_with_an_invalid_utf8_row_curates_the_rest(tmp_path: Path, metadata: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    rows = [f"{t}\thttp://x/{i}".encode() for i, t in enumerate(GOOD_TEXTS)]
    rows.insert(1, b"a dog \xff\thttp://x/bad")
    (root / "s.tsv").write_bytes(b"\n".join(rows) + b"\n")
    out = tmp_path / "out"
    result = curate(metadata, root, out)
    assert result.exit_code == 0, result.output
    assert curated_captions(out) == sorted(t for t in GOOD_TEXTS if t != "nothing here")
    summary = summary_of(out)
    assert summary["skipped"] == {"invalid_utf8": 1}
    assert summary["skipped_rows"][0]["lines"] == [2]


# ---------------------------------------------------------------------- item 4: exit codes
def last_line(output: str) -> str:
    return output.rstrip("\n").rsplit("\n", 1)[-1]


def test_every_shard_unreadable_exits_nothing_read_with_one_line(
    tmp_path: Path, metadata: Path
) -> None:
    from metaclip_gpu.pipeline.outcome import EXIT_NOTHING_READ

    root = tmp_path / "in"
    root.mkdir()
    (root / "a.parquet").write_bytes(b"garbage")
    (root / "b.parquet").write_bytes(b"PAR1 not parquet")
    out = tmp_path / "out"
    result = curate(metadata, root, out)
    assert result.exit_code == EXIT_NOTHING_READ == 4, result.output
    assert "Traceback" not in result.output
    line = last_line(result.output)
    assert line.startswith("error: nothing read: all 2 shards are unreadable"), line
    assert "a.parquet" in line
    assert summary_of(out)["outcome"]["exit_code"] == EXIT_NOTHING_READ


def test_some_shards_unreadable_exit_3_and_the_rest_is_curated(
    tmp_path: Path, metadata: Path
) -> None:
    from metaclip_gpu.pipeline.outcome import EXIT_SOME_UNREADABLE

    root = tmp_path / "in"
    write_good_shard(root)
    (root / "a.parquet").write_bytes(b"garbage")
    out = tmp_path / "out"
    result = curate(metadata, root, out)
    assert result.exit_code == EXIT_SOME_UNREADABLE == 3, result.output
    line = last_line(result.output)
    assert line.startswith("warning: 1 of 2 shards could not be read"), line
    assert curated_captions(out) == sorted(t for t in GOOD_TEXTS if t != "nothing here")
    outcome = summary_of(out)["outcome"]
    assert outcome["exit_code"] == 3 and outcome["status"] == "some_shards_unreadable"


def test_all_read_exit_0_and_says_so_last(tmp_path: Path, metadata: Path) -> None:
    root = tmp_path / "in"
    write_good_shard(root)
    result = curate(metadata, root, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert last_line(result.output).startswith("done: all 1 shards read")


def test_match_stage_alone_has_the_same_exit_codes(tmp_path: Path, metadata: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.parquet").write_bytes(b"garbage")
    args = ["match", "--metadata", str(metadata), "--input", str(root), "--output"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "out")])
    assert result.exit_code == 4, result.output
    assert last_line(result.output).startswith("error: nothing read")


# ---------------------------------------------------------------------- item 9: brackets
def test_square_brackets_in_messages_paths_and_entries_are_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich read "[report]" as markup: "pip install 'metaclip-gpu[report]'" printed as
    "pip install 'metaclip-gpu'". Paths, errors and entries with brackets print as they are."""
    import sys

    monkeypatch.setitem(sys.modules, "metaclip_gpu.report.html", None)  # the report extra missing
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["[film]", "dog"]))
    root = tmp_path / "in [v2]"
    root.mkdir()
    (root / "good [a].tsv").write_text("a [film] and a dog\thttp://x/0\n")
    (root / "bad [b].parquet").write_bytes(b"garbage")
    out = tmp_path / "out [1]"
    args = ["curate", "--metadata", str(metadata), "--input", str(root), "--output", str(out)]
    result = CliRunner().invoke(main, [*args, "--t", "10"])
    assert result.exit_code == 3, result.output
    flat = " ".join(result.output.split())  # table cells wrap
    assert "pip install 'metaclip-gpu[report]'" in flat
    assert "bad [b].parquet" in flat and "'[film]'" in flat and "out [1]" in flat
    assert "\\[" not in flat


def test_the_report_lists_the_files_and_lines_of_skipped_rows(
    tmp_path: Path, metadata: Path
) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("jinja2")
    root = tmp_path / "in"
    root.mkdir()
    (root / "s.jsonl").write_text('{"caption": "a dog"}\n{not json\n{"caption": "x \\ud800"}\n')
    out = tmp_path / "out"
    args = ["curate", "--metadata", str(metadata), "--input", str(root), "--output", str(out)]
    result = CliRunner().invoke(main, [*args, "--t", "1000"])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text()
    assert str(root / "s.jsonl") in page
    assert "invalid_json: 1, lone_surrogate: 1" in page and "<td>2, 3</td>" in page


def test_worldwide_with_every_shard_unreadable_says_nothing_read(tmp_path: Path) -> None:
    """It used to fail with a misleading "thresholds start from English counts", exit 1."""
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "en.json").write_text(json.dumps(ENTRIES))
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.parquet").write_bytes(b"garbage")
    args = ["curate", "--worldwide", "--metadata", str(meta), "--input", str(root)]
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "out"), "--no-report"])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    assert "nothing read: all 1 shards are unreadable" in last_line(result.output)
