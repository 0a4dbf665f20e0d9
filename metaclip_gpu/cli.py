"""The ``metaclip-gpu`` command line.

``demo`` curates synthetic data made locally (metaclip_gpu.synthetic) end to end; ``curate``
runs the sharded pipeline (match -> count -> balance, `metaclip_gpu.curate`; ``--worldwide``:
MetaCLIP 2's, `metaclip_gpu.worldwide`) and writes the report; ``match`` (with an output
directory), ``count`` and ``balance`` run its stages one at a time, and ``match`` with one
file shows (and can write) that file's matches; ``report`` (re)writes a run's report;
``build-index`` compiles and caches the index of a metadata file; ``build-metadata`` makes a
metadata file from WordNet, corpus n-grams and titles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from metaclip_gpu import __version__
from metaclip_gpu.balance import keep_probability
from metaclip_gpu.index import MetadataIndex
from metaclip_gpu.match import MatchResult, match
from metaclip_gpu.metadata import MetadataError
from metaclip_gpu.read import ReadOptions, ShardError, read_table

BACKENDS = click.Choice(["auto", "cpu", "gpu"])

# Options shared by several commands.
METADATA_OPTION = click.option(
    "--metadata",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of strings, or one entry per line.",
)
BACKEND_OPTION = click.option("--backend", default="auto", show_default=True, type=BACKENDS)
THREADS_OPTION = click.option(
    "--threads", default=None, type=click.IntRange(1), help="CPU threads [all cores]"
)
INPUT_SHARDS_OPTION = click.option(
    "--input",
    "input_spec",
    required=True,
    multiple=True,
    help="Shards: a directory, a glob (quote it) or a file; repeat for several. Parquet, "
    "JSONL, TSV (headerless caption, url), CSV or WebDataset .tar.",
)
T_OPTION = click.option(
    "--t",
    "ts",
    multiple=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Balancing threshold (MetaCLIP: 20000 for 400M pairs); repeat for several.",
)
TARGET_OPTION = click.option(
    "--target-size",
    type=click.IntRange(1),
    default=None,
    help="Also solve for the t whose expected kept size is this many texts.",
)
SEED_OPTION = click.option("--seed", default=0, show_default=True, type=int)
TEXT_COLUMN_OPTION = click.option(
    "--text-column", default=None, help="Text column [first of caption, text, alt, ...]."
)
KEY_COLUMN_OPTION = click.option(
    "--key-column",
    default=None,
    help="Stable id column for the draws [first of key, url, id, ...; else text hash + row].",
)


def _console() -> Console:
    """A console on the current stdout (rich reads ``sys.stdout`` when printing)."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=120)
    return console


@contextmanager
def _step(console: Console, description: str) -> Iterator[None]:
    """A transient spinner with the elapsed time while a long step runs."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        progress.add_task(description, total=None)
        yield


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _run_match(
    console: Console, texts: Any, index: MetadataIndex, backend: str, threads: int | None
) -> tuple[MatchResult, float]:
    try:
        with _step(console, f"matching {len(texts):,} texts"):
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
            "[bold yellow]SYNTHETIC INPUT[/]: the metadata and texts below were generated "
            "from the wordfreq package (metaclip_gpu.synthetic), not real data."
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
def read_texts(path: Path, text_column: str) -> pa.ChunkedArray:
    """The text column of one shard (TSV: headerless ``caption, url`` like CC3M; JSONL, Parquet,
    CSV or a WebDataset tar: the `text_column`), read by the pipeline's reader (read.py)."""
    try:
        table = read_table([path], ReadOptions(text_column=text_column))
    except ShardError as err:
        hint = "'--text-column'" if "text column" in err.reason else "'--input'"
        raise click.BadParameter(str(err), param_hint=hint) from err
    except ValueError as err:  # an unknown format
        raise click.BadParameter(str(err), param_hint="'--input'") from err
    return table.column("text")


def _load_index(
    console: Console, metadata: Path, cache: bool | Path
) -> tuple[MetadataIndex, float]:
    try:
        with _step(console, f"building the index of {metadata.name}"):
            started = time.perf_counter()
            index = MetadataIndex.load(metadata, cache=cache)
            seconds = time.perf_counter() - started
    except MetadataError as err:
        raise click.ClickException(str(err)) from err
    return index, seconds


