"""Pure-Python oracles for MetaCLIP sub-string matching (SPEC section 2).

These are the ground truth the tests hold the matcher to. They are written straight from the
rule, independent of the kernels' token/hash approach:

- `spacing` is MetaCLIP's text normalisation: ``" " + text + " "``, then every ``,`` ``.``
  ``;`` ``:`` ``?`` ``!`` `````` ` `````` becomes ``" c "``, then every tab, newline and carriage
  return becomes one space.
- `reference_match` is the literal loop: entry ``e`` (id ``i``) matches a text when its spaced
  form is a substring of ``spacing(text)``. The spaced form is ``" " + e + " "`` ("spaced"
  padding, MetaCLIP 1) or, with ``padding="worldwide"``, MetaCLIP 2's ``get_spaced_metadata``
  form (`worldwide_spaced_entries`): no space on a side whose end character is CJK-or-similar
  or punctuation.
- `FastOracle` gives the same answers quickly: a spaced entry that starts and ends with a space
  occurs in the spaced text iff it equals the slice between two space bytes of the spaced text;
  every such slice (up to the longest spaced entry) is looked up in a dict. The other spaced
  entries (worldwide padding only) are tested with the literal ``in``.

Texts are ``str`` (matched on their UTF-8 bytes, which gives the same answers as matching the
``str``), ``bytes`` (possibly invalid UTF-8, matched byte for byte against the UTF-8 entries)
or ``None`` (a null text, which matches nothing, not even the empty entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, overload

from metaclip_gpu.engine.metadata import Padding, is_cjk_or_similar

PUNCTS_TO_WRAP: tuple[str, ...] = (",", ".", ";", ":", "?", "!", "`")
"""Characters that `spacing` wraps in spaces (``c`` -> ``" c "``), in MetaCLIP's order."""

CHARS_TO_SPACE: tuple[str, ...] = ("\t", "\n", "\r")
"""Characters that `spacing` replaces by one space."""

_PUNCTS_TO_WRAP_BYTES: tuple[bytes, ...] = tuple(p.encode("ascii") for p in PUNCTS_TO_WRAP)
_CHARS_TO_SPACE_BYTES: tuple[bytes, ...] = tuple(c.encode("ascii") for c in CHARS_TO_SPACE)


@overload
def spacing(text: str) -> str: ...


@overload
def spacing(text: bytes) -> bytes: ...


