"""Building a MetaCLIP ``metadata.json`` from its sources, with a provenance file beside it.

Sources, in this order (MetaCLIP 1's ``metaclip/metaclip1/build_metadata.py``, which MetaCLIP 2
reuses for English, and MetaCLIP 2's ``metaclip/metadata/build_metadata.py`` for other
languages); an entry keeps the id of the first source that adds it:

1. ``number``: "0" .. "99" (``numbers=True``, the default: both references start with them);
2. ``wordnet``: WordNet by `wordnet_rule` (`wordnet`): ``synset-names``, one
   canonical name per synset (MetaCLIP 1, English), or ``lemmas``, every lemma name (MetaCLIP 2's
   rule for the Open Multilingual Wordnet); in sorted order, no source cap;
3. ``unigram``: corpus words seen at least ``min_unigram_count`` times (MetaCLIP 1: 100 in
   English Wikipedia), most frequent first;
4. ``bigram``: corpus bigrams with PMI >= ``min_bigram_pmi`` (MetaCLIP 1: 30), highest first
   (MetaCLIP 2's code keeps PMI > 30; a PMI of exactly the threshold is kept here);
5. ``title``: titles seen at least ``min_title_count`` times, most viewed first.

MetaCLIP 1 keeps its entries in a Python set and dumps ``list(set)``, whose order is arbitrary;
here the order above, and within a source the order given, fixes every id.

Filters (`FILTERS`), applied to each candidate: ``metaclip1`` (the default, MetaCLIP 1's
``forbidden = set(string.punctuation)``) drops the empty string and every single
`string.punctuation` character, nothing else, and changes no candidate; ``metaclip2`` (MetaCLIP
2's other languages) strips surrounding whitespace, then drops a candidate that is empty, longer
than `MAX_CHARS` characters or made only of punctuation (`ngrams.PUNCTUATION`:
ASCII plus MetaCLIP 2's CJK marks). A candidate that is already an entry is a duplicate.

Caps: the whole list stops at ``Caps.total`` entries (500,000, MetaCLIP's size; later candidates
are counted as over the cap). A source's own cap counts only the entries it adds:
``min(max_<source>, int(<source>_share * candidates))``, where candidates are those passing its
threshold. MetaCLIP 2's caps are the defaults of `Caps` (251,465 unigrams, 100,646 bigrams,
61,235 titles); it also capped unigrams at 10% and titles at 76% of their (unthresholded)
lists: ``unigram_share=0.1``, ``title_share=0.76`` with thresholds of 1. MetaCLIP 1 had no
source caps.

The provenance file (`provenance_path`) has one row per entry: ``id``, ``entry``, ``source``
(the one that added it), ``rule`` (how that source chose it: the WordNet rule, or the threshold
that let it in), ``sources`` (every source whose candidates hold it, in order) and the
statistics it has in them (``wordnet_synsets``, ``unigram_count``, ``bigram_count``,
``bigram_pmi``, ``title_count``; null where a source does not hold it). Its Parquet key-value
metadata ``metaclip_gpu.build`` holds the build as JSON (`BUILD_KEY`): the filters, the total
cap and, per source, its rule, origin (the WordNet folder, the corpus shards, the titles file)
and figures.
"""

from __future__ import annotations

import functools
import json
import os
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu.metadata_builder.ngrams import (
    PUNCTUATION,
    SelectedNgrams,
    count_corpus,
    select_ngrams,
)
from metaclip_gpu.metadata_builder.wordnet import WordNetSource, read_wordnet
from metaclip_gpu.pipeline.read import ReadOptions, Shard

MAX_CHARS = 256
FILTERS: tuple[str, ...] = ("metaclip1", "metaclip2")
BUILD_KEY = b"metaclip_gpu.build"
STAT_COLUMNS: dict[str, pa.DataType] = {
    "wordnet_synsets": pa.int64(),
    "unigram_count": pa.int64(),
    "bigram_count": pa.int64(),
    "bigram_pmi": pa.float64(),
    "title_count": pa.int64(),
}


class TitlesError(ValueError):
    """A titles file line that is not ``title<TAB>count``; names the file and line."""


@dataclass(frozen=True)
class Caps:
    """Per-source caps on the entries a source adds (None: no absolute cap)."""

    max_unigrams: int | None = 251_465
    max_bigrams: int | None = 100_646
    max_titles: int | None = 61_235
    unigram_share: float = 1.0
    title_share: float = 1.0
    total: int | None = 500_000

    def of(self, source: str, candidates: int) -> int | None:
        limits = {
            "unigram": (self.max_unigrams, self.unigram_share),
            "bigram": (self.max_bigrams, 1.0),
            "title": (self.max_titles, self.title_share),
        }
        if source not in limits:
            return None
        absolute, share = limits[source]
        by_share = int(share * candidates)
        return by_share if absolute is None else min(absolute, by_share)


