"""Text keys for the balancing draws (metaclip_gpu.pipeline.keys, SPEC 4)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from metaclip_gpu.pipeline.keys import fallback_keys, key_column_keys, text_keys, xxh64_bytes

M64 = (1 << 64) - 1


def py_splitmix64(x: int) -> int:
    """SplitMix64's finalizer in Python integers (independent of the NumPy version)."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_xxh64(data: bytes) -> int:
    hasher = xxhash.xxh64(seed=0)
    hasher.update(data)
    return hasher.intdigest()


def py_fallback(text: str | None, row: int) -> int:
    data = b"" if text is None else text.encode("utf-8")
    return py_xxh64(data) ^ py_splitmix64(row & M64)


STRINGS = ["http://a.example/1.jpg", "", "ünïcödé ✓ 猫", "x" * 1000, "caption\twith tab"]


def test_integer_keys_are_twos_complement() -> None:
    values = [-1, 0, 5, -(2**63), 2**63 - 1]
    keys, valid = key_column_keys(pa.array(values, pa.int64()))
    assert keys.dtype == np.uint64 and valid.all()
    assert keys.tolist() == [v & M64 for v in values]
    small, _ = key_column_keys(pa.array([-2, 7], pa.int32()))
    assert small.tolist() == [(-2) & M64, 7]
    big, _ = key_column_keys(pa.array([2**64 - 1, 3], pa.uint64()))
    assert big.tolist() == [2**64 - 1, 3]


@pytest.mark.parametrize(
    "kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), "dictionary"]
)
def test_string_keys_are_xxh64_of_utf8(kind) -> None:
    if kind == "dictionary":
        array = pa.array(STRINGS).dictionary_encode()
    elif kind in (pa.binary(), pa.large_binary()):
        array = pa.array([s.encode() for s in STRINGS], kind)
    else:
        array = pa.array(STRINGS, kind)
    keys, valid = key_column_keys(array)
    assert valid.all()
    assert keys.tolist() == [py_xxh64(s.encode("utf-8")) for s in STRINGS]


def test_string_keys_of_sliced_chunked_arrays() -> None:
    chunked = pa.chunked_array([STRINGS[:2], STRINGS[2:]]).slice(1, 3)
    assert xxh64_bytes(chunked).tolist() == [py_xxh64(s.encode()) for s in STRINGS[1:4]]
    sliced = pa.array(STRINGS).slice(2)
    assert xxh64_bytes(sliced).tolist() == [py_xxh64(s.encode()) for s in STRINGS[2:]]


def test_other_key_types_hash_their_string_cast() -> None:
    keys, valid = key_column_keys(pa.array([1.5, None]))
    assert valid.tolist() == [True, False]
    assert keys[0] == py_xxh64(b"1.5")


def test_null_key_falls_back_to_text_and_row() -> None:
    table = pa.table({"text": ["a cat", "a dog", None, "a dog"], "key": ["u1", None, None, "u4"]})
    keys = text_keys(table, first_row=10)
    assert keys.tolist() == [
        py_xxh64(b"u1"),
        py_fallback("a dog", 11),
        py_fallback(None, 12),
        py_xxh64(b"u4"),
    ]


def test_no_key_column_uses_the_position_fallback() -> None:
    texts = ["a cat", "a cat", "", "ünï"]
    table = pa.table({"text": texts})
    keys = text_keys(table, first_row=5)
    assert keys.tolist() == [py_fallback(t, 5 + i) for i, t in enumerate(texts)]
    assert keys[0] != keys[1]  # the same caption at two rows gets two keys
    rows = np.array([7, 3, 0, 1], dtype=np.int64)
    assert text_keys(table, rows=rows).tolist() == [
        py_fallback(t, int(r)) for t, r in zip(texts, rows, strict=True)
    ]
    assert fallback_keys(pa.array(texts), np.arange(4)).tolist() == [
        py_fallback(t, i) for i, t in enumerate(texts)
    ]


def test_all_null_key_column_and_chunking_invariance() -> None:
    texts = [f"text {i % 7}" for i in range(50)]
    table = pa.table({"text": texts, "key": pa.nulls(50)})
    whole = text_keys(table)
    parts = np.concatenate([text_keys(table.slice(i, 9), first_row=i) for i in range(0, 50, 9)])
    assert np.array_equal(whole, parts)
    assert whole.tolist() == [py_fallback(t, i) for i, t in enumerate(texts)]


def test_key_column_beats_text_and_row() -> None:
    a = pa.table({"text": ["one"], "key": ["k"]})
    b = pa.table({"text": ["two"], "key": ["k"]})
    assert text_keys(a, 0)[0] == text_keys(b, 99)[0] == py_xxh64(b"k")


