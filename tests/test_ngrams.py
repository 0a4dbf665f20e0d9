"""N-gram counts and PMI (metadata_builder.ngrams) against a Counter oracle, nltk, and dask.

The oracle is written from the rule in the module doc: tokens of ``spacing(text)`` split on
``' '``; words are the tokens that are not empty and not punctuation-only; bigrams are two
adjacent words of one text; PMI = log2(n_ii * n_xx) - log2(n_ix * n_xi).
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
from tsv_shards import split_lines

from metaclip_gpu.engine.reference import spacing
from metaclip_gpu.metadata_builder.ngrams import (
    PUNCTUATION,
    NgramCounts,
    bigram_pmi,
    count_corpus,
    count_texts,
    merge_counts,
    select_ngrams,
)
from metaclip_gpu.pipeline.read import ReadOptions, find_shards


def _is_word(token: str) -> bool:
    return token != "" and not all(char in PUNCTUATION for char in token)


def oracle_counts(texts: list[str | None]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    unigrams: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    for text in texts:
        if text is None:
            continue
        tokens = spacing(text).split(" ")
        unigrams.update(t for t in tokens if _is_word(t))
        bigrams.update((a, b) for a, b in pairwise(tokens) if _is_word(a) and _is_word(b))
    return unigrams, bigrams


def oracle_pmi(
    unigrams: Counter[str], bigrams: Counter[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    n_xx = sum(unigrams.values())
    return {
        (a, b): math.log2(n * n_xx) - math.log2(unigrams[a] * unigrams[b])
        for (a, b), n in bigrams.items()
    }


def pmi_dict(counts: NgramCounts) -> dict[tuple[str, str], float]:
    table = bigram_pmi(counts).to_pydict()
    return dict(zip(zip(table["w1"], table["w2"], strict=True), table["pmi"], strict=True))


@pytest.fixture(scope="module")
def cc3m_counts(cc3m_texts: list[str]) -> NgramCounts:
    return count_texts(pa.array(cc3m_texts))


def test_tokenization_rules() -> None:
    texts = ["a  b", "New York, USA", "x\ty", "end", "start", None, "(c) ... d", "e.g. f"]
    counts = count_texts(pa.array(texts))
    assert counts.texts == len(texts)
    assert counts.unigram_dict() == {
        "a": 1, "b": 1, "New": 1, "York": 1, "USA": 1, "x": 1, "y": 1, "end": 1,
        "start": 1, "(c)": 1, "d": 1, "e": 1, "g": 1, "f": 1,
    }  # fmt: skip
    # no bigram across a double space, punctuation, or two texts ("end start")
    assert counts.bigram_dict() == {("New", "York"): 1, ("x", "y"): 1}
    assert counts.tokens == 14


def test_cc3m_counts_and_pmi_equal_counter_oracle(
    cc3m_texts: list[str], cc3m_counts: NgramCounts
) -> None:
    unigrams, bigrams = oracle_counts(cc3m_texts)
    assert cc3m_counts.unigram_dict() == dict(unigrams)
    assert cc3m_counts.bigram_dict() == dict(bigrams)
    assert cc3m_counts.tokens == sum(unigrams.values())
    assert pmi_dict(cc3m_counts) == oracle_pmi(unigrams, bigrams)  # bit for bit


def test_pmi_equals_nltk_bigram_assoc_measures(
    cc3m_texts: list[str], cc3m_counts: NgramCounts
) -> None:
    collocations = pytest.importorskip("nltk.collocations")
    words: list[str | None] = []
    for text in cc3m_texts[:4000]:  # None between texts and at non-words: no bigram spans them
        words += [token if _is_word(token) else None for token in spacing(text).split(" ")]
    finder = collocations.BigramCollocationFinder.from_words(words)
    expected = dict(finder.score_ngrams(collocations.BigramAssocMeasures.pmi))
    assert pmi_dict(count_texts(pa.array(cc3m_texts[:4000]))) == expected


def test_merge_of_chunks_equals_one_pass(cc3m_texts: list[str], cc3m_counts: NgramCounts) -> None:
    parts = [count_texts(pa.array(cc3m_texts[i : i + 3000])) for i in range(0, 15833, 3000)]
    merged = merge_counts(parts)
    assert merged.texts == len(cc3m_texts)
    assert merged.unigram_dict() == cc3m_counts.unigram_dict()
    assert merged.bigram_dict() == cc3m_counts.bigram_dict()


def test_select_thresholds_and_order(cc3m_counts: NgramCounts) -> None:
    selected = select_ngrams(cc3m_counts, min_unigram_count=100, min_pmi=14.0)
    counts = selected.unigrams.column("count").to_pylist()
    assert counts and min(counts) >= 100 and counts == sorted(counts, reverse=True)
    expected = {w for w, n in cc3m_counts.unigram_dict().items() if n >= 100}
    assert set(selected.unigrams.column("token").to_pylist()) == expected
    pmis = selected.bigrams.column("pmi").to_pylist()
    assert pmis and min(pmis) >= 14.0 and pmis == sorted(pmis, reverse=True)
    assert selected.bigrams.num_rows == sum(p >= 14.0 for p in pmi_dict(cc3m_counts).values())
    assert selected.tokens == cc3m_counts.tokens and selected.texts == 15833


def _selected_as_python(selected) -> tuple[list, list]:
    return selected.unigrams.to_pylist(), selected.bigrams.to_pylist()


@pytest.fixture(scope="module")
def cc3m_shards(tmp_path_factory, cc3m_path: Path):
    root = tmp_path_factory.mktemp("ngram_shards")
    split_lines(cc3m_path, root, 5)
    return find_shards(root)


def test_in_process_corpus_counts_equal_one_pass(cc3m_shards, cc3m_counts) -> None:
    total = count_corpus(cc3m_shards, ReadOptions(batch_rows=1000))
    assert total.texts == 15833
    assert total.unigram_dict() == cc3m_counts.unigram_dict()
    assert total.bigram_dict() == cc3m_counts.bigram_dict()


def test_two_worker_cluster_equals_in_process(cc3m_shards) -> None:
    distributed = pytest.importorskip("distributed")
    from functools import partial

    finish = partial(select_ngrams, min_unigram_count=20, min_pmi=10.0)
    local = count_corpus(cc3m_shards, ReadOptions(batch_rows=2000), finish=finish)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        remote = count_corpus(
            cc3m_shards, ReadOptions(batch_rows=2000), client=client, finish=finish
        )
    assert remote.bigrams.num_rows > 0
    assert _selected_as_python(remote) == _selected_as_python(local)
    assert (remote.texts, remote.tokens) == (local.texts, local.tokens)


@pytest.mark.gpu
def test_gpu_chunk_counts_equal_cpu(cc3m_texts: list[str], cc3m_counts: NgramCounts) -> None:
    from metaclip_gpu.metadata_builder.gpu_ngrams import count_texts_gpu

    gpu = count_texts_gpu(pa.array(cc3m_texts))
    assert gpu.unigram_dict() == cc3m_counts.unigram_dict()
    assert gpu.bigram_dict() == cc3m_counts.bigram_dict()
    assert gpu.texts == cc3m_counts.texts
