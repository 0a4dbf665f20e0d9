"""How a long stage shows its progress, and how a command prints its last words.

On a terminal a stage shows a live rich bar. When stderr is a file (SLURM, dask or any batch
job writing a log) a bar would be either nothing or a stream of carriage returns, so the stage
writes a plain line every `LogSettings.interval` seconds instead (rows, shards, rate, ETA) and
one when it ends. ``--log-format json`` writes those as JSON objects, one a line, and the
command's summary too; ``--quiet`` writes no progress, only the summary's last line.

rich has no periodic-line mode for logs (its bar redraws one line in place), hence the small
`LineProgress`, which keeps the two calls the stages make on a rich ``Progress``
(``add_task``, ``update``) so that a stage does not know which one it got.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

INTERVAL_ENV = "METACLIP_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between two progress lines in a log

LogFormat = Literal["text", "json"]


def _interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 and math.isfinite(value) else DEFAULT_INTERVAL


@dataclass
class LogSettings:
    """What this process shows: set once by the command line (`configure`)."""

    format: LogFormat = "text"
    quiet: bool = False
    interval: float | None = None  # None: $METACLIP_PROGRESS_INTERVAL, else DEFAULT_INTERVAL

    @property
    def seconds(self) -> float:
        return self.interval if self.interval is not None else _interval_from_env()

    @property
    def plain(self) -> bool:
        """Only the summary on stdout, no tables (``--quiet`` or ``--log-format json``)."""
        return self.quiet or self.format == "json"


_settings = LogSettings()


def settings() -> LogSettings:
    return _settings


def configure(**changes: Any) -> None:
    """Sets fields of this process's `LogSettings` (``format``, ``quiet``, ``interval``)."""
    for name, value in changes.items():
        if not hasattr(_settings, name):
            raise TypeError(f"no log setting {name!r}")
        setattr(_settings, name, value)


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float


class LineProgress:
    """Progress as lines on stderr: one every `interval` seconds from a timer thread (so a
    line comes even while one long shard is read) and one when the stage ends."""

    def __init__(self, interval: float, log_format: LogFormat) -> None:
        self.interval = interval
        self.format = log_format
        self.tasks: list[_Task] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="progress-lines", daemon=True)

    def __enter__(self) -> LineProgress:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.emit(final=exc_type is None)  # an interrupted stage is not "done"

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        with self.lock:
            self.tasks.append(_Task(description, total, 0, dict(fields), time.monotonic()))
            return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float = 0, **fields: Any) -> None:
        with self.lock:
            task = self.tasks[task_id]
            task.completed += advance
            task.fields.update(fields)

    def _tick(self) -> None:
        while not self.stop.wait(self.interval):
            self.emit(final=False)

    def emit(self, *, final: bool) -> None:
        with self.lock:
            lines = [self._line(task, final) for task in self.tasks]
        for line in lines:
            print(line, file=sys.stderr, flush=True)

    def _line(self, task: _Task, final: bool) -> str:
        elapsed = time.monotonic() - task.started
        rows = int(task.fields.get("rows", 0))
        rate = rows / elapsed if elapsed > 0 else 0.0
        done, total = int(task.completed), task.total
        eta = None
        if total is not None and done >= total:
            eta = 0.0
        elif total is not None and done > 0:
            eta = elapsed / done * (total - done)
        if self.format == "json":
            return json.dumps(
                {
                    "event": "progress",
                    "stage": task.description,
                    "done": final,
                    "shards": done,
                    "shards_total": None if total is None else int(total),
                    "rows": rows,
                    "rows_per_second": round(rate, 1),
                    "elapsed_seconds": round(elapsed, 3),
                    "eta_seconds": None if eta is None else round(eta, 1),
                }
            )
        of = "" if total is None else f"/{int(total):,}"
        return (
            f"metaclip-gpu {task.description}{' done' if final else ''}: {done:,}{of} shards, "
            f"{rows:,} rows, {rate:,.0f} rows/s, elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        )


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return 0

    def update(self, task_id: int, **fields: Any) -> None:
        return None


def stage_progress(enabled: bool = True) -> Any:
    """The progress display of one stage (a context manager with ``add_task``/``update``):
    a rich bar on a terminal, `LineProgress` in a log or with JSON logs, else nothing."""
    if not enabled or _settings.quiet:
        return _NoProgress()
    # only now: importing rich took 0.03-0.09 s of each stage run without a progress display
    from rich.console import Console

    console = Console(stderr=True)
    if _settings.format == "json" or not console.is_terminal:
        return LineProgress(_settings.seconds, _settings.format)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def summary_line(command: str, payload: dict[str, Any], last_line: str) -> None:
    """A command's last words on stdout in the plain modes: ``--log-format json``: `payload`
    as one JSON object (``"event": "summary"``); ``--quiet``: `last_line`. In the default
    mode the command has printed its tables and this prints nothing."""
    if _settings.format == "json":
        event = {"event": "summary", "command": command, **payload}
        print(json.dumps(event, ensure_ascii=False, default=str), flush=True)
    elif _settings.quiet:
        print(last_line, flush=True)


def step_line(description: str, seconds: float | None) -> None:
    """One line on stderr when a command's step starts (`seconds` None) or ends."""
    if _settings.format == "json":
        event = {"event": "step", "step": description, "done": seconds is not None}
        if seconds is not None:
            event["seconds"] = round(seconds, 3)
        line = json.dumps(event, ensure_ascii=False)
    elif seconds is None:
        line = f"metaclip-gpu: {description} ..."
    else:
        line = f"metaclip-gpu: {description}: done in {_clock(seconds)}"
    print(line, file=sys.stderr, flush=True)
