"""`shard_match.read_ahead`: the next chunk read by a thread, in order, errors passed on."""

from __future__ import annotations

import threading

import pytest

from metaclip_gpu.pipeline.shard_match import read_ahead


def test_read_ahead_yields_every_item_in_order_from_another_thread() -> None:
    readers: set[int] = set()

    def chunks():
        for i in range(50):
            readers.add(threading.get_ident())
            yield i

    assert list(read_ahead(chunks())) == list(range(50))
    assert readers and threading.get_ident() not in readers


def test_read_ahead_passes_a_read_error_on_after_the_chunks_before_it() -> None:
    def chunks():
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(chunks()):
            seen.append(item)
    assert seen == [1, 2]


def test_read_ahead_stops_reading_when_the_caller_stops() -> None:
    read = []

    def chunks():
        for i in range(100):
            read.append(i)
            yield i

    ahead = read_ahead(chunks())
    for item in ahead:
        if item == 3:
            break
    ahead.close()
    assert read == [0, 1, 2, 3, 4]  # one chunk ahead, no more
