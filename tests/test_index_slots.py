"""The probe table's two-word slots (kernels/tokens.cuh, MC_SLOT_WORDS): a slot whose only
entry has 1..8 bytes and no zero byte holds that entry's id and bytes itself (MC_SLOT_INLINE),
so verifying it reads no record elsewhere; every other entry keeps its verification record in
the blob. Matching stays exactly the oracle's on both sides of the 8-byte edge, for zero bytes,
multi-byte characters, n-grams (separators, empty tokens) and tokens at the end of the text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle

SLOT_WORDS = 2  # MC_SLOT_WORDS
FILTER_SLOTS_PER_WORD = 32  # MC_FILTER_SLOTS_PER_WORD
ENTRY, INLINE = 2, 4  # MC_SLOT_ENTRY, MC_SLOT_INLINE

ENTRIES = [
    "dog",  # inline
    "hot",  # inline, and a prefix of "hot dog"
    "hot dog",  # two tokens in 7 bytes: inline
    "hot dogs",  # 8 bytes: inline
    "a ,",  # a word and a punctuation token: inline ("a," in a text)
    "a  b",  # three tokens, the middle one empty: inline
    "abcdef g",  # 8 bytes, inline
    "abcdef gh",  # 9 bytes: a record
    "abcdefgh",  # 8 bytes: inline
    "abcdefghi",  # 9 bytes: a record
    "café",  # 5 bytes (é is two): inline
    "日本語",  # 9 bytes: a record
    "cat",
    "cat",  # a duplicate: two ids on one slot, a record
    ",",  # a punctuation token: inline
    "a\x00b",  # a zero byte: a record
    "",  # the empty token: a record
]


def _inline_entries(index: MetadataIndex) -> dict[int, bytes]:
    """{id: bytes} of the slots that hold their entry inline."""
    table = index.slots[: SLOT_WORDS * index.stats.table_slots].reshape(-1, SLOT_WORDS)
    key, inline = table[:, 0], table[:, 1]
    held = (key & np.uint64(INLINE)) != 0
    assert np.all(key[held] & np.uint64(ENTRY))  # an inline slot is an entry slot
    ids = (key[held] >> np.uint64(3)) & np.uint64((1 << 29) - 1)
    words = inline[held].astype("<u8").tobytes()
    return {int(i): words[8 * k : 8 * k + 8].rstrip(b"\x00") for k, i in enumerate(ids.tolist())}


def test_slots_are_two_words_then_the_filter() -> None:
    index = MetadataIndex.from_entries(ENTRIES)
    slots = index.stats.table_slots
    assert slots & (slots - 1) == 0
    assert len(index.slots) == SLOT_WORDS * slots + slots // FILTER_SLOTS_PER_WORD
    assert len(index.byte_slots) == SLOT_WORDS * index.stats.byte_table_slots
    worldwide = MetadataIndex.from_entries(["日本", " x", "y "], padding="worldwide")
    assert worldwide.stats.byte_table_slots >= 16
    assert len(worldwide.byte_slots) == SLOT_WORDS * worldwide.stats.byte_table_slots
    assert not np.any(worldwide.byte_slots[::SLOT_WORDS] & np.uint64(INLINE))  # never inline


def test_short_one_token_entries_are_held_in_their_slots() -> None:
    index = MetadataIndex.from_entries(ENTRIES)
    assert _inline_entries(index) == {
        0: b"dog",
        1: b"hot",
        2: b"hot dog",
        3: b"hot dogs",
        4: b"a ,",
        5: b"a  b",
        6: b"abcdef g",
        8: b"abcdefgh",
        10: "café".encode(),
        14: b",",
    }
    # The others keep a blob record: "abcdef gh", "abcdefghi", "日本語", both "cat" (one
    # slot), "a\0b" and "", each slot with an empty second word.
    table = index.slots[: SLOT_WORDS * index.stats.table_slots].reshape(-1, SLOT_WORDS)
    recorded = (table[:, 0] & np.uint64(ENTRY | INLINE)) == np.uint64(ENTRY)
    assert int(np.count_nonzero(recorded)) == 6
    assert np.all(table[recorded, 1] == 0)


def test_inline_and_recorded_entries_match_as_the_oracle() -> None:
    texts = [
        "a hot dog, abcdefgh abcdefghi",
        "hot dogs hot  dog hot\tdog hot dog",  # two spaces: no "hot dog"; a tab is a space
        "a, a ,a a  b a b a   b",  # "a ," from "a," and from "a ,"; "a  b" needs two spaces
        "abcdef g abcdef gh abcdef ghi",
        "abcdefgh",  # the token ends the text: fewer than 8 bytes readable past it
        "abcdefg abcdefghij dogs do",  # near misses on both sides of 8 bytes
        "café 日本語 cafés caf",
        "cat a\x00b ab\x00 dog\x00",  # zero bytes next to an inline entry's bytes
        "x  y ,",  # the empty token between two spaces; a punctuation token at the end
        "",
    ]
    index = MetadataIndex.from_entries(ENTRIES)
    want = FastOracle(ENTRIES).match_many(texts)
    assert want[0] == [0, 1, 2, 8, 9, 14, 16]  # "dog," spaces to "dog ,  ": an empty token
    assert want[1:4] == [[0, 1, 2, 3, 16], [4, 5, 14, 16], [6, 7]]
    assert want[4] == [8]
    for column in (texts, pa.array(texts, type=pa.string()), pa.array(texts)[4:5]):
        expected = want if len(column) == len(texts) else want[4:5]
        assert match(column, index, backend="cpu").to_lists() == expected


ALPHABET = ["a", "b", " ", ",", "é", "中", "\x00", "\t"]


@st.composite
def entries_and_texts(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    texts = draw(st.lists(st.text(st.sampled_from(ALPHABET), max_size=24), min_size=1, max_size=6))
    entries = draw(st.lists(st.text(st.sampled_from(ALPHABET), max_size=10), max_size=12))
    for text in texts:  # tokens of the texts, so that short entries do match
        tokens = [t for t in text.replace(",", " , ").split(" ") if t]
        entries.extend(draw(st.lists(st.sampled_from(tokens), max_size=3)) if tokens else [])
    return entries or ["a"], texts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=entries_and_texts())
def test_matcher_equals_the_oracle_around_the_inline_edge(
    data: tuple[list[str], list[str]],
) -> None:
    entries, texts = data
    index = MetadataIndex.from_entries(entries)
    assert match(texts, index, backend="cpu").to_lists() == FastOracle(entries).match_many(texts)
