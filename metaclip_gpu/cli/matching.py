"""``match`` (one file, or the match stage into a directory), ``count``, ``build-index``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from metaclip_gpu import storage
from metaclip_gpu.cli.common import (
    BACKEND_OPTION,
    CACHE_NOT_REMOTE,
    INPUT_RECORD,
    KEY_COLUMN_OPTION,
    METADATA_OPTION,
    STORAGE_OPTIONS_OPTION,
    THREADS_OPTION,
    LocalDirType,
    LocationType,
    OutputDirType,
    finish,
    log_options,
    make_console,
    read_options,
    record_input,
    shards_or_fail,
    start_run,
    step,
    storage_options,
)
from metaclip_gpu.cli.errors import Command
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import MatchResult, match
from metaclip_gpu.engine.metadata import MetadataError
from metaclip_gpu.pipeline import progress
from metaclip_gpu.pipeline.outcome import EXIT_NOTHING_READ, run_outcome
from metaclip_gpu.pipeline.read import ReadOptions, ShardError, read_table
from metaclip_gpu.storage import Location, RemotePath


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _run_match(
    console: Console, texts: Any, index: MetadataIndex, backend: str, threads: int | None
) -> tuple[MatchResult, float]:
    try:
        with step(console, f"matching {len(texts):,} texts"):
            started = time.perf_counter()
            res = match(texts, index, backend=backend, threads=threads)
            _host(res.offsets[-1:])  # waits for a GPU backend to finish
            seconds = time.perf_counter() - started
    except RuntimeError as err:  # e.g. --backend gpu without a GPU
        raise click.ClickException(str(err)) from err
    return res, seconds


def _text_at(texts: Any, i: int) -> str:
    value = texts[i]
    if hasattr(value, "as_py"):
        value = value.as_py()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _summary(
    console: Console,
    *,
    title: str,
    texts: Any,
    index: MetadataIndex,
    res: MatchResult,
    build_seconds: float,
    build_label: str,
    match_seconds: float,
    synthetic: bool,
) -> None:
    """Prints the figures of one matching run and a few examples."""
    n = len(res)
    offsets, ids = _host(res.offsets), _host(res.entry_ids)
    matched = res.matched_texts()
    if synthetic:
        console.print(
            Text.from_markup(
                "[bold yellow]SYNTHETIC INPUT[/]: the metadata and texts below were generated "
                "from the wordfreq package (metaclip_gpu.synthetic), not real data."
            )
        )
    figures = Table(title=title, show_header=False, title_justify="left")
    figures.add_column("figure", style="bold")
    figures.add_column("value", justify="right")
    figures.add_row("input", "SYNTHETIC (wordfreq)" if synthetic else "real (your files)")
    figures.add_row("texts", f"{n:,}")
    figures.add_row("metadata entries", f"{len(index):,}")
    figures.add_row(build_label, f"{build_seconds:.2f} s")
    figures.add_row("index size", f"{index.nbytes / 2**20:,.1f} MiB")
    figures.add_row("backend", res.backend)
    figures.add_row("match time", f"{match_seconds:.3f} s")
    rate = n / match_seconds if match_seconds > 0 else float("inf")
    figures.add_row("throughput", f"{rate:,.0f} texts/s")
    share = matched / n if n else 0.0
    figures.add_row("matched share", f"{share:.2%} ({matched:,} texts)")
    figures.add_row("mean ids per text", f"{len(ids) / n if n else 0.0:.2f}")
    console.print(figures)

    counts = np.bincount(ids, minlength=len(index)) if len(index) else np.zeros(0, np.int64)
    top = np.argsort(-counts, kind="stable")[:10]
    top = top[counts[top] > 0]
    if len(top):
        table = Table(title="top entries (texts containing each)", title_justify="left")
        table.add_column("entry id", justify="right")
        table.add_column("entry")
        table.add_column("texts", justify="right")
        table.add_column("share", justify="right")
        for entry_id in top.tolist():
            table.add_row(
                str(entry_id),
                repr(index.entry(entry_id)),
                f"{counts[entry_id]:,}",
                f"{counts[entry_id] / n:.1%}",
            )
        console.print(table)

    examples = np.flatnonzero(offsets[1:] > offsets[:-1])[:3].tolist()
    if examples:
        table = Table(title="examples", title_justify="left", show_lines=True)
        table.add_column("text", ratio=3)
        table.add_column("matched entries", ratio=2)
        for i in examples:
            entries = [index.entry(e) for e in ids[offsets[i] : offsets[i + 1]].tolist()]
            table.add_row(_text_at(texts, i), ", ".join(repr(e) for e in entries))
        console.print(table)


# ---------------------------------------------------------------------- input files
def read_texts(path: Location, text_column: str) -> pa.ChunkedArray:
    """The text column of one shard (TSV: headerless ``caption, url`` like CC3M; JSONL, Parquet,
    CSV or a WebDataset tar: the `text_column`), read by the pipeline's reader."""
    try:
        table = read_table([path], ReadOptions(text_column=text_column))
    except ShardError as err:
        hint = "'--text-column'" if "text column" in err.reason else "'--input'"
        raise click.BadParameter(str(err), param_hint=hint) from err
    except ValueError as err:  # an unknown format
        raise click.BadParameter(str(err), param_hint="'--input'") from err
    return table.column("text")