# ---------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metaclip-gpu")
def main() -> None:
    """MetaCLIP metadata sub-string matching on the GPU or the CPU."""


@main.command()
@click.option("--texts", "n_texts", default=200_000, show_default=True, type=click.IntRange(1))
@click.option("--shards", "n_shards", default=8, show_default=True, type=click.IntRange(1))
@click.option(
    "--output",
    default=Path("demo-run"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the synthetic input (input/) and the curate run's outputs go.",
)
@click.option(
    "--t",
    "ts",
    multiple=True,
    type=click.FloatRange(min=0, min_open=True),
    default=(100.0, 1000.0),
    show_default=True,
    help="Balancing threshold(s).",
)
@BACKEND_OPTION
@THREADS_OPTION
@click.option("--seed", default=0, show_default=True, type=int)
def demo(
    n_texts: int,
    n_shards: int,
    output: Path,
    ts: tuple[float, ...],
    backend: str,
    threads: int | None,
    seed: int,
) -> None:
    """Curates a SYNTHETIC pool end to end (no files needed): the `curate` command's run."""
    from metaclip_gpu.curate import run_curate

    console = _console()
    try:
        from metaclip_gpu.synthetic import write_pool

        with _step(console, f"writing {n_texts:,} synthetic alt-texts in {n_shards} shards"):
            metadata_path, shards_dir = write_pool(output / "input", n_texts, n_shards, seed)
    except ImportError as err:
        raise click.ClickException(str(err)) from err
    console.print(
        "[bold yellow]SYNTHETIC INPUT[/]: the metadata and texts were generated from the "
        f"wordfreq package (metaclip_gpu.synthetic), not real data: {output / 'input'}"
    )
    try:
        summary = run_curate(
            shards_dir,
            metadata_path,
            output,
            ts=list(ts),
            seed=seed,
            backend=backend,
            threads=threads,
        )
    except (MetadataError, RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    _print_curate_summary(console, summary)
    _write_report(console, output, required=False)
    console.print(
        "\nOn real data: [bold]metaclip-gpu curate --metadata metadata.json --input "
        "shards/ --output run/ --t 20000[/] (Parquet, JSONL, TSV or WebDataset shards)"
    )


@main.command(name="match")
@METADATA_OPTION
@click.option(
    "--input",
    "input_spec",
    required=True,
    multiple=True,
    help="Shards: a file, a directory or a glob (quote it); repeat for several. TSV "
    "(headerless caption, url), CSV, JSONL, Parquet or WebDataset .tar.",
)
@click.option(
    "--text-column",
    default=None,
    help="The text column [caption; with an --output directory: first of caption, text, "
    "alt, ...]. A headerless TSV's text is its first column.",
)
@KEY_COLUMN_OPTION
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="A .parquet file: one input's texts and entry_ids. A directory: the curate "
    "pipeline's match stage alone (matches/ + manifest, resumable), for `count` and "
    "`balance` to go on from.",
)
@BACKEND_OPTION
@THREADS_OPTION
def match_cmd(
    metadata: Path,
    input_spec: tuple[str, ...],
    text_column: str | None,
    key_column: str | None,
    output: Path | None,
    backend: str,
    threads: int | None,
) -> None:
    """Matches the texts of INPUT against METADATA: reports the ids (and writes them to a
    .parquet file), or runs the match stage of `curate` into an output directory."""
    console = _console()
    if output is not None and output.suffix != ".parquet":
        _match_stage(console, metadata, input_spec, output, text_column, key_column, backend)
        return
    if key_column is not None:
        raise click.UsageError("--key-column needs an --output directory (the match stage)")
    [input_path] = _single_file(input_spec)
    with _step(console, f"reading {input_path.name}"):
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

        with _step(console, f"writing {output.name}"):
            table = pa.table({"text": texts, "entry_ids": pa.chunked_array([res.to_arrow()])})
            output.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, output)
        console.print(f"wrote {len(table):,} rows (text, entry_ids) to {output}")


def _single_file(input_spec: tuple[str, ...]) -> list[Path]:
    paths = [Path(p) for p in input_spec]
    if len(paths) != 1 or not paths[0].is_file():
        raise click.BadParameter(
            "give one existing file, or an --output directory to match many shards",
            param_hint="'--input'",
        )
    return paths


