"""Stage ``balance`` + write (SPEC section 4) and the whole ``curate`` pipeline, single process.

`run_balance` reads what `stages.run_match` and `stages.run_count` left in ``out_dir``
(``manifest.jsonl``, ``matches/*.parquet``, ``entry_counts.npy``) and, for each threshold
``t``, writes one curated Parquet file per input shard::

    <out_dir>/curated/t=<t>/<stages.output_name(shard)>   e.g. t=20000/part-0.tsv-1a2b3c4d.parquet

holding the kept rows with ALL their input columns under their original names (the text and
key columns are renamed back from ``text``/``key``, so ``caption`` and ``url`` stay for
img2dataset) plus ``entry_ids`` (list<int32>, the row's matched entries; an input column of
that name is replaced). Several ``t`` come from one pass over each shard: the draws
``u(seed, text key, entry)`` do not depend on ``t`` (`balance.keep_masks`).

How a shard is balanced (`iter_keyed_matches`): the input shard is read again with the same
`read.ReadOptions` (the reader's row numbering does not depend on the batch size), and its
match file is read in step; each chunk's match rows must be exactly ``first_row ..
first_row + n - 1`` (else the input changed since matching: an error). The text keys are
computed from the chunk (`keys.text_keys`: the key column, else the text hash mixed with the
row), the match list becomes a CSR, and `balance.keep_masks` picks the kept rows.

Idempotence: each curated file is written under a temporary name and renamed into place, and
its checksum (`checksums`) appended to the folder's ``_manifest.jsonl``. A ``t`` folder holds
``_balance.json`` with the digest of everything its files depend on (seed, ``t``, the counts,
every shard's match record); a rerun with the same digest skips the shards whose curated files
still have their recorded checksums (a damaged one is named in a warning and redone), and a
changed digest deletes the folder's Parquet files and manifest first. (Names starting with
``_`` are ignored by `read.find_shards`, so a curated folder can be used as input.) What the
stage checks in the run record before it starts: `rundir`.

Memory: the kept rows of ONE shard are gathered per ``t`` and written at the end of the shard
(the chunks of a JSONL shard may have different schemas, unified with
``pa.concat_tables(promote_options="permissive")``); nothing grows with the number of shards.
`--target-size` solves ``t`` from each match file's expected kept size on a grid of t, added
up here (`target_size`): memory does not grow with the pool.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_gpu import rundir
from metaclip_gpu.arrays import to_host
from metaclip_gpu.balance import expected_kept, keep_masks
from metaclip_gpu.checksums import checksum_matches, file_checksum, remember
from metaclip_gpu.cluster import run_backend
from metaclip_gpu.count import load_entry_counts
from metaclip_gpu.english_only import EnglishOnly
from metaclip_gpu.index import MetadataIndex, default_cache_dir
from metaclip_gpu.keys import text_keys
from metaclip_gpu.lid import LidModel
from metaclip_gpu.manifest import Manifest, ShardRecord
from metaclip_gpu.oserrors import with_path
from metaclip_gpu.outcome import run_outcome
from metaclip_gpu.read import ReadOptions, Shard, ShardChunk, find_shards, read_shard
from metaclip_gpu.run_lock import holds_run_lock
from metaclip_gpu.run_summary import SUMMARY_NAME, curate_summary, stage_seconds
from metaclip_gpu.stages import (
    COUNTS_NPY,
    SHARDS_IN_FLIGHT,
    _progress,
    _report_from_record,
    delay_hook,
    output_name,
    remove_stale_tmp,
    run_count,
    run_match,
)
from metaclip_gpu.target_size import solve_target

CURATED_DIR = "curated"
BALANCE_CONFIG = "_balance.json"
CURATED_MANIFEST = "_manifest.jsonl"  # per t folder: each curated file's checksum
BALANCE_VERSION = 1  # bump when the curated files' content rules change
ENTRY_IDS_TYPE = pa.list_(pa.int32())


# ---------------------------------------------------------------------- names
def t_label(t: float) -> str:
    """The folder name of a threshold: ``t=20000`` for whole numbers, else ``t=<repr>``."""
    value = float(t)
    if value.is_integer() and abs(value) < 1e15:
        return f"t={int(value)}"
    return f"t={value!r}"


def curated_dir(out_dir: str | os.PathLike[str], t: float) -> Path:
    return Path(out_dir) / CURATED_DIR / t_label(t)


# ---------------------------------------------------------------------- aligned reading
@dataclass
class KeyedChunk:
    """One chunk of a shard with its match list and, on demand, its text keys (hashing
    strings costs; balancing needs the keys of few rows, `keys_of`)."""

    chunk: ShardChunk
    offsets: np.ndarray  # int64 [n + 1]
    entry_ids: np.ndarray  # int32, flat
    entry_lists: pa.Array  # list<int32> [n], the same ids as an Arrow column
    extra: dict[str, pa.Array] = field(default_factory=dict)  # other match-file columns

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """uint64 [n]: every row's text key (`keys.text_keys`)."""
        return text_keys(self.chunk.table, self.chunk.first_row)

    def keys_of(self, rows: Any) -> np.ndarray:
        """The text keys of the chunk rows `rows` (NumPy or CuPy indices) only."""
        rows = to_host(rows).astype(np.int64, copy=False)
        table = self.chunk.table.take(pa.array(rows))
        return text_keys(table, rows=self.chunk.first_row + rows)


