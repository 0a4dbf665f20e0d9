"""Worldwide padding (SPEC section 5, MetaCLIP 2's get_spaced_metadata): matcher == oracles.

An entry side whose end character is CJK-or-similar or punctuation is not space-padded, and the
entry matches where its (partly) spaced form is a substring of ``spacing(text)``. The matcher's
byte-level scan is held to the literal loop (`reference_match(..., padding="worldwide")`) and to
`FastOracle(..., padding="worldwide")` on hand-written mixed-language cases, every code point,
random mixed-alphabet data, long texts and real data.
"""

from __future__ import annotations

import itertools
import json
import string
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.metadata import (
    CJK_PUNCTUATION,
    PAD_BOTH,
    PAD_LEFT,
    PAD_RIGHT,
    is_cjk_or_similar,
    padding_flags,
    spaced_entry,
    worldwide_padding,
)
from metaclip_gpu.engine.reference import (
    FastOracle,
    reference_match,
    spacing,
    worldwide_spaced_entries,
)

Text = str | bytes | None


def worldwide_lists(texts: Any, entries: list[str], **kwargs: Any) -> list[list[int]]:
    index = MetadataIndex.from_entries(entries, padding="worldwide")
    return match(texts, index, backend="cpu", **kwargs).to_lists()


def check(entries: list[str], texts: list[Text], expected: list[list[int]] | None = None) -> None:
    """The literal loop, the fast oracle and the matcher agree (and give `expected` if given)."""
    literal = [reference_match(text, entries, padding="worldwide") for text in texts]
    if expected is not None:
        assert literal == expected
    assert FastOracle(entries, padding="worldwide").match_many(texts) == literal
    got = worldwide_lists(texts, entries)
    for text, want, have in zip(texts, literal, got, strict=True):
        assert have == want, f"text={text!r} entries={entries!r} expected={want} got={have}"


# ------------------------------------------------------------------ padding ---
def test_is_cjk_or_similar_pins_the_reference_ranges() -> None:
    no_space = ["中", "国", "㐀", "𠀀", "豈", "⺀", "⼀", "⿰", "ก", "ไ", "ລ", "က", "ក", "ཀ"]
    no_space += list(string.punctuation) + list(CJK_PUNCTUATION)
    spaced = ["a", "Z", "0", " ", "\t", "é", "ß", "я", "ع", "あ", "ア", "ー", "한", "·", "…", "«"]
    assert all(is_cjk_or_similar(c) for c in no_space)
    assert not any(is_cjk_or_similar(c) for c in spaced)
    # The range ends, both sides of each.
    for low, high in [(0x4E00, 0x9FFF), (0x0E00, 0x0E7F), (0x2CEB0, 0x2EBEF), (0x0F00, 0x0FFF)]:
        assert is_cjk_or_similar(chr(low)) and is_cjk_or_similar(chr(high))
    assert not is_cjk_or_similar(chr(0x4DFF)) and not is_cjk_or_similar(chr(0xA000))
    assert not is_cjk_or_similar(chr(0x2EBF0)) and not is_cjk_or_similar(chr(0x10A0))


def test_worldwide_padding_per_side() -> None:
    cases = {
        "dog": PAD_BOTH,
        "中国": 0,
        "Hello世界": PAD_LEFT,
        "世界hello": PAD_RIGHT,
        "e.g.": PAD_LEFT,
        "(film)": 0,
        "，": 0,
        " 中": PAD_LEFT,  # a space is not CJK-or-similar
        "中 ": PAD_RIGHT,
        "ありがとう": PAD_BOTH,  # kana are not in the reference's ranges
        "москва": PAD_BOTH,
        "": PAD_BOTH,  # the reference cannot pad it; padded as in "spaced" mode
    }
    for entry, flags in cases.items():
        assert worldwide_padding(entry) == flags, entry
    entries = list(cases)
    assert worldwide_spaced_entries(entries) == [
        spaced_entry(entry, flags) for entry, flags in cases.items()
    ]
    assert worldwide_spaced_entries(["Hello世界", "e.g.", ""]) == [" Hello世界", " e.g.", "  "]
    assert padding_flags(entries, "spaced").tolist() == [PAD_BOTH] * len(entries)
    with pytest.raises(ValueError, match="padding"):
        padding_flags(entries, "world")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding"):
        MetadataIndex.from_entries(entries, padding="world")  # type: ignore[arg-type]


