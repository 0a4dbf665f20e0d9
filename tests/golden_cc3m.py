"""The golden CC3M runs: what `tests/test_golden_cc3m.py` compares with ``tests/golden/cc3m.json``.

Four runs on the first 3,000 CC3M validation rows against the 500k metadata, each into a fresh
directory: MetaCLIP 1 (``run_curate``, two t) with the ``url`` key column and without a key
column (caption-only shards), a ``--target-size`` run, and worldwide (``run_worldwide``) with
a language column (en / de / an unknown language) and an image column that groups rows in
twos and threes, so both balancing policies (each text on its own, one text per image) run.

Per run the digest holds: the curated set of each t (row count and SHA-256 of the sorted rows,
each row a JSON object with sorted keys, so the column order does not matter; the runs ask
for ``curated_entry_ids``, so the rows hold each kept row's ids as they always did), the entry
counts (SHA-256 of each ``.npy``'s array) and the summary with timings dropped and the run's
root folder replaced by ``<root>``.

Regenerate (only when a change of behaviour is intended, and say so in the commit)::

    .venv/bin/python tests/golden_cc3m.py --write
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 3000
TS = [2.0, 20.0]
T_EN = [2.0, 20.0]
TARGET_SIZE = 1200
GOLDEN = Path(__file__).resolve().parent / "golden" / "cc3m.json"
DROPPED_KEYS = {"seconds"}


def cc3m_lines(cc3m_path: Path) -> list[bytes]:
    return cc3m_path.read_bytes().split(b"\n")[:ROWS]


def write_tsv_shards(lines: list[bytes], folder: Path, keep_url: bool) -> Path:
    folder.mkdir(parents=True)
    bounds = [0, 1100, 2000, len(lines)]
    for i in range(3):
        part = lines[bounds[i] : bounds[i + 1]]
        if not keep_url:
            part = [line.split(b"\t")[0] for line in part]
        (folder / f"part-{i:03d}.tsv").write_bytes(b"".join(line + b"\n" for line in part))
    return folder


def write_worldwide_shards(lines: list[bytes], folder: Path) -> Path:
    """Parquet shards of (caption, url, lang, image): rows 5k+1 and 5k+2 are German, every
    13th row is Arabic (no metadata: skipped); images hold rows in twos or threes."""
    folder.mkdir(parents=True)
    captions, urls = zip(*(line.decode("utf-8").split("\t") for line in lines), strict=True)
    langs = ["ar" if i % 13 == 0 else "de" if i % 5 in (1, 2) else "en" for i in range(len(lines))]
    images = [f"img-{i // 2 if i < 1500 else 750 + (i - 1500) // 3}" for i in range(len(lines))]
    table = pa.table({"caption": captions, "url": urls, "lang": langs, "image": images})
    for i, (lo, hi) in enumerate([(0, 1002), (1002, 2001), (2001, len(lines))]):
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:03d}.parquet")
    return folder


def worldwide_metadata(metadata_path: Path, folder: Path) -> Path:
    """en: the whole 500k list; de: every third entry of it (texts are English words)."""
    entries = json.loads(metadata_path.read_bytes())
    folder.mkdir(parents=True)
    (folder / "en.json").write_text(json.dumps(entries))
    (folder / "de.json").write_text(json.dumps(entries[::3]))
    return folder


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curated_digest(folder: Path) -> dict[str, Any]:
    rows = []
    for path in sorted(folder.glob("*.parquet")):
        rows += pq.ParquetFile(path).read().to_pylist()  # no hive columns from t=... names
    lines = sorted(json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows)
    return {"rows": len(lines), "sha256": _sha("\n".join(lines).encode())}


def counts_digest(path: Path) -> str:
    counts = np.load(path)
    return _sha(str(counts.dtype).encode() + np.ascontiguousarray(counts).tobytes())


def normalized(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: normalized(v, root) for k, v in value.items() if k not in DROPPED_KEYS}
    if isinstance(value, list):
        return [normalized(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def run_digest(summary: dict[str, Any], out: Path, root: Path) -> dict[str, Any]:
    curated = summary["outputs"]["curated"]
    counts = [out / "entry_counts.npy"] if (out / "entry_counts.npy").is_file() else []
    counts += sorted((out / "entry_counts").glob("*.npy"))
    return {
        "curated": {label: curated_digest(Path(folder)) for label, folder in curated.items()},
        "entry_counts": {str(p.relative_to(out)): counts_digest(p) for p in counts},
        "summary": normalized(summary, str(root)),
    }


def golden_runs(cc3m_path: Path, metadata_path: Path, root: Path) -> dict[str, Any]:
    """Runs the four golden runs under `root`; their digests by run name."""
    from metaclip_gpu.engine.index import MetadataIndex
    from metaclip_gpu.pipeline.run import run_curate, run_worldwide

    lines = cc3m_lines(cc3m_path)
    keyed = write_tsv_shards(lines, root / "in-keyed", keep_url=True)
    unkeyed = write_tsv_shards(lines, root / "in-unkeyed", keep_url=False)
    index = MetadataIndex.load(metadata_path)
    runs: dict[str, Any] = {}
    for name, shards, kwargs in [
        ("metaclip1-key", keyed, {"ts": TS}),
        ("metaclip1-nokey", unkeyed, {"ts": TS}),
        ("metaclip1-target-size", keyed, {"ts": TS[:1], "target_size": TARGET_SIZE}),
    ]:
        out = root / name
        summary = run_curate(
            shards, index, out, seed=5, progress=False, curated_entry_ids=True, **kwargs
        )
        runs[name] = run_digest(summary, out, root)
    world_in = write_worldwide_shards(lines, root / "in-world")
    meta = worldwide_metadata(metadata_path, root / "meta-world")
    out = root / "worldwide"
    summary = run_worldwide(
        world_in,
        meta,
        out,
        t_en=T_EN,
        seed=11,
        lang_column="lang",
        image_column="image",
        progress=False,
        curated_entry_ids=True,
    )
    runs["worldwide"] = run_digest(summary, out, root)
    return runs


def main() -> None:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import CC3M_FILE, METADATA_FILE, find_shared_data_dir

    data = find_shared_data_dir()
    if data is None:
        raise SystemExit("no shared data folder (see tests/conftest.py)")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        runs = golden_runs(data / CC3M_FILE, data / METADATA_FILE, Path(tmp))
    payload = {
        "made_from_commit": commit,
        "command": ".venv/bin/python tests/golden_cc3m.py --write",
        "runs": runs,
    }
    if "--write" in sys.argv:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(json.dumps(payload, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
