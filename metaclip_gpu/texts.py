"""Normalising the texts a user passes in to an Arrow string column (the CPU backend's input)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

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
