"""Unigram and bigram counts of a text corpus, and the bigrams' PMI, as Arrow group-by jobs.

Tokenization is the one the matcher uses (SPEC section 2): ``spacing(text)`` split on the
single byte ``' '``. Of those tokens:

- an empty token (from two adjacent spaces, or the padding) is not a word;
- a *punctuation-only* token (every character in `PUNCTUATION`: ASCII punctuation plus the
  CJK marks of MetaCLIP's ``build_ngram.py``) is not a word either: such tokens are dropped
  from the metadata anyway, and MetaCLIP's n-gram builder skips them the same way;
- a unigram is every word token; a bigram is two word tokens next to each other in the split
  of one text. So a bigram never spans two texts, a punctuation token (as in MetaCLIP's
  builder, where punctuation resets the previous token) or an empty token (``"a  b"``, whose
  entry ``"a b"`` would not match, SPEC section 2). Every counted bigram occurrence is thus a
  place where the entry ``"w1 w2"`` matches.

Nothing is lower-cased or stripped: matching is case-sensitive and byte-exact, and a counted
n-gram is exactly the entry that would match it.

PMI is nltk's ``BigramAssocMeasures.pmi`` over nltk's ``BigramCollocationFinder.from_words``
counts: ``log2(n_ii * n_xx) - log2(n_ix * n_xi)`` with ``n_ii`` the bigram's count, ``n_ix``
and ``n_xi`` the unigram counts of its words and ``n_xx`` the number of word tokens
(equivalently ``from_words`` over each text's words with ``None`` between runs of words).

Counting: `count_texts` turns one chunk of texts into partial counts with pyarrow compute
(``split_pattern``, ``list_flatten``, ``value_counts``, ``group_by``); `merge_counts` sums
partial counts (concatenate + group-by sum); `count_corpus` reads shards with the pipeline's
readers and reduces one task per shard as a dask bag tree reduction, in process
(synchronous scheduler) or on a `distributed.Client`. On the GPU the per-chunk step runs in
cuDF (`metaclip_gpu.metadata_builder.gpu_ngrams`); the reduction is the same.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu.engine.reference import CHARS_TO_SPACE, PUNCTS_TO_WRAP
from metaclip_gpu.pipeline.read import ReadOptions, Shard, read_shard

PUNCTUATION: str = string.punctuation + "，。、；：？¿！“”‘’（）【】《》〈〉「」『』～—"  # noqa: RUF001
"""Characters of a punctuation-only token (MetaCLIP's ``is_punctuation``)."""

FAN_IN = 8  # partial counts merged at once (chunks of a shard; shards in the tree reduction)

UNIGRAM_SCHEMA = pa.schema([("token", pa.large_string()), ("count", pa.int64())])
BIGRAM_SCHEMA = pa.schema(
    [("w1", pa.large_string()), ("w2", pa.large_string()), ("count", pa.int64())]
)


@dataclass
class NgramCounts:
    """Counts of a set of texts: ``unigrams`` (token, count), ``bigrams`` (w1, w2, count),
    one row per distinct n-gram in no particular order, and the number of texts read."""

    unigrams: pa.Table
    bigrams: pa.Table
    texts: int

    @property
    def tokens(self) -> int:
        """``n_xx``: the number of word tokens."""
        return int(pc.sum(self.unigrams.column("count")).as_py() or 0)

    def unigram_dict(self) -> dict[str, int]:
        return dict(zip(*self.unigrams.to_pydict().values(), strict=True))

    def bigram_dict(self) -> dict[tuple[str, str], int]:
        columns = self.bigrams.to_pydict()
        pairs = zip(columns["w1"], columns["w2"], strict=True)
        return dict(zip(pairs, columns["count"], strict=True))


def decode_texts(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """String texts as they are; a binary column (not valid UTF-8) decoded with U+FFFD.

    Both n-gram counters (pyarrow here, cuDF in `backends.gpu_ngrams`) start from this."""
    if pa.types.is_binary(texts.type) or pa.types.is_large_binary(texts.type):
        values = [None if v is None else v.decode("utf-8", "replace") for v in texts.to_pylist()]
        return pa.array(values, type=pa.large_string())
    return texts


def spaced_tokens(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """The tokens of every ``spacing(text)`` split on ``' '`` (empty ones kept; padding
    omitted, which only drops empty tokens) and each token's text index."""
    spaced = decode_texts(texts)
    for punct in PUNCTS_TO_WRAP:
        spaced = pc.replace_substring(spaced, punct, f" {punct} ")
    for char in CHARS_TO_SPACE:
        spaced = pc.replace_substring(spaced, char, " ")
    lists = pc.split_pattern(spaced, " ")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    tokens = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    return tokens, parents


def word_mask(tokens: pa.Array) -> np.ndarray:
    """True for the tokens that are words: not empty, not punctuation-only."""
    punctuation_only = pc.equal(pc.utf8_trim(tokens, characters=PUNCTUATION), "")
    return np.asarray(pc.invert(punctuation_only).to_numpy(zero_copy_only=False))


def count_texts(texts: pa.Array | pa.ChunkedArray) -> NgramCounts:
    """Unigram and bigram counts of one chunk of texts (nulls have no tokens), with pyarrow."""
    tokens, parents = spaced_tokens(texts)
    words = word_mask(tokens)
    unigrams = pc.value_counts(tokens.filter(pa.array(words)))
    pair = words[:-1] & words[1:] & (parents[:-1] == parents[1:])
    first = np.flatnonzero(pair)
    bigrams = (
        pa.table({"w1": tokens.take(first), "w2": tokens.take(first + 1)})
        .group_by(["w1", "w2"], use_threads=False)
        .aggregate([([], "count_all")])
    )
    return NgramCounts(
        unigrams=pa.table(
            [unigrams.field("values"), unigrams.field("counts")], names=["token", "count"]
        ).cast(UNIGRAM_SCHEMA),
        bigrams=bigrams.rename_columns(["w1", "w2", "count"]).cast(BIGRAM_SCHEMA),
        texts=len(texts),
    )


def merge_counts(parts: Iterable[NgramCounts]) -> NgramCounts:
    """The sum of partial counts (concatenate, then group-by sum)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    unigrams = pa.concat_tables(
        [UNIGRAM_SCHEMA.empty_table(), *(p.unigrams for p in parts)]
    ).group_by("token", use_threads=False)
    bigrams = pa.concat_tables([BIGRAM_SCHEMA.empty_table(), *(p.bigrams for p in parts)])
    return NgramCounts(
        unigrams=unigrams.aggregate([("count", "sum")]).rename_columns(["token", "count"]),
        bigrams=bigrams.group_by(["w1", "w2"], use_threads=False)
        .aggregate([("count", "sum")])
        .rename_columns(["w1", "w2", "count"]),
        texts=sum(p.texts for p in parts),
    )


def ngram_counter(name: str = "auto") -> Callable[[Any], NgramCounts]:
    """The per-chunk n-gram counter of backend `name` (chosen by the backend seam's
    `resolve_backend`): texts (Arrow) -> `NgramCounts`.

    CPU: pyarrow compute (`count_texts`); GPU: cuDF
    (`metaclip_gpu.metadata_builder.gpu_ngrams.count_texts_gpu`), same tokens, same result.
    """
    from metaclip_gpu.engine.backends import resolve_backend

    if resolve_backend(name) == "cpu":
        return count_texts
    from metaclip_gpu.metadata_builder.gpu_ngrams import count_texts_gpu

    return count_texts_gpu


def count_shard(
    shard: Shard, options: ReadOptions | None = None, backend: str = "cpu"
) -> NgramCounts:
    """The counts of one shard, read in chunks by `read_shard`; merged `FAN_IN` at a time so
    memory stays bounded by a few chunks' distinct n-grams."""
    counter = ngram_counter(backend)
    parts: list[NgramCounts] = []
    for chunk in read_shard(shard, options):
        parts.append(counter(chunk.table.column("text")))
        if len(parts) == FAN_IN:
            parts = [merge_counts(parts)]
    return merge_counts(parts) if parts else empty_counts()


def empty_counts() -> NgramCounts:
    return NgramCounts(UNIGRAM_SCHEMA.empty_table(), BIGRAM_SCHEMA.empty_table(), 0)


def count_corpus(
    shards: Sequence[Shard],
    options: ReadOptions | None = None,
    *,
    backend: str = "cpu",
    client: Any = None,
    finish: Callable[[NgramCounts], Any] | None = None,
) -> Any:
    """`finish` (default: nothing) applied to the summed counts of all `shards`.

    One task per shard (`count_shard`), reduced `FAN_IN` at a time by a dask bag tree
    reduction; on `client`'s cluster when given, else in this process. `finish` runs where the
    reduction ends (a worker), so a caller can return only what it keeps (see
    `select_ngrams`) instead of shipping every distinct n-gram to the client.
    """
    import dask.bag as db

    from metaclip_gpu.pipeline.cluster import run_backend

    backend = run_backend(backend, client)  # once, here: the tasks receive "cpu" or "gpu"
    if not shards:
        return (finish or _identity)(empty_counts())
    bag = db.from_sequence(list(shards), npartitions=len(shards))
    total = bag.map(count_shard, options=options, backend=backend).reduction(
        merge_counts, merge_counts, split_every=FAN_IN
    )
    result = total.apply(finish or _identity)
    if client is not None:
        return client.compute(result).result()
    return result.compute(scheduler="sync")


def _identity(counts: NgramCounts) -> NgramCounts:
    return counts


# ---------------------------------------------------------------------- statistics
def bigram_pmi(counts: NgramCounts) -> pa.Table:
    """Every bigram with its count, its words' unigram counts and its PMI (nltk's formula)."""
    unigrams = counts.unigrams
    joined = counts.bigrams.join(unigrams.rename_columns(["w1", "n_w1"]), "w1").join(
        unigrams.rename_columns(["w2", "n_w2"]), "w2"
    )
    n_ii = joined.column("count").to_numpy().astype(np.float64)
    n_ix = joined.column("n_w1").to_numpy().astype(np.float64)
    n_xi = joined.column("n_w2").to_numpy().astype(np.float64)
    pmi = np.log2(n_ii * float(counts.tokens)) - np.log2(n_ix * n_xi)
    return joined.append_column("pmi", pa.array(pmi, type=pa.float64()))


@dataclass
class SelectedNgrams:
    """The n-grams that pass the thresholds, best first, and the corpus figures."""

    unigrams: pa.Table  # token, count; count descending, then token
    bigrams: pa.Table  # w1, w2, count, n_w1, n_w2, pmi; PMI descending, then w1, w2
    texts: int
    tokens: int
    distinct_unigrams: int
    distinct_bigrams: int


def select_ngrams(counts: NgramCounts, min_unigram_count: int, min_pmi: float) -> SelectedNgrams:
    """Unigrams seen at least `min_unigram_count` times and bigrams with PMI >= `min_pmi`."""
    unigrams = counts.unigrams.filter(pc.greater_equal(counts.unigrams["count"], min_unigram_count))
    unigrams = unigrams.sort_by([("count", "descending"), ("token", "ascending")])
    bigrams = bigram_pmi(counts)
    bigrams = bigrams.filter(pc.greater_equal(bigrams["pmi"], min_pmi)).sort_by(
        [("pmi", "descending"), ("w1", "ascending"), ("w2", "ascending")]
    )
    return SelectedNgrams(
        unigrams=unigrams,
        bigrams=bigrams.select(["w1", "w2", "count", "n_w1", "n_w2", "pmi"]),
        texts=counts.texts,
        tokens=counts.tokens,
        distinct_unigrams=counts.unigrams.num_rows,
        distinct_bigrams=counts.bigrams.num_rows,
    )
