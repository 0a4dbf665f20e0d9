"""Runs every benchmark of the project, then writes ``bench/RESULTS.md`` from their figures.

    .venv/bin/python bench/run_all.py [--quick]        (what ``./run bench`` runs)

A benchmark is a ``bench/bench_*.py`` script that runs with no arguments and writes
``bench/results/<name>.json``. Each is run in turn (its output streams through), with
``--quick`` when it is asked for here and the script's ``--help`` lists that flag. Then
``RESULTS.md`` gets a header describing the machine (CPU model, cores, memory, GPU from
``nvidia-smi`` or "none"), the date and the command, and one Markdown table per benchmark: its
JSON's figures, nested keys joined with dots (the machine and command it recorded are in the
header instead). A benchmark that fails or writes no fresh JSON gets a line saying so, not old
figures. Exits 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, available_cores, cpu_model

BENCH_DIR = Path(__file__).resolve().parent
LONG_TEXT = 120  # characters: longer strings in a JSON (raw tool output) are cut in the table
SHORT_LIST = 10  # lists of at most this many scalars are shown in full
HEADER_KEYS = {"benchmark", "command", "machine", "unix_time"}  # shown in the header


@dataclass(frozen=True)
class Outcome:
    """One benchmark's run: its command, exit status, seconds and figures (None: no fresh JSON)."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    figures: dict[str, Any] | None


def supports_quick(script: Path) -> bool:
    """Whether the script's ``--help`` lists a ``--quick`` flag."""
    help_run = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    )
    return help_run.returncode == 0 and "--quick" in help_run.stdout


def run_benchmark(script: Path, quick: bool) -> Outcome:
    name = script.stem
    command = [sys.executable, str(script)]
    if quick and supports_quick(script):
        command.append("--quick")
    results = script.parent / "results" / f"{name}.json"
    started_ns = time.time_ns()
    started = time.perf_counter()
    print(f"run_all: {' '.join(command)}", flush=True)
    returncode = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    seconds = time.perf_counter() - started
    fresh = results.is_file() and results.stat().st_mtime_ns >= started_ns
    figures = json.loads(results.read_text()) if fresh else None
    return Outcome(name, command, returncode, seconds, figures)


# ---------------------------------------------------------------------- machine
def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def gpus() -> str:
    """The GPUs ``nvidia-smi`` lists (name, memory), or "none"."""
    if shutil.which("nvidia-smi") is None:
        return "none (no nvidia-smi)"
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    names = [line.strip() for line in query.stdout.splitlines() if line.strip()]
    return "; ".join(names) if query.returncode == 0 and names else "none"


def machine_rows(load_before: float) -> list[tuple[str, str]]:
    """The header's rows; `load_before`: the 1-minute load average before the benchmarks ran
    (a machine shared with other work gives noisier figures)."""
    return [
        ("CPU", cpu_model()),
        ("cores", f"{available_cores()} available to the process ({os.cpu_count()} logical)"),
        ("memory", f"{memory_gib():.1f} GiB"),
        ("GPU", gpus()),
        ("platform", f"{platform.platform()}, Python {platform.python_version()}"),
        ("load average", f"{load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"),
    ]


# ---------------------------------------------------------------------- Markdown
def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a JSON value; a list of scalars is one leaf."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and not all(isinstance(v, (int, float, str, bool)) for v in value):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def cell(value: Any) -> str:
    """A leaf as Markdown table text: numbers with separators, long text cut, pipes escaped."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "-"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    elif isinstance(value, list):
        shown = "; ".join(cell(v) for v in value[:SHORT_LIST])
        text = f"[{shown}{'; ...' if len(value) > SHORT_LIST else ''}] ({len(value)})"
    else:
        text = " ".join(str(value).split())
        if len(text) > LONG_TEXT:
            text = f"{text[:LONG_TEXT]}... (cut; see the JSON)"
    return text.replace("|", "\\|")


def table(rows: list[tuple[str, str]], header: tuple[str, str], align: str = "---:") -> list[str]:
    """A two-column Markdown table (`align`: the second column's delimiter cell)."""
    lines = [f"| {header[0]} | {header[1]} |", f"| --- | {align} |"]
    return lines + [f"| {key} | {value} |" for key, value in rows]


def results_markdown(outcomes: list[Outcome], command: str, quick: bool, load_before: float) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run_all.py` on {date}; command: `{command}`.",
    ]
    if quick:
        lines += [
            "",
            "**Quick run** (`--quick`: reduced input sizes and repetitions, a smoke test of",
            "the benchmarks; these are not the figures the README quotes).",
        ]
    lines += ["", *table(machine_rows(load_before), ("machine", ""), "---"), ""]
    for outcome in outcomes:
        script = Path(outcome.command[1])
        if script.is_relative_to(REPO_ROOT):
            script = script.relative_to(REPO_ROOT)
        shown = " ".join(["python", str(script), *outcome.command[2:]])
        lines += [
            f"## {outcome.name}",
            "",
            f"`{shown}`: exit status {outcome.returncode}, {outcome.seconds:,.1f} s.",
            "",
        ]
        if outcome.figures is None:
            lines += [f"No figures: it wrote no `bench/results/{outcome.name}.json` this run.", ""]
            continue
        rows = [
            (key, cell(value))
            for key, value in flatten(outcome.figures)
            if key.split(".", 1)[0].split("[", 1)[0] not in HEADER_KEYS
        ]
        lines += [*table(rows, ("figure", "value")), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="pass --quick to every benchmark that has it"
    )
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=BENCH_DIR,
        help="where the bench_*.py scripts are; RESULTS.md is written there [bench/]",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scripts = sorted(args.bench_dir.glob("bench_*.py"))
    if not scripts:
        print(f"run_all: no bench_*.py in {args.bench_dir}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    outcomes = [run_benchmark(script, args.quick) for script in scripts]
    command = " ".join(["python bench/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    results = args.bench_dir / "RESULTS.md"
    results.write_text(
        results_markdown(outcomes, command, args.quick, load_before), encoding="utf-8"
    )
    print(f"run_all: wrote {results}")
    failed = [o.name for o in outcomes if o.returncode != 0]
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
