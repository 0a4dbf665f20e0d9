"""Stage ``read``: text shards (Parquet, JSONL, TSV/CSV, WebDataset tars) as bounded Arrow chunks.

A *shard* is one input file. `find_shards` turns a directory, glob, path or list of those into a
sorted, deterministic list of `Shard`; `read_shard` streams one shard as `ShardChunk` objects of
at most ``ReadOptions.batch_rows`` rows, each holding a pyarrow Table whose text column is
renamed ``text`` (and the key column, when there is one, ``key``), so memory stays bounded by the
chunk size whatever the size of the pool.

Bad input never crashes a run and never silently drops rows:

- a shard that cannot be read at all (missing text column, corrupt Parquet, truncated tar,
  broken compression) raises `ShardError` (a ValueError) naming the file; `read_shard_checked`
  and `iter_shard_checked` turn it into a `ShardReport` with ``error`` set, so a pipeline records
  the shard as skipped, with its reason, and goes on with the next one;
- a row that cannot be read (a JSONL line that is not a JSON object or whose strings hold a
  lone surrogate such as ``"\\ud800"``, a TSV/CSV row with the wrong number of fields, a
  WebDataset sample without a caption) is skipped and counted in
  ``ShardChunk.skipped`` by reason, with its 1-based line number in ``invalid_lines`` where the
  format has lines;
- a null or non-string text is kept as a null ``text`` (the matcher matches nothing for it) and
  counted in ``null_texts``.

Row identity: ``ShardChunk.first_row + i`` is the row's position among the rows the reader keeps
in its shard (skipped rows take no position), which is stable across reruns and batch sizes.

Backends: this module reads with pyarrow on both backends; `to_backend` hands a chunk's table to
cuDF (``cudf.DataFrame.from_arrow``) for ``backend="gpu"``. cuDF's own readers (``read_parquet``
straight to device memory, ``read_json(lines=True)``, ``read_csv``) are a later optimisation:
they would skip the host copy but need the same skip-and-count handling of bad rows, which
pyarrow's block parser plus the per-line fallback here already provide.
"""

from metaclip_gpu.pipeline.read.readers import (
    columns_chunk,
    has_schema,
    iter_shard_checked,
    read_shard,
    read_shard_checked,
    read_table,
)
from metaclip_gpu.pipeline.read.shards import (
    FORMATS,
    KEY_CANDIDATES,
    TEXT_CANDIDATES,
    TSV_DEFAULT_COLUMNS,
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    ShardReport,
    find_shards,
    shard_format,
    to_backend,
)

__all__ = [
    "FORMATS",
    "KEY_CANDIDATES",
    "TEXT_CANDIDATES",
    "TSV_DEFAULT_COLUMNS",
    "ReadOptions",
    "Shard",
    "ShardChunk",
    "ShardError",
    "ShardReport",
    "columns_chunk",
    "find_shards",
    "has_schema",
    "iter_shard_checked",
    "read_shard",
    "read_shard_checked",
    "read_table",
    "shard_format",
    "to_backend",
]
