"""Building metadata (metaclip_gpu.build_metadata and ``metaclip-gpu build-metadata``):
source order, de-duplication, drops and caps; titles files; the built file in the matcher."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from wordnet_fixture import LEMMAS, write_wordnet

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.build_metadata import (
    Caps,
    SourceList,
    TitlesError,
    assemble,
    provenance_path,
    read_titles,
    title_source,
)
from metaclip_gpu.cli import main
from metaclip_gpu.reference import FastOracle


def _source(name: str, entries: list[str]) -> SourceList:
    return SourceList(name, [(e, {f"{name}_count": i}) for i, e in enumerate(entries)])


def test_assemble_order_dedup_drops_and_caps() -> None:
    sources = [
        _source("wordnet", ["dog", " cat ", "dog", "...", "", "x" * 257]),
        _source("unigram", ["cat", "a", "b", "c", "d"]),
        _source("title", ["a", "New York", "!?", "Paris", "Rome"]),
    ]
    caps = Caps(max_unigrams=2, max_titles=None, title_share=0.5)
    entries, figures = assemble(sources, caps)
    assert list(entries) == ["dog", "cat", "a", "b", "New York", "Paris"]
    assert entries["cat"].sources == ["wordnet", "unigram"]
    assert entries["cat"].stats == {"wordnet_count": 1, "unigram_count": 0}
    assert entries["a"].source == "unigram" and entries["a"].sources == ["unigram", "title"]
    wordnet, unigram, title = figures["wordnet"], figures["unigram"], figures["title"]
    assert (wordnet.added, wordnet.duplicates, wordnet.cap) == (2, 1, None)
    assert wordnet.dropped == Counter(punctuation=1, empty=1, too_long=1)
    assert (unigram.added, unigram.duplicates, unigram.cap) == (2, 1, 2)
    # title cap: int(0.5 * 5 candidates) = 2 new entries, so "Rome" is left out
    assert (title.cap, title.added, title.duplicates) == (2, 2, 1)
    assert title.dropped == Counter(punctuation=1)


def test_caps_share_and_absolute() -> None:
    caps = Caps(max_unigrams=10, unigram_share=0.1, max_titles=None, title_share=0.76)
    assert caps.of("unigram", 1000) == 10
    assert caps.of("unigram", 50) == 5
    assert caps.of("title", 100) == 76
    assert caps.of("bigram", 10**9) == 100_646
    assert caps.of("wordnet", 10**9) is None


def test_read_titles(tmp_path: Path) -> None:
    path = tmp_path / "titles.tsv"
    path.write_text("New_York\t10\nParis 3\n\nNew York\t5\nHelp:Contents\t99\nRome\t0\n")
    titles = read_titles(path)
    assert titles == Counter({"New York": 15, "Help:Contents": 99, "Paris": 3, "Rome": 0})
    source = title_source(titles, min_count=3)
    assert [entry for entry, _ in source.candidates] == ["New York", "Paris"]


@pytest.mark.parametrize("line", ["Just a title", "Title\tmany", "Title\t-3"])
def test_bad_titles_line_is_a_named_error(tmp_path: Path, line: str) -> None:
    path = tmp_path / "titles.tsv"
    path.write_text(f"Good\t1\n{line}\n")
    with pytest.raises(TitlesError, match=r"titles\.tsv: line 2 is not 'title<TAB>count'"):
        read_titles(path)


def test_cli_builds_metadata_that_loads_in_the_matcher(
    tmp_path: Path, cc3m_path: Path, cc3m_texts: list[str]
) -> None:
    wordnet = write_wordnet(tmp_path / "dict")
    titles = tmp_path / "titles.tsv"
    titles.write_text("Golden_Gate_Bridge\t900\nThe Beatles\t500\ndog\t7\n")
    out = tmp_path / "meta" / "metadata.json"
    args = ["build-metadata", "--out", str(out), "--wordnet", str(wordnet)]
    args += ["--corpus", str(cc3m_path), "--min-unigram-count", "50", "--min-bigram-pmi", "14"]
    result = CliRunner().invoke(main, [*args, "--titles", str(titles), "--numbers"])
    assert result.exit_code == 0, result.output
    assert "15,833 texts" in result.output

    entries = json.loads(out.read_text())
    assert entries[:100] == [str(i) for i in range(100)]
    assert entries[100 : 100 + len(LEMMAS)] == sorted(LEMMAS)
    assert len(set(entries)) == len(entries)
    assert entries[-2:] == ["Golden Gate Bridge", "The Beatles"]  # "dog" is WordNet's

    provenance = pq.read_table(provenance_path(out)).to_pylist()
    assert [row["id"] for row in provenance] == list(range(len(entries)))
    assert [row["entry"] for row in provenance] == entries
    by_entry = {row["entry"]: row for row in provenance}
    dog = by_entry["dog"]  # a WordNet lemma, a frequent CC3M word and a title
    assert dog["source"] == "wordnet" and dog["sources"] == ["wordnet", "unigram", "title"]
    assert (dog["wordnet_synsets"], dog["title_count"]) == (2, 7) and dog["unigram_count"] >= 50
    bigrams = [row for row in provenance if row["source"] == "bigram"]
    assert bigrams and all(row["bigram_pmi"] >= 14 for row in bigrams)
    unigrams = [row for row in provenance if row["source"] == "unigram"]
    assert unigrams and all(row["unigram_count"] >= 50 for row in unigrams)

    index = MetadataIndex.load(out, cache=False)
    assert index.entries.to_pylist() == entries
    texts = cc3m_texts[:2000]
    assert match(texts, index, backend="cpu").to_lists() == FastOracle(entries).match_many(texts)


def test_cli_named_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "metadata.json")
    runner = CliRunner()
    titles = tmp_path / "titles.tsv"
    titles.write_text("Paris\n")
    result = runner.invoke(main, ["build-metadata", "--out", out, "--wordnet", "none"])
    assert result.exit_code != 0 and "no metadata source" in result.output
    result = runner.invoke(
        main, ["build-metadata", "--out", out, "--wordnet", "none", "--titles", str(titles)]
    )
    assert result.exit_code != 0 and "line 1 is not 'title<TAB>count'" in result.output
    missing = str(tmp_path / "absent.tsv")
    for option in ("--titles", "--corpus", "--wordnet"):
        result = runner.invoke(
            main, ["build-metadata", "--out", out, "--wordnet", "none", option, missing]
        )
        assert result.exit_code != 0 and "absent.tsv" in result.output, option
    assert not Path(out).exists()
