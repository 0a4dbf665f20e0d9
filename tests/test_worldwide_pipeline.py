"""Worldwide curation (MetaCLIP 2): per-language counts and t, one text per image, exports."""

from __future__ import annotations

import itertools
import json
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_gpu.cli import main
from metaclip_gpu.engine.metadata import MetadataError
from metaclip_gpu.engine.reference import reference_match
from metaclip_gpu.pipeline.balance_per_image import choose_one_per_sample
from metaclip_gpu.pipeline.draws import keep_probability
from metaclip_gpu.pipeline.languages import LanguageIndexes, load_language_metadata
from metaclip_gpu.pipeline.run import run_worldwide
from metaclip_gpu.pipeline.thresholds import p_to_t, t_to_p

METADATA = {
    "en": ["cat", "black cat", "dog", "a", "the", "photo", "C++", "Mr.", "New York"],
    "de": ["Katze", "schwarze Katze", "Hund", "eine", "die", "Foto"],
    "zh": ["猫", "黑猫", "狗", "北京", "中国", "照片", "一只", "，"],
    "ja": ["猫", "犬", "東京", "写真", "の", "黒い猫"],
    "th": ["แมว", "สุนัข", "ภาพ", "กรุงเทพ"],
    "ru": ["кошка", "собака", "фото", "чёрная кошка"],
    "other": ["cat", "фото", "猫"],
}
WORDS = {
    "en": ["a", "the", "black", "cat", "dog", "photo", "of", "in", "New", "York", "C++", "Mr."],
    "de": ["eine", "die", "schwarze", "Katze", "Hund", "Foto", "in", "Berlin"],
    "zh": ["一只", "黑", "猫", "狗", "在", "北京", "中国", "的", "照片", "，"],
    "ja": ["黒い", "猫", "犬", "の", "東京", "写真", "です"],
    "th": ["แมว", "สี", "ดำ", "สุนัข", "ภาพ", "กรุงเทพ"],
    "ru": ["чёрная", "кошка", "собака", "фото", "в", "Москве"],
    "ar": ["قطة", "كلب", "صورة"],  # no metadata: unknown
}
NO_SPACE = {"zh", "ja", "th"}


def make_pool(n_images: int, seed: int) -> pa.Table:
    """Rows of (url, caption, lang): 1-3 alt-texts per image, languages mixed per image."""
    rng = np.random.default_rng(seed)
    langs = list(WORDS)
    urls, captions, row_langs = [], [], []
    for image in range(n_images):
        for _ in range(int(rng.integers(1, 4))):
            lang = langs[int(rng.integers(len(langs)))]
            words = [WORDS[lang][int(i)] for i in rng.integers(0, len(WORDS[lang]), 4)]
            joiner = "" if lang in NO_SPACE and rng.random() < 0.7 else " "
            urls.append(f"https://img.example/{image}.jpg")
            captions.append(joiner.join(words))
            row_langs.append(lang)
    return pa.table({"url": urls, "caption": captions, "lang": row_langs})