@pytest.mark.gpu
def test_cudf_xxhash64_equals_xxhash() -> None:
    """cuDF's xxhash64 of a string column is XXH64 of the UTF-8 bytes with seed 0 (keys.py)."""
    cudf = pytest.importorskip("cudf")
    values = ["http://a.example/1.jpg", "ünïcödé ✓ 猫", "", "x" * 100]
    got = cudf.Series(values).hash_values(method="xxhash64", seed=0).to_arrow().to_pylist()
    want = [py_xxh64(v.encode("utf-8")) for v in values]
    shifted = [(w + 0x9E3779B97F4A7C15) & M64 for w in want]
    assert [g & M64 for g in got] == want, "cuDF's hash_values differs from XXH64(bytes, 0)" + (
        " by hash_combine(0, h) = h + 0x9E3779B97F4A7C15" if got == shifted else ""
    )


def test_xxh64_bytes_of_a_null_with_bytes_in_its_slot() -> None:
    """A null hashes as ``b""`` even when its slot of the data buffer holds bytes (Arrow allows
    it), over every value and at chosen rows."""
    from metaclip_gpu.pipeline import keys

    data = pa.py_buffer(b"abcdef")
    offsets = pa.py_buffer(np.array([0, 2, 4, 6], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    values = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, data], null_count=1)
    assert values.to_pylist() == ["ab", None, "ef"]
    want = [xxhash.xxh64_intdigest(b) for b in (b"ab", b"", b"ef")]
    assert keys.xxh64_bytes(values).tolist() == want
    assert keys.xxh64_bytes(values, np.array([2, 1])).tolist() == [want[2], want[1]]


@pytest.mark.parametrize(
    "kind", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.string_view()]
)
def test_xxh64_bytes_equals_the_xxhash_package_on_every_layout(kind: pa.DataType) -> None:
    """The native hash (engine/_native/key_hash.cpp) gives `xxhash.xxh64_intdigest` of every
    value's bytes: random lengths 0-300 (XXH64's 32-byte stripes and every tail), non-ASCII
    text, sliced and chunked arrays (their buffers start past the first value), and at chosen
    rows in any order, repeats included."""
    from metaclip_gpu.pipeline import keys

    rng = np.random.default_rng(7)
    alphabet = "abcxyz0189 /:.?=é漢字🙂"
    texts = ["".join(rng.choice(list(alphabet), int(rng.integers(0, 300)))) for _ in range(400)]
    texts[5] = ""
    raw = [t.encode() for t in texts]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        array = pa.array(raw, kind)
    else:
        array = pa.array(texts, pa.string()).cast(kind)
    want = [xxhash.xxh64_intdigest(b) for b in raw]
    assert keys.xxh64_bytes(array).tolist() == want
    assert keys.xxh64_bytes(array.slice(37, 200)).tolist() == want[37:237]
    chunked = pa.chunked_array([array.slice(0, 100), array.slice(100)])
    assert keys.xxh64_bytes(chunked).tolist() == want
    rows = np.array([399, 0, 5, 5, 123, 250])
    assert keys.xxh64_bytes(array, rows).tolist() == [want[r] for r in rows]
    assert keys.xxh64_bytes(array.slice(100), rows[:1] - 100).tolist() == [want[399]]
    assert keys.xxh64_bytes(array, np.array([], np.int64)).tolist() == []
    with pytest.raises(IndexError):
        keys.xxh64_bytes(array, np.array([400]))


def test_text_keys_of_selected_rows_equal_those_of_the_whole_table() -> None:
    """`text_keys(select=...)` (what the balance stage asks for its undecided texts) gives the
    keys `text_keys` gives those rows of the whole table: key column, null keys (the position
    fallback, with the row's position in its shard) and no key column."""
    texts = [f"caption {i % 7}" for i in range(50)]
    urls = [None if i % 4 == 0 else f"http://x/{i}.jpg" for i in range(50)]
    table = pa.table({"text": texts, "key": urls})
    select = np.array([0, 3, 4, 17, 48, 49])
    whole = text_keys(table, 1000)
    assert text_keys(table, 1000, select=select).tolist() == whole[select].tolist()
    no_key = table.drop_columns(["key"])
    assert (
        text_keys(no_key, 1000, select=select).tolist() == text_keys(no_key, 1000)[select].tolist()
    )
    ints = pa.table({"text": texts, "key": pa.array([None if i % 3 else i for i in range(50)])})
    assert text_keys(ints, 5, select=select).tolist() == text_keys(ints, 5)[select].tolist()
