"""Per-shard entry counts made by the match task, so the count stage need not read match files.

The match task has every row's entry ids in memory; it adds them up per language (``""`` in a
run with one index) while it writes the shard's match file, and stores the sums in that file's
Parquet footer, under the key `COUNTS_KEY`: a sparse table of ``lang`` string, ``entry_id``
int32, ``count`` uint64 (only entries with a count > 0), as an Arrow IPC stream in base64.

So the counts share the match file's crash safety and checksum: they are written, renamed and
recorded with it, and a damaged file is redone whole. The count stage reads only the footer
(`add_footer_counts`); a match file without the key (an older run's) is counted from its
``entry_ids`` instead (`count.count_matches`), so an old run directory still counts exactly.
"""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.storage import Location

COUNTS_KEY = b"metaclip_gpu.entry_counts"
COUNTS_SCHEMA = pa.schema([("lang", pa.string()), ("entry_id", pa.int32()), ("count", pa.uint64())])


class ShardCounts:
    """Texts per entry, per language, over the chunks of one shard (`add`)."""

    def __init__(self) -> None:
        self.parts: dict[str, np.ndarray] = {}

    def _add(self, lang: str, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        found = np.bincount(ids.astype(np.int64, copy=False)).astype(np.uint64)
        known = self.parts.get(lang)
        if known is None:
            self.parts[lang] = found
            return
        if len(known) < len(found):
            known = np.concatenate([known, np.zeros(len(found) - len(known), np.uint64)])
        known[: len(found)] += found
        self.parts[lang] = known

    def add(self, table: pa.Table) -> None:
        """Adds one match chunk: its ``entry_ids`` lists, per ``lang`` when it has one."""
        lists = table.column("entry_ids").combine_chunks()
        ids = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
        if "lang" not in table.column_names:
            self._add("", ids)
            return
        lang = table.column("lang").combine_chunks()
        if not pa.types.is_dictionary(lang.type):
            lang = lang.dictionary_encode()
        lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
        codes = np.repeat(lang.indices.fill_null(-1).to_numpy(zero_copy_only=False), lengths)
        for code, name in enumerate(lang.dictionary.to_pylist()):
            self._add(name, ids[codes == code])

    def to_table(self) -> pa.Table:
        langs, ids, counts = [], [], []
        for lang in sorted(self.parts):
            nonzero = np.flatnonzero(self.parts[lang])
            langs.append(np.full(len(nonzero), lang, dtype=object))
            ids.append(nonzero.astype(np.int32))
            counts.append(self.parts[lang][nonzero])
        if not langs:
            return COUNTS_SCHEMA.empty_table()
        return pa.table(
            {
                "lang": pa.array(np.concatenate(langs), pa.string()),
                "entry_id": pa.array(np.concatenate(ids), pa.int32()),
                "count": pa.array(np.concatenate(counts), pa.uint64()),
            },
            schema=COUNTS_SCHEMA,
        )

    def footer(self) -> dict[bytes, bytes]:
        """The key-value metadata to add to the match file's footer."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, COUNTS_SCHEMA) as writer:
            writer.write_table(self.to_table())
        return {COUNTS_KEY: base64.b64encode(sink.getvalue().to_pybytes())}


def add_footer_counts(path: Location, totals: dict[str, np.ndarray]) -> bool:
    """Adds the counts in match file `path`'s footer to `totals` (uint64 counts per language,
    in place); False, adding nothing, when it has none (an older run's file). ValueError naming
    the file for a language not in `totals` or an entry id outside its counts."""
    metadata = storage.parquet_file(path).metadata.metadata or {}
    value = metadata.get(COUNTS_KEY)
    if value is None:
        return False
    table = pa.ipc.open_stream(base64.b64decode(value)).read_all()
    langs = table.column("lang").combine_chunks().dictionary_encode()
    codes = langs.indices.to_numpy(zero_copy_only=False)
    ids = table.column("entry_id").to_numpy()
    counts = table.column("count").to_numpy()
    parts = []
    for code, lang in enumerate(langs.dictionary.to_pylist()):
        if lang not in totals:
            raise ValueError(f"{path}: counts of an unknown language {lang!r}")
        mine = slice(None) if len(langs.dictionary) == 1 else codes == code
        lang_ids = ids[mine]
        if len(lang_ids) and (lang_ids.min() < 0 or lang_ids.max() >= len(totals[lang])):
            raise ValueError(f"{path}: entry ids outside [0, {len(totals[lang])}) for {lang!r}")
        parts.append((lang, lang_ids, counts[mine]))
    for lang, lang_ids, lang_counts in parts:  # all checked first: nothing half added
        totals[lang][lang_ids] += lang_counts  # each id once per language
    return True
