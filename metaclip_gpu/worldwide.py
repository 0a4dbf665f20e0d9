"""Worldwide curation (MetaCLIP 2, SPEC section 5): per-language counts and thresholds, one
text per image, and the per-language keep probabilities a data loader can re-sample from.

The stages, after the shared match stage (`stages.run_match` with a
`languages.LanguageIndexes`, whose match files carry a ``lang`` column):

count
    ``count[lang][e]``: the texts of language ``lang`` whose matches hold entry ``e``, saved
    as ``entry_counts/<lang>.npy`` (uint64, MetaCLIP's format, one per language).
thresholds
    For each English threshold ``t_en`` (MetaCLIP 2: 170,000): the English tail share
    ``p = t_to_p(count[en], t_en)``, then ``t[lang] = p_to_t(count[lang], p)`` for every other
    language, so each keeps the same share of its matches in the tail (`balance.t_to_p`,
    `balance.p_to_t`, the reference's definitions). ``thresholds.json`` records both, and
    ``entry_probs/<t_en>_<lang>.npy`` holds ``p[e] = t / max(count[e], t)`` as float32, the
    arrays MetaCLIP 2's data loader reads to re-sample every epoch (with a language whose
    ``t`` is 0, as the reference's ``p_to_t`` can give, every probability is 0).
balance
    Rows sharing an image key (``--image-column``; default: the key column, e.g. ``url``)
    form one sample. Among the sample's rows that matched something, ONE is chosen: the row
    with the smallest ``splitmix64(CHOICE ^ splitmix64(S ^ K))`` (``S`` the seed, ``K`` the
    row's text key below; ``CHOICE`` a fixed constant; ties, i.e. identical texts of one
    image, go to the first row). The sample is then kept iff one of the chosen text's
    entries ``e`` has ``u(seed, K, e) < p[lang][e]`` (`balance.keep_mask_from_probs`), which
    happens with probability ``1 - prod(1 - p[lang][e])``, the reference's ``curate()``.
    The text key is ``K = splitmix64(XXH64(image key) ^ XXH64(text))``, so a sample's texts
    draw independently; a row without an image key is a sample of its own, keyed as in
    `keys.text_keys`. Nothing depends on the order of rows, the chunking, the workers or the
    backend. **A sample's rows must be in one shard** (as in MetaCLIP 2's per-shard
    ``{uuid: [texts]}`` files): an image key split over two shards makes two samples.

Outputs (besides ``matches/``): ``entry_counts/``, ``thresholds.json``, ``entry_probs/``,
``curated/t_en=<t>/<shard>.parquet`` (the kept rows, all their columns plus ``entry_ids``;
each file's checksum in the folder's ``_manifest.jsonl``; every run writes them anew) and
``summary.json`` with a ``languages`` section. The run holds the directory's lock
(`run_lock`) and counts the shards of this run only (`rundir`).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_gpu.balance import (
    keep_chances,
    keep_mask_from_probs,
    keep_probability,
    p_to_t,
    splitmix64,
    t_to_p,
)
from metaclip_gpu.cluster import results_as_completed, run_backend
from metaclip_gpu.count import counts_table, reduce_counts, save_entry_counts
from metaclip_gpu.curate import (
    CURATED_DIR,
    CURATED_MANIFEST,
    SUMMARY_NAME,
    KeyedChunk,
    StageTimer,
    curated_table,
    iter_keyed_matches,
    match_records,
    read_figures,
    shard_list,
    t_label,
    write_json,
    write_parquet,
)
from metaclip_gpu.keys import key_column_keys, xxh64_bytes
from metaclip_gpu.languages import ENGLISH, LanguageIndexes, UnknownLanguage
from metaclip_gpu.lid import LidModel
from metaclip_gpu.manifest import Manifest, ShardRecord
from metaclip_gpu.outcome import EXIT_NOTHING_READ, NothingRead
from metaclip_gpu.read import ReadOptions, Shard, ShardError
from metaclip_gpu.run_lock import holds_run_lock
from metaclip_gpu.stages import (
    COUNTS_PARQUET,
    MATCHES_DIR,
    _progress,
    output_name,
    remove_stale_tmp,
    run_match,
)

COUNTS_DIR = "entry_counts"
PROBS_DIR = "entry_probs"
THRESHOLDS_NAME = "thresholds.json"
DEFAULT_T_EN = 170_000.0
CHOICE_SALT = np.uint64(0x6D657461636C6970)  # "metaclip": the text choice's own stream


def t_en_label(t_en: float) -> str:
    """``t_en=170000``: the curated folder of one English threshold."""
    return "t_en=" + t_label(t_en).removeprefix("t=")


# ---------------------------------------------------------------------- count
def count_languages(
    out_dir: Path, shards: Sequence[Shard], sizes: dict[str, int], client: Any = None
) -> dict[str, np.ndarray]:
    """Per-language uint64 counts over the match files of `shards` (``lang`` column)."""
    records = match_records(out_dir, shards)
    paths = [out_dir / r.output for r in records.values() if r.output is not None]
    if client is not None and paths:
        futures = client.map(file_language_counts, paths, sizes=sizes)
        parts = list(results_as_completed(client, futures))
    else:
        parts = [file_language_counts(path, sizes) for path in paths]
    return {lang: reduce_counts([p[lang] for p in parts], n) for lang, n in sizes.items()}


def file_language_counts(path: Path, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """One match file's per-language counts (every language of `sizes`, zeros included)."""
    counts = {lang: np.zeros(n, dtype=np.uint64) for lang, n in sizes.items()}
    parquet = pq.ParquetFile(path)
    try:
        for batch in parquet.iter_batches(batch_size=1 << 20, columns=["lang", "entry_ids"]):
            lang = batch.column(0)
            lists = batch.column(1)
            lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
            ids = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
            codes = lang.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            pair_codes = np.repeat(codes, lengths)
            for code, name in enumerate(lang.dictionary.to_pylist()):
                selected = ids[pair_codes == code]
                if len(selected):
                    counts[name] += np.bincount(selected, minlength=sizes[name]).astype(np.uint64)
    finally:
        parquet.close()
    return counts


