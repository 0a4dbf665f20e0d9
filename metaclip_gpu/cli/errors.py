"""How the commands end on an error: one line, the right exit status, no traceback.

Every command is a `Command`: it turns what a user can meet into a `click.ClickException`
(click prints ``Error: <line>`` and exits 1): operating-system errors (disk full, read-only
or missing paths, permissions, an object store's refusal: `oserrors.describe` names the path
or URL and what to do), a file-system package that is not installed (naming its extra), and
Ctrl-C into `Interrupted` (exit 130, saying that rerunning resumes). ``--debug`` on the
``metaclip-gpu`` group, or ``METACLIP_GPU_DEBUG=1``, lets the original exception through
with its traceback.
"""

from __future__ import annotations

import os
from typing import Any

import click

from metaclip_gpu.pipeline.oserrors import describe
from metaclip_gpu.pipeline.outcome import EXIT_INTERRUPTED
from metaclip_gpu.storage import MissingStorageExtra

DEBUG_ENV = "METACLIP_GPU_DEBUG"
WRITES_UNDER = ("output", "out", "run_dir")  # parameters naming where a command writes


class Interrupted(click.ClickException):
    """Ctrl-C: exit 130 (128 + SIGINT) with a line saying that a rerun resumes."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self) -> None:
        super().__init__(
            "interrupted: rerun the same command to resume; finished shards and curated "
            "files are kept and reused"
        )


def debugging(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class Command(click.Command):
    """A click command whose known failures end in one line (module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except MissingStorageExtra as err:  # one line naming the extra to install
            if debugging(ctx):
                raise
            raise click.ClickException(str(err)) from err
        except KeyboardInterrupt as err:
            if debugging(ctx):
                raise
            raise Interrupted() from err
        except OSError as err:
            if debugging(ctx):
                raise
            where = next((ctx.params[k] for k in WRITES_UNDER if ctx.params.get(k)), None)
            raise click.ClickException(describe(err, where)) from err
