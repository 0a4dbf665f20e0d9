"""Per-language metadata and matching for worldwide curation (MetaCLIP 2, SPEC section 5).

Metadata comes as a directory of ``<lang>.json`` files (each MetaCLIP's list of strings; a
``.txt`` file with one entry per line works too) or as one JSON object ``{lang: [entries]}``.
Every language gets its own `MetadataIndex` with MetaCLIP 2's per-side padding
(``padding="worldwide"``), built once and cached on disk like any index; entry ids are
positions in that language's list.

A text's language comes from its shard's language column (``--lang-column``; by default the
first of `LANG_CANDIDATES` present); a shard without one is identified by fastText's
``lid.176`` (`lid.identify`, batched per chunk; ``langid`` where fastText is not installed),
its codes mapped to metadata languages by `lid.LID_TO_METADATA`; with no identifier it is an
unreadable shard whose error says a language column is needed. The match files record each
row's language, so a rerun never identifies again.

A text whose language has no metadata (or a null language) goes, as the user chooses
(`UnknownLanguage`), to the ``other`` metadata (MetaCLIP 2's bucket for languages without
their own; there must be an ``other`` list) or is skipped: it matches nothing, is counted as
``unknown_language`` and never kept. A language code is
compared as given (``zh`` and ``zh-Hans`` are two languages).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.engine.arrays import to_host
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import match
from metaclip_gpu.engine.metadata import MetadataError, parse_metadata
from metaclip_gpu.engine.texts import strip_whitespace
from metaclip_gpu.pipeline.lid import INSTALL_HINT, LidModel, identify, metadata_languages
from metaclip_gpu.pipeline.read import ShardError
from metaclip_gpu.storage import RemotePath

UnknownLanguage = Literal["skip", "other"]
OTHER = "other"
ENGLISH = "en"
LANG_CANDIDATES: tuple[str, ...] = ("lang", "language", "lid", "langid", "LANGUAGE")
METADATA_SUFFIXES = (".json", ".txt")


def load_language_metadata(path: str | Path | RemotePath) -> dict[str, list[str]]:
    """``{lang: entries}`` from a directory of ``<lang>.json``/``.txt`` files or one JSON
    object file, local or a URL (`storage`); languages in sorted order. Errors name the file
    and the language."""
    path = storage.location(path)
    if storage.is_dir(path):
        files = [p for p in storage.list_files(path) if Path(p.name).suffix in METADATA_SUFFIXES]
        if not files:
            raise MetadataError(f"{path}: no <lang>.json or <lang>.txt metadata files")
        languages: dict[str, list[str]] = {}
        for file in files:
            lang = Path(file.name).stem
            if lang in languages:
                raise MetadataError(f"{path}: language {lang!r} has two metadata files")
            languages[lang] = parse_metadata(storage.read_bytes(file), str(file))
        return languages
    raw = storage.read_bytes(path)
    try:
        table = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetadataError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(table, dict):
        raise MetadataError(
            f"{path}: worldwide metadata is a directory of <lang>.json files or one JSON "
            f"object {{lang: [entries]}}, not a {type(table).__name__}"
        )
    languages = {}
    for lang in sorted(table):
        entries = table[lang]
        source = f"{path} [{lang!r}]"
        languages[lang] = parse_metadata(json.dumps(entries).encode("utf-8"), source)
    return languages


@dataclass
class LanguageIndexes:
    """One worldwide-padded `MetadataIndex` per language, and how texts find theirs."""

    indexes: dict[str, MetadataIndex]
    digest: str  # of every language's entries: the match stage's config
    unknown: UnknownLanguage = "skip"
    lang_column: str | None = None  # None: the first of LANG_CANDIDATES in each shard
    lid: LidModel = field(default_factory=LidModel)  # for shards without a language column
    _codes: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.unknown not in ("skip", "other"):
            raise ValueError(f"unknown must be 'skip' or 'other', not {self.unknown!r}")
        if self.unknown == "other" and OTHER not in self.indexes:
            raise MetadataError(
                f"unknown languages go to {OTHER!r}, but the metadata has no {OTHER!r} list "
                "(add other.json, or skip them)"
            )
        self._codes = {lang: i for i, lang in enumerate(self.indexes)}

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        unknown: UnknownLanguage = "skip",
        lang_column: str | None = None,
        lid: LidModel | None = None,
    ) -> LanguageIndexes:
        """Loads the metadata of `path` (`load_language_metadata`), each language's index
        from the on-disk cache or built into it."""
        languages = load_language_metadata(path)
        digests = {}
        indexes = {}
        for lang, entries in languages.items():
            raw = json.dumps(entries).encode("utf-8")
            digests[lang] = hashlib.sha256(raw).hexdigest()
            indexes[lang] = MetadataIndex.from_entries(
                entries, padding="worldwide", digest=digests[lang], cache=True
            )
        digest = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
        return cls(indexes, digest, unknown, lang_column, lid or LidModel())

    @property
    def languages(self) -> list[str]:
        return list(self.indexes)

    def __len__(self) -> int:
        """Entries over all languages."""
        return sum(len(index) for index in self.indexes.values())

    def find_column(self, names: list[str], where: str | Path) -> str | None:
        """The language column among a shard's column `names` (None when there is none and
        none was named); `read.ShardError` naming the shard `where` for a named, absent one."""
        if self.lang_column is not None:
            if self.lang_column not in names:
                raise ShardError(where, f"no language column {self.lang_column!r}")
            return self.lang_column
        return next((c for c in LANG_CANDIDATES if c in names), None)

    def row_codes(self, table: pa.Table, where: str | Path) -> np.ndarray:
        """Each row's language code (`language_of`) from the language column of `table`, or
        from the language identifier (`lid.identify`, its codes mapped by
        `lid.LID_TO_METADATA`) when the shard has none."""
        column = self.find_column(table.column_names, where)
        if column is not None:
            return self.language_of(table.column(column))
        identified = identify(table.column("text"), self.lid)
        if identified is None:
            raise ShardError(
                where,
                f"no language column (looked for {', '.join(LANG_CANDIDATES)}) and no "
                f"language identifier installed: give --lang-column, or {INSTALL_HINT}; "
                "or pip install langid",
            )
        return self.language_of(metadata_languages(identified))

    def language_of(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each row's metadata language as an int code into `languages`, -1 when skipped."""
        other = self._codes.get(OTHER, -1) if self.unknown == "other" else -1
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = pc.cast(values, pa.string())
        encoded = pc.dictionary_encode(values)
        names = encoded.dictionary.to_pylist()
        lookup = np.array([self._codes.get(n, other) for n in names] + [other], dtype=np.int32)
        indices = encoded.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
        return lookup[indices]

    def codes_of_names(self, names: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """A match file's ``lang`` column (dictionary of language names, null where skipped)
        as int codes into `languages`, -1 for null."""
        if isinstance(names, pa.ChunkedArray):
            names = names.combine_chunks()
        if not pa.types.is_dictionary(names.type):
            names = pc.dictionary_encode(names)
        lookup = np.array(
            [self._codes[n] for n in names.dictionary.to_pylist()] + [-1], dtype=np.int32
        )
        indices = names.indices.fill_null(len(names.dictionary))
        return lookup[indices.to_numpy(zero_copy_only=False)]

    def match_rows(
        self, texts: pa.Array | pa.ChunkedArray, codes: np.ndarray, backend: str, threads: Any
    ) -> pa.Array:
        """list<int32> entry ids of each text against its language's index (empty when the
        language is skipped), in row order. Texts are stripped first (`texts.strip_whitespace`,
        Python's ``str.strip()``), as MetaCLIP 2's ``count_per_shard`` does (SPEC section 5)."""
        texts = strip_whitespace(texts)
        n = len(texts)
        lengths = np.zeros(n, dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for code, rows in _groups(codes):
            if code < 0:
                continue
            index = self.indexes[self.languages[code]]
            res = match(texts.take(pa.array(rows)), index, backend=backend, threads=threads)
            offsets, ids = to_host(res.offsets), to_host(res.entry_ids)
            lengths[rows] = np.diff(offsets)
            parts.append((rows, offsets, ids))
        out_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        flat = np.empty(int(out_offsets[-1]), dtype=np.int32)
        for rows, offsets, ids in parts:  # scatter each group's runs to its rows
            starts = out_offsets[rows]
            owner = np.repeat(np.arange(len(rows)), np.diff(offsets))
            within = np.arange(len(ids)) - offsets[owner]
            flat[starts[owner] + within] = ids
        if out_offsets[-1] < 2**31:
            return pa.ListArray.from_arrays(pa.array(out_offsets.astype(np.int32)), flat)
        return pa.LargeListArray.from_arrays(pa.array(out_offsets), flat)

    def names_of(self, codes: np.ndarray) -> pa.DictionaryArray:
        """The language names of `codes` as a dictionary column (null where skipped)."""
        mask = codes < 0
        indices = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask)
        return pa.DictionaryArray.from_arrays(indices, pa.array(self.languages, pa.string()))


def _groups(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(code, ascending rows with that code) for each distinct code."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    for rows in np.split(order, bounds):
        if len(rows):
            yield int(codes[rows[0]]), rows
