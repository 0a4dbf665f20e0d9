"""What the benchmarks share: the data location, the machine's description, memory figures."""

from __future__ import annotations

import os
import platform
import resource
import sys
from collections.abc import Iterable
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
CC3M_FILE = "cc3m_val.tsv"
METADATA_FILE = "metadata_wordnet_wordfreq_500k.json"


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def find_data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``$METACLIP_SHARED_DATA``, else ``../shared/data`` beside the repo."""
    if arg:
        return Path(arg)
    if env := os.environ.get("METACLIP_SHARED_DATA"):
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def missing_data_message(script: str, missing: list[Path]) -> str:
    return (
        f"{script}: missing input file(s): "
        + ", ".join(str(p) for p in missing)
        + f"\nPut {CC3M_FILE} and {METADATA_FILE} in ../shared/data next to the repository "
        "root, or pass --data-dir / set METACLIP_SHARED_DATA."
    )


def read_cc3m_rows(path: Path) -> tuple[list[str], list[str]]:
    """(captions, urls): the two tab-separated fields of each line (no header, no quoting)."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    captions, urls = [], []
    for line in lines:
        caption, _, url = line.partition("\t")
        captions.append(caption)
        urls.append(url)
    return captions, urls


def build_automaton(spaced_keys: Iterable[str]):
    """MetaCLIP's matcher: a pyahocorasick automaton over the spaced entries (``" " + e + " "``
    for MetaCLIP 1, ``get_spaced_metadata`` for MetaCLIP 2), each key's value ``(id, key)``."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for idx, key in enumerate(spaced_keys):
        automaton.add_word(key, (idx, key))
    automaton.make_automaton()
    return automaton
