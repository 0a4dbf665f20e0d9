"""A run directory in object storage (``--output s3://...``) against moto's S3 server on
127.0.0.1 (the fixtures of `test_remote_storage`): the same rows as a local run, a rerun that
matches nothing again, a run killed with SIGKILL that a rerun finishes identically with no
orphan left, and one clear line for a missing bucket or refused credentials.

Commit without rename (`storage_write`): every data file has a name unique to its attempt and
the manifest record naming it is the commit point; `expected_objects` is what a finished run
directory holds, nothing more.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu import storage
from metaclip_gpu.cli import main
from metaclip_gpu.pipeline.files import DELAY_ENV
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import CURATED_MANIFEST, curated_dir
from metaclip_gpu.storage import RemotePath
from metaclip_gpu.storage_write import list_tree, relative, write_bytes

sys.path.insert(0, str(Path(__file__).parent))
import test_remote_storage as remote

bucket, s3_endpoint = remote.bucket, remote.s3_endpoint  # fixtures, by name
curate_cli, curated, error_line = remote.curate_cli, remote.curated, remote.error_line
upload, write_metadata, write_shards = remote.upload, remote.write_metadata, remote.write_shards


def remote_rows(run: str | Path, label: str = "t=2") -> list[tuple]:
    """The curated rows of a run directory (in the bucket, or local): every Parquet file of
    the folder `label`, as a downstream reader of the folder sees them."""
    rows = []
    folder = storage.location(run) / "curated" / label
    files = list_tree(folder) if isinstance(folder, RemotePath) else sorted(folder.iterdir())
    for obj in files:
        if not obj.name.endswith(".parquet"):
            continue
        table = storage.parquet_file(obj).read()
        rows += zip(
            table.column("url").to_pylist(),
            table.column("caption").to_pylist(),
            (tuple(ids) for ids in table.column("entry_ids").to_pylist()),
            strict=True,
        )
    return sorted(rows)


def objects(run: str) -> set[str]:
    root = storage.location(run)
    return {relative(o, root) for o in list_tree(root)}


def expected_objects(run: str, t: float = 2.0) -> set[str]:
    """What a finished run directory holds: the run files, the latest record objects and the
    files they name (no orphans, no lock)."""
    root = storage.location(run)
    matches = Manifest.load(root)
    folder = curated_dir(root, t)
    kept = Manifest.load(folder, CURATED_MANIFEST)
    prefix = relative(folder, root)
    names = {"run.json", "entry_counts.npy", "entry_counts.parquet", SUMMARY_NAME}
    names |= {f"{prefix}/_balance.json"}
    names |= set(matches.objects.values()) | {r.output for r in matches.records.values()}
    names |= {f"{prefix}/{n}" for n in kept.objects.values()}
    names |= {f"{prefix}/{r.output}" for r in kept.records.values()}
    return names


def test_curate_into_s3_keeps_the_rows_of_the_local_run(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "parquet")
    metadata = write_metadata(tmp_path / "meta.json")
    upload(shards, f"s3://{bucket}/in")
    upload(metadata, f"s3://{bucket}/meta.json")
    run = f"s3://{bucket}/run/"
    local = curate_cli(str(metadata), str(shards), tmp_path / "local")
    assert local.exit_code == 0, local.output

    remote = curate_cli(f"s3://{bucket}/meta.json", f"s3://{bucket}/in/", run)
    assert remote.exit_code == 0, remote.output
    assert "Traceback" not in remote.output
    expected = curated(tmp_path / "local")
    assert expected and remote_rows(run) == expected
    summary = json.loads(storage.read_bytes(storage.location(run) / SUMMARY_NAME))
    assert summary["shards_matched_this_run"] == 2
    assert objects(run) == expected_objects(run)  # no lock, no orphan
    # a downstream reader of the whole folder (pyarrow's dataset through the same seam)
    path, fs = storage.parquet_source(curated_dir(storage.location(run), 2.0))
    table = pq.read_table(path, filesystem=fs, partitioning=None)
    assert table.num_rows == len(expected)

    strays = ["matches/0.parquet-xx.0123456789ab.parquet", "curated/t=2/0.x.parquet"]
    for name in strays:  # as a killed attempt leaves them: written whole, never recorded
        write_bytes(storage.location(run) / name, b"PAR1 not recorded")
    again = curate_cli(f"s3://{bucket}/meta.json", f"s3://{bucket}/in/", run)
    assert again.exit_code == 0, again.output
    summary = json.loads(storage.read_bytes(storage.location(run) / SUMMARY_NAME))
    assert summary["shards_matched_this_run"] == 0  # nothing matched again
    assert remote_rows(run) == expected
    assert objects(run) == expected_objects(run)


def test_match_count_and_balance_stages_into_s3(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    run = f"s3://{bucket}/stages"
    for args in (
        ["match", "--metadata", str(metadata), "--input", str(shards), "--output", run],
        ["count", "--metadata", str(metadata), "--output", run],
        ["balance", "--input", str(shards), "--output", run, "--t", "2", "--curated-entry-ids"],
    ):
        result = CliRunner().invoke(
            main, [*args, "--backend", "cpu"][: len(args) + 2 * (args[0] != "count")]
        )
        assert result.exit_code == 0, result.output
    local = curate_cli(str(metadata), str(shards), tmp_path / "local")
    assert local.exit_code == 0, local.output
    assert remote_rows(run) == curated(tmp_path / "local")
    written = {name for name in objects(run) if not name.startswith("report/")}  # its report
    assert written == expected_objects(run)


def test_a_run_killed_mid_way_resumes_and_ends_identical(bucket, tmp_path, s3_endpoint):
    """SIGKILL while the 3rd of 6 shards is being matched or balanced (the delay hook holds
    each output unwritten, then written but unrecorded): the rerun reuses what was recorded,
    deletes what the killed attempt left and ends as an uninterrupted run."""
    shards = tmp_path / "in"
    shards.mkdir()
    texts = ["a cat on a red car", "the dog", "blue sky", "an old man", "red car", "a tree"]
    for n in range(6):
        lines = [json.dumps({"url": f"u/{n}/{i}", "caption": texts[(n + i) % 6]}) for i in range(9)]
        (shards / f"{n}.jsonl").write_text("\n".join(lines) + "\n")
    metadata = write_metadata(tmp_path / "meta.json")
    run = f"s3://{bucket}/killed"
    code = (
        "import sys; from metaclip_gpu.cli import main; "
        "main(['curate', '--metadata', sys.argv[1], '--input', sys.argv[2], '--output', "
        "sys.argv[3], '--t', '2', '--no-report', '--backend', 'cpu', '--threads', '1'])"
    )
    env = {**os.environ, DELAY_ENV: "0.6"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(metadata), str(shards), run],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(Manifest.load(storage.location(run))) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.45)  # into the 3rd shard: its output written, its record not yet
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    manifest = Manifest.load(storage.location(run))
    done = len(manifest)
    assert 2 <= done < 6
    recorded = {r.output for r in manifest.records.values()}
    unrecorded = {n for n in objects(run) if n.startswith("matches/")} - recorded
    assert unrecorded  # outputs written whole but not committed: orphans the rerun deletes
    assert storage.is_file(storage.location(run) / "run.lock")  # the killed run's lock

    resumed = curate_cli(str(metadata), str(shards), run)  # type: ignore[arg-type]
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(storage.read_bytes(storage.location(run) / SUMMARY_NAME))
    assert summary["shards_matched_this_run"] == 6 - done
    clean = curate_cli(str(metadata), str(shards), tmp_path / "clean")
    assert clean.exit_code == 0, clean.output
    assert remote_rows(run) == curated(tmp_path / "clean")
    assert objects(run) == expected_objects(run)


def test_a_missing_bucket_for_the_output_is_one_line(bucket, tmp_path) -> None:
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/run"
    result = curate_cli(str(metadata), str(shards), missing)  # type: ignore[arg-type]
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert missing in line and "bucket does not exist" in line


def test_bad_credentials_for_the_output_are_one_line(bucket, tmp_path, monkeypatch) -> None:
    import moto.settings

    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    remote.s3fs.S3FileSystem.clear_instance_cache()
    result = curate_cli(str(metadata), str(shards), f"s3://{bucket}/run")  # type: ignore[arg-type]
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert f"s3://{bucket}/run" in line and "errno 13" in line
    assert not Path("s3:").exists()


def test_dask_workers_write_the_run_directory_into_s3(bucket, s3_endpoint, tmp_path) -> None:
    """The workers write their match and curated files into the bucket themselves, with the
    storage options of the output location (none in their environment)."""
    distributed = pytest.importorskip("distributed")
    from metaclip_gpu.pipeline.run import run_curate

    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    kwargs = {"ts": [2.0], "seed": 0, "progress": False, "curated_entry_ids": True}
    local = run_curate(shards, metadata, tmp_path / "local", **kwargs)
    run = f"s3://{bucket}/dask"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_ENDPOINT_URL")  # the workers start without it
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            out = storage.location(run, {"endpoint_url": s3_endpoint})
            remote = run_curate(
                shards,
                metadata,
                out,
                **kwargs,
                client=client,
                cache_dir=tmp_path / "cache",
            )
    assert [f["kept"] for f in remote["ts"]] == [f["kept"] for f in local["ts"]]
    assert remote_rows(run) == curated(tmp_path / "local")
    assert objects(run) == expected_objects(run)


def test_worldwide_curate_into_s3_keeps_the_rows_of_the_local_run(bucket, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(2):
        rows = [(f"u/{n}/{i}", remote.TEXTS[i], "en" if i % 3 else "de") for i in range(15)]
        urls, captions, langs = (list(c) for c in zip(*rows, strict=True))
        pq.write_table(
            pa.table({"url": urls, "caption": captions, "lang": langs}), folder / f"{n}.parquet"
        )
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"en": remote.ENTRIES, "de": ["cat", "dog", "tree"]}))
    run = f"s3://{bucket}/world"
    args = ["curate", "--worldwide", "--metadata", str(metadata), "--input", str(folder)]
    args += ["--t", "2", "--no-report", "--backend", "cpu", "--curated-entry-ids", "--output"]
    local = CliRunner().invoke(main, [*args, str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    expected = remote_rows(tmp_path / "local", "t_en=2")
    assert expected
    for _ in range(2):  # a rerun writes every curated file anew, and ends the same
        result = CliRunner().invoke(main, [*args, run])
        assert result.exit_code == 0, result.output
        assert remote_rows(run, "t_en=2") == expected
    root = storage.location(run)
    assert storage.is_file(root / "entry_counts" / "de.npy")
    assert storage.is_file(root / "entry_probs" / "2_de.npy")
    assert not storage.is_file(root / "run.lock")


def test_a_run_of_another_host_holding_the_lock_is_one_line(bucket, tmp_path) -> None:
    """The lock is created only where none exists; another host's cannot be checked from
    here, so the run is refused with the URL to delete once that run is known to be gone."""
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    run = f"s3://{bucket}/busy"
    holder = {"host": "elsewhere", "pid": 1, "token": "t", "since": "then", "what": "curate"}
    write_bytes(storage.location(run) / "run.lock", json.dumps(holder).encode())
    result = curate_cli(str(metadata), str(shards), run)  # type: ignore[arg-type]
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert "host elsewhere" in line and f"delete {run}/run.lock" in line
    assert objects(run) == {"run.lock"}  # nothing written


def test_a_rerun_checks_unchanged_outputs_by_their_etag_and_redoes_a_damaged_one(
    bucket, tmp_path, monkeypatch
) -> None:
    """A record holds its output's size and ETag as written: an unchanged object is checked
    with a HEAD, not read again; one rewritten with other bytes is hashed, named damaged and
    redone."""
    from metaclip_gpu.pipeline import checksums, match
    from metaclip_gpu.pipeline.read import find_shards

    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    run = f"s3://{bucket}/etag"
    assert curate_cli(str(metadata), str(shards), run).exit_code == 0  # type: ignore[arg-type]
    monkeypatch.setattr(checksums, "_verified", {})  # a new process: nothing verified yet
    root = storage.location(run)
    found = find_shards(shards)
    with monkeypatch.context() as patched:
        patched.setattr("metaclip_gpu.storage_write.checksum", lambda loc: pytest.fail("read"))
        records = match.match_records(root, found)  # every output checked: none read
    assert all(r.output_fingerprint.get("version") for r in records.values())

    damaged = root / records[found[0].name].output
    write_bytes(damaged, b"PAR1 other bytes")
    with pytest.warns(checksums.DamagedFileWarning, match="redone"):
        again = curate_cli(str(metadata), str(shards), run)  # type: ignore[arg-type]
    assert again.exit_code == 0, again.output
    summary = json.loads(storage.read_bytes(root / SUMMARY_NAME))
    assert summary["shards_matched_this_run"] == 1
    local = curate_cli(str(metadata), str(shards), tmp_path / "local")
    assert local.exit_code == 0, local.output
    assert remote_rows(run) == curated(tmp_path / "local")
    assert objects(run) == expected_objects(run)


def test_a_match_output_url_ending_in_parquet_is_refused(tmp_path) -> None:
    metadata = write_metadata(tmp_path / "meta.json")
    shards = write_shards(tmp_path / "in", "jsonl")
    args = ["match", "--metadata", str(metadata), "--input", str(shards / "0.jsonl")]
    result = CliRunner().invoke(main, [*args, "--output", "s3://b/ids.parquet"])
    assert result.exit_code == 2
    assert "written locally" in error_line(result.output)


@pytest.mark.parametrize("stage", ["count", "balance"])
def test_count_or_balance_of_a_run_directory_that_is_not_there_is_one_line(
    bucket, tmp_path, stage
) -> None:
    """Locally these stages need an existing run directory (click's ``exists=True``); a
    mistyped URL gave an empty manifest instead of saying so."""
    shards = write_shards(tmp_path / "in", "jsonl")
    metadata = write_metadata(tmp_path / "meta.json")
    run = f"s3://{bucket}/no-such-run"
    args = {
        "count": ["count", "--metadata", str(metadata), "--output", run],
        "balance": ["balance", "--input", str(shards), "--output", run, "--t", "2"],
    }[stage]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"{run}: no such run directory" in result.output
    assert objects(run) == set()  # nothing written there


def test_count_with_bad_credentials_for_the_run_directory_is_one_line(
    bucket, tmp_path, monkeypatch
) -> None:
    """The run directory's existence is checked while the command line is parsed, before the
    command's own one-line handling of store errors: a refusal there is one line too."""
    import moto.settings

    metadata = write_metadata(tmp_path / "meta.json")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    remote.s3fs.S3FileSystem.clear_instance_cache()
    run = f"s3://{bucket}/run"
    result = CliRunner().invoke(main, ["count", "--metadata", str(metadata), "--output", run])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert run in result.output and "errno 13" in result.output