@dataclass
class SourceList:
    """One source's candidates, best first, each with its statistics; `rule` says how the
    source chose them and `origin` where they were read (both go to the provenance)."""

    name: str
    candidates: list[tuple[str, dict[str, Any]]]
    rule: str = ""
    origin: str = ""


@dataclass
class EntryRecord:
    source: str
    rule: str
    sources: list[str]
    stats: dict[str, Any]


@dataclass
class SourceFigures:
    candidates: int = 0
    cap: int | None = None
    added: int = 0
    duplicates: int = 0
    over_cap: int = 0  # new strings left out: the source's cap or the total was reached
    dropped: Counter[str] = field(default_factory=Counter)  # empty / too_long / punctuation
    rule: str = ""
    origin: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "origin": self.origin,
            "candidates": self.candidates,
            "cap": self.cap,
            "added": self.added,
            "duplicates": self.duplicates,
            "over_cap": self.over_cap,
            "dropped": dict(sorted(self.dropped.items())),
        }


# ---------------------------------------------------------------------- sources
def read_titles(path: str | os.PathLike[str]) -> Counter[str]:
    """Titles and their counts from ``title<TAB>count`` lines (or ``title count``: split at the
    last space when a line has no tab); a title is stripped and ``_`` reads as a space
    (Wikipedia's page names, as both references read them), a title seen on several lines gets
    the sum; blank lines are skipped. A line without an
    integer count >= 0 raises `TitlesError`; a missing file raises `FileNotFoundError`."""
    titles: Counter[str] = Counter()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            title, sep, count = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
            try:
                value = int(count)
            except ValueError:
                value = -1
            if not sep or value < 0:
                raise TitlesError(
                    f"{path}: line {number} is not 'title<TAB>count' with a count >= 0: "
                    f"{line[:60]!r}"
                )
            titles[title.strip().replace("_", " ")] += value
    return titles


def title_source(titles: Counter[str], min_count: int, origin: str = "") -> SourceList:
    """Titles seen at least `min_count` times (and more than 0), most seen first; titles with
    ':' are left out as MetaCLIP does (Wikipedia namespaces; ':' never matches inside an
    entry anyway)."""
    kept = [(t, n) for t, n in titles.items() if n >= max(min_count, 1) and ":" not in t]
    kept.sort(key=lambda item: (-item[1], item[0]))
    rule = f"title_count >= {max(min_count, 1)}"
    return SourceList("title", [(t, {"title_count": n}) for t, n in kept], rule, origin)


def wordnet_source(source: WordNetSource, rule: str = "synset-names") -> SourceList:
    """WordNet's strings under `rule` (`wordnet.WORDNET_RULES`), sorted."""
    synsets = read_wordnet(source, rule)
    return SourceList(
        "wordnet",
        [(m, {"wordnet_synsets": synsets[m]}) for m in sorted(synsets)],
        rule,
        f"{source.kind}:{source.location}",
    )


def ngram_sources(
    selected: SelectedNgrams,
    min_unigram_count: int | None = None,
    min_bigram_pmi: float | None = None,
    origin: str = "",
) -> list[SourceList]:
    """The corpus's sources; the thresholds it was selected with only name their rules."""
    uni = selected.unigrams.to_pydict()
    bi = selected.bigrams.to_pydict()
    return [
        SourceList(
            "unigram",
            [
                (token, {"unigram_count": n})
                for token, n in zip(uni["token"], uni["count"], strict=True)
            ],
            "" if min_unigram_count is None else f"unigram_count >= {min_unigram_count}",
            origin,
        ),
        SourceList(
            "bigram",
            [
                (f"{w1} {w2}", {"bigram_count": n, "bigram_pmi": pmi})
                for w1, w2, n, pmi in zip(bi["w1"], bi["w2"], bi["count"], bi["pmi"], strict=True)
            ],
            "" if min_bigram_pmi is None else f"bigram_pmi >= {min_bigram_pmi:g}",
            origin,
        ),
    ]


def count_corpus_ngrams(
    shards: Sequence[Shard],
    options: ReadOptions | None,
    *,
    min_unigram_count: int,
    min_bigram_pmi: float,
    backend: str = "cpu",
    client: Any = None,
) -> SelectedNgrams:
    """The corpus's unigrams and bigrams past the thresholds (selected where counted)."""
    finish = functools.partial(
        select_ngrams, min_unigram_count=min_unigram_count, min_pmi=min_bigram_pmi
    )
    return count_corpus(shards, options, backend=backend, client=client, finish=finish)


# ---------------------------------------------------------------------- assembly
_SINGLE_PUNCTUATION = frozenset(string.punctuation)


