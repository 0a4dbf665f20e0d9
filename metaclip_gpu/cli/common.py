"""What the commands share: options, the console, reading options and the input shards."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from metaclip_gpu import storage
from metaclip_gpu.pipeline import progress
from metaclip_gpu.pipeline.oserrors import describe
from metaclip_gpu.pipeline.read import ReadOptions

BACKENDS = click.Choice(["auto", "cpu", "gpu"])
STORAGE_OPTIONS_KEY = "metaclip_gpu.storage_options"  # in the root context's meta


def _store_storage_options(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    try:
        options = storage.parse_options(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    ctx.meta[STORAGE_OPTIONS_KEY] = options
    return options


STORAGE_OPTIONS_OPTION = click.option(
    "--storage-options",
    default=None,
    is_eager=True,  # parsed before the paths that use it
    expose_value=False,
    callback=_store_storage_options,
    metavar="JSON",
    help="For s3://, gs:// and hf:// paths: the fsspec file system's options as a JSON "
    'object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000", "anon": true}\' '
    "[credentials and endpoint from the standard environment: AWS_ACCESS_KEY_ID, "
    "AWS_ENDPOINT_URL, ...].",
)


def storage_options() -> dict[str, Any]:
    """The command's ``--storage-options`` (empty when not given)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(STORAGE_OPTIONS_KEY) or {}) if ctx is not None else {}


class LocationType(click.ParamType):
    """A path that may be a URL (``s3://``, ``gs://``, ``hf://``): a local one is checked as
    ``click.Path`` checks it and becomes a `Path`; a URL becomes a `storage.RemotePath` with
    the command's ``--storage-options`` (whether it exists is found out when it is read)."""

    name = "path"

    def __init__(self, *, exists: bool = False, dir_okay: bool = True, file_okay: bool = True):
        self.local = click.Path(
            exists=exists, dir_okay=dir_okay, file_okay=file_okay, path_type=Path
        )

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, storage.RemotePath):
            return value
        if isinstance(value, str) and storage.is_url(value):
            return storage.location(value, storage_options())
        local = storage.location(value) if isinstance(value, str) else value
        return self.local.convert(local, param, ctx)


REPORT_NOT_REMOTE = (
    "report --output must be a local folder (without it, the report of a run directory in "
    "object storage is written into that run directory's report/)"
)
CACHE_NOT_REMOTE = (
    "the index cache must be a local folder (the index is memory-mapped; the index of remote "
    "metadata is cached locally by its SHA-256)"
)


