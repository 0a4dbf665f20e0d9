"""Remote input and metadata (`metaclip_gpu.storage`) against a real S3 server: moto's server
mode, started here on 127.0.0.1 (never a mock of the client). The endpoint and fake
credentials come from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
...), as a user's would.

Skipped with a reason where moto or s3fs is not installed (both are in the test extra).
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_curate import curated_rows  # the same rows, sorted, as a local run is checked by

from metaclip_gpu import storage
from metaclip_gpu.cli import main
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.read import find_shards, read_table
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME

moto_server = pytest.importorskip("moto.server", reason="moto[server] (test extra) not installed")
s3fs = pytest.importorskip("s3fs", reason="s3fs (test extra: the s3 extra) not installed")

ENTRIES = ["cat", "dog", "red car", "tree", "house", "blue sky", "old man", "a"]
TEXTS = [
    "a cat on a red car",
    "the dog and the cat",
    "blue sky over the house",
    "an old man under a tree",
    "nothing to see",
    "a dog",
    "red car red car",
    "house of the cat",
    "tree tree tree",
    "the old man and the sea",
] * 3  # 30 rows: the head entries are thinned by t = 2


# ---------------------------------------------------------------------- the server
@pytest.fixture(scope="session")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket on the local server, reached through the standard environment."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(name)
    return name


def upload(local: Path, url: str) -> None:
    fs, path = storage.filesystem(storage.location(url))
    if local.is_dir():
        for file in sorted(local.iterdir()):
            fs.put_file(str(file), f"{path}/{file.name}")
    else:
        fs.put_file(str(local), path)


# ---------------------------------------------------------------------- input files
def write_shards(folder: Path, fmt: str) -> Path:
    """Two shards of `fmt` with url and caption columns (in that order)."""
    folder.mkdir(parents=True)
    halves = [TEXTS[:13], TEXTS[13:]]
    for n, texts in enumerate(halves):
        urls = [f"https://img.example/{n}/{i}.jpg" for i in range(len(texts))]
        if fmt == "parquet":
            pq.write_table(pa.table({"url": urls, "caption": texts}), folder / f"{n}.parquet")
        elif fmt in ("jsonl", "jsonl.gz"):
            lines = [json.dumps({"url": u, "caption": t}) for u, t in zip(urls, texts, strict=True)]
            data = ("\n".join(lines) + "\n").encode()
            (folder / f"{n}.{fmt}").write_bytes(gzip.compress(data) if fmt.endswith("gz") else data)
        else:  # a WebDataset tar: one .json per sample
            with tarfile.open(folder / f"{n}.tar", "w") as tar:
                for i, (url, text) in enumerate(zip(urls, texts, strict=True)):
                    data = json.dumps({"url": url, "caption": text}).encode()
                    info = tarfile.TarInfo(f"{i:06d}.json")
                    info.size = len(data)
                    tar.addfile(info, pa.BufferReader(data))
    return folder


def write_metadata(path: Path) -> Path:
    path.write_text(json.dumps(ENTRIES), encoding="utf-8")
    return path


def curated(out: Path, t: float = 2.0) -> list[tuple]:
    return curated_rows(out, t)


def curate_cli(metadata: str, input_spec: str, out: Path, *extra: str):
    args = ["curate", "--metadata", metadata, "--input", input_spec, "--output", str(out)]
    args += ["--t", "2", "--no-report", "--backend", "cpu", "--curated-entry-ids", *extra]
    return CliRunner().invoke(main, args)


# ---------------------------------------------------------------------- the same result
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz", "tar"])
def test_curate_from_s3_keeps_the_rows_of_the_local_run(fmt, bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", fmt)
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/in")
    upload(metadata, f"s3://{bucket}/meta.json")

    local = curate_cli(str(metadata), str(shards), tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = curate_cli(f"s3://{bucket}/meta.json", f"s3://{bucket}/in/", tmp_path / "remote")
    assert remote.exit_code == 0, remote.output
    assert "Traceback" not in remote.output

    expected = curated(tmp_path / "local")
    assert expected and curated(tmp_path / "remote") == expected
    summaries = [json.loads((tmp_path / d / SUMMARY_NAME).read_text()) for d in ("local", "remote")]
    for key in ("texts_read", "matched", "shards"):
        assert summaries[1][key] == summaries[0][key], key
    assert summaries[1]["shards_matched_this_run"] == 2
    records = Manifest.load(tmp_path / "remote").records
    assert sorted(records) == sorted(Manifest.load(tmp_path / "local").records)
    assert all(r.path.startswith(f"s3://{bucket}/in/") for r in records.values())
    assert all("version" in r.fingerprint for r in records.values())  # the object's ETag

    again = curate_cli(f"s3://{bucket}/meta.json", f"s3://{bucket}/in/", tmp_path / "remote")
    assert again.exit_code == 0, again.output
    summary = json.loads((tmp_path / "remote" / SUMMARY_NAME).read_text())
    assert summary["shards_matched_this_run"] == 0  # the remote inputs are unchanged: reused
    assert curated(tmp_path / "remote") == expected


def test_a_changed_remote_shard_is_matched_again(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/in")
    result = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "run")
    assert result.exit_code == 0, result.output
    (shards / "1.jsonl").write_text(json.dumps({"url": "u", "caption": "a cat"}) + "\n")
    upload(shards / "1.jsonl", f"s3://{bucket}/in/1.jsonl")
    result = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / SUMMARY_NAME).read_text())
    assert summary["shards_matched_this_run"] == 1
    assert summary["texts_read"] == 14


def test_match_stage_and_a_glob_from_s3(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "parquet")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/deep/in")
    upload(metadata, f"s3://{bucket}/meta.json")
    found = find_shards(f"s3://{bucket}/deep/*/*.parquet")
    assert [s.name for s in found] == ["in/0.parquet", "in/1.parquet"]
    for out, spec, meta in (
        (tmp_path / "local", str(shards), str(metadata)),
        (tmp_path / "remote", f"s3://{bucket}/deep/in/*.parquet", f"s3://{bucket}/meta.json"),
    ):
        args = ["match", "--metadata", meta, "--input", spec, "--output", str(out)]
        result = CliRunner().invoke(main, [*args, "--backend", "cpu"])
        assert result.exit_code == 0, result.output
    for name in ("0.parquet", "1.parquet"):
        local = pq.read_table(next((tmp_path / "local" / "matches").glob(f"{name}*")))
        remote = pq.read_table(next((tmp_path / "remote" / "matches").glob(f"{name}*")))
        assert remote.equals(local)


def test_one_remote_file_and_storage_options_instead_of_the_environment(
    bucket, s3_endpoint, tmp_path, monkeypatch
) -> None:
    shards = write_shards(tmp_path / "in", "parquet")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards / "0.parquet", f"s3://{bucket}/0.parquet")
    upload(metadata, f"s3://{bucket}/meta.json")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    options = json.dumps({"endpoint_url": s3_endpoint})
    args = [
        "match",
        "--metadata",
        f"s3://{bucket}/meta.json",
        "--input",
        f"s3://{bucket}/0.parquet",
    ]
    args += ["--storage-options", options, "--backend", "cpu", "--log-format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["input"] == f"s3://{bucket}/0.parquet"
    local = CliRunner().invoke(main, [*args[:4], str(shards / "0.parquet"), *args[5:]])
    expected = json.loads(local.stdout.strip().splitlines()[-1])
    assert (summary["texts"], summary["matched"]) == (13, expected["matched"])


def test_remote_metadata_is_cached_locally_by_its_digest(bucket, tmp_path) -> None:
    metadata = write_metadata(tmp_path / "meta.json")
    upload(metadata, f"s3://{bucket}/m/meta.json")
    cache = tmp_path / "cache"
    local = MetadataIndex.load(metadata, cache=cache)
    cached = sorted(p.name for p in cache.iterdir())
    remote = MetadataIndex.load(f"s3://{bucket}/m/meta.json", cache=cache)
    assert remote.stats.digest == local.stats.digest
    assert sorted(p.name for p in cache.iterdir()) == cached  # read from the same entry
    assert list(remote.entries.to_pylist()) == ENTRIES
    with pytest.raises(ValueError, match="must be a local folder"):
        MetadataIndex.load(metadata, cache=f"s3://{bucket}/cache")


def test_shards_and_their_storage_options_pickle(bucket, s3_endpoint, tmp_path) -> None:
    """A shard travels to a dask worker with its storage options (never in its text)."""
    shards = write_shards(tmp_path / "in", "jsonl")
    upload(shards, f"s3://{bucket}/in")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    [first, _] = find_shards(f"s3://{bucket}/in", storage_options=options)
    copy = pickle.loads(pickle.dumps(first))
    assert copy == first and copy.path.options == options
    assert "secret" not in str(copy.path) + repr(copy.path)
    assert read_table([copy]).column("text").to_pylist() == TEXTS[:13]


# ---------------------------------------------------------------------- one clear line
def error_line(output: str) -> str:
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if line.startswith("Error")]
    return line


def test_a_missing_bucket_is_one_line_naming_the_url(bucket, tmp_path) -> None:
    metadata = write_metadata(tmp_path / "meta.json")
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}"
    result = curate_cli(str(metadata), f"{missing}/in/", tmp_path / "run")
    assert result.exit_code == 2  # a bad --input, as for a local path that does not exist
    assert f"{missing}/in/: no such file or directory" in error_line(result.output)

    shards = write_shards(tmp_path / "in", "jsonl")
    result = curate_cli(f"{missing}/meta.json", str(shards), tmp_path / "run")
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert f"{missing}/meta.json" in line and "bucket does not exist" in line


def test_bad_credentials_are_one_line_naming_the_url(bucket, tmp_path, monkeypatch) -> None:
    import moto.settings

    shards = write_shards(tmp_path / "in", "jsonl")
    upload(shards, f"s3://{bucket}/in")
    metadata = write_metadata(tmp_path / "meta.json")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    s3fs.S3FileSystem.clear_instance_cache()
    result = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "run")
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert f"s3://{bucket}/in" in line and "errno 13" in line


def test_a_missing_file_system_package_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    metadata = write_metadata(tmp_path / "meta.json")
    result = curate_cli(str(metadata), "gs://bucket/in/", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "pip install 'metaclip-gpu[gcs]'" in error_line(result.output)


def test_report_of_a_run_directory_on_s3(bucket, tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="the report extra is not installed")
    from PIL import Image

    shards = write_shards(tmp_path / "in", "parquet")
    metadata = write_metadata(tmp_path / "meta.json")
    run = tmp_path / "run"
    result = curate_cli(str(metadata), str(shards), run)
    assert result.exit_code == 0, result.output
    upload(run, f"s3://{bucket}/run")  # its files (summary.json, entry_counts.*), as copied
    in_bucket = CliRunner().invoke(main, ["report", f"s3://{bucket}/run"])  # into the bucket
    assert in_bucket.exit_code == 0, in_bucket.output
    assert f"s3://{bucket}/run/report/index.html" in in_bucket.output

    local = CliRunner().invoke(main, ["report", str(run)])
    rep = tmp_path / "rep"
    remote = CliRunner().invoke(main, ["report", f"s3://{bucket}/run", "--output", str(rep)])
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert pngs and sorted(p.name for p in rep.glob("*.png")) == pngs
    listed = storage.list_files(storage.location(f"s3://{bucket}/run/report"))
    assert sorted(f.name for f in listed) == sorted([*pngs, "index.html"])
    for name in pngs:  # the same figures: the numbers each PNG was drawn from
        with Image.open(run / "report" / name) as a, Image.open(rep / name) as b:
            assert a.text["Description"] == b.text["Description"]


def test_dask_workers_read_s3_with_the_options_of_the_command(bucket, s3_endpoint, tmp_path):
    """No endpoint in the workers' environment: the storage options reach them inside each
    task's shard and metadata location, and the run equals the in-process one."""
    distributed = pytest.importorskip("distributed")
    from metaclip_gpu.pipeline.run import run_curate

    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/in")
    upload(metadata, f"s3://{bucket}/meta.json")
    kwargs = {"ts": [2.0], "seed": 0, "progress": False, "curated_entry_ids": True}
    local = run_curate(shards, metadata, tmp_path / "local", **kwargs)
    options = {"endpoint_url": s3_endpoint}
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_ENDPOINT_URL")  # the workers start without it
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            remote = run_curate(
                find_shards(f"s3://{bucket}/in/", storage_options=options),
                storage.location(f"s3://{bucket}/meta.json", options),
                tmp_path / "remote",
                **kwargs,
                client=client,
                cache_dir=tmp_path / "cache",
            )
    assert remote["shards_matched_this_run"] == 2
    assert [f["kept"] for f in remote["ts"]] == [f["kept"] for f in local["ts"]]
    assert curated(tmp_path / "remote") == curated(tmp_path / "local")


