"""Per-shard entry counts made by the match task, so the count stage need not read match files.

The match task has every row's entry ids in memory; it adds them up per language (``""`` in a
run with one index) while it writes the shard's match file (`ShardCounts`), and

- stores the sums in that file's Parquet footer (`ShardCounts.footer`), so they share the match
  file's crash safety and checksum: they are written, renamed and recorded with it, and a
  damaged file is redone whole. The count stage reads only the footer (`add_footer_counts`) of a
  shard matched by an earlier run, and the standalone ``count`` command reads every footer;
- hands them to the count stage in memory (`RunCounts`, from a thread or a dask task's
  result): ``curate`` sums arrays, as the reference's count step does, for each shard whose
  record names exactly the file (output and checksum) the counts were made with.

Footer format (key `COUNTS_KEY`, ``metaclip_gpu.entry_counts.v2``): an Arrow IPC stream in
base64 (key-value metadata is a Thrift string, which Parquet readers other than Arrow's decode
as UTF-8) of a sparse table ``lang`` dictionary<int16, string>, ``entry_id`` int32 (ascending
per language), ``count`` uint32 (uint64 when a shard's count does not fit), rows with a count >
0 only: 10 bytes an entry instead of the first format's 16 plus a string per row. The first
format (`OLD_COUNTS_KEY`: ``lang`` string, ``count`` uint64) is still read, and a match file
without either key (an older run's) is counted from its ``entry_ids`` instead
(`count.count_matches`), so an old run directory still counts exactly. A file written with the
v2 key only has no v1 key: an older version of the package counts it from its ``entry_ids``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.storage import Location

COUNTS_KEY = b"metaclip_gpu.entry_counts.v2"
OLD_COUNTS_KEY = b"metaclip_gpu.entry_counts"  # lang string, entry_id int32, count uint64
LANG_TYPE = pa.dictionary(pa.int16(), pa.string())
_UINT32_MAX = np.iinfo(np.uint32).max


class ShardCounts:
    """Texts per entry, per language, over the chunks of one shard (`add`): an int64 array per
    language, as long as the largest id seen. Pickled sparse (a dask task's result)."""

    def __init__(self) -> None:
        self.parts: dict[str, np.ndarray] = {}

    def _add_counts(self, lang: str, found: np.ndarray) -> None:
        known = self.parts.get(lang)
        if known is None:
            self.parts[lang] = found
            return
        if len(known) < len(found):
            known, found = found, known
        known[: len(found)] += found
        self.parts[lang] = known

    def _add(self, lang: str, ids: np.ndarray) -> None:
        if len(ids):
            self._add_counts(lang, np.bincount(ids))  # int64; int32 ids are cast inside

    def add(self, table: pa.Table) -> None:
        """Adds one match chunk: its ``entry_ids`` lists, per ``lang`` when it has one."""
        lists = table.column("entry_ids").combine_chunks()
        ids = lists.values.to_numpy(zero_copy_only=False)  # no copy when all rows are listed
        if lists.null_count or len(ids) != lists.offsets[-1].as_py() - lists.offsets[0].as_py():
            ids = pc.list_flatten(lists).to_numpy(zero_copy_only=False)  # sliced, or nulls
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

    def merge(self, other: ShardCounts) -> None:
        """Adds `other`'s counts to these (a copy of each array: `other` is left as it is)."""
        for lang, found in other.parts.items():
            self._add_counts(lang, found.copy())

    def sparse(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per language (sorted), the entry ids with a count > 0 (int32, ascending) and their
        counts (int64)."""
        out = {}
        for lang in sorted(self.parts):
            nonzero = np.flatnonzero(self.parts[lang])
            out[lang] = (nonzero.astype(np.int32), self.parts[lang][nonzero])
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"sparse": self.sparse()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.parts = {}
        for lang, (ids, counts) in state["sparse"].items():
            dense = np.zeros(int(ids[-1]) + 1 if len(ids) else 0, dtype=np.int64)
            dense[ids] = counts
            self.parts[lang] = dense

    def to_table(self) -> pa.Table:
        """The footer's table (module doc): ``lang``, ``entry_id``, ``count``."""
        sparse = self.sparse()
        names = list(sparse)
        ids = [i for i, _ in sparse.values()]
        counts = np.concatenate([c for _, c in sparse.values()] or [np.zeros(0, np.int64)])
        codes = np.repeat(np.arange(len(names), dtype=np.int16), [len(i) for i in ids])
        fits = not len(counts) or int(counts.max()) <= _UINT32_MAX
        return pa.table(
            {
                "lang": pa.DictionaryArray.from_arrays(codes, pa.array(names, pa.string())),
                "entry_id": pa.array(np.concatenate(ids or [np.zeros(0, np.int32)])),
                "count": pa.array(counts.astype(np.uint32 if fits else np.uint64)),
            }
        )

    def footer(self) -> dict[bytes, bytes]:
        """The key-value metadata to add to the match file's footer."""
        table = self.to_table()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return {COUNTS_KEY: base64.b64encode(sink.getvalue())}


@dataclass
class RunCounts:
    """The counts the match tasks of one run handed over in memory (`add`), summed, and the
    file each shard's came from: the count stage uses the sum only while the records it
    counts name exactly those files (`covered_by`); otherwise it reads the footers."""

    totals: ShardCounts = field(default_factory=ShardCounts)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # shard: (output, checksum)
    broken: bool = False  # a shard added twice, or without its counts: use the footers

    def add(self, record: Any, counts: ShardCounts | None) -> None:
        """Adds a finished shard's counts; `record` is its `manifest.ShardRecord`, appended."""
        if record.output is None:  # unreadable: no output, nothing to count
            return
        if counts is None or record.shard in self.files or not record.checksum:
            self.broken = True
            return
        self.totals.merge(counts)
        self.files[record.shard] = (record.output, record.checksum)

    def covered_by(self, records: dict[str, Any]) -> bool:
        """Whether every shard summed here is in `records` (name: `ShardRecord`, the ones being
        counted) with the very output and checksum its counts were made with."""
        if self.broken:
            return False
        for shard, (output, checksum) in self.files.items():
            record = records.get(shard)
            if record is None or (record.output, record.checksum) != (output, checksum):
                return False
        return True

    def start_totals(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """uint64 counts per language of `sizes` (its entries), starting from the sum here;
        ValueError for a language not in `sizes` or an id past its entries."""
        totals = {lang: np.zeros(n, dtype=np.uint64) for lang, n in sizes.items()}
        for lang, found in self.totals.parts.items():
            if lang not in totals:
                raise ValueError(f"match counts of an unknown language {lang!r}")
            if len(found) > len(totals[lang]):
                raise ValueError(f"match counts of entry ids past {len(totals[lang])} ({lang!r})")
            totals[lang][: len(found)] = found
        return totals


def _footer_table(path: Location) -> pa.Table | None:
    metadata = storage.parquet_file(path).metadata.metadata or {}
    for key in (COUNTS_KEY, OLD_COUNTS_KEY):
        value = metadata.get(key)
        if value is not None:
            return pa.ipc.open_stream(base64.b64decode(value)).read_all()
    return None


def add_footer_counts(path: Location, totals: dict[str, np.ndarray]) -> bool:
    """Adds the counts in match file `path`'s footer to `totals` (uint64 counts per language,
    in place); False, adding nothing, when it has none (an older run's file). ValueError naming
    the file for a language not in `totals` or an entry id outside its counts."""
    table = _footer_table(path)
    if table is None:
        return False
    langs = table.column("lang").combine_chunks()
    if not pa.types.is_dictionary(langs.type):  # the first format: a string a row
        langs = langs.dictionary_encode()
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
        totals[lang][lang_ids] += lang_counts.astype(np.uint64, copy=False)  # each id once
    return True