class LocalDirType(click.Path):
    """``click.Path`` for a folder that must be local (report's --output; the index cache):
    a URL is refused with one line saying why (`refusal`) instead of becoming a local folder
    called ``s3:``."""

    def __init__(self, *, refusal: str = REPORT_NOT_REMOTE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusal = refusal

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and storage.is_url(value):
            self.fail(f"{value}: {self.refusal}", param, ctx)
        return super().convert(value, param, ctx)


class OutputDirType(LocalDirType):
    """A run directory (``--output``): a local folder checked as ``click.Path`` checks it, or
    an ``s3://``, ``gs://``, ``hf://`` URL that becomes a `storage.RemotePath` with the
    command's ``--storage-options`` (written without renames: `storage_write`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, storage.RemotePath):
            return value
        if isinstance(value, str) and storage.is_url(value):
            loc = storage.location(value.rstrip("/"), storage_options())
            if self.exists:  # as click.Path(exists=True) checks a local folder
                try:
                    found = storage.is_dir(loc)
                except OSError as err:  # no bucket, refused credentials: one line
                    self.fail(describe(err, loc), param, ctx)
                if not found:
                    self.fail(f"{loc}: no such run directory", param, ctx)
            return loc
        return super().convert(value, param, ctx)


# Options shared by several commands.
METADATA_OPTION = click.option(
    "--metadata",
    required=True,
    type=LocationType(exists=True, dir_okay=False),
    help="JSON list of strings, or one entry per line (a path or an s3://, gs://, hf:// URL).",
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
    help="Shards: a directory, a glob (quote it) or a file, local or an s3://, gs:// or "
    "hf:// URL; repeat for several. Parquet, JSONL, TSV (headerless caption, url), CSV or "
    "WebDataset .tar.",
)
T_OPTION = click.option(
    "--t",
    "ts",
    multiple=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Balancing threshold (MetaCLIP: 20000 for 400M pairs); repeat for several. "
    "Required: --t or --target-size (or both).",
)
TARGET_OPTION = click.option(
    "--target-size",
    type=click.IntRange(1),
    default=None,
    help="Solve for the t whose expected kept size is this many texts (as well as any --t). "
    "Required: --t or --target-size.",
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
CURATED_ENTRY_IDS_OPTION = click.option(
    "--curated-entry-ids",
    is_flag=True,
    help="Curated shards also hold entry_ids (each kept row's matched entries). By default "
    "they hold the input's columns only; every row's ids are in OUTPUT/matches/ (shard, row).",
)


def _log_setting(name: str) -> Any:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        progress.configure(**{name: value})
        return value

    return store


def log_options(command: Any) -> Any:
    """``--quiet``, ``--log-format`` and ``--progress-interval``: set this process's
    `progress.LogSettings` as they are parsed (the command does not take them)."""
    for option in reversed(
        [
            click.option(
                "--quiet",
                "-q",
                is_flag=True,
                expose_value=False,
                callback=_log_setting("quiet"),
                help="No progress and no tables: only the summary's last line.",
            ),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                expose_value=False,
                callback=_log_setting("format"),
                help="json: progress (stderr) and the final summary (stdout) as JSON objects, "
                "one a line.",
            ),
            click.option(
                "--progress-interval",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                envvar=progress.INTERVAL_ENV,
                expose_value=False,
                callback=_log_setting("interval"),
                help="Seconds between progress lines when stderr is not a terminal (a batch "
                f"job's log) or with --log-format json [{progress.DEFAULT_INTERVAL:g}; "
                f"${progress.INTERVAL_ENV}].",
            ),
        ]
    ):
        command = option(command)
    return command


def make_console() -> Console:
    """A console on the current stdout (rich reads ``sys.stdout`` when printing).

    Markup is off: what is printed holds paths, errors, entries and texts, whose square
    brackets rich would read as tags ("metaclip-gpu[report]" printed as "metaclip-gpu"). A
    styled line is a `rich.text.Text` (`Text.from_markup` with its values `escape`d)."""
    if progress.settings().plain:  # --quiet, --log-format json: only `finish`'s summary
        return Console(highlight=False, markup=False, quiet=True)
    console = Console(highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, markup=False, width=120)
    return console


@contextmanager
def step(console: Console, description: str) -> Iterator[None]:
    """A transient spinner with the elapsed time while a long step runs; in a log (stderr not
    a terminal, or JSON logs) a line when it starts and one when it ends."""
    if not progress.settings().quiet and (
        progress.settings().format == "json" or not Console(stderr=True).is_terminal
    ):
        started = time.monotonic()
        progress.step_line(description, None)
        yield
        progress.step_line(description, time.monotonic() - started)
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # it holds file names
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as spinner:
        spinner.add_task(description, total=None)
        yield


def start_run(
    backend: str,
    *,
    cluster: str | None = None,
    scheduler_address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    rmm_pool_size: str | None = None,
) -> tuple[str, Any]:
    """The run's backend, decided once here ("auto" becomes "cpu" or "gpu"), and its dask
    client (None: in process). Every task of the run receives this backend name.

    A local cluster is started for the resolved backend (`cluster.make_client`: on a GPU
    machine one `LocalCUDACluster` worker per GPU); a cluster joined by address decides
    "auto" from its workers. A GPU run in this process gets its RMM pool here
    (`rmm_pool_size`, else the asynchronous allocator). The caller closes the client.
    """
    from metaclip_gpu.pipeline.cluster import close_client, make_client, run_backend

    if cluster and scheduler_address:
        raise click.UsageError("give --cluster or --scheduler-address, not both")
    try:
        if scheduler_address is None:
            backend = run_backend(backend)
    except (RuntimeError, ValueError) as err:  # --backend gpu without a GPU
        raise click.ClickException(str(err)) from err
    if rmm_pool_size is not None and (backend != "gpu" or scheduler_address):
        raise click.UsageError(
            "--rmm-pool-size needs the GPU backend (--backend gpu, or auto on a GPU machine), "
            "in process or with --cluster local"
        )
    try:
        client = make_client(
            cluster=cluster,
            scheduler_address=scheduler_address,
            workers=workers,
            backend=backend,
            threads_per_worker=threads_per_worker,
            rmm_pool_size=rmm_pool_size,
        )
    except (RuntimeError, ValueError, OSError) as err:  # no dask-cuda or NVML, unreachable
        raise click.ClickException(f"cannot start or join the dask cluster: {err}") from err
    try:
        backend = run_backend(backend, client)
    except BaseException:
        close_client(client)
        raise
    if client is None and backend == "gpu":
        from metaclip_gpu.engine.backends.gpu_memory import ensure_device_memory

        try:
            ensure_device_memory(rmm_pool_size)
        except (RuntimeError, ValueError, MemoryError) as err:
            raise click.ClickException(f"cannot set up the GPU's memory pool: {err}") from err
    return backend, client


def read_options(text_column: str | None, key_column: str | None) -> ReadOptions:
    return ReadOptions(text_column=text_column, key_column=key_column)


def check_ts(ts: tuple[float, ...], target_size: int | None) -> None:
    if not ts and target_size is None:
        raise click.UsageError("give --t (one or more) or --target-size")


def shards_or_fail(input_spec: tuple[str, ...], hint: str = "'--input'") -> list[Any]:
    """The shards of `input_spec` (local paths or URLs, with the command's
    ``--storage-options``); a spec that finds nothing is a bad parameter."""
    from metaclip_gpu.pipeline.read import find_shards

    try:
        return find_shards(list(input_spec), storage_options=storage_options())
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint=hint) from err


def warn(message: str) -> None:
    """A warning on stderr, in every mode (in JSON logs as ``{"event": "warning"}``)."""
    if progress.settings().format == "json":
        click.echo(json.dumps({"event": "warning", "message": message}), err=True)
    else:
        click.echo(f"warning: {message}", err=True)


INPUT_RECORD = "cli_input"  # the --input of match or curate, in the run record


def record_input(output: Path, input_spec: tuple[str, ...]) -> None:
    """Keeps a matching command's --input in the run record, for `count` to print the next
    step."""
    from metaclip_gpu.pipeline.rundir import load_state, save_state

    state = load_state(output)
    if state is not None:
        state[INPUT_RECORD] = list(input_spec)
        save_state(output, state)


def finish(
    outcome: dict[str, Any], command: str = "", payload: dict[str, Any] | None = None
) -> None:
    """Prints a run's `outcome.run_outcome` line last (stderr unless all went well) and
    exits with its code; with ``--log-format json`` the `payload` (the summary) instead, as
    one JSON object on stdout."""
    code = outcome["exit_code"]
    if progress.settings().format == "json":
        progress.summary_line(command, {**(payload or {}), "outcome": outcome}, "")
    else:
        console = Console(stderr=code != 0, highlight=False, markup=False, soft_wrap=True)
        console.print(outcome["message"])
    if code:
        raise click.exceptions.Exit(code)
