"""The GPU n-gram counter reads texts as the CPU counter does (issue 10, point 5).

`count_texts_gpu` handed raw binary columns (texts that are not valid UTF-8) to
``cudf.Series.from_arrow``, which makes an object-dtype column of bytes; the CPU counter
decodes them with U+FFFD first. `gpu_ngrams.device_input` is what goes to cuDF now.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from metaclip_gpu.metadata_builder.gpu_ngrams import device_input
from metaclip_gpu.metadata_builder.ngrams import count_texts

RAW = [b"caf\xe9 au lait", None, b"ok text", b"\xff\xfe dog", "naïve".encode()]


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_binary_texts_reach_cudf_as_strings_decoded_like_the_cpu(kind: pa.DataType) -> None:
    texts = pa.array(RAW, type=kind)
    given = device_input(texts)
    assert pa.types.is_string(given.type) or pa.types.is_large_string(given.type)
    expected = [None if v is None else v.decode("utf-8", "replace") for v in RAW]
    assert given.to_pylist() == expected
    assert "caf\ufffd" in given.to_pylist()[0]


def test_string_texts_pass_unchanged() -> None:
    texts = pa.chunked_array([pa.array(["a dog", None]), pa.array(["x"])])
    assert device_input(texts) is texts


@pytest.mark.gpu
def test_gpu_counts_of_invalid_utf8_equal_the_cpu_counts() -> None:
    from metaclip_gpu.metadata_builder.gpu_ngrams import count_texts_gpu

    texts = pa.array(RAW * 3, type=pa.binary())
    gpu, cpu = count_texts_gpu(texts), count_texts(texts)
    assert gpu.unigram_dict() == cpu.unigram_dict()
    assert gpu.bigram_dict() == cpu.bigram_dict()
    assert gpu.texts == cpu.texts
