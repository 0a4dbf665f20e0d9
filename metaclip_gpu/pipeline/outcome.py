"""How a run ended, as an exit status and one line a person reads last (README: exit codes).

A run that finishes records its outcome in ``summary.json`` (``outcome``: ``exit_code``,
``status``, ``message``), computed here from the reading figures (`run_summary.read_figures`), so
the summary, the printed last line and the command's exit status say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXIT_OK = 0  # every shard read
EXIT_FAILED = 1  # the run stopped on an error (one line says which and what to do)
EXIT_USAGE = 2  # click's status for a bad command line
EXIT_SOME_UNREADABLE = 3  # finished, but some shards could not be read (the rest is curated)
EXIT_NOTHING_READ = 4  # finished with nothing to curate: every shard unreadable, or no rows
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); rerunning the same command resumes


class NothingRead(RuntimeError):
    """A run that cannot go on because it read nothing (a worldwide run has no English counts
    to set its thresholds from); the command exits with `EXIT_NOTHING_READ`."""

    exit_code = EXIT_NOTHING_READ


def run_outcome(shards: int, texts_read: int, unreadable: Sequence[dict[str, Any]]) -> dict:
    """``{"exit_code", "status", "message"}`` of a run over `shards` shards that read
    `texts_read` rows and could not read the shards of `unreadable` (``shard``, ``error``)."""
    bad = len(unreadable)
    if bad and bad == shards:
        first = unreadable[0]
        return {
            "exit_code": EXIT_NOTHING_READ,
            "status": "nothing_read",
            "message": f"error: nothing read: all {shards:,} shards are unreadable (first: "
            f"{first['error']}); fix them, or point --input elsewhere, and rerun",
        }
    if texts_read == 0:
        return {
            "exit_code": EXIT_NOTHING_READ,
            "status": "nothing_read",
            "message": f"error: nothing read: the {shards:,} shards hold no rows",
        }
    if bad:
        return {
            "exit_code": EXIT_SOME_UNREADABLE,
            "status": "some_shards_unreadable",
            "message": f"warning: {bad:,} of {shards:,} shards could not be read (listed above "
            "and under shards_unreadable in summary.json); the others are curated. Fix or "
            "replace them and rerun the same command: finished shards are reused",
        }
    return {
        "exit_code": EXIT_OK,
        "status": "complete",
        "message": f"done: all {shards:,} shards read ({texts_read:,} texts)",
    }
