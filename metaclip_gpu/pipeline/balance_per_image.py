"""Stage ``balance``, worldwide policy (MetaCLIP 2, SPEC section 5): one text per image.

Rows sharing an image key (``--image-column``; default: the key column, e.g. ``url``) form
one sample. Among the sample's rows that matched something, ONE is chosen: the row with the
smallest ``splitmix64(CHOICE ^ splitmix64(S ^ K))`` (``S`` the seed, ``K`` the row's text key
below; ``CHOICE`` a fixed constant; ties, i.e. identical texts of one image, go to the first
row). The sample is then kept iff one of the chosen text's entries ``e`` has
``u(seed, K, e) < p[lang][e]`` (`draws.keep_mask_from_probs`), which happens with probability
``1 - prod(1 - p[lang][e])``, the reference's ``curate()``. The text key is
``K = splitmix64(XXH64(image key) ^ XXH64(text))``, so a sample's texts draw independently; a
row without an image key is a sample of its own, keyed as in `keys.text_keys`. Nothing depends
on the order of rows, the chunking, the workers or the backend. **A sample's rows must be in
one shard** (as in MetaCLIP 2's per-shard ``{uuid: [texts]}`` files): an image key split over
two shards makes two samples.

Outputs: ``curated/t_en=<t>/<shard>.parquet`` (the kept rows, all their input columns, a
``lang`` column when the input had none, and with ``entry_ids`` asked for, each row's ids;
each file's checksum in the folder's ``_manifest.jsonl``; every run writes them
anew).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu.pipeline.aligned import KeyedChunk, iter_keyed_matches
from metaclip_gpu.pipeline.cluster import results_as_completed
from metaclip_gpu.pipeline.draws import (
    keep_chances,
    keep_mask_from_probs,
    splitmix64,
)
from metaclip_gpu.pipeline.durable import commit, make_durable
from metaclip_gpu.pipeline.files import (
    _progress,
    output_name,
    remove_stale_tmp,
)
from metaclip_gpu.pipeline.keys import key_column_keys, xxh64_bytes
from metaclip_gpu.pipeline.languages import LanguageIndexes
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.match import match_records
from metaclip_gpu.pipeline.read import ReadOptions, Shard, ShardError
from metaclip_gpu.pipeline.thresholds import t_en_label
from metaclip_gpu.pipeline.write import (
    CURATED_DIR,
    CURATED_MANIFEST,
    curated_table,
    curated_template,
    empty_curated_table,
    write_parquet,
)
from metaclip_gpu.storage import RemotePath
from metaclip_gpu.storage_write import list_tree, remove

CHOICE_SALT = np.uint64(0x6D657461636C6970)  # "metaclip": the text choice's own stream


@dataclass
class LanguageFigures:
    texts: int = 0
    matched: int = 0
    samples: int = 0  # images with at least one matched text (one chosen each)
    kept: dict[float, int] = field(default_factory=dict)
    expected: dict[float, float] = field(default_factory=dict)


@dataclass
class WorldwideShardFigures:
    shard: str
    texts: int = 0
    unknown_language: int = 0
    languages: dict[str, LanguageFigures] = field(default_factory=dict)
    checksums: dict[float, str] = field(default_factory=dict)  # of the curated files written


def _image_column(keyed: KeyedChunk, image_column: str | None) -> str | None:
    chunk = keyed.chunk
    names = chunk.table.column_names
    if image_column is None or image_column == chunk.key_column:
        return "key" if "key" in names else None
    if image_column in names:
        return image_column
    raise ShardError(chunk.shard.path, f"no image column {image_column!r}")


def sample_keys(
    keyed: KeyedChunk, image_column: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group, alone, text key) of each row (module doc): rows with the same image key share
    a group; a row without one is ``alone``, a sample of its own (its group: its text key)."""
    column = _image_column(keyed, image_column)
    n = keyed.chunk.num_rows
    if column is None:
        return keyed.keys, np.ones(n, dtype=bool), keyed.keys
    images, valid = key_column_keys(keyed.chunk.table.column(column))
    text_hashes = xxh64_bytes(keyed.chunk.table.column("text"))
    text_keys = np.where(valid, splitmix64(images ^ text_hashes), keyed.keys).astype(np.uint64)
    return np.where(valid, images, text_keys).astype(np.uint64), ~valid, text_keys


