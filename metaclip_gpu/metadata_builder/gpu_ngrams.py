"""The GPU step of n-gram counting: one chunk of texts -> partial counts, in cuDF.

Imported only by ``ngram_counter("gpu")``. Same tokens and words as `ngrams`
(spacing, split on ``' '``, words = not empty and not punctuation-only, bigrams = adjacent
words of one text); the partial counts come back as Arrow tables so that the reduction and
the statistics are the CPU code. Binary (invalid UTF-8) texts are decoded with U+FFFD first,
as on the CPU. Written from the cuDF API; no GPU was available where it was written, so the
``gpu`` tests that hold it to the CPU counts have not run yet.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from metaclip_gpu.engine.reference import CHARS_TO_SPACE, PUNCTS_TO_WRAP
from metaclip_gpu.metadata_builder.ngrams import (
    BIGRAM_SCHEMA,
    PUNCTUATION,
    UNIGRAM_SCHEMA,
    NgramCounts,
    decode_texts,
)


def device_input(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """What goes to ``cudf.Series.from_arrow``: strings, as the CPU counter reads them.

    A binary column (texts that are not valid UTF-8) is decoded with U+FFFD first, exactly
    as `metaclip_gpu.metadata_builder.ngrams.count_texts` does: given raw binary, cuDF would make an
    object-dtype column of bytes, not strings."""
    return decode_texts(texts)


def count_texts_gpu(texts: pa.Array | pa.ChunkedArray | Any) -> NgramCounts:
    """`ngrams.count_texts` on the GPU (texts: Arrow strings or a cuDF Series)."""
    import cudf
    import cupy as cp

    if isinstance(texts, cudf.Series):
        spaced = texts
    else:
        spaced = cudf.Series.from_arrow(device_input(texts))
    n_texts = len(spaced)
    for punct in PUNCTS_TO_WRAP:
        spaced = spaced.str.replace(punct, f" {punct} ", regex=False)
    for char in CHARS_TO_SPACE:
        spaced = spaced.str.replace(char, " ", regex=False)
    exploded = spaced.str.split(" ").explode()  # one row per token, index = text position
    exploded = exploded[exploded.notna()]
    parents = cp.asarray(exploded.index.values)
    tokens = exploded.reset_index(drop=True)
    words = (tokens.str.strip(PUNCTUATION) != "").values
    unigrams = tokens[words].value_counts()
    pair = words[:-1] & words[1:] & (parents[:-1] == parents[1:])
    first = cp.flatnonzero(pair)
    pairs = cudf.DataFrame(
        {
            "w1": tokens.iloc[first].reset_index(drop=True),
            "w2": tokens.iloc[first + 1].reset_index(drop=True),
        }
    )
    bigrams = pairs.groupby(["w1", "w2"]).size().reset_index()
    return NgramCounts(
        unigrams=pa.table(
            [unigrams.index.to_arrow(), unigrams.to_arrow()], names=["token", "count"]
        ).cast(UNIGRAM_SCHEMA),
        bigrams=bigrams.to_arrow(preserve_index=False)
        .rename_columns(["w1", "w2", "count"])
        .cast(BIGRAM_SCHEMA),
        texts=n_texts,
    )
