"""Normalising the texts a user passes in to an Arrow string column (the CPU backend's input)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def as_arrow_texts(texts: Any) -> pa.ChunkedArray:
    """A string or binary ChunkedArray over `texts`, zero-copy where it already is Arrow.

    Accepts pyarrow (Chunked)Arrays of string/large_string/binary/large_binary (binary columns
    are matched byte for byte, so invalid UTF-8 is matched as bytes), string views (cast),
    anything exposing the Arrow C stream (pandas, polars, cuDF via ``to_arrow``), and Python
    sequences of ``str``/``bytes``/``None``.
    """
    if hasattr(texts, "to_arrow") and not isinstance(texts, pa.Array | pa.ChunkedArray):
        texts = texts.to_arrow()  # cuDF / polars Series
    if isinstance(texts, pa.Array):
        texts = pa.chunked_array([texts], type=texts.type)
    elif not isinstance(texts, pa.ChunkedArray):
        texts = _from_python(texts)
    if pa.types.is_null(texts.type):
        texts = texts.cast(pa.string())
    elif pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.large_string())
    elif pa.types.is_binary_view(texts.type):
        texts = texts.cast(pa.large_binary())
    if texts.type not in _TEXT_TYPES:
        raise TypeError(f"texts must be a string or binary column, got Arrow type {texts.type}")
    return texts


def _from_python(texts: Any) -> pa.ChunkedArray:
    if hasattr(texts, "__arrow_c_stream__") or hasattr(texts, "__arrow_c_array__"):
        array = pa.array(texts)
    else:
        values = texts if isinstance(texts, Sequence) else list(texts)
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            # Mixed str and bytes, or a str with a lone surrogate (no UTF-8 string): match
            # everything as bytes, the surrogate as its 3 bytes (which no entry equals).
            array = pa.array(
                [v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in values],
                type=pa.large_binary(),
            )
    if isinstance(array, pa.ChunkedArray):
        return array
    return pa.chunked_array([array], type=array.type)


def strip_whitespace(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each text without leading and trailing whitespace, as Python's ``str.strip()`` (Unicode
    White_Space plus U+001C..U+001F: the characters whose ``isspace()`` is True), what MetaCLIP
    2's ``count_per_shard`` does before matching. Arrow's ``utf8_trim_whitespace`` strips the
    same set (tested over every code point); a binary column (not valid UTF-8) is stripped
    text by text, its invalid bytes kept as they are. Nulls stay null."""
    if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
        return pc.utf8_trim_whitespace(texts)
    if pa.types.is_binary(texts.type) or pa.types.is_large_binary(texts.type):
        values = [
            None if v is None else v.decode("utf-8", "surrogateescape").strip()
            for v in texts.to_pylist()
        ]
        return pa.array(
            [None if v is None else v.encode("utf-8", "surrogateescape") for v in values],
            texts.type,
        )
    return texts