def _match_stage(
    console: Console,
    metadata: Path,
    input_spec: tuple[str, ...],
    output: Path,
    text_column: str | None,
    key_column: str | None,
    backend: str,
) -> None:
    from metaclip_gpu.stages import run_match

    shards = _shards_or_fail(input_spec)
    try:
        reports = run_match(
            shards, metadata, output, options=_read_options(text_column, key_column),
            backend=backend,
        )  # fmt: skip
    except (MetadataError, RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
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
    console.print(f"next: metaclip-gpu count --metadata {metadata} --output {output}")


@main.command()
@click.option(
    "--metadata",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The metadata the match stage used.",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The output directory of the match stage.",
)
def count(metadata: Path, output: Path) -> None:
    """Counts the match stage's outputs: entry_counts.npy and entry_counts.parquet (stage alone)."""
    from metaclip_gpu.stages import COUNTS_NPY, COUNTS_PARQUET, run_count

    console = _console()
    try:
        counts = run_count(output, metadata)
    except (MetadataError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    table = Table(title="metaclip-gpu count", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row("distinct entries matched", f"{int((counts > 0).sum()):,} of {len(counts):,}")
    table.add_row("(text, entry) matches", f"{int(counts.sum(dtype=np.uint64)):,}")
    table.add_row("entry counts", f"{output / COUNTS_NPY}, {output / COUNTS_PARQUET}")
    console.print(table)


@main.command(name="build-index")
@METADATA_OPTION
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Index cache directory [$METACLIP_GPU_CACHE or ~/.cache/metaclip-gpu].",
)
def build_index(metadata: Path, cache_dir: Path | None) -> None:
    """Builds (or reads from the cache) the index of METADATA and prints its statistics."""
    from metaclip_gpu.index import default_cache_dir

    console = _console()
    where = cache_dir if cache_dir is not None else default_cache_dir()
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


# ---------------------------------------------------------------------- curate / balance


def _read_options(text_column: str | None, key_column: str | None) -> ReadOptions:
    return ReadOptions(text_column=text_column, key_column=key_column)


def _check_ts(ts: tuple[float, ...], target_size: int | None) -> None:
    if not ts and target_size is None:
        raise click.UsageError("give --t (one or more) or --target-size")


def _shards_or_fail(input_spec: tuple[str, ...]) -> list[Any]:
    from metaclip_gpu.read import find_shards

    try:
        return find_shards(list(input_spec))
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="'--input'") from err


def _balance_rows(table: Table, per_t: list[dict[str, Any]]) -> None:
    for f in per_t:
        label = f"t = {f['t']:,.6g}" + (" (solved)" if f.get("solved") else "")
        matched = f["matched"]
        kept_share = f["kept"] / matched if matched else 0.0
        table.add_row(
            f"kept, {label}",
            f"{f['kept']:,} ({kept_share:.1%} of matched; expected {f['expected_kept']:,.1f})",
        )
        table.add_row(
            f"  head entries (count > t), {label}",
            f"{f['head_entries']:,} ({f['head_entry_share']:.1%} of matched entries, "
            f"{f['head_match_share']:.1%} of matches)",
        )


def _read_table(title: str, summary: dict[str, Any]) -> Table:
    """A two-column figures table opened with the summary's reading figures (`read_figures`)."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row(
        "shards", f"{summary['shards']:,} ({summary['shards_matched_this_run']:,} matched this run)"
    )
    table.add_row("texts read", f"{summary['texts_read']:,}")
    skipped = summary["skipped"]
    table.add_row(
        "rows skipped",
        ", ".join(f"{reason}: {n:,}" for reason, n in skipped.items()) if skipped else "none",
    )
    return table


def _print_curate_summary(console: Console, summary: dict[str, Any]) -> None:
    table = _read_table("metaclip-gpu curate", summary)
    table.add_row("null texts", f"{summary['null_texts']:,}")
    for bad in summary["shards_unreadable"]:
        table.add_row("unreadable shard", f"{bad['shard']}: {bad['error']}")
    texts = summary["texts_read"]
    share = summary["matched"] / texts if texts else 0.0
    table.add_row("matched texts", f"{summary['matched']:,} ({share:.1%})")
    table.add_row(
        "distinct entries matched",
        f"{summary['distinct_entries_matched']:,} of {summary['metadata_entries']:,}",
    )
    _balance_rows(table, summary["ts"])
    seconds = summary["seconds"]
    table.add_row(
        "seconds",
        ", ".join(f"{stage} {value:.2f}" for stage, value in seconds.items()),
    )
    if summary["shards_matched_this_run"] and seconds.get("match", 0) > 0:
        table.add_row("read + match rate", f"{texts / seconds['match']:,.0f} texts/s")
    outputs = summary["outputs"]
    table.add_row("matches", outputs["matches"])
    table.add_row(
        "entry counts", f"{outputs['entry_counts_npy']}, {outputs['entry_counts_parquet']}"
    )
    for label, path in outputs["curated"].items():
        table.add_row(f"curated shards ({label})", path)
    table.add_row("summary", outputs["summary"])
    console.print(table)
    _print_top_entries(console, summary)


def _print_top_entries(console: Console, summary: dict[str, Any], n: int = 10) -> None:
    """The `n` most matched entries (from ``entry_counts.parquet``) and their keep chance."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts = pq.read_table(summary["outputs"]["entry_counts_parquet"])
    top = counts.take(pc.select_k_unstable(counts, n, [("count", "descending")]))
    ts = [f["t"] for f in summary["ts"]]
    table = Table(title="most matched entries", title_justify="left")
    table.add_column("entry id", justify="right")
    table.add_column("entry")
    table.add_column("texts", justify="right")
    for t in ts:
        table.add_column(f"keep p, t = {t:,.6g}", justify="right")
    top = top.filter(pc.greater(top.column("count"), 0))
    top_counts = top.column("count").to_numpy()
    keep = [keep_probability(top_counts, t) for t in ts]
    for i, row in enumerate(top.to_pylist()):
        probs = [f"{p[i]:.3f}" for p in keep]
        table.add_row(str(row["entry_id"]), repr(row["entry"]), f"{row['count']:,}", *probs)
    console.print(table)


def _print_worldwide_summary(console: Console, summary: dict[str, Any]) -> None:
    table = _read_table("metaclip-gpu curate --worldwide", summary)
    table.add_row(
        f"unknown language ({summary['unknown_language_policy']})",
        f"{summary['unknown_language']:,}",
    )
    for bad in summary["shards_unreadable"]:
        table.add_row("unreadable shard", f"{bad['shard']}: {bad['error']}")
    for f in summary["ts"]:
        table.add_row(
            f"t_en = {f['t']:,.6g}",
            f"tail share p = {f['tail_share']:.4f}; {f['samples']:,} images with a matched "
            f"text, {f['kept']:,} kept (expected {f['expected_kept']:,.1f})",
        )
    seconds = summary["seconds"]
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    for label, path in summary["outputs"]["curated"].items():
        table.add_row(f"curated shards ({label})", path)
    table.add_row("entry probabilities", summary["outputs"]["entry_probs"])
    table.add_row("summary", summary["outputs"]["summary"])
    console.print(table)

    labels = list(summary["outputs"]["curated"])
    per_lang = Table(title="per language", title_justify="left")
    for name in ("language", "texts", "matched", "images"):
        per_lang.add_column(name, justify="left" if name == "language" else "right")
    for label in labels:
        per_lang.add_column(f"t ({label})", justify="right")
        per_lang.add_column(f"kept ({label})", justify="right")
    for lang, f in summary["languages"].items():
        cells = [lang, f"{f['texts']:,}", f"{f['matched']:,}", f"{f['samples']:,}"]
        for label in labels:
            t = f["t"][label]
            cells += ["-" if t is None else f"{t:,.6g}", f"{f['kept'][label]:,}"]
        per_lang.add_row(*cells)
    console.print(per_lang)


@main.command()
@click.option(
    "--metadata",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="JSON list of strings, or one entry per line; with --worldwide a directory of "
    "<lang>.json files or one JSON object {lang: [entries]}.",
)
@INPUT_SHARDS_OPTION
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (matches/, entry_counts.*, curated/t=<t>/, summary.json).",
)
@T_OPTION
@TARGET_OPTION
@SEED_OPTION
@TEXT_COLUMN_OPTION
@KEY_COLUMN_OPTION
@BACKEND_OPTION
@THREADS_OPTION
@click.option(
    "--cluster",
    type=click.Choice(["local"]),
    default=None,
    help="Run the per-shard work on a dask cluster started here: distributed.LocalCluster "
    "on CPU, dask_cuda.LocalCUDACluster (one worker per GPU) with --backend gpu.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Workers of --cluster local [CPU: dask's default; GPU: one per GPU]. Each worker "
    "matches with --threads threads [1].",
)
@click.option(
    "--scheduler-address",
    default=None,
    help="Join a running dask cluster (tcp://host:8786), e.g. `dask scheduler` plus "
    "`dask worker`/`dask cuda worker` on each node; paths must be shared.",
)
@click.option(
    "--rmm-pool-size",
    default=None,
    help="GPU --cluster local only: RMM pool per worker (e.g. 40GB).",
)
@click.option(
    "--no-report",
    is_flag=True,
    help="Do not write OUTPUT/report/ (index.html and PNGs; `metaclip-gpu report` does later).",
)
@click.option(
    "--worldwide",
    is_flag=True,
    help="MetaCLIP 2: per-language metadata, counts and t (--t is then t_en, default "
    "170000), one text per image.",
)
@click.option("--lang-column", default=None, help="--worldwide: [first of lang, language, lid].")
@click.option(
    "--image-column",
    default=None,
    help="--worldwide: rows with the same value are one image's alt-texts [the key column].",
)
@click.option(
    "--unknown-language",
    type=click.Choice(["skip", "other"]),
    default="skip",
    show_default=True,
    help="--worldwide: texts of a language without metadata are skipped (and counted) or "
    "matched against the 'other' metadata.",
)
def curate(
    metadata: Path,
    input_spec: tuple[str, ...],
    output: Path,
    ts: tuple[float, ...],
    target_size: int | None,
    seed: int,
    text_column: str | None,
    key_column: str | None,
    backend: str,
    threads: int | None,
    cluster: str | None,
    workers: int | None,
    scheduler_address: str | None,
    rmm_pool_size: str | None,
    no_report: bool,
    worldwide: bool,
    lang_column: str | None,
    image_column: str | None,
    unknown_language: str,
) -> None:
    """Runs match -> count -> balance on the shards of INPUT and writes curated shards, then
    the report (OUTPUT/report/index.html)."""
    from metaclip_gpu.cluster import close_client, make_client
    from metaclip_gpu.curate import run_curate

    if worldwide:
        if target_size is not None:
            raise click.UsageError("--target-size is not available with --worldwide")
    else:
        _check_ts(ts, target_size)
        if lang_column or image_column or unknown_language != "skip":
            raise click.UsageError(
                "--lang-column, --image-column and --unknown-language need --worldwide"
            )
    if cluster and scheduler_address:
        raise click.UsageError("give --cluster or --scheduler-address, not both")
    if rmm_pool_size is not None and not (cluster and backend == "gpu"):
        raise click.UsageError("--rmm-pool-size needs --cluster local --backend gpu")
    console = _console()
    shards = _shards_or_fail(input_spec)
    try:
        client = make_client(
            cluster=cluster,
            scheduler_address=scheduler_address,
            workers=workers,
            backend=backend,
            threads_per_worker=threads or 1,
            rmm_pool_size=rmm_pool_size,
        )
    except (RuntimeError, ValueError, OSError) as err:  # no dask-cuda, scheduler unreachable
        raise click.ClickException(f"cannot start or join the dask cluster: {err}") from err
    try:
        if worldwide:
            from metaclip_gpu.worldwide import DEFAULT_T_EN, run_worldwide

            summary = run_worldwide(
                shards,
                metadata,
                output,
                options=_read_options(text_column, key_column),
                t_en=list(ts) or [DEFAULT_T_EN],
                seed=seed,
                lang_column=lang_column,
                image_column=image_column,
                unknown=unknown_language,  # type: ignore[arg-type]
                backend=backend,
                threads=threads,
                client=client,
            )
        else:
            summary = run_curate(
                shards,
                metadata,
                output,
                options=_read_options(text_column, key_column),
                ts=list(ts),
                target_size=target_size,
                seed=seed,
                backend=backend,
                threads=threads,
                client=client,
            )
    except (MetadataError, RuntimeError, ValueError, ShardError) as err:  # e.g. no GPU
        raise click.ClickException(str(err)) from err
    finally:
        close_client(client)
    if worldwide:
        _print_worldwide_summary(console, summary)
    else:
        _print_curate_summary(console, summary)
    if not no_report:
        _write_report(console, output, required=False)


