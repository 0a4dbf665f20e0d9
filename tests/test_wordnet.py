"""WordNet lemmas (metaclip_gpu.wordnet): a tiny database in the real format, Debian's
WordNet 3.0 files where installed (``apt-get install wordnet-base``), and nltk's reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from wordnet_fixture import LEMMAS, write_wordnet

from metaclip_gpu.wordnet import (
    DATA_FILES,
    DEBIAN_DIR,
    WordNetError,
    WordNetNotFound,
    find_wordnet,
    parse_data_lines,
    read_lemmas,
)

NO_DEBIAN = "Debian's WordNet 3.0 files are not installed (apt-get install wordnet-base)"


def debian_dir() -> Path:
    if not all((DEBIAN_DIR / name).is_file() for name in DATA_FILES):
        pytest.skip(NO_DEBIAN)
    return DEBIAN_DIR


def test_fixture_lemmas(tmp_path: Path) -> None:
    source = find_wordnet(write_wordnet(tmp_path / "dict"))
    assert source.kind == "files"
    assert dict(read_lemmas(source)) == LEMMAS


def test_bad_data_line_names_file_and_line(tmp_path: Path) -> None:
    folder = write_wordnet(tmp_path / "dict")
    with (folder / "data.adv").open("a") as handle:
        handle.write("00002000 02 r zz oops 0 000 | bad count\n")
    with pytest.raises(WordNetError, match=r"data\.adv: line 3 is not a WordNet data line"):
        read_lemmas(find_wordnet(folder))


def test_missing_database_is_a_named_error(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WordNetNotFound, match="no such folder"):
        find_wordnet(tmp_path / "absent")
    with pytest.raises(WordNetNotFound, match=r"not a WordNet database folder \(no data\.noun"):
        find_wordnet(tmp_path)
    try:
        import nltk.data

        monkeypatch.setattr(nltk.data, "path", [])
    except ImportError:
        pass  # without nltk, "auto" cannot find its corpus either
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path))
    with pytest.raises(WordNetNotFound, match=r"nltk's 'wordnet' corpus .* wordnet-base"):
        find_wordnet("auto")


def test_auto_prefers_nltk_corpus(tmp_path: Path, monkeypatch) -> None:
    nltk_data = pytest.importorskip("nltk.data")
    write_wordnet(tmp_path / "corpora" / "wordnet")
    monkeypatch.setattr(nltk_data, "path", [str(tmp_path)])
    source = find_wordnet("auto")
    assert source.kind == "nltk"
    assert dict(read_lemmas(source)) == LEMMAS


def test_debian_lemmas_match_shared_metadata(metadata_500k: list[str]) -> None:
    """The shared metadata starts with WordNet 3.0's 147,306 lemmas in lower case."""
    lemmas = read_lemmas(find_wordnet(debian_dir()))
    assert len(lemmas) == 148_730  # distinct lemma names, case kept
    assert {lemma.lower() for lemma in lemmas} == set(metadata_500k[:147_306])


def test_debian_lemmas_equal_nltk_reader(tmp_path: Path, monkeypatch) -> None:
    """Adjectives, verbs and adverbs (nouns take nltk ~10 s more) parsed by nltk's own
    WordNetCorpusReader over a copy of the Debian files."""
    nltk_data = pytest.importorskip("nltk.data")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = debian_dir()
    root = tmp_path / "wordnet"
    root.mkdir()
    for path in source.iterdir():  # nltk refuses files reached through links out of its root
        if path.name.startswith(("data.", "index.")) or path.name.endswith(".exc"):
            shutil.copyfile(path, root / path.name)
    # Debian ships no lexnames file; the reader only needs 45 numbered names.
    (root / "lexnames").write_text("".join(f"{i:02d}\tlex{i}\t0\n" for i in range(45)))
    monkeypatch.setattr(nltk_data, "path", [str(tmp_path)])

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None  # maps to nltk's downloadable 'wordnet' package, absent offline

    with pytest.warns(UserWarning, match="multilingual"):
        reader = Reader(str(root), None)
    for pos, name in (("a", "data.adj"), ("v", "data.verb"), ("r", "data.adv")):
        expected = {n.replace("_", " ") for s in reader.all_synsets(pos) for n in s.lemma_names()}
        with (source / name).open(encoding="utf-8") as handle:
            ours = {lemma for lemmas in parse_data_lines(handle, name) for lemma in lemmas}
        assert ours == expected, name
