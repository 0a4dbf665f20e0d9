"""What users do next with a curated folder: download it with img2dataset.

A curated shard keeps the input's columns in the input's order (and nothing else, as
MetaCLIP's reference writes it; ``entry_ids`` only with ``curated_entry_ids``), so the
downloader reads it as it read the pool (``--input_format parquet --url_col url --caption_col
caption``) and carries ``entry_ids`` along when asked (``--save_additional_columns``). The
images are small files the test writes, fetched through ``file://`` URLs: no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import curated_dir

METADATA = ["red car", "blue sky", "dog", "cat", "the"]
T = 3.0  # "the" (in every caption) is thinned; rare entries keep their texts


def _captions(n: int) -> list[str]:
    rare = ["red car", "blue sky", "dog", "cat"]
    return [f"the {rare[i % 4]} number {i}" if i % 3 else f"the photo {i}" for i in range(n)]


def _pool(tmp_path: Path, n: int, images: bool) -> Path:
    """Two Parquet shards with columns ``url, caption, photo_id`` (url first, as LAION's)."""
    shards = tmp_path / "pool"
    shards.mkdir()
    urls = [f"https://example.invalid/{i}.png" for i in range(n)]
    if images:
        cv2 = pytest.importorskip("cv2")  # img2dataset's own dependency
        folder = tmp_path / "images"
        folder.mkdir()
        urls = []
        for i in range(n):
            path = folder / f"{i}.png"
            pixels = np.full((8, 8, 3), i % 256, dtype=np.uint8)
            assert cv2.imwrite(str(path), pixels)
            urls.append(path.as_uri())
    captions = _captions(n)
    half = n // 2
    for k, (lo, hi) in enumerate([(0, half), (half, n)]):
        table = pa.table(
            {"url": urls[lo:hi], "caption": captions[lo:hi], "photo_id": list(range(lo, hi))}
        )
        pq.write_table(table, shards / f"part-{k}.parquet")
    return shards


def _curate(tmp_path: Path, shards: Path, entry_ids: bool = False) -> Path:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(METADATA))
    out = tmp_path / "run"
    run_curate(shards, metadata, out, ts=[T], progress=False, curated_entry_ids=entry_ids)
    return out


@pytest.mark.parametrize("entry_ids", [False, True])
def test_curated_shards_keep_the_input_column_order(tmp_path: Path, entry_ids: bool) -> None:
    """Parquet and JSONL shards: the input's columns in its order; ``entry_ids`` on request."""
    shards = _pool(tmp_path, 40, images=False)
    jsonl = shards / "part-2.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"id": i, "url": f"u{i}", "alt": f"a red car {i}", "h": i}) + "\n"
            for i in range(5)
        )
    )
    out = _curate(tmp_path, shards, entry_ids)
    files = sorted(curated_dir(out, T).glob("*.parquet"))
    assert len(files) == 3
    extra = ["entry_ids"] if entry_ids else []
    for path in files:
        names = pq.read_schema(path).names
        if "part-2" in path.name:
            assert names == ["id", "url", "alt", "h", *extra]
        else:
            assert names == ["url", "caption", "photo_id", *extra]


def _img2dataset() -> Path:
    pytest.importorskip("img2dataset")
    exe = Path(sys.executable).parent / "img2dataset"
    if not exe.is_file():
        pytest.skip("img2dataset's command is not installed next to this Python")
    return exe


@pytest.mark.slow  # img2dataset's processes: about 20 s on 2 cores
def test_img2dataset_downloads_every_kept_row_with_its_caption_and_entry_ids(
    tmp_path: Path,
) -> None:
    exe = _img2dataset()
    n = 60
    out = _curate(tmp_path, _pool(tmp_path, n, images=True), entry_ids=True)
    kept = pq.read_table(curated_dir(out, T)).to_pylist()  # the folder's shards
    assert 0 < len(kept) < n  # balancing dropped some rows of "the"
    wds = tmp_path / "wds"
    command = [
        str(exe),
        "--url_list", str(curated_dir(out, T)),
        "--input_format", "parquet",
        "--url_col", "url",
        "--caption_col", "caption",
        "--save_additional_columns", '["entry_ids","photo_id"]',
        "--output_format", "webdataset",
        "--output_folder", str(wds),
        "--processes_count", "1",
        "--thread_count", "2",
        "--resize_mode", "no",
        "--distributor", "multiprocessing",
        "--enable_wandb", "False",
    ]  # fmt: skip
    # albumentations (imported by img2dataset) would look for its own update online
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    arrived: dict[str, dict] = {}
    for tar in sorted(wds.glob("*.tar")):
        with tarfile.open(tar) as archive:
            members = {m.name: m for m in archive.getmembers()}
            for name, member in members.items():
                if not name.endswith(".json"):
                    continue
                sample = json.loads(archive.extractfile(member).read())
                stem = name[: -len(".json")]
                assert f"{stem}.txt" in members and f"{stem}.jpg" in members  # re-encoded
                caption = archive.extractfile(members[f"{stem}.txt"]).read().decode()
                assert caption == sample["caption"]
                arrived[sample["url"]] = sample
    assert len(arrived) == len(kept), done.stderr[-3000:]
    for row in kept:
        sample = arrived[row["url"]]
        assert sample["status"] == "success"
        assert sample["caption"] == row["caption"]
        assert list(sample["entry_ids"]) == row["entry_ids"]
        assert sample["photo_id"] == row["photo_id"]
