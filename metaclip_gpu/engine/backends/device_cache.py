"""What a GPU worker keeps as long as its process lives: each index, uploaded once.

Matching runs chunk by chunk (a 1M-row read chunk, then device batches) and shard by shard;
the index (~19-29 MB for 500k entries) must not travel to the device again for each of them,
nor the signature check (a launch and a sync) run again. `IndexCache` keys an upload by the
index's metadata digest (with its padding, signature and size; an index built from a list
without a digest is keyed by the object itself) and by device, and keeps the most recently
used uploads up to a byte budget (a worldwide run holds one small index per language).

Pure Python: the GPU backend gives it the `upload` function (which checks the signature and
copies the arrays); the tests give it a counting one.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from metaclip_gpu.engine.index import MetadataIndex

Uploaded = TypeVar("Uploaded")

DEFAULT_MAX_BYTES = 8 << 30  # of index arrays kept on one device before the LRU one goes


def index_key(index: MetadataIndex) -> Hashable:
    """What identifies an index's arrays: its metadata digest, padding, kernel signature and
    size (a digest-built index is a pure function of those), else the object's identity."""
    stats = index.stats
    if stats.digest:
        return ("digest", stats.digest, stats.padding, stats.signature, len(index), index.nbytes)
    return ("object", id(index))


class IndexCache(Generic[Uploaded]):
    """Uploads of indexes by (device, `index_key`), least recently used dropped past
    `max_bytes`. Thread-safe: a worker's threads share one upload."""

    def __init__(
        self, upload: Callable[[MetadataIndex], Uploaded], *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._upload = upload
        self._max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int, Uploaded]] = OrderedDict()
        self._lock = threading.Lock()
        self.uploads = 0  # how many times `upload` ran (the tests count it)

    def get(self, index: MetadataIndex, device: int = 0) -> Uploaded:
        key = (device, index_key(index))
        with self._lock:
            found = self._entries.get(key)
            if found is not None and (found[0] is None or found[0]() is index):
                self._entries.move_to_end(key)
                return found[2]
            uploaded = self._upload(index)
            self.uploads += 1
            ref = None if key[1][0] == "digest" else weakref.ref(index)
            self._entries[key] = (ref, index.nbytes, uploaded)
            self._entries.move_to_end(key)
            self._evict(keep=key)
            return uploaded

    def _evict(self, keep: Hashable) -> None:
        total = sum(nbytes for _, nbytes, _ in self._entries.values())
        for key in list(self._entries):
            if total <= self._max_bytes:
                break
            if key == keep:
                continue
            total -= self._entries.pop(key)[1]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