@main.command()
@INPUT_SHARDS_OPTION
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The output directory of the match and count stages.",
)
@T_OPTION
@TARGET_OPTION
@SEED_OPTION
@TEXT_COLUMN_OPTION
@KEY_COLUMN_OPTION
@BACKEND_OPTION
def balance(
    input_spec: tuple[str, ...],
    output: Path,
    ts: tuple[float, ...],
    target_size: int | None,
    seed: int,
    text_column: str | None,
    key_column: str | None,
    backend: str,
) -> None:
    """Balances (stage alone) the shards of INPUT matched and counted into OUTPUT."""
    from metaclip_gpu.curate import run_balance

    _check_ts(ts, target_size)
    console = _console()
    shards = _shards_or_fail(input_spec)
    try:
        result = run_balance(
            output,
            shards,
            options=_read_options(text_column, key_column),
            ts=list(ts),
            target_size=target_size,
            seed=seed,
            backend=backend,
        )
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    table = Table(title="metaclip-gpu balance", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    per_t = result["ts"]
    table.add_row("texts", f"{per_t[0]['texts']:,}")
    table.add_row("matched texts", f"{per_t[0]['matched']:,}")
    table.add_row("distinct entries matched", f"{result['distinct_entries_matched']:,}")
    _balance_rows(table, per_t)
    for f in per_t:
        table.add_row(f"curated shards ({f['t']:,.6g})", f["output"])
    console.print(table)


# ---------------------------------------------------------------------- report
def _write_report(console: Console, run_dir: Path, *, required: bool) -> None:
    """Writes the report of `run_dir` and prints where it is. Without matplotlib/jinja2 (the
    ``report`` extra) this fails when `required`, else prints how to get the report later."""
    try:
        from metaclip_gpu.report import write_report
    except ImportError as err:
        hint = f"the report needs the 'report' extra ({err}): pip install 'metaclip-gpu[report]'"
        if required:
            raise click.ClickException(hint) from err
        console.print(f"no report: {hint}, then metaclip-gpu report {run_dir}")
        return
    with _step(console, "writing the report"):
        index = write_report(run_dir)
    console.print(f"report: {index}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Writes RUN_DIR/report/index.html (+ PNGs) from a curate run's summary.json and counts."""
    from metaclip_gpu.curate import SUMMARY_NAME

    if not (run_dir / SUMMARY_NAME).is_file():
        raise click.BadParameter(
            f"{run_dir / SUMMARY_NAME} not found: not the output folder of metaclip-gpu curate",
            param_hint="'RUN_DIR'",
        )
    _write_report(_console(), run_dir, required=True)


# ---------------------------------------------------------------------- build-metadata
def _print_build_summary(console: Console, result: Any) -> None:
    table = Table(title="metaclip-gpu build-metadata", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    corpus = result.corpus
    if corpus is not None:
        table.add_row(
            "corpus",
            f"{corpus.texts:,} texts, {corpus.tokens:,} word tokens, "
            f"{corpus.distinct_unigrams:,} distinct unigrams, "
            f"{corpus.distinct_bigrams:,} distinct bigrams",
        )
    for name, fig in result.figures.items():
        dropped = ", ".join(f"{why} {n:,}" for why, n in sorted(fig.dropped.items())) or "none"
        cap = "no cap" if fig.cap is None else f"cap {fig.cap:,}"
        table.add_row(
            name,
            f"{fig.added:,} added of {fig.candidates:,} candidates ({cap}); "
            f"{fig.duplicates:,} already present; dropped: {dropped}",
        )
    table.add_row("entries", f"{result.entries:,}")
    table.add_row("metadata", str(result.metadata))
    table.add_row("provenance", str(result.provenance))
    console.print(table)


@main.command(name="build-metadata")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="metadata.json to write (a JSON list of strings); the provenance goes beside it.",
)
@click.option(
    "--wordnet",
    "wordnet_spec",
    default="auto",
    show_default=True,
    help="WordNet lemmas: 'auto' (nltk's corpus, else /usr/share/wordnet), a folder with "
    "WordNet's data.* files, or 'none'.",
)
@click.option(
    "--corpus",
    "corpus_spec",
    multiple=True,
    help="Text shards for unigrams and bigrams (as curate's --input); repeat for several.",
)
@TEXT_COLUMN_OPTION
@click.option("--min-unigram-count", default=100, show_default=True, type=click.IntRange(1))
@click.option("--min-bigram-pmi", default=30.0, show_default=True, type=float)
@click.option(
    "--titles",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Titles with counts, one 'title<TAB>count' a line (e.g. Wikipedia page views).",
)
@click.option("--min-title-count", default=1, show_default=True, type=click.IntRange(1))
@click.option("--numbers/--no-numbers", default=False, help="Add '0'..'99' first (MetaCLIP 2).")
@click.option("--max-unigrams", default=251_465, show_default=True, type=click.IntRange(0))
@click.option("--max-bigrams", default=100_646, show_default=True, type=click.IntRange(0))
@click.option("--max-titles", default=61_235, show_default=True, type=click.IntRange(0))
@click.option(
    "--unigram-share",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Also cap unigrams at this share of the candidates (MetaCLIP 2: 0.1).",
)
@click.option(
    "--title-share",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Also cap titles at this share of the candidates (MetaCLIP 2: 0.76).",
)
@BACKEND_OPTION
@click.option("--cluster", type=click.Choice(["local"]), default=None, help="As curate's.")
@click.option("--workers", type=click.IntRange(1), default=None, help="As curate's.")
@click.option("--scheduler-address", default=None, help="As curate's.")
def build_metadata_cmd(
    out: Path,
    wordnet_spec: str,
    corpus_spec: tuple[str, ...],
    text_column: str | None,
    min_unigram_count: int,
    min_bigram_pmi: float,
    titles: Path | None,
    min_title_count: int,
    numbers: bool,
    max_unigrams: int,
    max_bigrams: int,
    max_titles: int,
    unigram_share: float,
    title_share: float,
    backend: str,
    cluster: str | None,
    workers: int | None,
    scheduler_address: str | None,
) -> None:
    """Builds a MetaCLIP metadata.json from WordNet, corpus n-grams and titles."""
    from metaclip_gpu.build_metadata import (
        Caps,
        TitlesError,
        build_metadata,
        count_corpus_ngrams,
        read_titles,
    )
    from metaclip_gpu.cluster import close_client, make_client
    from metaclip_gpu.read import find_shards
    from metaclip_gpu.wordnet import WordNetError, WordNetNotFound, find_wordnet

    if cluster and scheduler_address:
        raise click.UsageError("give --cluster or --scheduler-address, not both")
    console = _console()
    try:
        wordnet = None if wordnet_spec == "none" else find_wordnet(wordnet_spec)
        title_counts = read_titles(titles) if titles is not None else None
        shards = find_shards(list(corpus_spec)) if corpus_spec else None
    except (WordNetNotFound, TitlesError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    corpus = None
    if shards is not None:
        try:
            client = make_client(
                cluster=cluster,
                scheduler_address=scheduler_address,
                workers=workers,
                backend=backend,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise click.ClickException(f"cannot start or join the dask cluster: {err}") from err
        try:
            with _step(console, f"counting n-grams of {len(shards):,} shards"):
                corpus = count_corpus_ngrams(
                    shards,
                    _read_options(text_column, None),
                    min_unigram_count=min_unigram_count,
                    min_bigram_pmi=min_bigram_pmi,
                    backend=backend,
                    client=client,
                )
        except (RuntimeError, ValueError) as err:  # an unreadable shard, --backend gpu
            raise click.ClickException(str(err)) from err
        finally:
            close_client(client)
    caps = Caps(max_unigrams, max_bigrams, max_titles, unigram_share, title_share)
    try:
        result = build_metadata(
            out,
            wordnet=wordnet,
            corpus=corpus,
            titles=title_counts,
            min_title_count=min_title_count,
            numbers=numbers,
            caps=caps,
        )
    except (WordNetError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    _print_build_summary(console, result)


if __name__ == "__main__":  # pragma: no cover
    main()
