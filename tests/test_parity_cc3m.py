"""All 15,833 CC3M validation texts against the 500k metadata: CPU matcher == FastOracle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index_500k(metadata_500k: list[str]) -> MetadataIndex:
    return MetadataIndex.from_entries(metadata_500k, cache=False)


@pytest.fixture(scope="module")
def expected_cc3m(cc3m_texts: list[str], oracle_500k: FastOracle) -> list[list[int]]:
    return oracle_500k.match_many(cc3m_texts)


def first_mismatch(texts: list[str], expected: list[list[int]], got: list[list[int]]) -> str | None:
    for position, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
            return (
                f"first mismatch at text {position}: {texts[position]!r}\n"
                f"  oracle : {want}\n  matcher: {have}\n"
                f"  missing: {missing}, extra: {extra}"
            )
    return None


def test_cc3m_matches_oracle(
    cc3m_texts: list[str], index_500k: MetadataIndex, expected_cc3m: list[list[int]]
) -> None:
    assert len(cc3m_texts) == 15_833
    result = match(cc3m_texts, index_500k, backend="cpu")
    assert len(result) == len(cc3m_texts)
    got = result.to_lists()
    mismatch = first_mismatch(cc3m_texts, expected_cc3m, got)
    assert mismatch is None, mismatch
    # Sanity: the data set's documented density (about 9.6 distinct entries a text).
    assert 9.0 < sum(map(len, expected_cc3m)) / len(expected_cc3m) < 10.5


def test_cc3m_matches_oracle_from_arrow(
    cc3m_texts: list[str], index_500k: MetadataIndex, expected_cc3m: list[list[int]]
) -> None:
    array = pa.chunked_array([cc3m_texts[:5000], cc3m_texts[5000:]], type=pa.large_string())
    got = match(array, index_500k, backend="cpu").to_lists()
    mismatch = first_mismatch(cc3m_texts, expected_cc3m, got)
    assert mismatch is None, mismatch


def test_cc3m_thread_counts_agree(cc3m_texts: list[str], index_500k: MetadataIndex) -> None:
    one = match(cc3m_texts, index_500k, backend="cpu", threads=1)
    two = match(cc3m_texts, index_500k, backend="cpu", threads=2)
    np.testing.assert_array_equal(np.asarray(one.offsets), np.asarray(two.offsets))
    np.testing.assert_array_equal(np.asarray(one.entry_ids), np.asarray(two.entry_ids))
    default = match(cc3m_texts, index_500k, backend="cpu")
    np.testing.assert_array_equal(np.asarray(one.offsets), np.asarray(default.offsets))
    np.testing.assert_array_equal(np.asarray(one.entry_ids), np.asarray(default.entry_ids))
