"""Text keys for the counter-based balancing draws (SPEC section 4).

`balance.uniform_draws` draws ``u(seed, key, entry)`` from a uint64 *text key*; this module
defines that key for every row of a shard, so the curated set does not depend on how the pool
is split, chunked or distributed.

The key, exactly (all arithmetic modulo ``2**64``; ``XXH64(b, s)`` is xxHash's 64-bit hash of
the bytes ``b`` with seed ``s``, as the ``xxhash`` package's ``xxh64_intdigest`` computes it):

1. The row has a non-null value ``v`` in the shard's key column (``url``, ``key``, ``id``, ...;
   `read.ReadOptions.key_column`):

   - integer column (any width, signed or not): ``key = v`` as uint64, a negative value as its
     two's complement (an int64 reinterpreted);
   - string or binary column (any offset width, views, dictionaries): ``key = XXH64(bytes, 0)``
     where ``bytes`` are the value's UTF-8 bytes (a binary value's own bytes);
   - any other type (floats, timestamps, booleans, ...): the value is first cast to an Arrow
     string (``pyarrow.compute.cast``), then hashed as a string.

2. Otherwise (no key column, or a null key in this row), the *position fallback*::

       key = XXH64(text bytes, 0) ^ splitmix64(row)

   with ``text bytes`` the UTF-8 bytes of the text (a null text hashes as ``b""``; it matches
   nothing, so its key is never used), ``row`` the row's position in its shard
   (`read.ShardChunk.first_row` ``+ i``, the ``row`` column of the match files) and
   ``splitmix64`` the finalizer of `draws.splitmix64` (``z = row + 0x9E3779B97F4A7C15;
   z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB;
   z ^ z >> 31``). The position is mixed in so two identical captions (common: "image",
   "photo") get independent draws.

   **The fallback is stable only for the same sharding**: it is identical across reruns,
   read batch sizes, worker counts and backends, but splitting the pool differently changes
   the rows, hence the keys and the curated set. Keep a stable id or url column (img2dataset
   and MetaCLIP pools have ``url``/``key``) to get a curated set that is also independent of
   the split.

The key of a value does not depend on its column's name, only on its type: an integer key
``5`` and a string key ``"5"`` differ, so keep the key column's type the same in every shard.

GPU (for later): libcudf's ``XXHash_64<string_view>`` hashes a string's UTF-8 bytes
(``key.data()``, ``key.size_bytes()``) with cuco's ``xxhash_64`` and the given seed
(``DEFAULT_HASH_SEED`` is 0), i.e. ``XXH64(bytes, seed)`` as here (source read:
``cpp/include/cudf/hashing/detail/xxhash_64.cuh``). Whether ``Series.hash_values(
method="xxhash64", seed=0)`` returns that element hash unchanged depends on the cuDF version:
older ``cpp/src/hashing/xxhash64.cu`` used a row hasher that chains the seed through the
columns (one column: the element hash itself; a null row: ``UINT64_MAX``), while newer ones use
the generic ``row::hash::row_hasher``, which folds each element hash into the seed with
``hash_combine(seed, h) = seed ^ (h + 0x9E3779B97F4A7C15 + (seed << 6) + (seed >> 2))``
(so ``h + 0x9E3779B97F4A7C15`` for seed 0, if the 64-bit accumulation is kept). The ``gpu``
test ``tests/test_keys.py::test_cudf_xxhash64_equals_xxhash`` pins which one the installed
cuDF gives; a GPU key path must then subtract that constant where needed. Null rows must be
masked either way (they take the fallback here).

Speed: a string/binary column is hashed straight from its Arrow buffers by the CPU extension
(``engine/_native/key_hash.cpp``: xxHash's own ``XXH64``, from the copy pyarrow ships), only
at the rows the balance stage needs (``select``): 100,000 cc3m urls (110 bytes on average) in
4.9 ms of CPU on the development machine (min of 5), against 37 ms for a ``bytes`` object per
value (Arrow's NumPy conversion) through the ``xxhash`` package's ``xxh64_intdigest``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu.engine._native import ffi, lib
from metaclip_gpu.pipeline.draws import splitmix64

XXH64_SEED = 0


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _byte_column(values: pa.Array) -> pa.Array:
    """`values` as a (large_)binary array with the same bytes (strings: their UTF-8)."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _byte_column(values.cast(kind.value_type))
    if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
        return values.cast(pa.large_binary())
    if pa.types.is_binary_view(kind) or pa.types.is_large_binary(kind):
        return values.cast(pa.large_binary())
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return values.cast(pa.binary())
    if pa.types.is_null(kind):
        return pa.array([b""] * len(values), pa.binary())
    return _byte_column(pc.cast(values, pa.string()))


