"""The oracles agree with each other: `FastOracle` == the literal `reference_match` loop."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_gpu.engine.reference import FastOracle, reference_match, spacing

HAND_ENTRIES = [
    "a",
    "b",
    "a b",
    "",
    " ",
    ",",
    ".",
    "a ,",
    "a,",
    "St. Louis",
    "b c",
    "a\tb",
    " a",
    "a ",
    "a",
    "café",
    "中",
    "a  b",
]
HAND_TEXTS = [
    "",
    "a",
    "a b",
    "a  b",
    "a,b",
    "a, b",
    "a\tb",
    "St. Louis",
    " a ",
    "café, 中 b c",
    "...",
    "b\r\nc",
    b"caf\xe9 a",
    b"caf\xc3\xa9",
    None,
]


def test_spacing_matches_metaclip_definition() -> None:
    assert spacing("") == "  "
    assert spacing("a,b") == " a , b "
    assert spacing("a.,b") == " a .  , b "
    assert spacing("a\tb\nc\rd") == " a b c d "
    assert spacing("x;y:z?w!v`u") == " x ; y : z ? w ! v ` u "
    assert spacing("a, b") == " a ,  b "
    assert spacing(b"caf\xe9,\tx") == b" caf\xe9 ,  x "
    assert spacing(b"") == b"  "


def test_spacing_bytes_agrees_with_str() -> None:
    for text in ["", "a,b", "café. 中国;\tx\r\n", "`!?:;.,", "plain words"]:
        assert spacing(text.encode()) == spacing(text).encode()


def test_reference_match_hand_cases() -> None:
    assert reference_match("a b", ["a", "b", "a b", "b a", "", "a b"]) == [0, 1, 2, 5]
    assert reference_match("a  b", ["a b", ""]) == [1]
    assert reference_match(None, [""]) == []
    assert reference_match("", [""]) == [0]
    assert reference_match(b"caf\xe9 dog", ["dog", "café"]) == [0]


def test_fast_oracle_equals_reference_on_hand_cases() -> None:
    oracle = FastOracle(HAND_ENTRIES)
    assert len(oracle) == len(HAND_ENTRIES)
    for text in HAND_TEXTS:
        assert oracle.match(text) == reference_match(text, HAND_ENTRIES), text
    assert oracle.match_many(HAND_TEXTS) == [reference_match(t, HAND_ENTRIES) for t in HAND_TEXTS]


def test_fast_oracle_empty_metadata() -> None:
    oracle = FastOracle([])
    assert oracle.match("a b") == []
    assert oracle.match_many(["", None]) == [[], []]


_ALPHABET = ["a", "b", " ", "  ", ",", ".", "\t", "\n", "é"]
_small_text = st.lists(st.sampled_from(_ALPHABET), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    entries=st.lists(_small_text.map(lambda s: s[:6]), min_size=1, max_size=12),
    texts=st.lists(_small_text, min_size=1, max_size=5),
    as_bytes=st.booleans(),
)
def test_fast_oracle_equals_reference_property(
    entries: list[str], texts: list[str], as_bytes: bool
) -> None:
    oracle = FastOracle(entries)
    for text in texts:
        query: str | bytes = text.encode() if as_bytes else text
        assert oracle.match(query) == reference_match(query, entries), (query, entries)


@pytest.mark.slow
def test_fast_oracle_equals_reference_on_cc3m(
    cc3m_texts: list[str], metadata_500k: list[str], oracle_500k: FastOracle
) -> None:
    """The loop over 500k entries is ~0.1 s a text: the first 300 texts take about 30 s."""
    start = time.perf_counter()
    total_matches = 0
    for position, text in enumerate(cc3m_texts[:300]):
        expected = reference_match(text, metadata_500k)
        assert oracle_500k.match(text) == expected, (position, text)
        total_matches += len(expected)
        if time.perf_counter() - start > 55 and position >= 150:
            break
    assert total_matches > 0