def _load_index(
    console: Console, metadata: Location, cache: bool | Path
) -> tuple[MetadataIndex, float]:
    try:
        with step(console, f"building the index of {metadata.name}"):
            started = time.perf_counter()
            index = MetadataIndex.load(metadata, cache=cache)
            seconds = time.perf_counter() - started
    except MetadataError as err:
        raise click.ClickException(str(err)) from err
    return index, seconds


@click.command(name="match", cls=Command)
@METADATA_OPTION
@click.option(
    "--input",
    "input_spec",
    required=True,
    multiple=True,
    help="Shards: a file, a directory or a glob (quote it), local or an s3://, gs:// or "
    "hf:// URL; repeat for several. TSV (headerless caption, url), CSV, JSONL, Parquet or "
    "WebDataset .tar.",
)
@STORAGE_OPTIONS_OPTION
@click.option(
    "--text-column",
    default=None,
    help="The text column [caption; with an --output directory: first of caption, text, "
    "alt, ...]. A headerless TSV's text is its first column.",
)
@KEY_COLUMN_OPTION
@click.option(
    "--output",
    type=OutputDirType(path_type=Path),
    default=None,
    help="A .parquet file: one input's texts and entry_ids. A directory (local or an s3://, "
    "gs://, hf:// URL): the curate pipeline's match stage alone (matches/ + manifest, "
    "resumable), for `count` and `balance` to go on from.",
)
@BACKEND_OPTION
@THREADS_OPTION
@log_options
def match_cmd(
    metadata: Location,
    input_spec: tuple[str, ...],
    text_column: str | None,
    key_column: str | None,
    output: Path | None,
    backend: str,
    threads: int | None,
) -> None:
    """Matches the texts of INPUT against METADATA: reports the ids (and writes them to a
    .parquet file), or runs the match stage of `curate` into an output directory."""
    if isinstance(output, RemotePath) and output.name.endswith(".parquet"):
        raise click.BadParameter(
            f"{output}: one .parquet file of ids is written locally; a URL is a run directory",
            param_hint="'--output'",
        )
    console = make_console()
    backend, _ = start_run(backend)
    if output is not None and not (isinstance(output, Path) and output.suffix == ".parquet"):
        _match_stage(console, metadata, input_spec, output, text_column, key_column, backend)
        return
    if key_column is not None:
        raise click.UsageError("--key-column needs an --output directory (the match stage)")
    [input_path] = _single_file(input_spec)
    with step(console, f"reading {input_path.name}"):
        texts = read_texts(input_path, text_column or "caption")
    index, build_seconds = _load_index(console, metadata, True)
    res, match_seconds = _run_match(console, texts, index, backend, threads)
    _summary(
        console,
        title=f"metaclip-gpu match: {input_path.name}",
        texts=texts,
        index=index,
        res=res,
        build_seconds=build_seconds,
        build_label="index load/build",
        match_seconds=match_seconds,
        synthetic=False,
    )
    if output is not None:
        import pyarrow.parquet as pq

        with step(console, f"writing {output.name}"):
            table = pa.table({"text": texts, "entry_ids": pa.chunked_array([res.to_arrow()])})
            output.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, output)
        console.print(f"wrote {len(table):,} rows (text, entry_ids) to {output}")
    n = len(res)
    payload = {
        "input": str(input_path),
        "texts": n,
        "matched": int(res.matched_texts()),
        "backend": res.backend,
        "match_seconds": round(match_seconds, 3),
        "output": None if output is None else str(output),
    }
    progress.summary_line(
        "match", payload, f"matched {payload['matched']:,} of {n:,} texts of {input_path}"
    )


def _single_file(input_spec: tuple[str, ...]) -> list[Location]:
    paths = [storage.location(p, storage_options()) for p in input_spec]
    if len(paths) != 1 or not storage.is_file(paths[0]):
        raise click.BadParameter(
            "give one existing file, or an --output directory to match many shards",
            param_hint="'--input'",
        )
    return paths