def write_shards(table: pa.Table, folder: Path, bounds: list[int]) -> Path:
    """Shards cut at `bounds` (moved forward so one image's rows stay in one shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = table.column("url").to_pylist()
    cuts = [0]
    for b in bounds:
        while 0 < b < len(urls) and urls[b] == urls[b - 1]:
            b += 1
        if cuts[-1] < b < len(urls):
            cuts.append(b)
    cuts.append(len(urls))
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:03d}.parquet")
    return folder


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("metadata")
    for lang, entries in METADATA.items():
        (folder / f"{lang}.json").write_text(json.dumps(entries, ensure_ascii=False))
    return folder


@pytest.fixture(scope="module")
def pool() -> pa.Table:
    return make_pool(1500, seed=3)


def curated_rows(summary: dict, label: str) -> set[tuple[str, str]]:
    table = pq.read_table(summary["outputs"]["curated"][label])
    urls, captions = table.column("url").to_pylist(), table.column("caption").to_pylist()
    return set(zip(urls, captions, strict=True))


@pytest.fixture(scope="module")
def base(metadata_dir: Path, pool: pa.Table, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ww")
    shards = write_shards(pool, root / "in", [len(pool) // 3, 2 * len(pool) // 3])
    summary = run_worldwide(
        shards, metadata_dir, root / "out", t_en=[40.0, 1e9], seed=7, progress=False,
        curated_entry_ids=True,
    )  # fmt: skip
    return shards, summary


# ---------------------------------------------------------------------- thresholds
def _t_to_p_reference(counts: np.ndarray, t: float) -> float:
    return float(counts[counts < t].sum() / counts.sum())


def _p_to_t_reference(counts: np.ndarray, p: float) -> float:
    c = np.sort(counts)
    portion = np.cumsum(c) / c.sum()
    return float(c[(np.abs(portion - p)).argmin()])


@pytest.mark.parametrize(
    ("counts", "t", "p"),
    [
        ([0, 5, 5, 10, 80], 10, 0.1),  # tie between 5 and 5; zeros
        ([0, 0, 0, 100], 50, 0.0),  # p_to_t lands on a zero count
        ([7, 7, 7, 7], 7, 0.5),  # all equal: nothing below t
        ([1, 2, 3, 4, 1000], 4, 0.006),
        ([3], 1, 1.0),
    ],
)
def test_t_to_p_and_p_to_t_equal_the_reference(counts: list[int], t: float, p: float) -> None:
    c = np.array(counts, dtype=np.uint64)
    assert t_to_p(c, t) == _t_to_p_reference(c, t)
    assert p_to_t(c, p) == _p_to_t_reference(c, p)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=40).filter(any),
    st.floats(0.5, 2e6),
    st.floats(0.0, 1.0),
)
def test_t_to_p_and_p_to_t_match_the_reference_on_random_counts(counts, t, p) -> None:
    c = np.array(counts, dtype=np.uint64)
    assert t_to_p(c, t) == _t_to_p_reference(c, t)
    assert p_to_t(c, p) == _p_to_t_reference(c, p)


def test_thresholds_keep_the_english_tail_share(base) -> None:
    _, summary = base
    counts = {lang: np.load(info["entry_counts"]) for lang, info in summary["languages"].items()}
    for per_t in summary["ts"]:
        label = f"t_en={per_t['t']:.0f}"
        assert per_t["tail_share"] == t_to_p(counts["en"], per_t["t"])
        for lang, info in summary["languages"].items():
            if lang == "en":
                assert info["t"][label] == per_t["t"]
            elif counts[lang].any():
                assert info["t"][label] == p_to_t(counts[lang], per_t["tail_share"])


def test_entry_probabilities_are_exported_per_language(base) -> None:
    _, summary = base
    folder = Path(summary["outputs"]["entry_probs"])
    for lang, info in summary["languages"].items():
        t = info["t"]["t_en=40"]
        probs = np.load(folder / f"40_{lang}.npy")
        assert probs.dtype == np.float32
        counts = np.load(info["entry_counts"])
        expected = keep_probability(counts, t) if t else np.zeros(len(counts))
        np.testing.assert_array_equal(probs, expected.astype(np.float32))


# ---------------------------------------------------------------------- counts and matches
def test_per_language_counts_equal_the_oracle(base, pool: pa.Table) -> None:
    _, summary = base
    expected = {lang: np.zeros(len(METADATA[lang]), np.uint64) for lang in METADATA}
    for text, lang in zip(
        pool.column("caption").to_pylist(), pool.column("lang").to_pylist(), strict=True
    ):
        if lang in METADATA:
            for i in reference_match(text, METADATA[lang], padding="worldwide"):
                expected[lang][i] += 1
    for lang in METADATA:
        np.testing.assert_array_equal(
            np.load(summary["languages"][lang]["entry_counts"]), expected[lang], err_msg=lang
        )
    assert summary["unknown_language"] == pool.column("lang").to_pylist().count("ar")


def test_one_text_per_image_and_only_known_languages(base) -> None:
    _, summary = base
    for label in summary["outputs"]["curated"]:
        table = pq.read_table(summary["outputs"]["curated"][label])
        urls = table.column("url").to_pylist()
        assert len(urls) == len(set(urls))
        assert "ar" not in set(table.column("lang").to_pylist())
        assert all(table.column("entry_ids").to_pylist())
    # t_en = 1e9 keeps every image with a matched, known-language text
    everything = summary["ts"][1]
    assert everything["kept"] == everything["samples"] > 0


def test_kept_images_average_their_keep_chance(base) -> None:
    _, summary = base
    first = summary["ts"][0]
    kept, expected, samples = first["kept"], first["expected_kept"], first["samples"]
    assert kept < samples  # t_en = 40 thins the head
    sd = np.sqrt(expected)  # a sum of Bernoullis: variance below its mean
    assert abs(kept - expected) < 4 * sd + 1


# ---------------------------------------------------------------------- determinism
def test_same_set_for_another_split_a_rerun_and_two_workers(
    base, metadata_dir: Path, pool: pa.Table, tmp_path: Path
) -> None:
    _, summary = base
    labels = list(summary["outputs"]["curated"])
    reference = {label: curated_rows(summary, label) for label in labels}
    shards = write_shards(pool, tmp_path / "in", [100, 700, 701, 1200])
    other = run_worldwide(
        shards, metadata_dir, tmp_path / "a", t_en=[40.0, 1e9], seed=7, progress=False
    )
    again = run_worldwide(
        shards, metadata_dir, tmp_path / "a", t_en=[40.0, 1e9], seed=7, progress=False
    )
    for label in labels:
        assert curated_rows(other, label) == reference[label]
        assert curated_rows(again, label) == reference[label]
    reseeded = run_worldwide(
        shards, metadata_dir, tmp_path / "b", t_en=[40.0], seed=8, progress=False
    )
    assert curated_rows(reseeded, "t_en=40") != reference["t_en=40"]


@pytest.mark.slow
def test_dask_cluster_gives_the_same_set(base, metadata_dir: Path, tmp_path: Path) -> None:
    from metaclip_gpu.pipeline.cluster import close_client, make_client

    shards, summary = base
    client = make_client(cluster="local", workers=2, threads_per_worker=1)
    try:
        distributed = run_worldwide(
            shards, metadata_dir, tmp_path / "d", t_en=[40.0, 1e9], seed=7,
            progress=False, client=client,
        )  # fmt: skip
    finally:
        close_client(client)
    for label in summary["outputs"]["curated"]:
        assert curated_rows(distributed, label) == curated_rows(summary, label)


def test_choice_ignores_row_order() -> None:
    rng = np.random.default_rng(0)
    n = 400
    groups = rng.integers(0, 60, n).astype(np.uint64)
    alone = rng.random(n) < 0.1
    keys = rng.integers(0, 2**63, n).astype(np.uint64)
    eligible = rng.random(n) < 0.7
    chosen = choose_one_per_sample(groups, alone, keys, eligible, seed=1)
    perm = rng.permutation(n)
    again = choose_one_per_sample(groups[perm], alone[perm], keys[perm], eligible[perm], seed=1)
    assert set(keys[chosen].tolist()) == set(keys[perm][again].tolist())
    assert not (chosen & ~eligible).any()
    pairs = {(bool(a), int(g)) for a, g, e in zip(alone, groups, eligible, strict=True) if e}
    assert chosen.sum() == len(pairs)  # one per sample with an eligible row


# ---------------------------------------------------------------------- languages and errors
def test_metadata_as_one_json_object(tmp_path: Path, metadata_dir: Path) -> None:
    path = tmp_path / "all.json"
    path.write_text(json.dumps(METADATA, ensure_ascii=False))
    assert load_language_metadata(path) == load_language_metadata(metadata_dir)
    path.write_text(json.dumps({"en": ["a", 3]}))
    with pytest.raises(MetadataError, match=r"'en'.*element 1"):
        load_language_metadata(path)
    with pytest.raises(MetadataError, match=r"directory of <lang>\.json"):
        path.write_text("[]")
        load_language_metadata(path)


def test_unknown_languages_go_to_other_when_asked(metadata_dir: Path, tmp_path: Path) -> None:
    table = pa.table({"url": ["u1", "u2"], "caption": ["фото кот", "cat"], "lang": ["uk", None]})
    pq.write_table(table, tmp_path / "a.parquet")
    mixed = pa.table({"url": ["u3"], "caption": ["the cat"], "lang": ["en"]})
    pq.write_table(mixed, tmp_path / "b.parquet")
    summary = run_worldwide(
        tmp_path, metadata_dir, tmp_path / "o", t_en=[1e9], unknown="other", progress=False
    )
    assert summary["unknown_language"] == 0
    assert summary["languages"]["other"]["matched"] == 2
    skipped = run_worldwide(tmp_path, metadata_dir, tmp_path / "s", t_en=[1e9], progress=False)
    assert skipped["unknown_language"] == 2
    assert skipped["languages"]["other"]["texts"] == 0


def test_other_needs_an_other_list(tmp_path: Path) -> None:
    (tmp_path / "en.json").write_text('["cat"]')
    with pytest.raises(MetadataError, match="no 'other' list"):
        LanguageIndexes.load(tmp_path, unknown="other")


def test_a_shard_without_languages_is_reported_and_the_rest_completes(
    metadata_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "langid", None)  # no identifier installed
    monkeypatch.setitem(sys.modules, "fasttext", None)  # (neither the fastText one)
    pq.write_table(pa.table({"url": ["u1"], "caption": ["the cat"]}), tmp_path / "a.parquet")
    pq.write_table(
        pa.table({"url": ["u2"], "caption": ["the dog"], "lang": ["en"]}), tmp_path / "b.parquet"
    )
    summary = run_worldwide(tmp_path, metadata_dir, tmp_path / "o", t_en=[1e9], progress=False)
    [bad] = summary["shards_unreadable"]
    assert bad["shard"] == "a.parquet" and "no language column" in bad["error"]
    assert "pip install langid" in bad["error"]
    assert summary["ts"][0]["kept"] == 1


def test_a_language_identifier_fills_a_missing_column(
    metadata_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("langid")
    fake.classify = lambda text: ("zh", 1.0) if "猫" in text else ("en", 1.0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langid", fake)
    monkeypatch.setitem(sys.modules, "fasttext", None)  # langid: the fallback without fastText
    pq.write_table(
        pa.table({"url": ["u1", "u2"], "caption": ["黑猫", "black cat"]}), tmp_path / "a.parquet"
    )
    summary = run_worldwide(tmp_path, metadata_dir, tmp_path / "o", t_en=[1e9], progress=False)
    assert summary["languages"]["zh"]["matched"] == 1
    curated = pq.read_table(summary["outputs"]["curated"]["t_en=1000000000"])
    assert sorted(curated.column("lang").to_pylist()) == ["en", "zh"]


def test_cli_worldwide_prints_the_languages(metadata_dir: Path, pool: pa.Table, tmp_path: Path):
    shards = write_shards(pool, tmp_path / "in", [700])
    result = CliRunner().invoke(
        main,
        [
            "curate", "--worldwide", "--metadata", str(metadata_dir), "--input", str(shards),
            "--output", str(tmp_path / "out"), "--t", "40", "--backend", "cpu",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "per language" in result.output
    for lang in ("en", "zh", "th", "ru"):
        assert lang in result.output
    assert f"{summary['ts'][0]['kept']:,} kept" in result.output
    usage = CliRunner().invoke(
        main,
        ["curate", "--metadata", str(metadata_dir / "en.json"), "--input", str(shards),
         "--output", str(tmp_path / "x"), "--t", "5", "--lang-column", "lang"],
    )  # fmt: skip
    assert usage.exit_code != 0 and "need --worldwide" in usage.output


def test_the_report_has_a_section_per_language(base) -> None:
    import re

    from metaclip_gpu.report.html import write_report

    _, summary = base
    run = Path(summary["outputs"]["dir"])
    html = write_report(run).read_text(encoding="utf-8")
    assert "Languages" in re.findall(r"<h2[^>]*>([^<]*)</h2>", html)
    for lang, info in summary["languages"].items():
        assert f"<h3>{lang}</h3>" in html
        shown = re.search(rf'id="kept-{lang}-t_en=40">([^<]*)<', html)
        assert shown and shown.group(1) == f"{info['kept']['t_en=40']:,}"
        t = info["t"]["t_en=40"]
        cell = re.search(rf'id="t-{lang}-t_en=40">([^<]*)<', html)
        assert cell and cell.group(1) == ("-" if t is None else f"{t:,.6g}")
    kept = re.search(r'id="kept-t=40">([^<]*)<', html)
    assert kept and kept.group(1) == f"{summary['ts'][0]['kept']:,}"
    pngs = sorted((run / "report").glob("language-*.png"))
    assert len(pngs) == len(summary["languages"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_a_removed_shard_leaves_neither_counts_nor_curated_rows(
    metadata_dir: Path, pool: pa.Table, tmp_path: Path
) -> None:
    shards = write_shards(pool, tmp_path / "in", [500, 1000])
    out = tmp_path / "out"
    run_worldwide(shards, metadata_dir, out, t_en=[40.0], seed=7, progress=False)
    (shards / "part-001.parquet").rename(tmp_path / "part-001.parquet")
    again = run_worldwide(shards, metadata_dir, out, t_en=[40.0], seed=7, progress=False)
    fresh = run_worldwide(shards, metadata_dir, tmp_path / "fresh", t_en=[40.0], seed=7,
                          progress=False)  # fmt: skip
    assert curated_rows(again, "t_en=40") == curated_rows(fresh, "t_en=40")
    for lang, figures in fresh["languages"].items():
        assert again["languages"][lang]["kept"] == figures["kept"]
        np.testing.assert_array_equal(
            np.load(figures["entry_counts"]), np.load(again["languages"][lang]["entry_counts"])
        )