class _MatchRows:
    """Reads a match file's ``row``, ``entry_ids`` and `extra` columns sequentially, `take(n)`
    rows at a time."""

    def __init__(self, path: Path, batch_rows: int, extra: Sequence[str] = ()) -> None:
        self.path = path
        self.file = pq.ParquetFile(path)
        self.batches = self.file.iter_batches(
            batch_size=max(batch_rows, 1024), columns=["row", "entry_ids", *extra]
        )
        self.pending: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        while self.pending is None or self.pending.num_rows < n:
            batch = next(self.batches, None)
            if batch is None:
                break
            table = pa.Table.from_batches([batch])
            self.pending = (
                table if self.pending is None else pa.concat_tables([self.pending, table])
            )
        have = 0 if self.pending is None else self.pending.num_rows
        if have < n:
            raise RuntimeError(
                f"{self.path}: match file has fewer rows than its shard; rerun the match stage"
            )
        assert self.pending is not None
        out, self.pending = self.pending.slice(0, n), self.pending.slice(n)
        return out

    def remaining(self) -> int:
        rest = 0 if self.pending is None else self.pending.num_rows
        return rest + sum(batch.num_rows for batch in self.batches)

    def close(self) -> None:
        self.file.close()


def csr_of(entry_lists: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets [n + 1], int32 flat ids) of a list<int32> column (nulls as empty)."""
    lengths = pc.list_value_length(entry_lists).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(entry_lists)
    ids = flat.to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, np.int32)
    return offsets, np.asarray(ids, dtype=np.int32)


def iter_keyed_matches(
    shard: Shard,
    match_file: str | os.PathLike[str],
    options: ReadOptions | None = None,
    extra: Sequence[str] = (),
) -> Iterator[KeyedChunk]:
    """Each chunk of `shard` with its rows of `match_file`, aligned and checked, and its keys
    (and the match file's `extra` columns, e.g. a worldwide run's ``lang``).

    Raises `read.ShardError` when the shard cannot be read and RuntimeError when the match
    file does not line up with the shard (a changed input: rerun the match stage).
    """
    options = options or ReadOptions()
    rows = _MatchRows(Path(match_file), options.batch_rows, extra)
    try:
        for chunk in read_shard(shard, options):
            n = chunk.num_rows
            if n == 0:
                continue
            matched = rows.take(n)
            row = matched.column("row").to_numpy()
            expected = np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)
            if not np.array_equal(row, expected):
                raise RuntimeError(
                    f"{match_file}: rows {row[:1]}.. do not line up with shard {shard.name} "
                    f"rows {chunk.first_row}..; rerun the match stage"
                )
            lists = matched.column("entry_ids").combine_chunks()
            if lists.type != ENTRY_IDS_TYPE:
                lists = lists.cast(ENTRY_IDS_TYPE)
            offsets, ids = csr_of(lists)
            columns = {name: matched.column(name).combine_chunks() for name in extra}
            yield KeyedChunk(chunk, offsets, ids, lists, columns)
        if rows.remaining():
            raise RuntimeError(
                f"{match_file}: match file has more rows than shard {shard.name}; "
                "rerun the match stage"
            )
    finally:
        rows.close()


# ---------------------------------------------------------------------- curated tables
def _restore_names(chunk: ShardChunk) -> list[str]:
    """The chunk's column names as in the input (undoing `read`'s ``text``/``key`` renames)."""
    names = []
    for name in chunk.table.column_names:
        if name == "text":
            names.append(chunk.text_column)
        elif name == "key" and chunk.key_column is not None:
            names.append(chunk.key_column)
        elif name == "text_orig" and chunk.text_column != "text":
            names.append("text")
        elif name == "key_orig" and chunk.key_column not in (None, "key"):
            names.append("key")
        else:
            names.append(name)
    return names


def curated_table(keyed: KeyedChunk, mask: np.ndarray) -> pa.Table:
    """The kept rows of `keyed` (bool `mask`): input columns under their own names +
    ``entry_ids``."""
    table = keyed.chunk.table.rename_columns(_restore_names(keyed.chunk))
    if "entry_ids" in table.column_names:
        table = table.drop_columns(["entry_ids"])
    order = {name: i for i, name in enumerate(keyed.chunk.source_columns)}
    if order:  # the input's column order (the reader puts text and key first)
        names = sorted(table.column_names, key=lambda name: order.get(name, len(order)))
        table = table.select(names)
    table = table.append_column("entry_ids", keyed.entry_lists)
    return table.filter(pa.array(mask, pa.bool_()))


def write_json(path: Path, payload: Any) -> None:
    """`payload` as indented UTF-8 JSON at `path` (a temporary name, then renamed)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with with_path(tmp):
        tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_parquet(table: pa.Table, final: Path) -> str:
    """Writes `table` at `final` (a temporary name, then renamed); returns its checksum."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        with with_path(tmp):
            pq.write_table(table, tmp)
        checksum = file_checksum(tmp)  # just written: from the page cache
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    remember(final, checksum)
    return checksum


# ---------------------------------------------------------------------- figures
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
    parquet = pq.ParquetFile(match_file)
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
        from metaclip_gpu.backends import gpu_available

        backend = "gpu" if gpu_available() else "cpu"
    if backend == "cpu":
        return np
    if backend == "gpu":
        import cupy

        return cupy
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'cpu' or 'gpu'")


# ---------------------------------------------------------------------- balance stage
def shard_list(spec: Any) -> list[Shard]:
    if isinstance(spec, Sequence) and spec and all(isinstance(s, Shard) for s in spec):
        return list(spec)
    return find_shards(spec)


def match_records(out_dir: Path, shards: Sequence[Shard]) -> dict[str, ShardRecord]:
    """Each shard's up-to-date match record; RuntimeError naming the shards without one."""
    manifest = Manifest.load(out_dir)
    config = rundir.match_config_id(out_dir)  # a record of another config is not up to date
    stale = [s.name for s in shards if not manifest.is_done(s, config=config)]
    if stale:
        listed = ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else "")
        raise RuntimeError(
            f"{out_dir}: {len(stale)} shard(s) have no up-to-date match output ({listed}); "
            "run the match and count stages first"
        )
    return {s.name: manifest.records[s.name] for s in shards}