def _all_chars() -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


@pytest.mark.slow
def test_every_code_point_as_an_entry() -> None:
    """Each character is an entry; texts hold 48 characters each, once separated by spaces,
    once run together. Exercises the byte scan's character ends on every UTF-8 length and the
    padding decision for every code point (the oracle reads only the candidates present)."""
    chars = _all_chars()
    spaced = worldwide_spaced_entries(chars)
    assert padding_flags(chars, "worldwide").tolist() == [
        (PAD_LEFT if s[0] == " " else 0) | (PAD_RIGHT if s[-1] == " " else 0) for s in spaced
    ]
    index = MetadataIndex.from_entries(chars, padding="worldwide")
    ids = {c: i for i, c in enumerate(chars)}
    chunks = ["".join(chars[i : i + 48]) for i in range(0, len(chars), 48)]
    for texts in (chunks, [" ".join(chunk) for chunk in chunks]):
        got = match(texts, index, backend="cpu").to_lists()
        for text, have in zip(texts, got, strict=True):
            spaced_text = spacing(text)
            candidates = sorted(ids[c] for c in set(spaced_text))
            want = [i for i in candidates if spaced[i] in spaced_text]
            assert have == want, (text, have, want)


# -------------------------------------------------------- hand-written cases ---
ENTRIES = [
    "中国",  # 0  zh, no padding
    "中",  # 1  one CJK char
    "北京大学",  # 2
    "東京",  # 3  ja kanji
    "ありがとう",  # 4  ja kana: padded (not in the ranges)
    "ภาษาไทย",  # 5  th
    "ไทย",  # 6
    "القاهرة",  # 7  ar: padded
    "Москва",  # 8  ru: padded
    "Straße",  # 9  de: padded
    "dog",  # 10
    "hot dog",  # 11
    "Hello世界",  # 12 Latin start, CJK end: left-padded only
    "世界hello",  # 13 CJK start, Latin end: right-padded only
    "e.g.",  # 14 left-padded, ends with a wrapped punctuation: never matches
    ",",  # 15 one ASCII punctuation
    "，",  # 16 one CJK punctuation
    "「東京」",  # 17 CJK brackets
    "(film)",  # 18 ASCII brackets, not wrapped by spacing()
    "dr.",  # 19 left-padded
    "中国",  # 20 duplicate of 0
    "—",  # 21 em dash
    "中国 人民",  # 22 inner space, no padding
    " 中",  # 23 leading space, left-padded
    "Ltd.",  # 24
    "",  # 25 the empty entry: "spaced" semantics
    "ไทย",  # 26 duplicate of 6
]

TEXTS: list[Text] = [
    "我爱中国",
    "中国 人民 万岁",
    "北京大学，清华大学。",
    "東京「東京」タワー",
    "ありがとう ございます",
    "ありがとうございます",
    "ภาษาไทยง่าย",
    "ผมพูดภาษาไทย",
    "القاهرة مدينة",
    "Москва, Россия",
    "Die Straße ist lang.",
    "a hot dog, a Dr. and dr. Who",
    "Hello世界 and 世界hello",
    "xHello世界 and 世界hellox",
    "e.g. this",
    "(film) Star Wars (film)",
    "Acme Ltd., est. 1900",
    "中国—日本",
    "中国  人民",
    "  中 ",
    "",
    None,
    "dog",
    "中国\t人民",
    "a,b",
]


def test_mixed_language_texts_match_the_oracles() -> None:
    check(ENTRIES, TEXTS)


