"""The ``metaclip-gpu`` command line.

``demo`` curates synthetic data made locally (metaclip_gpu.synthetic) end to end; ``curate``
runs the sharded pipeline (match -> count -> balance, `pipeline.run`; ``--worldwide``:
MetaCLIP 2's, worldwide mode) and writes the report; ``match`` (with an output
directory), ``count`` and ``balance`` run its stages one at a time, and ``match`` with one
file shows (and can write) that file's matches; ``report`` (re)writes a run's report;
``build-index`` compiles and caches the index of a metadata file; ``build-metadata`` makes a
metadata file from WordNet, corpus n-grams and titles.
"""

from __future__ import annotations

import click

from metaclip_gpu import __version__
from metaclip_gpu.cli.building import build_metadata_cmd
from metaclip_gpu.cli.curating import balance, curate, demo, report
from metaclip_gpu.cli.errors import DEBUG_ENV
from metaclip_gpu.cli.matching import build_index, count, match_cmd
from metaclip_gpu.pipeline import progress

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metaclip-gpu")
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=f"Show the traceback of an operating-system error or Ctrl-C [${DEBUG_ENV}].",
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """MetaCLIP data curation: metadata sub-string matching, counting and balancing, on the
    GPU or the CPU.

    Exit status: 0 done; 1 an error (one line says which and what to do); 2 a bad command
    line; 3 some input shards could not be read (the rest is curated); 4 nothing read;
    130 interrupted (rerunning the same command resumes).
    """
    ctx.obj = {"debug": debug}
    progress.configure(format="text", quiet=False, interval=None)  # a command's options set them


for command in (demo, curate, match_cmd, count, balance, report, build_index, build_metadata_cmd):
    main.add_command(command)