def _solve_target(
    out_dir: Path,
    records: dict[str, ShardRecord],
    counts: np.ndarray,
    target_size: int,
    client: Any = None,
) -> float:
    """The t of `balance.solve_t` from per-file figures (`target_size.solve_target`)."""
    files = [out_dir / r.output for r in records.values() if r.output is not None]
    if not files:
        raise RuntimeError(f"{out_dir}: no match outputs to solve --target-size on")
    return solve_target(files, counts, target_size, client)


def _balance_digest(
    seed: int, t: float, counts: np.ndarray, records: dict[str, ShardRecord], options: ReadOptions
) -> str:
    payload = {
        "version": BALANCE_VERSION,
        "seed": int(seed),
        "t": float(t),
        "counts": hashlib.sha256(np.ascontiguousarray(counts).tobytes()).hexdigest(),
        "shards": sorted(
            (name, r.config, r.fingerprint.get("size"), r.fingerprint.get("mtime_ns"))
            for name, r in records.items()
        ),
        "columns": options.columns,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _prepare_t_dir(directory: Path, digest: str, seed: int, t: float) -> None:
    """Creates the folder of one t; deletes what a killed run left half-written there, and its
    Parquet files when they are of another config."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(directory)
    config_path = directory / BALANCE_CONFIG
    try:
        old = json.loads(config_path.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("digest") == digest:
        return
    (directory / CURATED_MANIFEST).unlink(missing_ok=True)
    for path in directory.iterdir():  # temporary files: only dead writers' (above)
        if path.name.endswith(".parquet"):
            path.unlink(missing_ok=True)
    write_json(config_path, {"digest": digest, "seed": int(seed), "t": float(t)})


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
) -> ShardFigures:
    """Balances one shard for every t and writes its curated file per t (`outputs[t]`)."""
    figures = ShardFigures(shard.name, expected=dict.fromkeys(ts, 0.0))  # 0-row shards too
    kept_parts: dict[float, list[pa.Table]] = {t: [] for t in ts}
    host_counts = counts.get() if hasattr(counts, "get") else np.asarray(counts)
    empty: pa.Table | None = None
    for keyed in iter_keyed_matches(shard, match_file, options):
        offsets, ids = keyed.offsets, keyed.entry_ids
        _add_stats(figures, offsets, ids, host_counts, ts)
        masks = keep_masks(
            xp.asarray(offsets),
            xp.asarray(ids),
            lambda rows, keyed=keyed: xp.asarray(keyed.keys_of(rows)),
            counts,
            ts,
            seed,
        )
        for t in ts:
            mask = masks[t]
            mask = mask.get() if hasattr(mask, "get") else np.asarray(mask)
            part = curated_table(keyed, mask)
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
            table = pa.table({"entry_ids": pa.array([], ENTRY_IDS_TYPE)})
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
) -> ShardFigures:
    """One shard of the balance stage: its figures from the curated files already there, or
    `balance_shard` when one is missing or does not have its `recorded` checksum."""
    recorded = recorded or {}
    what = f"shard {shard.name} is balanced again"
    if all(checksum_matches(p, recorded.get(t), what) for t, p in outputs.items()):
        figures = _file_stats(match_file, host_counts, ts)
        figures.shard, figures.reused = shard.name, True
        for t, path in outputs.items():
            figures.kept[t] = pq.ParquetFile(path).metadata.num_rows
        return figures
    return balance_shard(shard, match_file, counts, ts, seed, outputs, options=options, xp=xp)


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
) -> ShardFigures:
    """`_shard_figures` on a dask worker (`counts`: host counts, broadcast by the client)."""
    xp = _xp(backend)
    return _shard_figures(
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
    )


@holds_run_lock("balance")
def run_balance(
    out_dir: str | os.PathLike[str],
    shards_spec: Any,
    *,
    options: ReadOptions | None = None,
    ts: Iterable[float] | None = None,
    target_size: int | None = None,
    seed: int = 0,
    backend: str = "cpu",
    progress: bool = True,
    client: Any = None,
    summary: bool = True,
) -> dict[str, Any]:
    """Balances every shard of `shards_spec` for each t and writes the curated shards.

    `ts`: thresholds (MetaCLIP: 20,000 for 400M pairs); `target_size`: also the t whose
    expected kept size is `target_size` (`balance.solve_t` over all shards). At least one of
    the two. `options` must pick the same text/key columns as the match stage did. The match
    and count stages must have run into `out_dir` for these very shards (else RuntimeError).

    Returns ``{"seed", "counts_path", "shards": [...], "ts": [per-t figures]}``; each per-t
    figure holds ``t``, ``texts``, ``matched``, ``kept``, ``expected_kept``, ``head_entries``
    (entries with ``count > t``), ``head_entry_share`` (of the distinct matched entries),
    ``head_match_share`` (of all (text, entry) matches), ``output`` (the folder) and
    ``solved`` (True for the t solved from `target_size`).

    `client`: a `distributed.Client`; each shard is balanced (or found done) by a task on a
    worker, which writes its curated files and returns its figures here.

    `summary`: also write ``summary.json`` (`run_summary`), as ``curate`` does; `run_curate`
    writes its own. The run record (`rundir`) must hold counts of these shards and of the match
    stage's settings, and `options` read texts as the match stage did (else `RunDirError`).
    """
    started = time.perf_counter()
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: the tasks receive "cpu" or "gpu"
    out_dir = Path(out_dir)
    shards = shard_list(shards_spec)
    records = match_records(out_dir, shards)
    counts_path = out_dir / COUNTS_NPY
    if not counts_path.is_file():
        raise FileNotFoundError(f"{counts_path}: no counts; run the count stage first")
    rundir.check_balance_inputs(out_dir, options, [s.name for s in shards], COUNTS_NPY)
    counts = load_entry_counts(counts_path)
    t_list = [float(t) for t in (ts or [])]
    solved: float | None = None
    if target_size is not None:
        solved = _solve_target(out_dir, records, counts, int(target_size), client)
        t_list.append(solved)
    if not t_list:
        raise ValueError("run_balance needs ts or target_size")
    t_list = list(dict.fromkeys(t_list))  # distinct, in order
    for t in t_list:
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"t must be a positive finite number, got {t!r}")

    xp = _xp(backend) if client is None else np
    device_counts = xp.asarray(counts)
    directories = {t: curated_dir(out_dir, t) for t in t_list}
    for t in t_list:
        digest = _balance_digest(seed, t, counts, records, options)
        _prepare_t_dir(directories[t], digest, seed, t)
    curated = {t: Manifest.load(directories[t], CURATED_MANIFEST) for t in t_list}

    in_flight = SHARDS_IN_FLIGHT if xp is np else 1
    with _progress(progress) as bar, ThreadPoolExecutor(in_flight) as pool:
        task = bar.add_task("balance", total=len(shards), rows=0)
        todo: list[tuple[Shard, Path, dict[float, Path]]] = []
        for shard in shards:
            record = records[shard.name]
            if record.output is None:  # unreadable at match time: nothing to curate
                bar.update(task, advance=1)
                continue
            outputs = {t: directories[t] / output_name(shard.name) for t in t_list}
            todo.append((shard, out_dir / record.output, outputs))
        recorded = {s.name: _recorded_checksums(curated, s.name) for s, _, _ in todo}
        if client is not None:
            shard_figures = _balance_dask(
                client, todo, counts, t_list, seed, options, backend, bar, task, recorded
            )
            for figures in shard_figures:
                _record_curated(curated, figures)
        else:  # in process: shards in order, two at once on the CPU (stages.SHARDS_IN_FLIGHT)
            shard_figures = []
            rows = 0

            def one(item: tuple[Shard, Path, dict[float, Path]]) -> ShardFigures:
                shard, match_file, outputs = item
                return _shard_figures(
                    shard, match_file, device_counts, counts, t_list, seed, outputs,
                    options=options, xp=xp, recorded=recorded[shard.name],
                )  # fmt: skip

            results = pool.map(one, todo)
            for figures in results:
                _record_curated(curated, figures)
                shard_figures.append(figures)
                rows += figures.texts
                bar.update(task, advance=1, rows=rows)

    matched_entries = counts > 0
    distinct = int(matched_entries.sum())
    total_matches = int(counts.sum(dtype=np.uint64))
    per_t = []
    for t in t_list:
        head = counts > t
        n_head = int(head.sum())
        per_t.append(
            {
                "t": t,
                "solved": solved is not None and t == solved,
                "texts": sum(f.texts for f in shard_figures),
                "matched": sum(f.matched for f in shard_figures),
                "kept": sum(f.kept[t] for f in shard_figures),
                "expected_kept": sum(f.expected[t] for f in shard_figures),
                "head_entries": n_head,
                "head_entry_share": n_head / distinct if distinct else 0.0,
                "head_match_share": (
                    int(counts[head].sum(dtype=np.uint64)) / total_matches if total_matches else 0.0
                ),
                "output": str(directories[t]),
            }
        )
    result = {
        "seed": int(seed),
        "target_size": target_size,
        "counts_path": str(counts_path),
        "distinct_entries_matched": distinct,
        "shards": [
            {
                "shard": f.shard,
                "texts": f.texts,
                "matched": f.matched,
                "kept": {t_label(t): k for t, k in f.kept.items()},
                "reused": f.reused,
            }
            for f in shard_figures
        ],
        "ts": per_t,
    }
    rundir.record_balance(out_dir, seed, round(time.perf_counter() - started, 3))
    if summary:
        _write_stage_summary(out_dir, shards, records, result, backend, started)
    return result


def _recorded_checksums(curated: dict[float, Manifest], shard: str) -> dict[float, str]:
    """Per t, the checksum the folder's manifest records for `shard`'s curated file."""
    found = {}
    for t, manifest in curated.items():
        record = manifest.get(shard)
        if record is not None:
            found[t] = record.checksum
    return found


def _record_curated(curated: dict[float, Manifest], figures: ShardFigures) -> None:
    """Appends the curated files `figures` wrote (none when reused) to their folders' manifests."""
    for t, checksum in figures.checksums.items():
        name = output_name(figures.shard)
        curated[t].append(
            ShardRecord(shard=figures.shard, output=name, rows=figures.kept[t], checksum=checksum)
        )


def _write_stage_summary(
    out_dir: Path,
    shards: list[Shard],
    records: dict[str, ShardRecord],
    result: dict[str, Any],
    backend: str,
    started: float,
) -> None:
    """``summary.json`` of the stage-at-a-time route (`run_summary`): the reading figures from
    the match records of these shards, the rest from `result`."""
    manifest = Manifest.load(out_dir)
    reports = [_report_from_record(s, records[s.name], manifest) for s in shards]
    read = read_figures(shards, reports)
    seconds, matched_this_run = stage_seconds(out_dir, time.perf_counter() - started)
    if matched_this_run is not None:
        read["shards_matched_this_run"] = matched_this_run
    counts = load_entry_counts(out_dir / COUNTS_NPY)
    summary = curate_summary(
        out_dir,
        read,
        result,
        metadata_entries=len(counts),
        seed=result["seed"],
        target_size=result["target_size"],
        backend=backend,
        seconds=seconds,
        curated={t_label(f["t"]): f["output"] for f in result["ts"]},
    )
    write_json(out_dir / SUMMARY_NAME, summary)


def _balance_dask(
    client: Any,
    todo: list[tuple[Shard, Path, dict[float, Path]]],
    counts: np.ndarray,
    ts: list[float],
    seed: int,
    options: ReadOptions,
    backend: str,
    bar: Any,
    task: Any,
    recorded: dict[str, dict[float, str]],
) -> list[ShardFigures]:
    """Runs `_balance_task` for each shard of `todo` on the cluster; figures in `todo` order."""
    from metaclip_gpu.cluster import results_as_completed

    shared_counts = client.scatter(counts, broadcast=True)
    futures = [
        client.submit(
            _balance_task,
            shard,
            match_file,
            shared_counts,
            ts,
            seed,
            outputs,
            options=options,
            backend=backend,
            recorded=recorded[shard.name],
            pure=False,
            key=f"balance-{output_name(shard.name)}-{uuid.uuid4().hex[:8]}",
        )
        for shard, match_file, outputs in todo
    ]
    done: dict[str, ShardFigures] = {}
    rows = 0
    try:
        for figures in results_as_completed(client, futures):
            done[figures.shard] = figures
            rows += figures.texts
            bar.update(task, advance=1, rows=rows)
    except BaseException:
        client.cancel(futures)
        raise
    for folder in {path.parent for _, _, outputs in todo for path in outputs.values()}:
        remove_stale_tmp(folder)  # what workers killed mid-write left
    return [done[shard.name] for shard, _, _ in todo]


# ---------------------------------------------------------------------- the whole pipeline
class StageTimer:
    """Wall seconds per stage of a run (`stage`), and with `finish` the total since creation."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    def finish(self) -> dict[str, float]:
        """Each stage's seconds and ``total``, rounded to milliseconds."""
        seconds = {**self.seconds, "total": time.perf_counter() - self.started}
        return {k: round(v, 3) for k, v in seconds.items()}


def read_figures(shards: Sequence[Shard], reports: Sequence[Any]) -> dict[str, Any]:
    """The summary's figures of the match stage's reading: shards (unreadable ones with their
    error, those matched by this run), texts read, rows skipped by reason (in all, and per
    shard with the file and the first line numbers), null texts, and the run's outcome
    (`outcome.run_outcome`: exit code and last line)."""
    skipped: Counter[str] = Counter()
    for report in reports:
        skipped.update(report.skipped)
    unreadable = [{"shard": r.shard.name, "error": r.error} for r in reports if r.error]
    texts_read = sum(r.rows for r in reports)
    return {
        "input": [str(s.path) for s in shards],
        "shards": len(shards),
        "shards_unreadable": unreadable,
        "shards_matched_this_run": sum(not getattr(r, "reused", False) for r in reports),
        "texts_read": texts_read,
        "skipped": dict(sorted(skipped.items())),
        "skipped_rows": [  # per shard with skipped rows: its file, reasons, first lines
            {
                "shard": r.shard.name,
                "path": str(r.shard.path),
                "skipped": dict(sorted(r.skipped.items())),
                "lines": list(r.invalid_lines),
            }
            for r in reports
            if r.skipped
        ],
        "null_texts": sum(r.null_texts for r in reports),
        "outcome": run_outcome(len(shards), texts_read, unreadable),
    }


@holds_run_lock("curate")
def run_curate(
    shards_spec: Any,
    metadata_path: str | os.PathLike[str] | MetadataIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions | None = None,
    ts: Iterable[float] | None = None,
    target_size: int | None = None,
    seed: int = 0,
    backend: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    client: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    english_only: bool = False,
    lid_model: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """match -> count -> balance into `out_dir`, each stage timed; writes ``summary.json``.

    `english_only`: MetaCLIP 1's LID filter (`english_only.EnglishOnly`): only texts the
    language identifier (`lid_model`, default the packaged fastText ``lid.176.ftz``) calls
    English are matched; the others are counted in ``skipped`` as ``not_english``.

    `client`: a `distributed.Client` (`cluster.make_client`) to run each stage's per-shard
    tasks on (the result is the same as in process); `cache_dir`: the index cache the workers
    read (default `index.default_cache_dir()`). None runs everything in this process.

    Every stage resumes: finished match shards and curated files are reused. Returns the
    summary (the same as the JSON): ``shards``, ``shards_unreadable`` (name and error),
    ``texts_read``, ``skipped`` (rows by reason), ``null_texts``, ``matched``,
    ``distinct_entries_matched``, ``ts`` (per-t figures of `run_balance`), ``seconds`` (per
    stage and total), ``outputs`` (paths).
    """
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: every stage and task gets the result
    out_dir = Path(out_dir)
    shards = shard_list(shards_spec)
    timer = StageTimer()

    with timer.stage("index"):
        if isinstance(metadata_path, MetadataIndex):
            index = metadata_path
        elif client is not None:
            cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            index = MetadataIndex.load(metadata_path, cache=cache_dir)  # workers read this cache
        else:
            index = MetadataIndex.load(metadata_path)

    matcher: Any = index if client is None or isinstance(metadata_path, MetadataIndex) else None
    if english_only:  # a loaded filter: broadcast to the workers with its index
        matcher = EnglishOnly(index, LidModel(None if lid_model is None else str(lid_model)))
        matcher.check_available()
    with timer.stage("match"):
        reports = run_match(
            shards,
            metadata_path if matcher is None else matcher,
            out_dir,
            options=options,
            backend=backend,
            threads=threads,
            progress=progress,
            client=client,
            cache_dir=cache_dir,
        )

    with timer.stage("count"):
        run_count(out_dir, index, client=client)

    with timer.stage("balance"):
        balance = run_balance(
            out_dir,
            shards,
            options=options,
            ts=ts,
            target_size=target_size,
            seed=seed,
            backend=backend,
            progress=progress,
            client=client,
            summary=False,
        )

    summary = curate_summary(
        out_dir,
        read_figures(shards, reports),
        balance,
        metadata_entries=len(index),
        seed=seed,
        target_size=target_size,
        backend=backend,
        english_only=english_only,
        language_identifier=matcher.model.describe() if english_only else None,
        seconds=timer.finish(),
        curated={t_label(f["t"]): f["output"] for f in balance["ts"]},
    )
    write_json(out_dir / SUMMARY_NAME, summary)
    return summary
