"""Building metadata (metaclip_gpu.metadata_builder.build and ``metaclip-gpu build-metadata``):
source order, de-duplication, both filter sets, caps and the total cap; titles files; the WordNet
rules; the provenance; the built file in the matcher."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from wordnet_fixture import LEMMAS, OMW_LEMMAS, SYNSET_NAMES, write_omw, write_wordnet

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.cli import main
from metaclip_gpu.engine.reference import FastOracle
from metaclip_gpu.metadata_builder.build import (
    BUILD_KEY,
    Caps,
    SourceList,
    TitlesError,
    assemble,
    build_metadata,
    filter_candidate,
    provenance_path,
    read_titles,
    title_source,
)
from metaclip_gpu.metadata_builder.wordnet import find_wordnet


def _source(name: str, entries: list[str]) -> SourceList:
    return SourceList(name, [(e, {f"{name}_count": i}) for i, e in enumerate(entries)])


def test_assemble_order_dedup_drops_and_caps() -> None:
    sources = [
        _source("wordnet", ["dog", " cat ", "dog", "...", "", "x" * 257]),
        _source("unigram", ["cat", "a", "b", "c", "d"]),
        _source("title", ["a", "New York", "!?", "Paris", "Rome"]),
    ]
    caps = Caps(max_unigrams=2, max_titles=None, title_share=0.5)
    entries, figures = assemble(sources, caps, filters="metaclip2")
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


def test_assemble_metaclip1_filters_drop_only_empty_and_single_punctuation() -> None:
    """MetaCLIP 1's rule (``len(entry) > 0 and entry not in set(string.punctuation)``): nothing
    is stripped, "..." and "!?" stay, long strings stay."""
    sources = [
        _source("wordnet", ["dog", " cat ", "dog", "...", "", "x" * 257, ",", "~"]),
        _source("unigram", ["cat", "a", "!?", "\u3002"]),
    ]
    entries, figures = assemble(sources, Caps(), filters="metaclip1")
    assert list(entries) == ["dog", " cat ", "...", "x" * 257, "cat", "a", "!?", "\u3002"]
    assert figures["wordnet"].dropped == Counter(empty=1, punctuation=2)
    assert figures["wordnet"].duplicates == 1
    assert figures["unigram"].dropped == Counter()
    assert assemble(sources, Caps())[0] == entries  # the default
    assert filter_candidate(" cat ", "metaclip2") == ("cat", None)
    with pytest.raises(ValueError, match="unknown filters 'strict'"):
        filter_candidate("cat", "strict")


def test_total_cap_stops_the_list_and_counts_what_it_leaves_out() -> None:
    sources = [
        _source("number", [str(i) for i in range(5)]),
        _source("wordnet", ["dog", "cat", "3"]),
        _source("title", ["cat", "Paris", "Rome", ""]),
    ]
    entries, figures = assemble(sources, Caps(max_titles=None, total=7))
    assert list(entries) == ["0", "1", "2", "3", "4", "dog", "cat"]
    assert (figures["wordnet"].added, figures["wordnet"].duplicates) == (2, 1)
    title = figures["title"]
    # over the total: Paris and Rome; "cat" is a duplicate and "" is dropped, not over the cap
    assert (title.added, title.duplicates, title.over_cap) == (0, 1, 2)
    assert title.dropped == Counter(empty=1)
    unigrams = [_source("unigram", ["a", "b", "c", "a"])]
    _, figures = assemble(unigrams, Caps(max_unigrams=2))
    assert (figures["unigram"].added, figures["unigram"].over_cap) == (2, 1)
    assert figures["unigram"].duplicates == 1


def test_caps_share_and_absolute() -> None:
    caps = Caps(max_unigrams=10, unigram_share=0.1, max_titles=None, title_share=0.76)
    assert caps.of("unigram", 1000) == 10
    assert caps.of("unigram", 50) == 5
    assert caps.of("title", 100) == 76
    assert caps.of("bigram", 10**9) == 100_646
    assert caps.of("wordnet", 10**9) is None


def test_read_titles(tmp_path: Path) -> None:
    path = tmp_path / "titles.tsv"
    path.write_text("New_York\t10\nParis 3\n\nNew York \t5\nHelp:Contents\t99\nRome\t0\n")
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
    args += ["--wordnet-rule", "lemmas"]
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


def test_cli_default_is_metaclip1_english(tmp_path: Path) -> None:
    """Without options: numbers first, then WordNet's synset names (not every lemma), the
    MetaCLIP 1 filters (the "" name of ``.22_caliber`` dropped), and a provenance that says
    which rule and source gave each entry."""
    wordnet = write_wordnet(tmp_path / "dict")
    titles = tmp_path / "titles.tsv"
    titles.write_text("Golden_Gate_Bridge\t900\nThe Beatles\t500\ndog\t7\n,\t3\n")
    out = tmp_path / "metadata.json"
    args = ["build-metadata", "--out", str(out), "--wordnet", str(wordnet)]
    result = CliRunner().invoke(main, [*args, "--titles", str(titles)])
    assert result.exit_code == 0, result.output
    assert "wordnet [synset-names]" in result.output

    entries = json.loads(out.read_text())
    names = sorted(name for name in SYNSET_NAMES if name)
    assert entries == [str(i) for i in range(100)] + names + ["Golden Gate Bridge", "The Beatles"]
    assert "domestic dog" not in entries and "Einstein" not in entries and "einstein" in entries

    table = pq.read_table(provenance_path(out))
    rows = {row["entry"]: row for row in table.to_pylist()}
    assert (rows["7"]["source"], rows["7"]["rule"]) == ("number", "0..99")
    assert (rows["dog"]["source"], rows["dog"]["rule"]) == ("wordnet", "synset-names")
    assert rows["dog"]["sources"] == ["wordnet", "title"] and rows["dog"]["wordnet_synsets"] == 2
    assert rows["The Beatles"]["rule"] == "title_count >= 1"
    build = json.loads(table.schema.metadata[BUILD_KEY])
    assert (build["filters"], build["total_cap"], build["entries"]) == ("metaclip1", 500_000, 111)
    assert build["sources"]["wordnet"]["rule"] == "synset-names"
    assert build["sources"]["wordnet"]["origin"] == f"files:{wordnet}"
    assert build["sources"]["wordnet"]["dropped"] == {"empty": 1}
    assert build["sources"]["title"]["origin"] == str(titles)
    assert build["sources"]["title"]["dropped"] == {"punctuation": 1}

    result = CliRunner().invoke(main, [*args, "--no-numbers", "--max-entries", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == names[:5]
    assert f"{len(names) - 5} over a cap" in result.output


def test_build_metadata_lemmas_rule_with_metaclip2_filters(tmp_path: Path) -> None:
    """MetaCLIP 2's rule for other languages' wordnets: every lemma, case kept."""
    source = find_wordnet(write_wordnet(tmp_path / "dict"))
    out = tmp_path / "metadata.json"
    result = build_metadata(
        out, wordnet=source, wordnet_rule="lemmas", numbers=False, filters="metaclip2"
    )
    assert json.loads(out.read_text()) == sorted(LEMMAS)
    assert result.figures["wordnet"].rule == "lemmas"
    rows = pq.read_table(provenance_path(out)).to_pylist()
    assert {row["rule"] for row in rows} == {"lemmas"}
    with pytest.raises(ValueError, match="unknown WordNet rule"):
        build_metadata(out, wordnet=source, wordnet_rule="all")


def test_cli_omw_file_gets_the_lemmas_rule(tmp_path: Path) -> None:
    """Another language (MetaCLIP 2): its Open Multilingual Wordnet lemmas, numbers first."""
    omw = write_omw(tmp_path / "wn-data-jpn.tab")
    out = tmp_path / "ja" / "metadata.json"
    args = ["build-metadata", "--out", str(out), "--wordnet", str(omw), "--filters", "metaclip2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wordnet [lemmas]" in result.output
    assert json.loads(out.read_text()) == [str(i) for i in range(100)] + sorted(OMW_LEMMAS)
    build = json.loads(pq.read_table(provenance_path(out)).schema.metadata[BUILD_KEY])
    assert build["sources"]["wordnet"]["origin"] == f"omw:{omw}"
    result = CliRunner().invoke(main, [*args, "--wordnet-rule", "synset-names"])
    assert result.exit_code != 0 and "gives lemma names only" in result.output


def test_cli_named_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "metadata.json")
    runner = CliRunner()
    titles = tmp_path / "titles.tsv"
    titles.write_text("Paris\n")
    result = runner.invoke(
        main, ["build-metadata", "--out", out, "--wordnet", "none", "--no-numbers"]
    )
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