def test_mixed_language_pinned_answers() -> None:
    texts: list[Text] = [
        "我爱中国",
        "ありがとうございます",
        "ありがとう ございます",
        "xHello世界 世界hellox",
        "Hello世界 世界hello",
        "e.g. this",
        "(film) Star Wars",
        "中国—日本",
        "中国  人民",
        "ผมพูดภาษาไทย",
        "Acme Ltd., est. 1900",
        "",
    ]
    expected = [
        [0, 1, 20],
        [],  # kana entry is padded: no word boundary inside the text
        [4],
        [],  # "Hello世界" needs a space before, "世界hello" one after
        [12, 13],
        [25],  # " e . g .  this ": "e.g." never occurs; "" for the double space
        [18],
        [0, 1, 20, 21],  # not " 中": its spaced form "  中" needs two spaces
        [0, 1, 20, 25],  # not "中国 人民" (two spaces); "" for the double space
        [5, 6, 26],
        [15, 25],  # " Acme Ltd .  ,  est ...": "Ltd." never occurs, "," does
        [25],
    ]
    check(ENTRIES, texts, expected)


def test_punctuation_entries_and_texts() -> None:
    entries = [*",.，。、“”!?-'()", "？！", ", ,", "x,", "a-", "-b"]
    texts: list[Text] = [
        "a,b",
        "end.",
        "中文，句子。",
        "列举、一、二",
        "“引用”",
        "what?!",
        "well-known",
        "it's",
        "f(x)",
        "真的？！",
        "a,,b",
        "x,",
        "",
    ]
    check(entries, texts)


def test_duplicates_keep_their_ids() -> None:
    entries = ["中国", "dog", "中国", "中国", "Hello世界", "Hello世界", "，", "，"]
    check(entries, ["中国，Hello世界 dog", "Hello世界", "，"])


def test_invalid_utf8_texts_are_matched_as_bytes() -> None:
    entries = ["中", "中国", "，", "dog", "x中"]
    zhong = "中".encode()
    texts: list[Text] = [
        zhong + b"\x80",  # a stray continuation byte after a whole character
        zhong[:2],  # a cut character
        b"\xff" + zhong,
        zhong[:1] + zhong,  # a lead byte, then the character
        b"\xe4\xb8" + "国".encode(),  # a cut character before a whole one
        b"dog\xef\xbc" + "，".encode(),
        b"x" + zhong + b"\xc0",
        None,
    ]
    check(entries, texts)
    assert worldwide_lists(pa.array(texts, type=pa.binary()), entries) == [
        reference_match(text, entries, padding="worldwide") for text in texts
    ]


def test_null_texts_and_arrow_inputs() -> None:
    entries = ["中国", "dog", "", "，"]
    texts: list[Text] = [None, "中国，dog", None, "", "a  b"]
    check(entries, texts)
    expected = [reference_match(text, entries, padding="worldwide") for text in texts]
    for arrow_type in (pa.string(), pa.large_string()):
        array = pa.array(texts, type=arrow_type)
        assert worldwide_lists(array, entries) == expected
        chunked = pa.chunked_array([texts[:2], texts[2:]], type=arrow_type)
        assert worldwide_lists(chunked, entries) == expected


def test_unmatchable_byte_entries_are_counted() -> None:
    entries = ["e.g.", "中,", ",中", "中\t", "中国", "dog", "St. Louis"]
    index = MetadataIndex.from_entries(entries, padding="worldwide")
    stats = index.stats
    assert stats.padding == "worldwide"
    assert stats.n_unmatchable == 5  # the wrapped "," and "." need spaces; tabs never match
    assert stats.n_byte_entries == 1  # 中国
    texts = ["e.g. 中,中 中\t x", "中 , 中", "St. Louis"]
    check(entries, texts)


# ------------------------------------------------------- spaced unchanged ---
LATIN = ["dog", "hot dog", "new york", "new york city", "a", "the dog", "cat", "a  b", ""]
LATIN_TEXTS: list[Text] = [
    "a hot dog in new york city.",
    "the dog, the cat",
    "a  b",
    "",
    None,
    "new yorker",
]


