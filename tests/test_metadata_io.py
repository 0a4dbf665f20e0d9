"""`load_metadata`: JSON lists, one-entry-per-line text files, and errors that name the culprit.

Text files: entries are separated by ``\\n``; a final ``\\n`` ends the last entry (no empty
entry after it); a ``\\r`` at the end of a line is stripped, so CRLF files give the same
entries as LF files (an entry can therefore not end in ``\\r``, which could never match anyway).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaclip_gpu import load_metadata
from metaclip_gpu.engine.metadata import MetadataError


def test_json_list(tmp_path: Path) -> None:
    entries = ["a", "b c", "", "a", "café", "中国", " x ", "St. Louis"]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert load_metadata(path) == entries
    assert load_metadata(str(path)) == entries


def test_json_list_non_ascii_unescaped(tmp_path: Path) -> None:
    entries = ["café", "中国", "naïve"]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    assert load_metadata(path) == entries


def test_text_file_one_entry_per_line(tmp_path: Path) -> None:
    path = tmp_path / "metadata.txt"
    path.write_bytes("a\nb c\n\ncafé\n".encode())
    assert load_metadata(path) == ["a", "b c", "", "café"]


def test_text_file_without_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "metadata.txt"
    path.write_bytes(b"a\nb c")
    assert load_metadata(path) == ["a", "b c"]


def test_text_file_crlf_strips_trailing_cr(tmp_path: Path) -> None:
    path = tmp_path / "metadata.txt"
    path.write_bytes(b"a\r\nb c\r\n\r\nd\r\n")
    assert load_metadata(path) == ["a", "b c", "", "d"]


def test_json_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"a": 1}), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_json_non_string_element(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(["a", 3, "b"]), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    message = str(info.value)
    assert str(path) in message
    assert "element 1" in message


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('["a", "b"', encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    assert str(path) in str(info.value)


def test_text_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good\nbad caf\xe9\nok\n")
    with pytest.raises(MetadataError) as info:
        load_metadata(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 2" in message