def _match_stage(
    console: Console,
    metadata: Location,
    input_spec: tuple[str, ...],
    output: Path,
    text_column: str | None,
    key_column: str | None,
    backend: str,
) -> None:
    from metaclip_gpu.pipeline.match import run_match

    shards = shards_or_fail(input_spec)
    try:
        reports = run_match(
            shards, metadata, output, options=read_options(text_column, key_column),
            backend=backend,
        )  # fmt: skip
    except (MetadataError, RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    record_input(output, input_spec)
    table = Table(title="metaclip-gpu match (stage)", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row("shards", f"{len(reports):,}")
    table.add_row("texts read", f"{sum(r.rows for r in reports):,}")
    for r in reports:
        if r.error:
            table.add_row("unreadable shard", f"{r.shard.name}: {r.error}")
    table.add_row("matches", str(output / "matches"))
    console.print(table)
    outcome = run_outcome(
        len(reports),
        sum(r.rows for r in reports),
        [{"shard": r.shard.name, "error": r.error} for r in reports if r.error],
    )
    following = None
    if outcome["exit_code"] != EXIT_NOTHING_READ:
        following = f"metaclip-gpu count --metadata {metadata} --output {output}"
        console.print(f"next: {following}", soft_wrap=True)
    payload = {
        "shards": len(reports),
        "texts_read": sum(r.rows for r in reports),
        "matches": str(output / "matches"),
        "next": following,
    }
    finish(outcome, "match", payload)


@click.command(cls=Command)
@click.option(
    "--metadata",
    required=True,
    type=LocationType(exists=True, dir_okay=False),
    help="The metadata the match stage used.",
)
@STORAGE_OPTIONS_OPTION
@click.option(
    "--output",
    required=True,
    type=OutputDirType(file_okay=False, exists=True, path_type=Path),
    help="The output directory of the match stage (local or a URL).",
)
@log_options
def count(metadata: Location, output: Path) -> None:
    """Counts the match stage's outputs: entry_counts.npy and entry_counts.parquet (stage alone)."""
    from metaclip_gpu.pipeline.count import run_count
    from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET

    console = make_console()
    try:
        counts = run_count(output, metadata)
    except (MetadataError, FileNotFoundError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from err
    table = Table(title="metaclip-gpu count", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row("distinct entries matched", f"{int((counts > 0).sum()):,} of {len(counts):,}")
    table.add_row("(text, entry) matches", f"{int(counts.sum(dtype=np.uint64)):,}")
    table.add_row("entry counts", f"{output / COUNTS_NPY}, {output / COUNTS_PARQUET}")
    console.print(table)
    following = next_balance(output, counts)
    console.print(f"next: {following}", soft_wrap=True)
    matches = int(counts.sum(dtype=np.uint64))
    payload = {
        "distinct_entries_matched": int((counts > 0).sum()),
        "metadata_entries": len(counts),
        "matches": matches,
        "outputs": [str(output / COUNTS_NPY), str(output / COUNTS_PARQUET)],
        "next": following,
    }
    progress.summary_line(
        "count", payload, f"counted {matches:,} (text, entry) matches; next: {following}"
    )


def next_balance(output: Path, counts: np.ndarray) -> str:
    """The ``balance`` command that goes on from the counts in `output`: its --input is the
    match stage command's (SHARDS when another route matched); its t MetaCLIP's 20000 when
    entries above it hold matches, else the 90th percentile of the matched entries' counts
    (a pool too small for 20000 would keep everything)."""
    import shlex

    from metaclip_gpu.pipeline.rundir import load_state

    inputs = (load_state(output) or {}).get(INPUT_RECORD) or ["SHARDS"]  # `record_input`
    source = " --input ".join(shlex.quote(str(spec)) for spec in inputs)
    matched = counts[counts > 0]
    t = 20000
    if len(matched) and not (matched > t).any():
        t = max(1, int(np.percentile(matched, 90)))
    return f"metaclip-gpu balance --input {source} --output {shlex.quote(str(output))} --t {t}"


@click.command(name="build-index", cls=Command)
@METADATA_OPTION
@STORAGE_OPTIONS_OPTION
@click.option(
    "--cache-dir",
    type=LocalDirType(refusal=CACHE_NOT_REMOTE, file_okay=False, path_type=Path),
    default=None,
    help="Index cache directory, local [$METACLIP_GPU_CACHE or ~/.cache/metaclip-gpu].",
)
def build_index(metadata: Location, cache_dir: Path | None) -> None:
    """Builds (or reads from the cache) the index of METADATA and prints its statistics."""
    from metaclip_gpu.engine.index import default_cache_dir

    console = make_console()
    try:
        where = cache_dir if cache_dir is not None else default_cache_dir()
    except ValueError as err:  # $METACLIP_GPU_CACHE is a URL
        raise click.ClickException(str(err)) from err
    before = set(where.iterdir()) if where.is_dir() else set()
    index, seconds = _load_index(console, metadata, where)
    after = set(where.iterdir()) if where.is_dir() else set()
    stats = index.stats
    table = Table(title=f"index of {metadata}", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row("entries", f"{stats.n_entries:,}")
    table.add_row("distinct n-gram keys", f"{stats.n_keys:,}")
    table.add_row("unmatchable entries", f"{stats.n_unmatchable:,}")
    table.add_row("fingerprint-merged keys", f"{stats.n_merged:,}")
    table.add_row("most tokens in an entry", f"{stats.max_tokens:,}")
    table.add_row("table slots", f"{stats.table_slots:,}")
    table.add_row("index size", f"{index.nbytes / 2**20:,.1f} MiB ({index.nbytes:,} bytes)")
    table.add_row("build time", f"{stats.build_seconds:.2f} s")
    table.add_row(
        "this run", f"{'built' if after - before else 'read from cache'} in {seconds:.2f} s"
    )
    table.add_row("cache", str(where))
    table.add_row("metadata SHA-256", stats.digest)
    console.print(table)
