"""SPEC section 2, one test per consequence: the oracles AND the matcher give the stated answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle, reference_match, spacing

Text = str | bytes | None


def matcher_lists(texts: Any, entries: Sequence[str], **kwargs: Any) -> list[list[int]]:
    """The CPU matcher's answer, with the CSR invariants checked on the way."""
    index = MetadataIndex.from_entries(list(entries), cache=False)
    result = match(texts, index, backend="cpu", **kwargs)
    offsets = np.asarray(result.offsets)
    ids = np.asarray(result.entry_ids)
    assert offsets.dtype == np.int64
    assert ids.dtype == np.int32
    assert len(result) == len(texts) and len(offsets) == len(texts) + 1
    assert offsets[0] == 0 and offsets[-1] == len(ids)
    assert np.all(np.diff(offsets) >= 0)
    return result.to_lists()


def check(entries: Sequence[str], texts: Sequence[Text], expected: Sequence[Sequence[int]]):
    """Asserts the literal loop, the fast oracle and the matcher all give `expected`."""
    expected = [list(ids) for ids in expected]
    assert len(texts) == len(expected)
    for text, want in zip(texts, expected, strict=True):
        assert reference_match(text, entries) == want, ("reference_match", text, entries)
    oracle = FastOracle(entries)
    assert oracle.match_many(list(texts)) == expected, ("FastOracle", texts, entries)
    got = matcher_lists(list(texts), entries)
    for text, want, have in zip(texts, expected, got, strict=True):
        assert have == want, f"matcher: text={text!r} entries={list(entries)!r} {want=} {have=}"


def test_punct_wrapping_is_one_pass() -> None:
    # Each byte maps independently: no replacement creates another replaced byte.
    per_byte = {c: f" {c} " for c in ",.;:?!`"} | {"\t": " ", "\n": " ", "\r": " "}
    sample = "a.,b;\t:c?\n!d`\r.. é,中"
    assert spacing(sample) == " " + "".join(per_byte.get(c, c) for c in sample) + " "
    assert spacing("a.,b") == " a .  , b "
    assert spacing("...") == "  .  .  .  "
    entries = ["a", ".", ",", "b", ". ,", ".  ,", "", "a .", "a.", ", b", " . "]
    check(entries, ["a.,b"], [[0, 1, 2, 3, 5, 6, 7, 9]])
    # "..." -> "  .  .  .  ": "." matches, as does the empty entry; ". ." does not.
    check([".", ". .", ".  .", ""], ["..."], [[0, 2, 3]])


def test_entry_with_inner_punct_never_matches() -> None:
    entries = ["St. Louis", "e.g.", "St", "Louis", "e", "g", "St .  Louis", "e . g ."]
    texts = ["St. Louis", "a trip to St. Louis today", "e.g. this", "e.g.", "St . Louis"]
    expected = [
        [2, 3, 6],
        [2, 3, 6],
        [4, 5, 7],
        [4, 5, 7],
        [2, 3],  # " St  .  Louis ": two spaces before "."
    ]
    check(entries, texts, expected)


def test_single_punct_entry_matches_any_text_with_it() -> None:
    texts = ["a,b", "hello, world", ",", "no comma", "", "a;b", ",,,", "x,"]
    check([","], texts, [[0], [0], [0], [], [], [], [0], [0]])
    check(["?", "`"], ["why?", "a`b", "?`"], [[0], [1], [0, 1]])


def test_double_space_makes_empty_token() -> None:
    entries = ["a b", "a", "b", "a  b", ""]
    check(entries, ["a  b", "a b"], [[1, 2, 3, 4], [0, 1, 2]])


def test_empty_entry_matches_only_adjacent_spaces() -> None:
    cases = {
        "": True,  # "  "
        "a  b": True,  # " a  b "
        "a": False,  # " a "
        "a,b": False,  # " a , b "
        "a, b": True,  # " a ,  b "
        "a\tb": False,  # " a b "
        "a\t b": True,  # " a  b "
        "\n": True,  # "   "
        "a ": True,  # " a  "
        " a": True,  # "  a "
        "a.": True,  # " a .  "
        ".a": True,  # "  . a "
        "a b": False,
        "中": False,
        "a;b:c": False,  # " a ; b : c "
    }
    texts = list(cases)
    for text, has in cases.items():
        assert ("  " in spacing(text)) is has, text
    check(["x", ""], texts, [[1] if has else [] for has in cases.values()])


def test_leading_trailing_space_entries() -> None:
    entries = [" a", "a ", " a ", "a", " "]
    texts = ["x a", "x  a", "a  x", " a ", "x   y", "a,", ",a"]
    expected = [
        [3],  # " x a "
        [0, 3],  # " x  a "
        [1, 3],  # " a  x "
        [0, 1, 2, 3],  # "  a  "
        [4],  # " x   y "
        [3],  # " a ,  "
        [3],  # "  , a "
    ]
    check(entries, texts, expected)


def test_tab_entries_never_match() -> None:
    entries = ["a\tb", "\t", "a\t", "a\nb", "\r", "a b", "\t\t", "a\r\nb"]
    texts = ["a\tb", "a b", "\t", "a\t b", "a\nb", "x\r\ny", "\t\t", "a\r\nb"]
    check(entries, texts, [[5], [5], [], [], [5], [], [], []])


def test_duplicate_entries_all_match() -> None:
    entries = ["dog", "cat", "dog", "dog", "a dog", "cat"]
    check(entries, ["a dog", "cat and dog", "bird"], [[0, 2, 3, 4], [0, 1, 2, 3, 5], []])


