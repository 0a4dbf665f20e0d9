"""Synthetic metadata and alt-texts for the demo, made locally from the `wordfreq` package.

Nothing is downloaded: `wordfreq` ships its word lists and frequencies. The metadata is a
stand-in for MetaCLIP's ``metadata.json`` (WordNet synsets, Wikipedia unigrams, bigrams and
titles), and the texts are captions whose words follow real English word frequencies, so the
matcher sees a realistic mix of very frequent entries ("a", "the", "of") and a long tail.
Both are deterministic for a given seed (NumPy's seeded ``Generator``), on every platform.

Install the optional dependency with ``pip install 'metaclip-gpu[demo]'``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["make_metadata", "make_texts", "write_pool"]

LANG = "en"
TEXT_VOCABULARY = 30_000  # texts draw their words from this many of the most frequent words
BIGRAM_VOCABULARY = 2_000  # bigram entries pair words from this many of the most frequent
MIN_WORDS, MAX_WORDS = 3, 20

_INSTALL_HINT = (
    "the synthetic demo data needs the 'wordfreq' package: pip install 'metaclip-gpu[demo]'"
)


def _wordfreq():
    try:
        import wordfreq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from err
    return wordfreq


@lru_cache(maxsize=4)
def _top_words(n: int) -> tuple[str, ...]:
    """The `n` most frequent English words of wordfreq, most frequent first."""
    return tuple(_wordfreq().top_n_list(LANG, n))


@lru_cache(maxsize=2)
def _vocabulary(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(words as an object array, sampling probabilities) over the `n` most frequent words.

    The probabilities are wordfreq's frequencies (``get_frequency_dict``, the table behind
    ``wordfreq.word_frequency``) renormalised over these words.
    """
    words = _top_words(n)
    freq = _wordfreq().get_frequency_dict(LANG)
    weights = np.array([freq.get(word, 0.0) for word in words], dtype=np.float64)
    if not weights.sum() > 0:  # pragma: no cover - a broken wordfreq install
        weights = np.ones(len(words))
    return np.array(words, dtype=object), weights / weights.sum()


def make_metadata(n_words: int = 200_000, n_bigrams: int = 50_000, seed: int = 0) -> list[str]:
    """A MetaCLIP-style metadata list: a stand-in for MetaCLIP's ``metadata.json``.

    The `n_words` most frequent English words of ``wordfreq.top_n_list("en", n_words)``
    (fewer when wordfreq knows fewer), then `n_bigrams` distinct random pairs ``"w1 w2"`` of the
    most frequent words, drawn with a seeded NumPy Generator. Entries are distinct; an entry's
    id is its position in the list, as for the real metadata.
    """
    if n_words < 0 or n_bigrams < 0:
        raise ValueError("n_words and n_bigrams must be >= 0")
    entries = list(_top_words(n_words)) if n_words else []
    if not n_bigrams:
        return entries
    pool = _top_words(BIGRAM_VOCABULARY)
    seen = set(entries)
    bigrams: list[str] = []
    rng = np.random.default_rng(seed)
    capacity = len(pool) * (len(pool) - 1)
    if n_bigrams > capacity:
        raise ValueError(f"at most {capacity:,} distinct bigrams can be made, not {n_bigrams:,}")
    while len(bigrams) < n_bigrams:
        need = n_bigrams - len(bigrams)
        pairs = rng.integers(0, len(pool), size=(need + need // 4 + 16, 2))
        for first, second in pairs.tolist():
            if first == second:
                continue
            bigram = f"{pool[first]} {pool[second]}"
            if bigram in seen:
                continue
            seen.add(bigram)
            bigrams.append(bigram)
            if len(bigrams) == n_bigrams:
                break
    return entries + bigrams


def make_texts(n: int, seed: int = 0) -> list[str]:
    """`n` alt-text-like captions whose words follow real English frequencies.

    Each caption has 3..20 words drawn with probability proportional to their wordfreq
    frequency among the ~30k most frequent English words. Some captions get a capitalised
    first word, a comma after a word, a number, or a trailing ``" ."``, so the punctuation and
    case rules of the matcher are exercised. Deterministic for a given `seed`.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if n == 0:
        return []
    words, probs = _vocabulary(TEXT_VOCABULARY)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, size=n)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    total = int(starts[-1])
    tokens = words[rng.choice(len(words), size=total, p=probs)]

    # A few numbers ("3", "2019", "150"), in place of a word.
    numbers = rng.random(total) < 0.01
    tokens[numbers] = rng.integers(1, 2030, size=int(numbers.sum())).astype(str).astype(object)
    # A comma after some words (never after a text's last word).
    last = np.zeros(total, dtype=bool)
    last[starts[1:] - 1] = True
    commas = (rng.random(total) < 0.03) & ~last
    tokens[commas] = tokens[commas] + ","
    # A capitalised first word for some texts.
    first = starts[:-1]
    capital = first[rng.random(n) < 0.15]
    tokens[capital] = np.array([word.capitalize() for word in tokens[capital]], dtype=object)
    # A trailing " ." for some texts.
    dotted = rng.random(n) < 0.2

    token_list = tokens.tolist()
    bounds = starts.tolist()
    texts = [" ".join(token_list[bounds[i] : bounds[i + 1]]) for i in range(n)]
    for i in np.flatnonzero(dotted).tolist():
        texts[i] += " ."
    return texts


def write_pool(
    directory: str | Path, n_texts: int, n_shards: int, seed: int = 0
) -> tuple[Path, Path]:
    """Writes a synthetic curation input: ``metadata.json`` and `n_shards` Parquet shards.

    The shards (``shards/part-NNNNN.parquet``) hold img2dataset-style columns: ``url`` (a
    unique, made-up ``https://example.invalid/...`` address, the stable key) and ``caption``
    (`make_texts`). Returns ``(metadata path, shards directory)``.
    """
    if n_shards < 1:
        raise ValueError("n_shards must be >= 1")
    directory = Path(directory)
    shards_dir = directory / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    metadata_path = directory / "metadata.json"
    metadata_path.write_text(json.dumps(make_metadata(seed=seed)), encoding="utf-8")
    texts = make_texts(n_texts, seed=seed)
    bounds = np.linspace(0, n_texts, n_shards + 1).astype(np.int64).tolist()
    for shard in range(n_shards):
        lo, hi = bounds[shard], bounds[shard + 1]
        urls = [f"https://example.invalid/synthetic/{seed}/{i}.jpg" for i in range(lo, hi)]
        table = pa.table({"url": urls, "caption": texts[lo:hi]})
        pq.write_table(table, shards_dir / f"part-{shard:05d}.parquet")
    return metadata_path, shards_dir