def test_latin_metadata_gives_the_same_index_and_results_in_both_modes() -> None:
    spaced = MetadataIndex.from_entries(LATIN)
    worldwide = MetadataIndex.from_entries(LATIN, padding="worldwide")
    assert spaced.stats.padding == "spaced" and worldwide.stats.n_byte_entries == 0
    for name in ("slots", "blob", "byte_slots", "byte_blob"):
        np.testing.assert_array_equal(getattr(spaced, name), getattr(worldwide, name))
    expected = match(LATIN_TEXTS, spaced, backend="cpu").to_lists()
    assert match(LATIN_TEXTS, worldwide, backend="cpu").to_lists() == expected
    assert expected == FastOracle(LATIN).match_many(LATIN_TEXTS)


def test_spaced_mode_ignores_cjk_ends() -> None:
    entries = ["中国", "，", "dog"]
    texts: list[Text] = ["我爱中国", "中国 ， dog", "a，b"]
    spaced = MetadataIndex.from_entries(entries)
    assert spaced.stats.n_byte_entries == 0
    expected = [reference_match(text, entries) for text in texts]
    assert expected == [[], [0, 1, 2], []]
    assert match(texts, spaced, backend="cpu").to_lists() == expected


@pytest.mark.slow
def test_cc3m_worldwide_all_latin_equals_spaced(
    cc3m_texts: list[str], metadata_500k: list[str]
) -> None:
    latin = [e for e in metadata_500k if worldwide_padding(e) == PAD_BOTH]
    assert len(latin) < len(metadata_500k)  # the list does hold entries ending in punctuation
    spaced = match(cc3m_texts, MetadataIndex.from_entries(latin), backend="cpu")
    worldwide = match(
        cc3m_texts, MetadataIndex.from_entries(latin, padding="worldwide"), backend="cpu"
    )
    np.testing.assert_array_equal(spaced.offsets, worldwide.offsets)
    np.testing.assert_array_equal(spaced.entry_ids, worldwide.entry_ids)


@pytest.mark.slow
def test_cc3m_worldwide_matches_oracle(cc3m_texts: list[str], metadata_500k: list[str]) -> None:
    index = MetadataIndex.from_entries(metadata_500k, padding="worldwide")
    assert index.stats.n_byte_entries > 100  # "dr.", "ltd.", "'hood", ".22", ...
    expected = FastOracle(metadata_500k, padding="worldwide").match_many(cc3m_texts)
    got = match(cc3m_texts, index, backend="cpu").to_lists()
    for position, (text, want, have) in enumerate(zip(cc3m_texts, expected, got, strict=True)):
        assert have == want, (position, text, want, have)


# ------------------------------------------------------------- long texts ---
def test_more_distinct_ids_than_the_fixed_sink() -> None:
    hanzi = [chr(0x4E00 + 7 * k) for k in range(60)]
    words = [f"w{k}" for k in range(30)]
    entries = hanzi + words + ["，", "Hello世界", *hanzi[:5]]  # duplicates too
    long_zh = "".join(hanzi) + "，Hello世界"
    long_mixed = " ".join(itertools.chain.from_iterable(zip(words, hanzi, strict=False)))
    texts: list[Text] = [long_zh, "w1", long_mixed, None, long_mixed + "，" + long_zh, ""]
    got = worldwide_lists(texts, entries)
    assert len(got[0]) > 32 and len(got[2]) > 32  # the count/fill path
    check(entries, texts)
    assert worldwide_lists(texts, entries, batch_rows=2) == got
    assert worldwide_lists(texts, entries, threads=1) == got