def choose_one_per_sample(
    groups: np.ndarray, alone: np.ndarray, text_keys: np.ndarray, eligible: np.ndarray, seed: int
) -> np.ndarray:
    """bool mask: per group (rows with equal ``(alone, groups)``), the eligible row with the
    smallest choice score (module doc); groups with no eligible row choose nothing."""
    rows = np.flatnonzero(eligible)
    if len(rows) == 0:
        return np.zeros(len(groups), dtype=bool)
    s = np.uint64(int(seed) & ((1 << 64) - 1))
    score = splitmix64(CHOICE_SALT ^ splitmix64(s ^ text_keys[rows]))
    order = np.lexsort((rows, score, groups[rows], alone[rows]))
    g, a = groups[rows][order], alone[rows][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (g[1:] != g[:-1]) | (a[1:] != a[:-1])
    chosen = np.zeros(len(groups), dtype=bool)
    chosen[rows[order[first]]] = True
    return chosen


def balance_shard_worldwide(
    shard: Shard,
    match_file: Path,
    langs: LanguageIndexes,
    probs: dict[float, dict[str, np.ndarray]],
    seed: int,
    outputs: dict[float, Path],
    *,
    options: ReadOptions,
    image_column: str | None,
    entry_ids: bool = False,
    template: pa.Table | None = None,
    durable: bool = False,
) -> WorldwideShardFigures:
    """One shard: choose one text per sample, keep it by its language's probabilities, write
    the kept rows per t_en (`outputs`; with `entry_ids`, each row's ids too). The shard's rows
    are held in memory together, since a sample's rows may sit in different read chunks.
    `durable`: the files written are fsynced (and their folders) before it returns."""
    keyed = list(iter_keyed_matches(shard, match_file, options, extra=("lang",)))
    figures = WorldwideShardFigures(shard.name)
    languages = langs.languages
    if not keyed:  # no rows: the columns of a shard with rows, where its schema says them
        empty = empty_curated_table(shard, options, entry_ids=entry_ids, template=template)
        if empty.num_columns > int(entry_ids) and "lang" not in empty.column_names:
            where = empty.num_columns - 1 if entry_ids else empty.num_columns
            empty = empty.add_column(where, "lang", pa.array([], pa.string()))
        for t_en, path in outputs.items():
            figures.checksums[t_en] = write_parquet(empty, path)
        return _written(figures, outputs, durable)
    codes = np.concatenate([langs.codes_of_names(k.extra["lang"]) for k in keyed])
    groups, alone, text_keys = (
        np.concatenate(arrays)
        for arrays in zip(*(sample_keys(k, image_column) for k in keyed), strict=True)
    )
    offsets, ids = _concat_csr(keyed)
    lengths = np.diff(offsets)
    eligible = (lengths > 0) & (codes >= 0)
    chosen = choose_one_per_sample(groups, alone, text_keys, eligible, seed)

    figures.texts = len(codes)
    figures.unknown_language = int((codes < 0).sum())
    pair_codes = np.repeat(codes, lengths)
    for code, lang in enumerate(languages):
        rows = codes == code
        if rows.any():
            figures.languages[lang] = LanguageFigures(
                texts=int(rows.sum()),
                matched=int((rows & (lengths > 0)).sum()),
                samples=int((rows & chosen).sum()),
            )
    bounds = np.cumsum([0] + [k.chunk.num_rows for k in keyed])
    for t_en, per_lang in probs.items():
        flat = np.concatenate([per_lang[lang] for lang in languages])
        base = np.cumsum([0] + [len(per_lang[lang]) for lang in languages])[:-1]
        pair_probs = flat[base[pair_codes] + ids] if len(ids) else np.zeros(0)
        keep = chosen & keep_mask_from_probs(offsets, ids, text_keys, pair_probs, seed)
        chance = keep_chances(offsets, pair_probs)
        for code, lang in enumerate(languages):
            if lang in figures.languages:
                rows = codes == code
                figures.languages[lang].kept[t_en] = int((keep & rows).sum())
                figures.languages[lang].expected[t_en] = float(chance[chosen & rows].sum())
        masks = [keep[bounds[i] : bounds[i + 1]] for i in range(len(keyed))]
        tables = [
            _with_lang(curated_table(k, m, entry_ids=entry_ids), k, m, entry_ids)
            for k, m in zip(keyed, masks, strict=True)
        ]
        kept = pa.concat_tables(tables, promote_options="permissive")
        figures.checksums[t_en] = write_parquet(kept, outputs[t_en])
    return _written(figures, outputs, durable)


def _written(
    figures: WorldwideShardFigures, outputs: dict[float, Path], durable: bool
) -> WorldwideShardFigures:
    """`figures`, the local files it wrote made durable first when `durable` (a dask worker's:
    the client appends their records)."""
    if durable:
        make_durable(outputs[t] for t in figures.checksums if isinstance(outputs[t], Path))
    return figures


def _with_lang(table: pa.Table, keyed: KeyedChunk, mask: np.ndarray, entry_ids: bool) -> pa.Table:
    """The curated rows with a ``lang`` column when the input had none (identified languages),
    after the input's columns (before ``entry_ids``)."""
    if "lang" in table.column_names:
        return table
    lang = keyed.extra["lang"].filter(pa.array(mask, pa.bool_()))
    where = table.num_columns - 1 if entry_ids else table.num_columns
    return table.add_column(where, "lang", lang.cast(pa.string()))


def _concat_csr(keyed: list[KeyedChunk]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.concatenate([np.diff(k.offsets) for k in keyed])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate([k.entry_ids for k in keyed]).astype(np.int64)


def balance_per_image(
    out_dir: Path,
    shards: list[Shard],
    langs: LanguageIndexes,
    probs: dict[float, dict[str, np.ndarray]],
    seed: int,
    options: ReadOptions,
    image_column: str | None,
    progress: bool,
    client: Any,
    entry_ids: bool = False,
) -> list[WorldwideShardFigures]:
    """Every shard of `shards` balanced one text per image (`balance_shard_worldwide`), its
    curated files written anew for each t_en of `probs`."""
    records = match_records(out_dir, shards)
    dirs = {t: out_dir / CURATED_DIR / t_en_label(t) for t in probs}
    current = {output_name(shard.name) for shard in shards}
    for folder in dirs.values():
        if isinstance(folder, RemotePath):  # every file is written anew: the folder emptied
            for obj in list_tree(folder):
                remove(obj)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(folder)
        (folder / CURATED_MANIFEST).unlink(missing_ok=True)  # every file is written anew
        for path in folder.glob("*.parquet"):
            if path.name not in current:  # a shard no longer in the input: not curated
                path.unlink()
    curated = {t: Manifest.load(folder, CURATED_MANIFEST) for t, folder in dirs.items()}
    todo = []
    for shard in shards:
        record = records[shard.name]
        if record.output is None:  # unreadable at match time
            continue
        outputs = {t: dirs[t] / output_name(shard.name) for t in probs}
        todo.append((shard, out_dir / record.output, outputs))
    template = curated_template(  # for shards with no rows and no schema
        [s for s, _, _ in todo],
        {name: r.rows for name, r in records.items()},
        options,
        entry_ids=entry_ids,
    )
    kwargs = {
        "options": options,
        "image_column": image_column,
        "entry_ids": entry_ids,
        "template": template,
    }
    figures: list[WorldwideShardFigures] = []
    with _progress(progress) as bar:
        task = bar.add_task("balance", total=len(todo), rows=0)
        rows = 0
        if client is not None and todo:
            shared_langs = client.scatter(langs, broadcast=True)
            shared_probs = client.scatter(probs, broadcast=True)
            futures = [
                client.submit(
                    balance_shard_worldwide,
                    shard,
                    match_file,
                    shared_langs,
                    shared_probs,
                    seed,
                    outputs,
                    **kwargs,
                    durable=True,
                    pure=False,
                    key=f"worldwide-{output_name(shard.name)}-{uuid.uuid4().hex[:8]}",
                )
                for shard, match_file, outputs in todo
            ]
            results = results_as_completed(client, futures, ordered=True)
        else:
            results = (
                balance_shard_worldwide(shard, mf, langs, probs, seed, outs, **kwargs)
                for shard, mf, outs in todo
            )
        for result in results:
            entries = []
            for t, checksum in result.checksums.items():
                name = output_name(result.shard)
                kept = sum(f.kept.get(t, 0) for f in result.languages.values())
                path = dirs[t] / name
                local = [path] if isinstance(path, Path) and client is None else []
                entries.append(
                    (curated[t], ShardRecord(result.shard, name, kept, checksum=checksum), local)
                )
            # in process, this thread makes the files durable first; a worker did its own
            commit(entries)
            figures.append(result)
            rows += result.texts
            bar.update(task, advance=1, rows=rows)
    for folder in dirs.values():
        if isinstance(folder, Path):
            remove_stale_tmp(folder)  # what workers killed mid-write left
    return figures