def xxh64_bytes(values: pa.Array | pa.ChunkedArray, rows: Any = None) -> np.ndarray:
    """``XXH64(bytes, 0)`` of each value of a string/binary column: uint64 ``[len(values)]``,
    or of the values at the indices `rows` only (uint64 ``[len(rows)]``).

    Strings hash their UTF-8 bytes, binary values their bytes, other types the bytes of their
    Arrow string cast. A null hashes as ``b""`` (callers mask nulls themselves).
    """
    array = _byte_column(_as_array(values))
    if array.null_count:  # a null's slot may be non-empty in principle: hash it as b""
        array = array.fill_null(pa.scalar(b"", array.type))
    if rows is not None:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(array)):
            raise IndexError(f"rows out of range for {len(array)} values")
    n = len(array) if rows is None else len(rows)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    wide = pa.types.is_large_binary(array.type)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if wide else np.int32)
    offsets = offsets[array.offset : array.offset + len(array) + 1]  # this slice's own
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(1, np.uint8)
    lib.mc_xxh64_binary(
        ffi.from_buffer("uint8_t[]", data),
        ffi.from_buffer(offsets),
        int(wide),
        ffi.NULL if rows is None else ffi.from_buffer("int64_t[]", rows),
        n,
        XXH64_SEED,
        ffi.from_buffer("uint64_t[]", out, require_writable=True),
    )
    return out


def _valid_mask(values: pa.Array) -> np.ndarray:
    if pa.types.is_null(values.type):
        return np.zeros(len(values), dtype=bool)
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return np.asarray(values.is_valid())


def key_column_keys(
    key: pa.Array | pa.ChunkedArray, rows: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """The keys given by a key column: (uint64 keys, bool valid); rule 1 of the module doc.
    Of every value, or of the values at the indices `rows` only.

    Where ``valid`` is False (a null key) the key is 0 and the caller uses the fallback.
    """
    array = _as_array(key)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    valid = _valid_mask(array)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        valid = valid[rows]
    if pa.types.is_integer(array.type):
        kind = np.uint64 if pa.types.is_unsigned_integer(array.type) else np.int64
        values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(kind, copy=False)
        if rows is not None:
            values = values[rows]
        keys = values.view(np.uint64) if kind is np.int64 else values
        return np.where(valid, keys, np.uint64(0)).astype(np.uint64), valid
    keys = xxh64_bytes(array, rows)
    return np.where(valid, keys, np.uint64(0)).astype(np.uint64), valid


def fallback_keys(text: pa.Array | pa.ChunkedArray, rows: Any, select: Any = None) -> np.ndarray:
    """``XXH64(text bytes, 0) ^ splitmix64(row)`` per row (rule 2 of the module doc): of every
    text, or of the texts at the indices `select` only (`rows` then gives their positions)."""
    hashes = xxh64_bytes(text, select)
    rows = np.asarray(rows)
    if rows.shape != hashes.shape:
        raise ValueError(f"{len(hashes)} texts but rows has shape {rows.shape}")
    if rows.dtype.kind == "i":
        rows = rows.astype(np.int64, copy=False).view(np.uint64)
    return hashes ^ splitmix64(rows.astype(np.uint64, copy=False))


def text_keys(
    table: pa.Table,
    first_row: int = 0,
    *,
    rows: Any = None,
    select: Any = None,
    text_column: str = "text",
    key_column: str | None = "key",
) -> np.ndarray:
    """The uint64 text key of every row of `table` (module docstring), or of the rows at the
    indices `select` only (no copy of the table: only those values are hashed).

    `table` has the text column `text_column` (default ``text``, as in a `read.ShardChunk`)
    and, when the shard has one, the key column `key_column` (default ``key``; ignored when
    absent or None). `rows`: each (selected) row's position in its shard (e.g. a match file's
    ``row`` column); default ``first_row`` plus its index in `table`. Rows with a non-null key
    use it; the others use the position fallback.
    """
    if select is not None:
        select = np.asarray(select, dtype=np.int64)
    n = table.num_rows if select is None else len(select)
    if rows is None:
        index = np.arange(table.num_rows, dtype=np.int64) if select is None else select
        rows = first_row + index
    has_key = key_column is not None and key_column in table.column_names
    if has_key:
        keys, valid = key_column_keys(table.column(key_column), select)
        if valid.all():
            return keys
    else:
        valid = np.zeros(n, dtype=bool)
        keys = np.zeros(n, dtype=np.uint64)
    missing = np.flatnonzero(~valid)
    text = _as_array(table.column(text_column))
    rows = np.asarray(rows)
    if len(missing) == n:
        return fallback_keys(text, rows, select)
    keys = keys.copy()
    where = missing if select is None else select[missing]
    keys[missing] = fallback_keys(text, rows[missing], where)
    return keys
