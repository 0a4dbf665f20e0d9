"""Loading MetaCLIP metadata: a JSON list of strings, or a text file with one entry per line.

An entry's id is its position in the list (SPEC section 1). Duplicates keep their own ids.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


class MetadataError(ValueError):
    """The metadata file is not a list of strings; the message names the file and element."""


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def load_metadata(path: str | Path) -> list[str]:
    """The entries of a metadata file (see `parse_metadata`)."""
    path = Path(path)
    return parse_metadata(path.read_bytes(), str(path))


def content_digest(raw: bytes) -> str:
    """SHA-256 of the file bytes: the key of the on-disk index cache."""
    return hashlib.sha256(raw).hexdigest()
