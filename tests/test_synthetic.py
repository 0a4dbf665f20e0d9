"""The synthetic demo data (metaclip_gpu.synthetic): deterministic, realistic, wordfreq-only."""

from __future__ import annotations

import sys

import pytest

from metaclip_gpu import synthetic
from metaclip_gpu.synthetic import make_metadata, make_texts

pytest.importorskip("wordfreq")


def test_texts_are_deterministic_for_a_seed() -> None:
    assert make_texts(500, seed=7) == make_texts(500, seed=7)


def test_different_seeds_give_different_texts() -> None:
    first, second = make_texts(200, seed=0), make_texts(200, seed=1)
    assert first != second
    assert sum(a != b for a, b in zip(first, second, strict=True)) > 150


def test_texts_are_non_empty_strings_of_3_to_20_words() -> None:
    texts = make_texts(2_000, seed=3)
    assert len(texts) == 2_000
    for text in texts:
        assert isinstance(text, str)
        assert text.strip()
        words = text.removesuffix(" .").split(" ")
        assert 3 <= len(words) <= 20, text
        assert all(words), text  # single spaces only


def test_texts_follow_english_frequencies() -> None:
    words = " ".join(make_texts(5_000, seed=0)).lower().split()
    share_the = words.count("the") / len(words)
    assert 0.02 < share_the < 0.1  # "the" is ~5% of English words
    assert any(text[0].isupper() for text in make_texts(200, seed=0))
    assert any(text.endswith(" .") for text in make_texts(200, seed=0))


def test_zero_texts() -> None:
    assert make_texts(0) == []


def test_metadata_is_deterministic_distinct_and_sized() -> None:
    entries = make_metadata(n_words=1_000, n_bigrams=300, seed=5)
    assert entries == make_metadata(n_words=1_000, n_bigrams=300, seed=5)
    assert entries != make_metadata(n_words=1_000, n_bigrams=300, seed=6)
    assert len(entries) == 1_300
    assert len(set(entries)) == len(entries)
    assert entries[0] == "the"
    assert all(isinstance(e, str) and e for e in entries)
    assert all(len(e.split(" ")) == 2 for e in entries[1_000:])


def test_missing_wordfreq_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    synthetic._top_words.cache_clear()
    synthetic._vocabulary.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'metaclip-gpu\[demo\]'"):
            make_texts(5)
        with pytest.raises(ImportError, match=r"metaclip-gpu\[demo\]"):
            make_metadata(n_words=10, n_bigrams=0)
    finally:
        synthetic._top_words.cache_clear()
        synthetic._vocabulary.cache_clear()