def filter_candidate(raw: str, filters: str) -> tuple[str, str | None]:
    """The entry a candidate gives under `filters` (`FILTERS`) and why it is dropped (None:
    kept)."""
    if filters == "metaclip1":
        if not raw:
            return raw, "empty"
        return raw, "punctuation" if raw in _SINGLE_PUNCTUATION else None
    if filters != "metaclip2":
        raise ValueError(f"unknown filters {filters!r}: expected one of {', '.join(FILTERS)}")
    entry = raw.strip()
    if not entry:
        return entry, "empty"
    if len(entry) > MAX_CHARS:
        return entry, "too_long"
    if all(char in PUNCTUATION for char in entry):
        return entry, "punctuation"
    return entry, None


def assemble(
    sources: Sequence[SourceList], caps: Caps | None = None, *, filters: str = "metaclip1"
) -> tuple[dict[str, EntryRecord], dict[str, SourceFigures]]:
    """The entries (insertion order = id) and each source's figures (see the module doc)."""
    caps = caps or Caps()
    entries: dict[str, EntryRecord] = {}
    figures: dict[str, SourceFigures] = {}
    for source in sources:
        fig = figures[source.name] = SourceFigures(
            candidates=len(source.candidates),
            cap=caps.of(source.name, len(source.candidates)),
            rule=source.rule,
            origin=source.origin,
        )
        for raw, stats in source.candidates:
            entry, reason = filter_candidate(raw, filters)
            if reason is not None:
                fig.dropped[reason] += 1
                continue
            known = entries.get(entry)
            if known is not None:
                fig.duplicates += 1
                if source.name not in known.sources:
                    known.sources.append(source.name)
                    known.stats.update(stats)
            elif (fig.cap is not None and fig.added >= fig.cap) or (
                caps.total is not None and len(entries) >= caps.total
            ):
                fig.over_cap += 1
            else:
                entries[entry] = EntryRecord(source.name, source.rule, [source.name], dict(stats))
                fig.added += 1
    return entries, figures


def provenance_path(out: str | os.PathLike[str]) -> Path:
    """``metadata.json`` -> ``metadata.provenance.parquet`` in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.provenance.parquet")


def write_metadata(
    out: str | os.PathLike[str],
    entries: dict[str, EntryRecord],
    build: dict[str, Any] | None = None,
) -> Path:
    """Writes the JSON list and the provenance Parquet (with `build` as its ``BUILD_KEY``
    metadata); returns the provenance path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(list(entries), ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)
    records = list(entries.values())
    columns: dict[str, pa.Array] = {
        "id": pa.array(range(len(records)), type=pa.int32()),
        "entry": pa.array(list(entries), type=pa.string()),
        "source": pa.array([r.source for r in records], type=pa.string()),
        "rule": pa.array([r.rule for r in records], type=pa.string()),
        "sources": pa.array([r.sources for r in records], type=pa.list_(pa.string())),
    }
    for name, dtype in STAT_COLUMNS.items():
        columns[name] = pa.array([r.stats.get(name) for r in records], type=dtype)
    where = provenance_path(out)
    metadata = {BUILD_KEY: json.dumps(build or {}, ensure_ascii=False).encode()}
    pq.write_table(pa.table(columns, metadata=metadata), where)
    return where


@dataclass
class BuildResult:
    entries: int
    metadata: Path
    provenance: Path
    figures: dict[str, SourceFigures]
    corpus: SelectedNgrams | None


def build_metadata(
    out: str | os.PathLike[str],
    *,
    wordnet: WordNetSource | None = None,
    wordnet_rule: str = "synset-names",
    corpus: SelectedNgrams | None = None,
    corpus_origin: str = "",
    min_unigram_count: int | None = None,
    min_bigram_pmi: float | None = None,
    titles: Counter[str] | None = None,
    titles_origin: str = "",
    min_title_count: int = 1,
    numbers: bool = True,
    caps: Caps | None = None,
    filters: str = "metaclip1",
) -> BuildResult:
    """Assembles the given sources (see the module doc) and writes `out` and its provenance.
    `min_unigram_count` and `min_bigram_pmi` are the thresholds `corpus` was selected with (they
    name the rules in the provenance); the ``*_origin`` strings say where a source was read."""
    sources: list[SourceList] = []
    if numbers:
        sources.append(SourceList("number", [(str(i), {}) for i in range(100)], "0..99"))
    if wordnet is not None:
        sources.append(wordnet_source(wordnet, wordnet_rule))
    if corpus is not None:
        sources.extend(ngram_sources(corpus, min_unigram_count, min_bigram_pmi, corpus_origin))
    if titles is not None:
        sources.append(title_source(titles, min_title_count, titles_origin))
    if not sources:
        raise ValueError("no metadata source: give WordNet, a corpus, titles or numbers")
    caps = caps or Caps()
    entries, figures = assemble(sources, caps, filters=filters)
    build = {
        "filters": filters,
        "total_cap": caps.total,
        "entries": len(entries),
        "sources": {name: fig.as_json() for name, fig in figures.items()},
    }
    provenance = write_metadata(out, entries, build)
    return BuildResult(len(entries), Path(out), provenance, figures, corpus)