# ---------------------------------------------------------------------- thresholds
@dataclass
class Thresholds:
    """Per English threshold: the tail share and each language's threshold."""

    t_en: float
    tail_share: float
    t: dict[str, float]  # NaN for a language with no match (nothing to keep)

    def probabilities(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``p[lang][e] = t / max(count, t)`` (float64); all 0 where ``t`` is 0."""
        probs = {}
        for lang, c in counts.items():
            t = self.t[lang]
            probs[lang] = keep_probability(c, t) if t > 0 else np.zeros(len(c), np.float64)
        return probs


def language_thresholds(counts: dict[str, np.ndarray], t_en: float) -> Thresholds:
    """The reference's ``global_count``: ``t_to_p`` on English, ``p_to_t`` elsewhere."""
    if ENGLISH not in counts or not counts[ENGLISH].any():
        raise ValueError(
            "worldwide thresholds start from English counts: give 'en' metadata and English "
            "texts (their tail share at t_en sets every other language's t)"
        )
    p = t_to_p(counts[ENGLISH], t_en)
    per_lang = {}
    for lang, c in counts.items():
        if lang == ENGLISH:
            per_lang[lang] = float(t_en)
        else:
            per_lang[lang] = p_to_t(c, p) if c.any() else math.nan
    return Thresholds(float(t_en), p, per_lang)


def save_probabilities(out_dir: Path, thresholds: Thresholds, probs: dict[str, np.ndarray]):
    """``entry_probs/<t_en>_<lang>.npy`` (float32, as MetaCLIP 2's loader reads them)."""
    folder = out_dir / PROBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = t_label(thresholds.t_en).removeprefix("t=")
    for lang, p in probs.items():
        final = folder / f"{stem}_{lang}.npy"
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}.npy")
        np.save(tmp, p.astype(np.float32))
        os.replace(tmp, final)


# ---------------------------------------------------------------------- balance, one shard
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
) -> WorldwideShardFigures:
    """One shard: choose one text per sample, keep it by its language's probabilities, write
    the kept rows per t_en (`outputs`). The shard's rows are held in memory together, since
    a sample's rows may sit in different read chunks."""
    keyed = list(iter_keyed_matches(shard, match_file, options, extra=("lang",)))
    figures = WorldwideShardFigures(shard.name)
    languages = langs.languages
    if not keyed:
        for t_en, path in outputs.items():
            empty = pa.table({"entry_ids": pa.array([], pa.list_(pa.int32()))})
            figures.checksums[t_en] = write_parquet(empty, path)
        return figures
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
        tables = [_with_lang(curated_table(k, m), k, m) for k, m in zip(keyed, masks, strict=True)]
        kept = pa.concat_tables(tables, promote_options="permissive")
        figures.checksums[t_en] = write_parquet(kept, outputs[t_en])
    return figures