def test_case_sensitive() -> None:
    entries = ["Dog", "dog", "DOG", "É", "é"]
    check(entries, ["Dog dog", "DOG", "dOg", "é", "É"], [[0, 1], [2], [], [4], [3]])


def test_utf8_byte_exact() -> None:
    entries = ["café", "cafe", "中国", "中", "naïve", "Café", "\uff0c", "狗", "ß"]
    texts = [
        "café au lait",
        "cafe\u0301",  # NFD: not the same bytes as the NFC entry
        "中国 人",
        "中国人",  # no spaces: no word boundary
        "中",
        "naïve café",
        "CAFÉ",
        "狗\uff0c猫",  # the full-width comma is not wrapped
        "狗 \uff0c 猫",
        "café,",
        "ss",
    ]
    expected = [[0], [], [2], [], [3], [0, 4], [], [], [6, 7], [0], []]
    check(entries, texts, expected)


def test_null_text_matches_nothing() -> None:
    entries = ["dog", ""]
    check(entries, [None, "dog", None, ""], [[], [0], [], [1]])
    for array in (
        pa.array([None, "dog", None, ""], type=pa.string()),
        pa.array([None, "dog", None, ""], type=pa.large_string()),
        pa.array([None, b"dog", None, b""], type=pa.binary()),
    ):
        assert matcher_lists(array, entries) == [[], [0], [], [1]]


@pytest.mark.parametrize("arrow_type", [pa.binary(), pa.large_binary()])
def test_invalid_utf8_bytes_matched_as_bytes(arrow_type: pa.DataType) -> None:
    assert spacing(b"caf\xe9 dog") == b" caf\xe9 dog "
    assert spacing(b"\xff\xfe, dog") == b" \xff\xfe ,  dog "
    assert spacing(b"caf\xe9,\tx") == b" caf\xe9 ,  x "
    entries = ["dog", ",", "café", "caf", "", "x"]
    raw = [b"caf\xe9 dog", b"\xff\xfe, dog", None, b"dog\xc3", b"caf\xc3\xa9 x", b"\x80"]
    expected = [[0], [0, 1, 4], [], [], [2, 5], []]
    check(entries, raw, expected)
    assert matcher_lists(pa.array(raw, type=arrow_type), entries) == expected
    chunked = pa.chunked_array([raw[:2], raw[2:]], type=arrow_type)
    assert matcher_lists(chunked, entries) == expected


def test_newline_cr_tab_in_text_are_spaces() -> None:
    entries = ["a b", "a  b", "b c"]
    texts = ["a\nb", "a\r\nb", "a\tb\nc", "a\rb", "a\n\tb"]
    check(entries, texts, [[0], [1], [0, 2], [0], [1]])


def test_multiword_entries() -> None:
    entries = ["hot dog", "dog", "hot", "hot dog stand", "dog stand", "a hot dog", "dog hot"]
    texts = ["a hot dog stand.", "hot dogs", "shot dog", "hot, dog", "dog hot dog"]
    expected = [[0, 1, 2, 3, 4, 5], [2], [1], [1, 2], [0, 1, 2, 6]]
    check(entries, texts, expected)


def test_ngram_separators_short_and_long_entries() -> None:
    """An n-gram whose tokens are one ' ' apart is compared with an entry as one byte range
    (kernels/match.cu, McSpan); tabs, line breaks, punctuation and double spaces between
    its tokens take the token-by-token comparison. Both for entries held in a table slot
    (up to 8 bytes) and for longer ones (verification records), at the text's ends too."""
    entries = ["a b", "ab cd", "hot dog", "hot dogs stand", "sea , shore", "x  y", "big, red"]
    texts = [
        "a b",  # joined, a whole text
        "a\tb ab\ncd",  # tab and newline between the tokens: not joined, still a match
        "hot dog",
        "hot\tdogs\r\nstand hot dogs stand",  # a long entry, both ways in one text
        "sea,shore",  # the ',' token sits right after "sea": not joined, a match
        "sea, shore",  # " sea ,  shore ": the space after ',' makes an empty token
        "x  y x y",  # an empty token between x and y
        "big, red",  # an entry with a wrapped punctuation inside a word never matches
        "hot  dog ab  cd",  # double spaces: no "hot dog", no "ab cd"
        "a b.",
    ]
    expected = [[0], [0, 1], [2], [3], [4], [], [5], [], [], [0]]
    check(entries, texts, expected)


def test_prefix_chains() -> None:
    entries = [
        "new",
        "new york",
        "new york city",
        "york",
        "york city",
        "city",
        "new york city at night",
        "new york city at night time",
        "new york city at",
    ]
    texts = ["new york city at night", "new yorker", "new york.", "new new york city"]
    expected = [[0, 1, 2, 3, 4, 5, 6, 8], [0], [0, 1, 3], [0, 1, 2, 3, 4, 5]]
    check(entries, texts, expected)


def test_many_matches_per_text() -> None:
    # 100 distinct entries, listed in reverse so ids and text order differ.
    words = [f"w{i}" for i in range(100)]
    entries = list(reversed(words)) + ["w5"] * 3
    text_all = " ".join(words)
    text_repeat = " ".join(["w5"] * 100)
    texts = ["w1", text_all, text_repeat, "", text_all + ", w7", None, "w2 w3"]
    all_ids = list(range(103))
    w5_ids = [94, 100, 101, 102]
    expected = [[98], all_ids, w5_ids, [], all_ids, [], [96, 97]]
    check(entries, texts, expected)
    # One entry string repeated 100 times: all 100 ids match one text.
    check(["x"] * 100 + ["y"], ["x", "y x", "z"], [list(range(100)), list(range(101)), []])