def spacing(text: str | bytes) -> str | bytes:
    """MetaCLIP's ``spacing``: pad with spaces, wrap punctuation in spaces, blank out whitespace.

    ``" " + text + " "``; then each of ``, . ; : ? ! ` `` becomes ``" c "``; then each of
    ``\\t \\n \\r`` becomes ``" "``. A ``bytes`` text gets the same mapping on bytes (all the
    characters involved are ASCII) and the result is ``bytes``.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        spaced_bytes = b" " + bytes(text) + b" "
        for punct in _PUNCTS_TO_WRAP_BYTES:
            spaced_bytes = spaced_bytes.replace(punct, b" " + punct + b" ")
        for char in _CHARS_TO_SPACE_BYTES:
            spaced_bytes = spaced_bytes.replace(char, b" ")
        return spaced_bytes
    spaced = f" {text} "
    for punct in PUNCTS_TO_WRAP:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in CHARS_TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


def worldwide_spaced_entries(entries: Iterable[str]) -> list[str]:
    """MetaCLIP 2's ``get_spaced_metadata``: each entry with a space added on each side whose
    end character is not `is_cjk_or_similar`.

    The empty entry, on which the reference fails (it reads ``entry[0]``), gets both spaces, as
    in "spaced" padding.
    """
    spaced = []
    for entry in entries:
        if not entry:
            spaced.append("  ")
            continue
        padded = entry if is_cjk_or_similar(entry[0]) else f" {entry}"
        spaced.append(padded if is_cjk_or_similar(padded[-1]) else f"{padded} ")
    return spaced


def spaced_entries(entries: Iterable[str], padding: Padding = "spaced") -> list[str]:
    """The spaced form of each entry under `padding` ("spaced" or "worldwide")."""
    if padding == "spaced":
        return [f" {entry} " for entry in entries]
    if padding == "worldwide":
        return worldwide_spaced_entries(entries)
    raise ValueError(f"unknown padding {padding!r}")


def reference_match(
    text: str | bytes | None, entries: Sequence[str], *, padding: Padding = "spaced"
) -> list[int]:
    """Ids ``i`` (ascending) whose spaced ``entries[i]`` (`spaced_entries`) is a substring of
    ``spacing(text)``.

    The literal loop of MetaCLIP's pure-Python matcher (every duplicate keeps its own id).
    ``None`` matches nothing. For a ``bytes`` text the entries are UTF-8 encoded.
    """
    if text is None:
        return []
    keys = spaced_entries(entries, padding)
    if isinstance(text, bytes | bytearray | memoryview):
        spaced_bytes = spacing(bytes(text))
        return [i for i, key in enumerate(keys) if key.encode() in spaced_bytes]
    spaced = spacing(text)
    return [i for i, key in enumerate(keys) if key in spaced]


def _text_bytes(text: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    return bytes(text)


class FastOracle:
    """Exact matching by dict look-up of every space-to-space slice of the spaced text.

    Equivalent to `reference_match`: a spaced entry that begins and ends with a space byte (all
    of them with "spaced" padding) is a substring of ``spacing(text)`` iff it equals
    ``spacing(text)[p : q + 1]`` for some space positions ``p < q``; and it cannot be longer than
    the longest spaced entry. The spaced entries with an unpadded side (worldwide padding) are
    tested literally. Shares nothing with the kernels' token and byte hashing.
    """

    def __init__(self, entries: Iterable[str], padding: Padding = "spaced") -> None:
        """Index ``entries`` (ids are positions; duplicates keep all their ids)."""
        self._ids: dict[bytes, list[int]] = {}
        self._loose: list[tuple[int, bytes]] = []  # spaced entries not bounded by spaces
        longest = 0
        count = 0
        for entry_id, spaced_entry in enumerate(spaced_entries(entries, padding)):
            key = spaced_entry.encode("utf-8", "surrogatepass")
            count += 1
            if len(key) < 2 or key[0] != 0x20 or key[-1] != 0x20:
                self._loose.append((entry_id, key))
                continue
            self._ids.setdefault(key, []).append(entry_id)
            longest = max(longest, len(key))
        self.n_entries: int = count
        """Number of entries indexed."""
        self.longest: int = longest
        """Length in bytes of the longest spaced entry bounded by spaces (0 when none)."""

    def __len__(self) -> int:
        return self.n_entries

    def match(self, text: str | bytes | None) -> list[int]:
        """Sorted distinct ids of the entries matching ``text`` (``None`` matches nothing)."""
        if text is None:
            return []
        spaced = spacing(_text_bytes(text))
        spaces = [position for position, byte in enumerate(spaced) if byte == 0x20]
        lookup = self._ids
        longest = self.longest
        found: set[int] = set()
        for start_index, start in enumerate(spaces):
            for stop in spaces[start_index + 1 :]:
                if stop - start + 1 > longest:
                    break
                ids = lookup.get(spaced[start : stop + 1])
                if ids is not None:
                    found.update(ids)
        found.update(entry_id for entry_id, key in self._loose if key in spaced)
        return sorted(found)

    def match_many(self, texts: Iterable[str | bytes | None] | Any) -> list[list[int]]:
        """`match` for each text; also takes a pyarrow (Chunked)Array (anything with
        ``to_pylist``)."""
        if hasattr(texts, "to_pylist"):
            texts = texts.to_pylist()
        return [self.match(text) for text in texts]