def _with_lang(table: pa.Table, keyed: KeyedChunk, mask: np.ndarray) -> pa.Table:
    """The curated rows with a ``lang`` column when the input had none (identified languages)."""
    if "lang" in table.column_names:
        return table
    lang = keyed.extra["lang"].filter(pa.array(mask, pa.bool_()))
    return table.add_column(table.num_columns - 1, "lang", lang.cast(pa.string()))


def _concat_csr(keyed: list[KeyedChunk]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.concatenate([np.diff(k.offsets) for k in keyed])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate([k.entry_ids for k in keyed]).astype(np.int64)


# ---------------------------------------------------------------------- the whole pipeline
@holds_run_lock("curate --worldwide")
def run_worldwide(
    shards_spec: Any,
    metadata_path: str | os.PathLike[str] | LanguageIndexes,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions | None = None,
    t_en: Sequence[float] = (DEFAULT_T_EN,),
    seed: int = 0,
    lang_column: str | None = None,
    image_column: str | None = None,
    unknown: UnknownLanguage = "skip",
    backend: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    client: Any = None,
    lid_model: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """match (per language) -> count (per language) -> thresholds -> balance (one text per
    image) into `out_dir`; writes ``summary.json`` and returns it (module docstring).
    `lid_model`: the fastText model that labels shards without a language column (default:
    the packaged ``lid.176.ftz``, `lid.LidModel`)."""
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: every stage and task gets the result
    out_dir = Path(out_dir)
    shards = shard_list(shards_spec)
    t_values = list(dict.fromkeys(float(t) for t in t_en))
    if not t_values or not all(t > 0 and math.isfinite(t) for t in t_values):
        raise ValueError(f"t_en must be positive finite numbers, got {list(t_en)!r}")
    timer = StageTimer()

    with timer.stage("index"):
        if lid_model is not None:
            LidModel(str(lid_model)).check()  # a bad model fails here, not in every shard
        langs = (
            metadata_path
            if isinstance(metadata_path, LanguageIndexes)
            else LanguageIndexes.load(
                metadata_path,
                unknown=unknown,
                lang_column=lang_column,
                lid=LidModel(None if lid_model is None else str(lid_model)),
            )
        )

    with timer.stage("match"):
        reports = run_match(
            shards,
            langs,
            out_dir,
            options=options,
            backend=backend,
            threads=threads,
            progress=progress,
            client=client,
        )

    outcome = read_figures(shards, reports)["outcome"]
    if outcome["exit_code"] == EXIT_NOTHING_READ:  # no counts to set thresholds from
        raise NothingRead(outcome["message"].removeprefix("error: "))

    with timer.stage("count"):
        sizes = {lang: len(index) for lang, index in langs.indexes.items()}
        counts = count_languages(out_dir, shards, sizes, client)
        counts_dir = out_dir / COUNTS_DIR
        counts_dir.mkdir(parents=True, exist_ok=True)
        for lang, c in counts.items():
            save_entry_counts(c, counts_dir / f"{lang}.npy")
        tables = [
            counts_table(c, langs.indexes[lang].entries).add_column(
                0, "lang", pa.array([lang] * len(c), pa.string()).dictionary_encode()
            )
            for lang, c in counts.items()
        ]
        write_parquet(pa.concat_tables(tables), out_dir / COUNTS_PARQUET)

    with timer.stage("balance"):
        thresholds = [language_thresholds(counts, t) for t in t_values]
        probs = {}
        for th in thresholds:
            probs[th.t_en] = th.probabilities(counts)
            save_probabilities(out_dir, th, probs[th.t_en])
        write_json(
            out_dir / THRESHOLDS_NAME,
            {
                t_en_label(th.t_en): {"tail_share": th.tail_share, "t": _finite(th.t)}
                for th in thresholds
            },
        )
        shard_figures = _balance_all(
            out_dir, shards, langs, probs, seed, options, image_column, progress, client
        )

    summary = _summary(
        out_dir, shards, reports, langs, counts, thresholds, shard_figures, seed, backend
    )
    summary["seconds"] = timer.finish()
    write_json(out_dir / SUMMARY_NAME, summary)
    return summary


def _balance_all(
    out_dir: Path,
    shards: list[Shard],
    langs: LanguageIndexes,
    probs: dict[float, dict[str, np.ndarray]],
    seed: int,
    options: ReadOptions,
    image_column: str | None,
    progress: bool,
    client: Any,
) -> list[WorldwideShardFigures]:
    records = match_records(out_dir, shards)
    dirs = {t: out_dir / CURATED_DIR / t_en_label(t) for t in probs}
    current = {output_name(shard.name) for shard in shards}
    for folder in dirs.values():
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
    kwargs = {"options": options, "image_column": image_column}
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
            for t, checksum in result.checksums.items():
                name = output_name(result.shard)
                kept = sum(f.kept.get(t, 0) for f in result.languages.values())
                curated[t].append(ShardRecord(result.shard, name, kept, checksum=checksum))
            figures.append(result)
            rows += result.texts
            bar.update(task, advance=1, rows=rows)
    for folder in dirs.values():
        remove_stale_tmp(folder)  # what workers killed mid-write left
    return figures


def _summary(
    out_dir: Path,
    shards: list[Shard],
    reports: list[Any],
    langs: LanguageIndexes,
    counts: dict[str, np.ndarray],
    thresholds: list[Thresholds],
    shard_figures: list[WorldwideShardFigures],
    seed: int,
    backend: str,
) -> dict[str, Any]:
    languages: dict[str, Any] = {}
    for lang in langs.languages:
        per_shard = [f.languages[lang] for f in shard_figures if lang in f.languages]
        languages[lang] = {
            "texts": sum(f.texts for f in per_shard),
            "matched": sum(f.matched for f in per_shard),
            "samples": sum(f.samples for f in per_shard),
            "kept": {
                t_en_label(th.t_en): sum(f.kept.get(th.t_en, 0) for f in per_shard)
                for th in thresholds
            },
            "expected_kept": {
                t_en_label(th.t_en): sum(f.expected.get(th.t_en, 0.0) for f in per_shard)
                for th in thresholds
            },
            "t": {t_en_label(th.t_en): _finite_value(th.t[lang]) for th in thresholds},
            "metadata_entries": len(langs.indexes[lang]),
            "distinct_entries_matched": int((counts[lang] > 0).sum()),
            "entry_counts": str(out_dir / COUNTS_DIR / f"{lang}.npy"),
        }
    texts = sum(f.texts for f in shard_figures)
    distinct = sum(int((c > 0).sum()) for c in counts.values())
    matches = sum(int(c.sum(dtype=np.uint64)) for c in counts.values())
    heads = [
        {lang: counts[lang] > th.t[lang] for lang in counts if math.isfinite(th.t[lang])}
        for th in thresholds
    ]
    ts = [
        {
            "t": th.t_en,
            "solved": False,
            "tail_share": th.tail_share,
            "head_entries": sum(int(h.sum()) for h in head.values()),
            "head_entry_share": (
                sum(int(h.sum()) for h in head.values()) / distinct if distinct else 0.0
            ),
            "head_match_share": (
                sum(int(counts[lang][h].sum(dtype=np.uint64)) for lang, h in head.items()) / matches
                if matches
                else 0.0
            ),
            "texts": texts,
            "matched": sum(v["matched"] for v in languages.values()),
            "samples": sum(v["samples"] for v in languages.values()),
            "kept": sum(v["kept"][t_en_label(th.t_en)] for v in languages.values()),
            "expected_kept": sum(
                v["expected_kept"][t_en_label(th.t_en)] for v in languages.values()
            ),
            "output": str(out_dir / CURATED_DIR / t_en_label(th.t_en)),
        }
        for th, head in zip(thresholds, heads, strict=True)
    ]
    return {
        "worldwide": True,
        **read_figures(shards, reports),
        "unknown_language": sum(f.unknown_language for f in shard_figures),
        "unknown_language_policy": langs.unknown,
        "language_identifier": langs.lid.describe(),  # for shards without a language column
        "matched": ts[0]["matched"],
        "metadata_entries": len(langs),
        "distinct_entries_matched": distinct,
        "seed": int(seed),
        "backend": backend,
        "ts": ts,
        "languages": languages,
        "outputs": {
            "dir": str(out_dir),
            "matches": str(out_dir / MATCHES_DIR),
            "entry_counts": str(out_dir / COUNTS_DIR),
            "entry_counts_parquet": str(out_dir / COUNTS_PARQUET),
            "entry_probs": str(out_dir / PROBS_DIR),
            "thresholds": str(out_dir / THRESHOLDS_NAME),
            "curated": {
                t_en_label(th.t_en): t["output"] for th, t in zip(thresholds, ts, strict=True)
            },
            "summary": str(out_dir / SUMMARY_NAME),
        },
    }


def _finite_value(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    return {k: _finite_value(v) for k, v in values.items()}
