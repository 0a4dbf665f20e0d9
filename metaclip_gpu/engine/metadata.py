"""Loading MetaCLIP metadata: a JSON list of strings, or a text file with one entry per line.

An entry's id is its position in the list (SPEC section 1). Duplicates keep their own ids.

Also the one place that says how an entry is padded before sub-string matching (SPEC
sections 2 and 5): "spaced" (MetaCLIP 1) pads every entry with a space on both sides;
"worldwide" (MetaCLIP 2's ``get_spaced_metadata``) leaves a side unpadded when the entry's
character on that side is CJK-or-similar or punctuation (`is_cjk_or_similar`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from pathlib import Path
from typing import Literal

import numpy as np

from metaclip_gpu import storage
from metaclip_gpu.storage import RemotePath

Padding = Literal["spaced", "worldwide"]
PADDINGS: tuple[Padding, ...] = ("spaced", "worldwide")

PAD_LEFT = 1
"""Padding flag: the spaced entry starts with a space before the entry."""
PAD_RIGHT = 2
"""Padding flag: the spaced entry ends with a space after the entry."""
PAD_BOTH = PAD_LEFT | PAD_RIGHT

CJK_PUNCTUATION = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"  # noqa: RUF001 (meant)
"""The punctuation MetaCLIP 2 adds to ``string.punctuation`` (its ``additional_punctuation``)."""

_PUNCTUATION = frozenset(string.punctuation + CJK_PUNCTUATION)

# Inclusive code-point ranges of MetaCLIP 2's is_cjk_or_similar (CJK ideographs, radicals and
# description characters; then Thai, Lao, Burmese, Khmer, Tibetan).
_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0x2CEB0, 0x2EBEF),
    (0xF900, 0xFAFF),
    (0x2E80, 0x2EFF),
    (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F),
    (0x0E80, 0x0EFF),
    (0x1000, 0x109F),
    (0x1780, 0x17FF),
    (0x0F00, 0x0FFF),
)


class MetadataError(ValueError):
    """The metadata file is not a list of strings; the message names the file and element."""


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_encodable(entries: list[str], source: str) -> None:
    """`MetadataError` naming the first entry that holds a lone surrogate (a JSON escape such
    as ``"\\ud800"``, or a Python str): it has no UTF-8 bytes to match."""
    try:
        "".join(entries).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    for position, entry in enumerate(entries):
        try:
            entry.encode("utf-8")
        except UnicodeEncodeError as err:
            raise MetadataError(
                f"{source}: element {position} holds a lone surrogate "
                f"({entry[err.start]!r} at character {err.start}), not valid Unicode text: "
                f"{_describe(entry)}"
            ) from err


def parse_metadata(raw: bytes, source: str) -> list[str]:
    """Entries from the bytes of a metadata file; `source` names it in errors.

    JSON when the first non-blank byte is ``[`` or ``{``; otherwise UTF-8 text, one entry per
    line (the line break ``\\n`` and a ``\\r`` before it are not part of the entry; a final line
    break ends the last entry rather than starting an empty one).
    """
    stripped = raw.lstrip()
    if stripped[:1] in (b"[", b"{"):
        try:
            entries = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MetadataError(f"{source}: not valid JSON: {err}") from err
        if not isinstance(entries, list):
            raise MetadataError(
                f"{source}: expected a JSON list of strings, got a {type(entries).__name__}"
            )
        for position, entry in enumerate(entries):
            if not isinstance(entry, str):
                raise MetadataError(
                    f"{source}: element {position} is a {type(entry).__name__}, not a string: "
                    f"{_describe(entry)}"
                )
        check_encodable(entries, source)
        return entries
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MetadataError(f"{source}: line {line} is not valid UTF-8: {err.reason}") from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def load_metadata(path: str | Path | RemotePath) -> list[str]:
    """The entries of a metadata file, local or a URL (`storage`; see `parse_metadata`)."""
    where = storage.location(path)
    return parse_metadata(storage.read_bytes(where), str(where))


def content_digest(raw: bytes) -> str:
    """SHA-256 of the file bytes: the key of the on-disk index cache."""
    return hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------------------------- padding ---
@functools.cache
def is_cjk_or_similar(char: str) -> bool:
    """MetaCLIP 2's test for a character that needs no space next to it: a code point of a
    no-space script (`_NO_SPACE_RANGES`) or punctuation (ASCII or `CJK_PUNCTUATION`)."""
    code_point = ord(char)
    if any(low <= code_point <= high for low, high in _NO_SPACE_RANGES):
        return True
    return char in _PUNCTUATION


def worldwide_padding(entry: str) -> int:
    """The `PAD_LEFT` / `PAD_RIGHT` flags ``get_spaced_metadata`` gives `entry`.

    A side is padded unless the entry's character there is `is_cjk_or_similar`. The empty entry
    (which the reference cannot pad: it indexes ``entry[0]``) is padded on both sides, so it
    matches as in "spaced" mode.
    """
    if not entry:
        return PAD_BOTH
    left = 0 if is_cjk_or_similar(entry[0]) else PAD_LEFT
    return left | (0 if is_cjk_or_similar(entry[-1]) else PAD_RIGHT)


def padding_flags(entries: list[str], padding: Padding) -> np.ndarray:
    """uint8 `PAD_LEFT` | `PAD_RIGHT` flags of each entry under `padding`."""
    if padding == "spaced":
        return np.full(len(entries), PAD_BOTH, dtype=np.uint8)
    if padding == "worldwide":
        return np.fromiter(map(worldwide_padding, entries), dtype=np.uint8, count=len(entries))
    raise ValueError(f"unknown padding {padding!r}: expected one of {PADDINGS}")


def spaced_entry(entry: str, flags: int) -> str:
    """`entry` with the spaces its padding `flags` ask for."""
    left = " " if flags & PAD_LEFT else ""
    return left + entry + (" " if flags & PAD_RIGHT else "")
