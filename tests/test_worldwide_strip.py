"""Worldwide mode strips each text before matching, as MetaCLIP 2's ``count_per_shard``
(``txt.strip()``, SPEC section 5); MetaCLIP 1 mode does not (issue 11, item 8)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import match
from metaclip_gpu.engine.texts import strip_whitespace
from metaclip_gpu.pipeline.languages import LanguageIndexes

CODE_POINTS = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def test_strip_equals_python_str_strip_for_every_code_point() -> None:
    """Arrow's whitespace set must be Python's ``isspace()`` set (U+00A0, U+3000, U+2028,
    U+0085, U+001C..U+001F included), on both ends, and inner characters kept."""
    texts = [f"{chr(c)}{chr(c)}a{chr(c)}b{chr(c)}" for c in CODE_POINTS]
    for kind in (pa.string(), pa.large_string()):
        got = strip_whitespace(pa.chunked_array([pa.array(texts, kind)])).to_pylist()
        assert got == [t.strip() for t in texts]
    whitespace = {c for c in CODE_POINTS if chr(c).isspace()}
    assert {0xA0, 0x3000, 0x2028, 0x85, 0x1C, 0x1D, 0x1E, 0x1F, 0x1680} <= whitespace
    assert 0x200B not in whitespace  # zero width space: not whitespace, kept
    assert strip_whitespace(pa.array(["\u200bx"])).to_pylist() == ["\u200bx"]


def test_strip_keeps_nulls_and_strips_binary_texts_keeping_invalid_bytes() -> None:
    assert strip_whitespace(pa.array([None, " a ", ""])).to_pylist() == [None, "a", ""]
    binary = pa.array([b"\xc2\xa0bad \xff text\xe3\x80\x80", None, b" \t"], pa.binary())
    out = strip_whitespace(binary)
    assert out.type == pa.binary()
    assert out.to_pylist() == [b"bad \xff text", None, b""]


def test_worldwide_matching_strips_metaclip1_does_not() -> None:
    """'Sarava' and 'Cherie' after a no-break space or U+3000 (2 of 10,000 real LAION
    captions) lost their first word in worldwide mode."""
    entries = ["Sarava", "Cherie", "cat", "猫"]
    texts = pa.array(["\u00a0Sarava and a cat", "\u3000Cherie\u2028", "猫\u3000", " cat "])
    langs = LanguageIndexes(
        {"en": MetadataIndex.from_entries(entries, padding="worldwide")}, digest="test"
    )
    ids = langs.match_rows(texts, np.zeros(len(texts), dtype=np.int32), "cpu", None)
    assert ids.to_pylist() == [[0, 2], [1], [3], [2]]

    spaced = MetadataIndex.from_entries(entries)
    assert match(texts, spaced, backend="cpu").to_lists() == [[2], [], [], [2]]
    assert pc.utf8_length(texts).to_pylist()[0] == len("\u00a0Sarava and a cat")  # unchanged
