"""The balance stage's fused kernels (kernels/draws.cuh) for one chunk: which texts are sure
at the smallest t, and the masks and chances of the others, in two launches instead of a
dozen NumPy / CuPy passes over the pairs with their temporaries.

`draw_chunk` launches them on the host build (the CPU extension, on the calling thread: the
balance stage already runs shards on threads, and cffi releases the GIL) for NumPy inputs, or
through the GPU backend's one RawModule for CuPy inputs. Its results are those of the
reference formulas in `draws` (`_Undecided`, `_text_chances`), bit for bit on the host (the
same integer draws, IEEE division and the C library's log1p / expm1 that NumPy calls) and for
the masks on the GPU; the GPU's chances may differ from the host's in the last bit (libdevice),
which the kept set never depends on (SPEC 4). Inputs the kernels do not take (counts not
uint64, entry ids not int32) give None: the caller keeps the reference path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from metaclip_gpu.pipeline.draws import U64_MASK, _as_u64

TEXT_UNMATCHED, TEXT_SURE, TEXT_UNDECIDED, TEXT_BAD_ID = 0, 1, 2, 3  # draws.cuh's MC_TEXT_*
DRAW_MAX_TS = 8  # draws.cuh's MC_DRAW_MAX_TS: thresholds one mc_draw_undecided launch takes


@dataclass(frozen=True)
class ChunkDraws:
    """One chunk's draws: `sure` (bool ``[n_texts]``, kept at every t whatever the draws), the
    undecided texts `rows` (int64 ``[m]``, ascending) with, per t in the order given, `kept`
    (bool ``[n_ts, m]``) and `chances` (float64 ``[n_ts, m]``, ``1 - prod(1 - p)``)."""

    sure: Any
    rows: Any
    kept: Any
    chances: Any


def draw_chunk(
    xp: Any,
    offsets: Any,
    entry_ids: Any,
    counts: Any,
    ts: list[float],
    text_keys: Any,
    seed: int,
) -> ChunkDraws | None:
    """The kernels' `ChunkDraws` of a checked CSR (int64 `offsets`, `entry_ids`) for `ts`
    (non-empty, each checked), or None when the inputs' types are not the kernels' (counts
    uint64, entry ids int32). `text_keys`: every text's key, or a function of the undecided
    texts' indices giving theirs (called once, only when there are some).

    Raises ValueError naming the first text with an entry id outside ``[0, len(counts))``.
    """
    if counts.dtype != np.uint64 or counts.ndim != 1 or entry_ids.dtype != np.int32:
        return None
    launcher = _GPULauncher() if xp is not np else _CPULauncher()
    offsets = xp.ascontiguousarray(offsets)
    entry_ids = xp.ascontiguousarray(entry_ids)
    counts = xp.ascontiguousarray(counts)
    states = launcher.sure_texts(offsets, entry_ids, counts, min(ts))
    bad = xp.flatnonzero(states == TEXT_BAD_ID)
    if len(bad):
        _raise_bad_id(xp, offsets, entry_ids, len(counts), int(bad[0]))
    sure = states == TEXT_SURE
    rows = xp.flatnonzero(states == TEXT_UNDECIDED)
    n_ts, m = len(ts), len(rows)
    kept = xp.zeros((n_ts, m), dtype=xp.uint8)
    chances = xp.zeros((n_ts, m), dtype=xp.float64)
    if m:
        keys = text_keys(rows) if callable(text_keys) else xp.asarray(text_keys)[rows]
        keys = xp.ascontiguousarray(_as_u64(xp, keys, "text_keys"))
        if keys.shape != (m,):
            raise ValueError(f"text_keys gave shape {keys.shape} for {m} texts")
        for start in range(0, n_ts, DRAW_MAX_TS):
            group = slice(start, start + DRAW_MAX_TS)
            launcher.draw_undecided(
                (offsets, entry_ids, counts, rows, keys),
                int(seed) & U64_MASK,
                ts[group],
                kept[group],
                chances[group],
            )
    return ChunkDraws(sure, rows, kept.view(np.bool_), chances)


def _raise_bad_id(xp: Any, offsets: Any, entry_ids: Any, n_entries: int, text: int) -> None:
    ids = entry_ids[int(offsets[text]) : int(offsets[text + 1])]
    wrong = ids[(ids < 0) | (ids >= n_entries)]
    raise ValueError(
        f"text {text} of the chunk has entry id {int(wrong[0])}, outside the {n_entries} "
        "entries of the counts (a match file from another metadata?)"
    )


class _CPULauncher:
    """The CPU extension's launches, on the calling thread."""

    def __init__(self) -> None:
        from metaclip_gpu.engine._native import ffi, lib

        self.ffi, self.lib = ffi, lib

    def _ptr(self, c_type: str, array: np.ndarray) -> Any:
        return self.ffi.from_buffer(f"{c_type}[]", array)

    def sure_texts(self, offsets: Any, entry_ids: Any, counts: Any, t_min: float) -> Any:
        n_texts = len(offsets) - 1
        states = np.empty(n_texts, dtype=np.uint8)
        if n_texts:
            self.lib.mc_cpu_sure_texts(
                self._ptr("int64_t", offsets),
                self._ptr("int32_t", entry_ids),
                self._ptr("uint64_t", counts),
                len(counts),
                t_min,
                n_texts,
                self._ptr("uint8_t", states),
                1,
            )
        return states

    def draw_undecided(
        self, csr: tuple[Any, ...], seed: int, ts: list[float], kept: Any, chances: Any
    ) -> None:
        offsets, entry_ids, counts, rows, keys = csr
        ts_array = np.asarray(ts, dtype=np.float64)
        self.lib.mc_cpu_draw_undecided(
            self._ptr("int64_t", offsets),
            self._ptr("int32_t", entry_ids),
            self._ptr("uint64_t", counts),
            self._ptr("int64_t", rows),
            self._ptr("uint64_t", keys),
            len(rows),
            seed,
            self._ptr("double", ts_array),
            len(ts),
            self._ptr("uint8_t", kept),
            self._ptr("double", chances),
            1,
        )


class _GPULauncher:
    """Launches through the GPU backend's RawModule (imported only for CuPy inputs)."""

    def __init__(self) -> None:
        from metaclip_gpu.engine.backends import gpu

        self.gpu = gpu

    def sure_texts(self, offsets: Any, entry_ids: Any, counts: Any, t_min: float) -> Any:
        import cupy

        n_texts = len(offsets) - 1
        states = cupy.empty(n_texts, dtype=np.uint8)
        self.gpu.launch(
            "mc_sure_texts",
            n_texts,
            (offsets, entry_ids, counts, np.int64(len(counts)), np.float64(t_min),
             np.int64(n_texts), states),
        )  # fmt: skip
        return states

    def draw_undecided(
        self, csr: tuple[Any, ...], seed: int, ts: list[float], kept: Any, chances: Any
    ) -> None:
        import cupy

        offsets, entry_ids, counts, rows, keys = csr
        self.gpu.launch(
            "mc_draw_undecided",
            len(rows),
            (offsets, entry_ids, counts, rows, keys, np.int64(len(rows)), np.uint64(seed),
             cupy.asarray(np.asarray(ts, dtype=np.float64)), np.int32(len(ts)), kept, chances),
        )  # fmt: skip
