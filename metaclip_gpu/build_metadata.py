"""Building a MetaCLIP ``metadata.json`` from its sources, with a provenance file beside it.

Sources, in MetaCLIP 2's order (``metaclip/metadata/build_metadata.py``); an entry keeps the
id of the first source that adds it:

1. ``number``: "0" .. "99", only with ``numbers=True`` (MetaCLIP 2 adds them to every
   language; MetaCLIP 1's English metadata lists no such source);
2. ``wordnet``: every WordNet lemma (`metaclip_gpu.wordnet`), in sorted order, no cap;
3. ``unigram``: corpus words seen at least ``min_unigram_count`` times (MetaCLIP 1: 100 in
   English Wikipedia), most frequent first;
4. ``bigram``: corpus bigrams with PMI >= ``min_bigram_pmi`` (MetaCLIP 1: 30), highest first
   (MetaCLIP 2's code keeps PMI > 30; a PMI of exactly the threshold is kept here);
5. ``title``: titles seen at least ``min_title_count`` times, most viewed first.

Each candidate is stripped of surrounding whitespace, then dropped when it is empty, longer
than `MAX_CHARS` characters or made only of punctuation (`metaclip_gpu.ngrams.PUNCTUATION`),
and skipped when an earlier entry is the same string. A source's cap counts only the entries
it adds: ``min(max_<source>, int(<source>_share * candidates))``, where candidates are those
passing its threshold. MetaCLIP 2's caps are the defaults of `Caps` (251,465 unigrams,
100,646 bigrams, 61,235 titles); it also capped unigrams at 10% and titles at 76% of their
(unthresholded) lists: ``unigram_share=0.1``, ``title_share=0.76`` with thresholds of 1.

The provenance file (`provenance_path`) has one row per entry: ``id``, ``entry``, ``source``
(the one that added it), ``sources`` (every source whose candidates hold it, in order) and the
statistics it has in them (``wordnet_synsets``, ``unigram_count``, ``bigram_count``,
``bigram_pmi``, ``title_count``; null where a source does not hold it).
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu.ngrams import PUNCTUATION, SelectedNgrams, count_corpus, select_ngrams
from metaclip_gpu.read import ReadOptions, Shard
from metaclip_gpu.wordnet import WordNetSource, read_lemmas

MAX_CHARS = 256
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
    """One source's candidates, best first, each with its statistics."""

    name: str
    candidates: list[tuple[str, dict[str, Any]]]


@dataclass
class EntryRecord:
    source: str
    sources: list[str]
    stats: dict[str, Any]


@dataclass
class SourceFigures:
    candidates: int = 0
    cap: int | None = None
    added: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # empty / too_long / punctuation


# ---------------------------------------------------------------------- sources
def read_titles(path: str | os.PathLike[str]) -> Counter[str]:
    """Titles and their counts from ``title<TAB>count`` lines (or ``title count``: split at the
    last space when a line has no tab); ``_`` reads as a space (Wikipedia's page names), a
    title seen on several lines gets the sum; blank lines are skipped. A line without an
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
            titles[title.replace("_", " ")] += value
    return titles


def title_source(titles: Counter[str], min_count: int) -> SourceList:
    """Titles seen at least `min_count` times (and more than 0), most seen first; titles with
    ':' are left out as MetaCLIP does (Wikipedia namespaces; ':' never matches inside an
    entry anyway)."""
    kept = [(t, n) for t, n in titles.items() if n >= max(min_count, 1) and ":" not in t]
    kept.sort(key=lambda item: (-item[1], item[0]))
    return SourceList("title", [(t, {"title_count": n}) for t, n in kept])


def wordnet_source(source: WordNetSource) -> SourceList:
    synsets = read_lemmas(source)
    return SourceList("wordnet", [(m, {"wordnet_synsets": synsets[m]}) for m in sorted(synsets)])


def ngram_sources(selected: SelectedNgrams) -> list[SourceList]:
    uni = selected.unigrams.to_pydict()
    bi = selected.bigrams.to_pydict()
    return [
        SourceList(
            "unigram",
            [
                (token, {"unigram_count": n})
                for token, n in zip(uni["token"], uni["count"], strict=True)
            ],
        ),
        SourceList(
            "bigram",
            [
                (f"{w1} {w2}", {"bigram_count": n, "bigram_pmi": pmi})
                for w1, w2, n, pmi in zip(bi["w1"], bi["w2"], bi["count"], bi["pmi"], strict=True)
            ],
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
def _rejection(entry: str) -> str | None:
    if not entry:
        return "empty"
    if len(entry) > MAX_CHARS:
        return "too_long"
    if all(char in PUNCTUATION for char in entry):
        return "punctuation"
    return None


def assemble(
    sources: Sequence[SourceList], caps: Caps | None = None
) -> tuple[dict[str, EntryRecord], dict[str, SourceFigures]]:
    """The entries (insertion order = id) and each source's figures (see the module doc)."""
    caps = caps or Caps()
    entries: dict[str, EntryRecord] = {}
    figures: dict[str, SourceFigures] = {}
    for source in sources:
        fig = figures[source.name] = SourceFigures(
            candidates=len(source.candidates),
            cap=caps.of(source.name, len(source.candidates)),
        )
        for raw, stats in source.candidates:
            entry = raw.strip()
            reason = _rejection(entry)
            if reason is not None:
                fig.dropped[reason] += 1
                continue
            known = entries.get(entry)
            if known is not None:
                fig.duplicates += 1
                if source.name not in known.sources:
                    known.sources.append(source.name)
                    known.stats.update(stats)
            elif fig.cap is None or fig.added < fig.cap:
                entries[entry] = EntryRecord(source.name, [source.name], dict(stats))
                fig.added += 1
    return entries, figures


def provenance_path(out: str | os.PathLike[str]) -> Path:
    """``metadata.json`` -> ``metadata.provenance.parquet`` in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.provenance.parquet")


def write_metadata(out: str | os.PathLike[str], entries: dict[str, EntryRecord]) -> Path:
    """Writes the JSON list and the provenance Parquet; returns the provenance path."""
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
        "sources": pa.array([r.sources for r in records], type=pa.list_(pa.string())),
    }
    for name, dtype in STAT_COLUMNS.items():
        columns[name] = pa.array([r.stats.get(name) for r in records], type=dtype)
    where = provenance_path(out)
    pq.write_table(pa.table(columns), where)
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
    corpus: SelectedNgrams | None = None,
    titles: Counter[str] | None = None,
    min_title_count: int = 1,
    numbers: bool = False,
    caps: Caps | None = None,
) -> BuildResult:
    """Assembles the given sources (see the module doc) and writes `out` and its provenance."""
    sources: list[SourceList] = []
    if numbers:
        sources.append(SourceList("number", [(str(i), {}) for i in range(100)]))
    if wordnet is not None:
        sources.append(wordnet_source(wordnet))
    if corpus is not None:
        sources.extend(ngram_sources(corpus))
    if titles is not None:
        sources.append(title_source(titles, min_title_count))
    if not sources:
        raise ValueError("no metadata source: give WordNet, a corpus, titles or numbers")
    entries, figures = assemble(sources, caps)
    provenance = write_metadata(out, entries)
    return BuildResult(len(entries), Path(out), provenance, figures, corpus)
