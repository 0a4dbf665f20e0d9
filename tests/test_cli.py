"""The ``metaclip-gpu`` command line (metaclip_gpu.cli) through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main

METADATA = ["a", "red car", "car", "blue", "St. Louis", ",", "the red"]
# (text, hand-computed sorted entry ids) under SPEC section 2.
CASES = [
    ("a red car", [0, 1, 2]),
    ("The red car, parked.", [1, 2, 5]),  # case-sensitive; "," wrapped in spaces matches ","
    ("blue sky in St. Louis", [3]),  # "St. Louis" never matches (the "." is wrapped)
    ("nothing here", []),
    ("the red  car", [2, 6]),  # the double space breaks "red car"
    ('a "blue" car', [0, 2]),  # quotes are bytes of the token, not CSV quoting
]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def metadata_path(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(METADATA), encoding="utf-8")
    return path


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _written(path: Path) -> tuple[list[str], list[list[int]]]:
    table = pq.read_table(path)
    assert table.column_names == ["text", "entry_ids"]
    assert table.schema.field("entry_ids").type.value_type == pa.int32()
    return table.column("text").to_pylist(), table.column("entry_ids").to_pylist()


def test_demo_curates_the_synthetic_pool_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("wordfreq")
    out = tmp_path / "demo"
    result = _run(
        "demo", "--texts", "3000", "--shards", "3", "--output", str(out), "--t", "50",
        "--backend", "cpu", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"] == 3
    assert summary["texts_read"] == 3000
    kept = summary["ts"][0]["kept"]
    assert 0 < kept < summary["matched"] <= 3000  # t = 50 thins the head entries
    assert len(pq.read_table(summary["outputs"]["curated"]["t=50"]).column("url")) == kept
    for figure in ("3,000", f"{kept:,}", "texts/s", "most matched entries", "'the'"):
        assert figure in result.output
    assert "metaclip-gpu curate --metadata" in result.output
    assert f"report: {out / 'report' / 'index.html'}" in result.output


def test_match_tsv_writes_expected_ids(tmp_path: Path, metadata_path: Path) -> None:
    tsv = tmp_path / "texts.tsv"
    tsv.write_text(
        "".join(f"{text}\thttp://example.com/{i}.jpg\n" for i, (text, _) in enumerate(CASES)),
        encoding="utf-8",
    )
    out = tmp_path / "out" / "matches.parquet"
    result = _run(
        "match", "--metadata", str(metadata_path), "--input", str(tsv), "--output", str(out),
        "--backend", "cpu", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" not in result.output
    assert f"{len(CASES):,}" in result.output
    texts, ids = _written(out)
    assert texts == [text for text, _ in CASES]
    assert ids == [expected for _, expected in CASES]


def test_match_jsonl_and_parquet_use_the_text_column(tmp_path: Path, metadata_path: Path) -> None:
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"id": i, "alt": text}) + "\n" for i, (text, _) in enumerate(CASES)),
        encoding="utf-8",
    )
    parquet_in = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"alt": [text for text, _ in CASES]}), parquet_in)
    for source in (jsonl, parquet_in):
        out = tmp_path / f"{source.stem}-{source.suffix[1:]}-out.parquet"
        result = _run(
            "match", "--metadata", str(metadata_path), "--input", str(source),
            "--text-column", "alt", "--output", str(out), "--backend", "cpu",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        texts, ids = _written(out)
        assert texts == [text for text, _ in CASES]
        assert ids == [expected for _, expected in CASES]


def test_match_missing_text_column_names_the_file(tmp_path: Path, metadata_path: Path) -> None:
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text('{"text": "a red car"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        main, ["match", "--metadata", str(metadata_path), "--input", str(jsonl)]
    )
    assert result.exit_code != 0
    assert "captions.jsonl" in result.output
    assert "'caption'" in result.output
    assert "'text'" in result.output  # the columns found


def test_match_unknown_format_is_a_clear_error(tmp_path: Path, metadata_path: Path) -> None:
    odd = tmp_path / "texts.xyz"
    odd.write_text("a red car\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["match", "--metadata", str(metadata_path), "--input", str(odd)]
    )
    assert result.exit_code != 0
    assert "texts.xyz" in result.output


def test_build_index_prints_stats_and_uses_the_cache(tmp_path: Path, metadata_path: Path) -> None:
    cache = tmp_path / "my-cache"
    result = _run("build-index", "--metadata", str(metadata_path), "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    for figure in ("entries", "table slots", "index size", "build time", "unmatchable"):
        assert figure in result.output
    assert "built" in result.output
    assert any(cache.iterdir())
    again = _run("build-index", "--metadata", str(metadata_path), "--cache-dir", str(cache))
    assert again.exit_code == 0, again.output
    assert "read from cache" in again.output
