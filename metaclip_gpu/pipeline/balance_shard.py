"""One shard of the balance stage (MetaCLIP 1's policy: each text on its own): `balance_shard`
reads the shard and its match file in step (`aligned.iter_keyed_matches`), draws the kept rows
of every t in one pass (`chunk_draws.balance_chunk`: the draws ``u(seed, text key, entry)`` do
not depend on t; the expected kept sizes come from the same pass) and writes one curated file
per t (`write.curated_table`: the input's columns, plus ``entry_ids`` when `entry_ids` is
asked for; `write.write_parquet`).
`_shard_figures` reuses curated files that still have their recorded checksums.

Memory: the kept rows of ONE shard are gathered per ``t`` and written at the end of the shard
(the chunks of a JSONL shard may have different schemas, unified with
``pa.concat_tables(promote_options="permissive")``); nothing grows with the number of shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.pipeline.aligned import csr_of, iter_keyed_matches
from metaclip_gpu.pipeline.checksums import checksum_matches, remember
from metaclip_gpu.pipeline.chunk_draws import balance_chunk
from metaclip_gpu.pipeline.draws import expected_kept
from metaclip_gpu.pipeline.durable import commit, make_durable
from metaclip_gpu.pipeline.files import delay_hook
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
)
from metaclip_gpu.pipeline.write import (
    curated_table,
    empty_curated_table,
    write_parquet,
)
from metaclip_gpu.storage import Location, RemotePath


@dataclass
class ShardFigures:
    """One shard's balance figures: rows, matched rows and, per t, kept and expected."""

    shard: str
    texts: int = 0
    matched: int = 0
    kept: dict[float, int] = field(default_factory=dict)
    expected: dict[float, float] = field(default_factory=dict)
    reused: bool = False
    checksums: dict[float, str] = field(default_factory=dict)  # of the files written


def _file_stats(match_file: Path, counts: np.ndarray, ts: Sequence[float]) -> ShardFigures:
    """Texts, matched texts and expected kept per t of a match file (for a skipped shard)."""
    figures = ShardFigures("", expected=dict.fromkeys(ts, 0.0))
    parquet = storage.parquet_file(match_file)
    try:
        for batch in parquet.iter_batches(batch_size=1 << 20, columns=["entry_ids"]):
            offsets, ids = csr_of(batch.column(0))
            _add_stats(figures, offsets, ids, counts, ts)
    finally:
        parquet.close()
    return figures


def _add_stats(
    figures: ShardFigures, offsets: Any, ids: Any, counts: Any, ts: Sequence[float]
) -> None:
    figures.texts += len(offsets) - 1
    figures.matched += int((offsets[1:] > offsets[:-1]).sum())
    for t in ts:
        figures.expected[t] = figures.expected.get(t, 0.0) + expected_kept(offsets, ids, counts, t)


def _xp(backend: str) -> Any:
    if backend == "auto":
        from metaclip_gpu.engine.backends import gpu_available

        backend = "gpu" if gpu_available() else "cpu"
    if backend == "cpu":
        return np
    if backend == "gpu":
        import cupy

        return cupy
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'cpu' or 'gpu'")


def balance_shard(
    shard: Shard,
    match_file: Path,
    counts: Any,
    ts: Sequence[float],
    seed: int,
    outputs: dict[float, Path],
    *,
    options: ReadOptions,
    xp: Any = np,
    entry_ids: bool = False,
    template: pa.Table | None = None,
) -> ShardFigures:
    """Balances one shard for every t and writes its curated file per t (`outputs[t]`): the
    kept rows' input columns, and with `entry_ids` their ids too (a shard with no rows:
    `write.empty_curated_table`, `template` the columns of another shard)."""
    figures = ShardFigures(shard.name, expected=dict.fromkeys(ts, 0.0))  # 0-row shards too
    kept_parts: dict[float, list[pa.Table]] = {t: [] for t in ts}
    empty: pa.Table | None = None
    for keyed in iter_keyed_matches(shard, match_file, options):
        decided = balance_chunk(
            xp.asarray(keyed.offsets),
            xp.asarray(keyed.entry_ids),
            lambda rows, keyed=keyed: xp.asarray(keyed.keys_of(rows)),
            counts,
            ts,
            seed,
        )
        figures.texts += keyed.chunk.num_rows
        figures.matched += decided.matched
        for t in ts:
            figures.expected[t] += decided.expected[t]
            mask = decided.masks[t]
            mask = mask.get() if hasattr(mask, "get") else np.asarray(mask)
            part = curated_table(keyed, mask, entry_ids=entry_ids)
            if empty is None:
                empty = part.slice(0, 0)
            if part.num_rows:
                kept_parts[t].append(part)
    for t in ts:
        parts = kept_parts[t]
        if parts:
            table = pa.concat_tables(parts, promote_options="permissive")
        elif empty is not None:
            table = empty
        else:  # a shard with no rows
            empty = table = empty_curated_table(
                shard, options, entry_ids=entry_ids, template=template
            )
        figures.kept[t] = table.num_rows
        delay_hook()
        figures.checksums[t] = write_parquet(table, outputs[t])
    return figures


