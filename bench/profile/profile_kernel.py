"""Instruction counts of the matching kernels per text, by ids a text (callgrind).

    .venv/bin/python bench/profile/profile_kernel.py [--data dense|cc3m] [--texts N] [--cache-sim]

Wall-clock time is noisy on a shared machine; instruction counts are repeatable, so kernel
changes are decided on them. This script builds bench/profile/kernel_harness.cpp with the CPU
extension's flags, dumps an index and texts from bench_dense.py's data sets, and runs the
harness under ``valgrind --tool=callgrind`` once per bucket of ids a text, counting only the
kernels (mc_match_fixed, plus count/fill for the texts it hands back). Prints and returns
instructions per text and per id.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
from _common import CC3M_FILE, METADATA_FILE, find_data_dir, read_cc3m_rows  # noqa: E402
from bench_dense import BUCKETS, dense_metadata, web_texts  # noqa: E402

from metaclip_gpu import MetadataIndex, match  # noqa: E402
from metaclip_gpu.engine.metadata import load_metadata  # noqa: E402

ROOT = HERE.parent.parent
FLAGS = ["-O3", "-std=c++17", "-fno-strict-aliasing"]  # metaclip_gpu/_native/build_ext.py


def build_harness(out: Path, source: Path, kernels: Path, defines: list[str]) -> Path:
    exe = out / "kernel_harness"
    subprocess.run(
        ["g++", *FLAGS, *defines, "-g", "-I", str(kernels), str(source),
         "-o", str(exe)],
        check=True,
    )  # fmt: skip
    return exe


def check_signature(exe: Path, index: MetadataIndex) -> None:
    """Refuses an A/B run whose harness hashes differently from the installed extension
    that built the index: the harness would then find almost no ids, and its count would
    look like a speed-up (a --kernels folder with another hash needs that folder's
    extension installed)."""
    out = subprocess.run([str(exe), "--signature"], capture_output=True, text=True, check=True)
    if int(out.stdout) != index.stats.signature:
        raise SystemExit(
            f"kernel_harness built from --kernels has index signature {int(out.stdout)}, the "
            f"index (built by the installed extension) {index.stats.signature}: rebuild the "
            "extension from the same kernels (pip install -e .) before profiling them"
        )


def dump(where: Path, index: MetadataIndex, texts: list[str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    index.slots.tofile(where / "slots.bin")
    index.blob.tofile(where / "blob.bin")
    index.byte_slots.tofile(where / "byte_slots.bin")
    index.byte_blob.tofile(where / "byte_blob.bin")
    np.array([index.mask, index.byte_mask], dtype=np.uint64).tofile(where / "masks.bin")
    array = pa.array(texts, type=pa.large_string())
    _validity, offsets, data = array.buffers()
    np.frombuffer(offsets, dtype=np.int64, count=len(texts) + 1).tofile(where / "offsets.bin")
    np.frombuffer(data, dtype=np.uint8, count=int(np.frombuffer(offsets, np.int64)[-1])).tofile(
        where / "chars.bin"
    )


def events(exe: Path, where: Path, cache_sim: str | None = None) -> dict[str, int]:
    """callgrind's totals of the kernels: {"Ir": instructions}, plus with `cache_sim` (a
    ``--LL=size,assoc,line`` value) the simulated cache's data misses: "D1mr" (L1 read
    misses), "DLmr" (last-level read misses) and the rest of callgrind's event names."""
    out_file = where / "callgrind.out"
    extra = [] if cache_sim is None else ["--cache-sim=yes", f"--LL={cache_sim}"]
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--toggle-collect=run_kernels*", *extra,
         f"--callgrind-out-file={out_file}", str(exe), str(where)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = out_file.read_text()
    names = re.search(r"^events:\s+(.+)$", text, re.MULTILINE)
    found = re.search(r"^summary:\s+(.+)$", text, re.MULTILINE)
    if names is None or found is None:
        raise RuntimeError(proc.stderr)
    return dict(zip(names.group(1).split(), map(int, found.group(1).split()), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("dense", "cc3m"), default="dense")
    parser.add_argument("--texts", type=int, default=2_000, help="texts profiled per bucket")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--kernels", type=Path, default=ROOT / "kernels", help="kernel folder (A/B runs)"
    )
    parser.add_argument("--harness", type=Path, default=HERE / "kernel_harness.cpp")
    parser.add_argument("--local-cap", type=int, default=None, help="-DMC_LOCAL_CAP (A/B runs)")
    parser.add_argument(
        "--cache-sim",
        nargs="?",
        const="2097152,16,64",
        default=None,
        metavar="LL",
        help="also simulate the caches (callgrind --cache-sim=yes --LL=LL; default LL: a 2 MiB "
        "16-way last level, about one core's share of a shared machine's) and print L1 and "
        "last-level data read misses a text",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("profile_kernel.py needs valgrind", file=sys.stderr)
        return 2
    data_dir = find_data_dir(args.data_dir)
    captions, _ = read_cc3m_rows(data_dir / CC3M_FILE)
    entries = load_metadata(data_dir / METADATA_FILE)
    if args.data == "dense":
        entries, texts = dense_metadata(entries, captions), web_texts(captions, 60_000)
    else:
        texts = captions
    index = MetadataIndex.from_entries(entries, cache=False)
    counts = np.diff(np.asarray(match(texts, index, backend="cpu").offsets))
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        defines = [] if args.local_cap is None else [f"-DMC_LOCAL_CAP={args.local_cap}"]
        exe = build_harness(Path(tmp), args.harness, args.kernels, defines)
        check_signature(exe, index)
        for label, lo, hi in BUCKETS:
            members = np.flatnonzero((counts >= lo) & (counts <= hi))[: args.texts]
            if len(members) == 0:
                continue
            where = Path(tmp) / label
            dump(where, index, [texts[i] for i in members])
            totals = events(exe, where, args.cache_sim)
            ir = totals["Ir"]
            ids = int(counts[members].sum())
            result[label] = {"texts": len(members), "ids": ids, "instructions": ir}
            line = (
                f"{args.data} {label:>6}: {len(members):5d} texts, {ids / len(members):5.1f} ids,"
                f" {ir / len(members):9,.0f} instructions a text, {ir / ids:6,.0f} an id"
            )
            if args.cache_sim is not None:
                result[label].update(totals)
                line += (
                    f", L1 data read misses {totals['D1mr'] / len(members):7.1f} a text,"
                    f" last-level {totals['DLmr'] / len(members):6.1f}"
                )
            print(line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