# -------------------------------------------------------------- the cache ---
def test_cache_key_includes_the_padding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(["中国", "dog", "Hello世界"]), encoding="utf-8")
    cache = tmp_path / "cache"
    spaced = MetadataIndex.load(meta, cache=cache)
    worldwide = MetadataIndex.load(meta, padding="worldwide", cache=cache)
    assert len(list(cache.iterdir())) == 2
    assert (spaced.stats.padding, worldwide.stats.padding) == ("spaced", "worldwide")
    again = MetadataIndex.load(meta, padding="worldwide", cache=cache)
    assert again.stats == worldwide.stats
    for name in ("slots", "blob", "byte_slots", "byte_blob"):
        np.testing.assert_array_equal(getattr(again, name), getattr(worldwide, name))
    texts = ["我爱中国 dog", "Hello世界们"]
    assert match(texts, again, backend="cpu").to_lists() == [[0, 1], [2]]
    assert match(texts, spaced, backend="cpu").to_lists() == [[1], []]
    monkeypatch.setenv("METACLIP_GPU_CACHE", str(cache))
    from_list = MetadataIndex.from_entries(["中国"], padding="worldwide", cache=True)
    assert from_list.stats.n_byte_entries == 1
    assert len(list(cache.iterdir())) == 3


# ---------------------------------------------------------------- property ---
ALPHABET = [
    *"abcXY",
    " ",
    " ",
    "\t",
    *",.;:?!`'()-",
    *"中国人大",
    *"ไทย",
    *"，。「」—",
    "é",
]
texts_strategy = st.text(alphabet=st.sampled_from(ALPHABET), max_size=24)
entry_strategy = st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=6)


@st.composite
def metadata_and_texts(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    texts = draw(st.lists(texts_strategy, min_size=1, max_size=6))
    entries = draw(st.lists(entry_strategy, min_size=1, max_size=20))
    for text in texts:  # substrings of the texts, so that matches occur
        if text and draw(st.booleans()):
            start = draw(st.integers(0, len(text) - 1))
            stop = draw(st.integers(start + 1, min(len(text), start + 6)))
            entries.append(text[start:stop])
    if draw(st.booleans()):
        entries.append("")
    if draw(st.booleans()):
        entries.append(draw(st.sampled_from(entries)))
    order = draw(st.permutations(range(len(entries))))
    return [entries[i] for i in order], texts


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=metadata_and_texts(), arrow=st.sampled_from([None, "string", "large_string"]))
def test_matcher_equals_oracles_on_a_mixed_alphabet(
    data: tuple[list[str], list[str]], arrow: str | None
) -> None:
    entries, texts = data
    all_texts: list[Text] = [*texts, None]
    literal = [reference_match(text, entries, padding="worldwide") for text in all_texts]
    assert FastOracle(entries, padding="worldwide").match_many(all_texts) == literal
    for_matcher: Any = all_texts if arrow is None else pa.array(all_texts, getattr(pa, arrow)())
    got = worldwide_lists(for_matcher, entries)
    for text, want, have in zip(all_texts, literal, got, strict=True):
        assert have == want, f"text={text!r} entries={entries!r} expected={want} got={have}"


@st.composite
def entries_with_any_padding(draw: st.DrawFn) -> tuple[list[str], list[int], list[str]]:
    entries, texts = draw(metadata_and_texts())
    entries = [entry for entry in entries if entry] or ["中"]
    flags = draw(st.lists(st.integers(0, PAD_BOTH), min_size=len(entries), max_size=len(entries)))
    return entries, flags, texts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=entries_with_any_padding())
def test_kernels_honour_any_padding_flags(data: tuple[list[str], list[int], list[str]]) -> None:
    """The index and kernels take any per-side flags, not only the worldwide ones (e.g. an
    unpadded entry that starts with a space, which can begin after a punctuation's space)."""
    entries, flags, texts = data
    keys = [spaced_entry(entry, flag) for entry, flag in zip(entries, flags, strict=True)]
    expected = [[i for i, key in enumerate(keys) if key in spacing(text)] for text in texts]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "metaclip_gpu.engine.index.padding_flags", lambda *_: np.array(flags, np.uint8)
        )
        got = worldwide_lists(texts, entries)
    assert got == expected, (entries, flags, texts)