def _shard_figures(
    shard: Shard,
    match_file: Path,
    counts: Any,
    host_counts: np.ndarray,
    ts: Sequence[float],
    seed: int,
    outputs: dict[float, Path],
    *,
    options: ReadOptions,
    xp: Any,
    recorded: dict[float, str] | None = None,
    entry_ids: bool = False,
    template: pa.Table | None = None,
) -> ShardFigures:
    """One shard of the balance stage: its figures from the curated files already there, or
    `balance_shard` when one is missing or does not have its `recorded` checksum."""
    recorded = recorded or {}
    what = f"shard {shard.name} is balanced again"
    if all(checksum_matches(p, recorded.get(t), what) for t, p in outputs.items()):
        figures = _file_stats(match_file, host_counts, ts)
        figures.shard, figures.reused = shard.name, True
        for t, path in outputs.items():
            figures.kept[t] = storage.parquet_file(path).metadata.num_rows
        return figures
    return balance_shard(
        shard, match_file, counts, ts, seed, outputs,
        options=options, xp=xp, entry_ids=entry_ids, template=template,
    )  # fmt: skip


def _balance_task(
    shard: Shard,
    match_file: Path,
    counts: np.ndarray,
    ts: Sequence[float],
    seed: int,
    outputs: dict[float, Path],
    *,
    options: ReadOptions,
    backend: str,
    recorded: dict[float, str] | None = None,
    entry_ids: bool = False,
    template: pa.Table | None = None,
) -> ShardFigures:
    """`_shard_figures` on a dask worker (`counts`: host counts, broadcast by the client),
    the local curated files it wrote made durable before it returns (the client appends
    their records: `_record_curated`)."""
    xp = _xp(backend)
    figures = _shard_figures(
        shard,
        match_file,
        xp.asarray(counts),
        counts,
        ts,
        seed,
        outputs,
        options=options,
        xp=xp,
        recorded=recorded,
        entry_ids=entry_ids,
        template=template,
    )
    make_durable(outputs[t] for t in figures.checksums if isinstance(outputs[t], Path))
    return figures


def _curated_records(
    curated: dict[float, Manifest], figures: ShardFigures, outputs: dict[float, Location]
) -> list[tuple[Manifest, ShardRecord, list[Path]]]:
    """The records of the curated files `figures` wrote (none when reused), each with its
    folder's manifest and, when local, its file."""
    entries = []
    for t, checksum in figures.checksums.items():
        path = outputs[t]
        written = remember(path, checksum) if isinstance(path, RemotePath) else {}
        record = ShardRecord(
            shard=figures.shard,
            output=path.name,
            rows=figures.kept[t],
            checksum=checksum,
            output_fingerprint=written,
        )
        entries.append((curated[t], record, [path] if isinstance(path, Path) else []))
    return entries


def _record_curated(
    curated: dict[float, Manifest], figures: ShardFigures, outputs: dict[float, Location]
) -> None:
    """Appends the curated files `figures` wrote (none when reused) to their folders'
    manifests (a dask worker's files: made durable by the worker, `_balance_task`)."""
    for manifest, record, _ in _curated_records(curated, figures, outputs):
        manifest.append(record)


def _commit_curated(
    curated: dict[float, Manifest],
    done: list[ShardFigures],
    outputs: list[dict[float, Location]],
) -> None:
    """In process: the curated files of the shards `done` made durable (each file, then each
    folder once), then their records appended (`durable.commit`)."""
    entries = []
    for figures, shard_outputs in zip(done, outputs, strict=True):
        entries += _curated_records(curated, figures, shard_outputs)
    commit(entries)