def test_a_rewritten_remote_shard_of_the_same_size_is_curated_again(bucket, tmp_path) -> None:
    """Same captions (so the same counts), other urls of the same length: the rerun must end
    as a fresh run on the new objects does."""
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/in")
    result = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "run")
    assert result.exit_code == 0, result.output
    before = curated(tmp_path / "run")
    old = (shards / "0.jsonl").read_bytes()
    new = old.replace(b"img.example", b"img.elpmaxe")
    assert len(new) == len(old) and new != old
    time.sleep(1.1)  # S3's LastModified has whole seconds
    (shards / "0.jsonl").write_bytes(new)
    upload(shards / "0.jsonl", f"s3://{bucket}/in/0.jsonl")
    result = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "run")
    assert result.exit_code == 0, result.output
    after = curated(tmp_path / "run")
    fresh = curate_cli(str(metadata), f"s3://{bucket}/in/", tmp_path / "fresh")
    assert fresh.exit_code == 0, fresh.output
    assert after == curated(tmp_path / "fresh") != before
    assert not [row for row in after if "img.example/0/" in row[0]]


def test_build_metadata_counts_a_corpus_on_s3(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "parquet")
    upload(shards, f"s3://{bucket}/corpus")
    built = []
    for name, corpus in (("local", str(shards)), ("remote", f"s3://{bucket}/corpus/")):
        out = tmp_path / f"{name}.json"
        args = ["build-metadata", "--out", str(out), "--wordnet", "none", "--no-numbers"]
        args += ["--corpus", corpus, "--min-unigram-count", "2", "--backend", "cpu"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        built.append(json.loads(out.read_text()))
    assert built[0] and built[1] == built[0]
    assert {"cat", "dog", "tree"} <= set(built[1])


@pytest.mark.parametrize(
    ("value", "reason"), [("{oops", "not valid JSON"), ("[1]", "expected a JSON object")]
)
def test_bad_storage_options_are_a_usage_error(value, reason, tmp_path) -> None:
    metadata = write_metadata(tmp_path / "meta.json")
    args = ["match", "--metadata", str(metadata), "--input", "s3://b/in/"]
    result = CliRunner().invoke(main, [*args, "--storage-options", value])
    assert result.exit_code == 2
    line = error_line(result.output)
    assert "--storage-options" in line and reason in line
