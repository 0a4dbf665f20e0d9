"""Property tests on adversarial alphabets: matcher == FastOracle == reference_match, text by text.

Texts and entries are drawn from spaces, tabs, line breaks, every wrapped punctuation, multi-byte
characters and a few letters; entries are salted with duplicates, the empty entry,
punctuation-only entries, leading/trailing-space entries and multi-word slices of the texts
(so that long matches actually occur).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle, reference_match, spacing

ALPHABET = ["a", "b", "c", " ", "\t", "\n", "\r", ",", ".", ";", ":", "?", "!", "`", "é", "中", "-"]
PUNCTS = [",", ".", ";", ":", "?", "!", "`"]

texts_strategy = st.text(alphabet=st.sampled_from(ALPHABET), max_size=30)
entry_strategy = st.text(alphabet=st.sampled_from(ALPHABET), max_size=8)


@st.composite
def metadata_and_texts(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    texts = draw(st.lists(texts_strategy, min_size=1, max_size=8))
    entries = draw(st.lists(entry_strategy, min_size=1, max_size=25))
    extras: list[str] = []
    # Slices of the texts' spaced token sequences: multi-word entries that can match.
    for text in texts:
        tokens = spacing(text).split(" ")[1:-1]
        if tokens and draw(st.booleans()):
            start = draw(st.integers(0, len(tokens) - 1))
            stop = draw(st.integers(start + 1, min(len(tokens), start + 4)))
            extras.append(" ".join(tokens[start:stop]))
    # Raw substrings of the texts (which may hold punctuation, tabs, inner spaces).
    for text in texts:
        if len(text) >= 1 and draw(st.booleans()):
            start = draw(st.integers(0, len(text) - 1))
            stop = draw(st.integers(start + 1, min(len(text), start + 8)))
            extras.append(text[start:stop])
    if draw(st.booleans()):
        extras.append("")
    extras.extend(draw(st.lists(st.sampled_from(PUNCTS), max_size=3)))
    word = draw(st.sampled_from(["a", "b", "é", "中", "a b", "-"]))
    extras.extend(draw(st.sets(st.sampled_from([f" {word}", f"{word} ", f" {word} ", word]))))
    entries = entries + extras
    # Duplicates: repeat some entries (each copy keeps its own id).
    if entries and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            entries.append(draw(st.sampled_from(entries)))
    order = draw(st.permutations(range(len(entries))))
    return [entries[i] for i in order], texts


def assert_agree(entries: list[str], texts: list[Any], texts_for_matcher: Any) -> None:
    oracle = FastOracle(entries)
    expected = [reference_match(text, entries) for text in texts]
    assert oracle.match_many(texts) == expected, ("FastOracle", texts, entries)
    index = MetadataIndex.from_entries(entries, cache=False)
    got = match(texts_for_matcher, index, backend="cpu").to_lists()
    for position, (text, want, have) in enumerate(zip(texts, expected, got, strict=True)):
        assert have == want, (
            f"matcher disagrees on text {position}: text={text!r} entries={entries!r} "
            f"expected={want} got={have}"
        )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=metadata_and_texts(), arrow=st.sampled_from([None, "string", "large_string"]))
def test_matcher_equals_oracles(data: tuple[list[str], list[str]], arrow: str | None) -> None:
    entries, texts = data
    texts_with_null: list[str | None] = [*texts, None]
    if arrow is None:
        for_matcher: Any = texts_with_null
    else:
        for_matcher = pa.array(texts_with_null, type=getattr(pa, arrow)())
    assert_agree(entries, texts_with_null, for_matcher)


BYTE_ALPHABET = [b"a", b" ", b",", b".", b"\t", b"\n", b"\xe9", b"\xff", b"\xc3", b"\xa9", b"\x80"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.lists(st.sampled_from(BYTE_ALPHABET), max_size=20).map(b"".join),
        min_size=1,
        max_size=6,
    ),
    entries=st.lists(
        st.text(alphabet=st.sampled_from(["a", " ", ",", "é", "\t", "."]), max_size=6),
        min_size=1,
        max_size=15,
    ),
    large=st.booleans(),
)
def test_matcher_equals_oracles_on_raw_bytes(
    texts: list[bytes], entries: list[str], large: bool
) -> None:
    """Binary texts, often invalid UTF-8, matched byte for byte (``é`` is b"\\xc3\\xa9")."""
    arrow_type = pa.large_binary() if large else pa.binary()
    assert_agree(entries, list(texts), pa.array(texts, type=arrow_type))
