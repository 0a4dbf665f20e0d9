"""WordNet's two rules (metadata_builder.wordnet: synset names and lemmas): a tiny database in the
real format, Debian's WordNet 3.0 files where installed (``apt-get install wordnet-base``;
``.ci/run`` installs it), and nltk's reader over the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from wordnet_fixture import LEMMAS, OMW_LEMMAS, OMW_LINES, SYNSET_NAMES, write_omw, write_wordnet

from metaclip_gpu.metadata_builder.wordnet import (
    DATA_FILES,
    DEBIAN_DIR,
    WordNetError,
    WordNetNotFound,
    find_wordnet,
    omw_language,
    parse_data_lines,
    read_lemmas,
    read_omw_lemmas,
    read_synset_names,
    read_wordnet,
    synset_name,
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


def test_fixture_synset_names(tmp_path: Path) -> None:
    """One string per synset: the first lemma, lower case, cut at its first "."."""
    source = find_wordnet(write_wordnet(tmp_path / "dict"))
    assert dict(read_synset_names(source)) == SYNSET_NAMES
    assert read_wordnet(source, "synset-names") == read_synset_names(source)
    assert read_wordnet(source, "lemmas") == read_lemmas(source)
    with pytest.raises(ValueError, match="unknown WordNet rule 'names'"):
        read_wordnet(source, "names")


@pytest.mark.parametrize(
    ("lemmas", "name"),
    [
        (["Einstein", "Albert Einstein"], "einstein"),
        (["domestic dog", "dog"], "domestic dog"),
        (["Ph.D.", "PhD"], "ph"),
        (["Lake St. Clair"], "lake st"),
        ([".22 caliber"], ""),
        (["i.e."], "i"),
    ],
)
def test_synset_name_is_nltks_name_up_to_the_first_dot(lemmas: list[str], name: str) -> None:
    assert synset_name(lemmas) == name


def test_omw_lemmas(tmp_path: Path) -> None:
    """Another language's wordnet: every lemma row of its language, as MetaCLIP 2 takes it."""
    source = find_wordnet(write_omw(tmp_path / "wn-data-jpn.tab"))
    assert (source.kind, omw_language(Path(source.location))) == ("omw", "jpn")
    assert dict(read_wordnet(source, "lemmas")) == OMW_LEMMAS
    with pytest.raises(ValueError, match=r"wn-data-jpn\.tab: an Open Multilingual .* lemma names"):
        read_wordnet(source, "synset-names")
    # the language from the header when the name does not say; every language when neither
    renamed = find_wordnet(write_omw(tmp_path / "japanese.tab"))
    assert omw_language(Path(renamed.location)) == "jpn"
    assert read_omw_lemmas(renamed) == OMW_LEMMAS
    bare = tmp_path / "bare.tab"
    bare.write_text("\n".join(OMW_LINES[1:]), encoding="utf-8")
    assert omw_language(bare) is None
    assert dict(read_omw_lemmas(find_wordnet(bare))) == {**OMW_LEMMAS, "chien": 1}


def test_bad_omw_row_names_file_and_line(tmp_path: Path) -> None:
    path = write_omw(tmp_path / "wn-data-jpn.tab")
    path.write_text(path.read_text(encoding="utf-8") + "\n02084071-n\tjpn:lemma\n")
    with pytest.raises(WordNetError, match=r"wn-data-jpn\.tab: line 13 is not 'offset-pos"):
        read_omw_lemmas(find_wordnet(path))


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


# The synset names cut at their first "." that no lemma of the shared metadata's WordNet part
# holds ("ibid." gives "ibid", "St._Denis" gives "st", ".22_caliber" gives "").
CUT_AT_A_DOT = {"", "ibid", "lake st", "st", "wrangell-st"}


def test_debian_lemmas_match_shared_metadata(metadata_500k: list[str]) -> None:
    """The shared metadata starts with WordNet 3.0's 147,306 lemmas in lower case: what the
    `lemmas` rule gives, lower-cased. The `synset-names` rule gives a subset of it but for the
    names cut at a dot."""
    lemmas = read_lemmas(find_wordnet(debian_dir()))
    assert len(lemmas) == 148_730  # distinct lemma names, case kept
    assert {lemma.lower() for lemma in lemmas} == set(metadata_500k[:147_306])
    names = read_synset_names(find_wordnet(debian_dir()))
    assert len(names) == 86_555
    assert set(names) - set(metadata_500k[:147_306]) == CUT_AT_A_DOT


def test_debian_synset_name_count() -> None:
    """86,555 distinct synset names from Debian's WordNet 3.0 files (117,659 synsets), "" among
    them. Not cutting at the first "." would give 86,571 (the figure issue 15 quotes): 24
    distinct first lemmas hold a "." (``Ph.D.``, ``St._Petersburg``, ``.38_caliber``) and
    collapse into 14 strings, some of which other synsets already give."""
    source = find_wordnet(debian_dir())
    names = read_synset_names(source)
    assert len(names) == 86_555 and sum(names.values()) == 117_659
    assert names[""] == 3 and names["st"] == 10  # .22/.38/.45 caliber; St._Denis, St._John's...
    firsts = {lemmas[0].lower() for lemmas in _debian_synsets(source.location)}
    assert len(firsts) == 86_571
    assert len({first for first in firsts if "." in first}) == 24


def _debian_synsets(folder: str) -> list[list[str]]:
    synsets: list[list[str]] = []
    for name in DATA_FILES:
        with (Path(folder) / name).open(encoding="utf-8") as handle:
            synsets.extend(parse_data_lines(handle, name))
    return synsets


def _nltk_reader(tmp_path: Path, monkeypatch) -> object:
    """nltk's own WordNetCorpusReader over a copy of the Debian files (~3 s)."""
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
        return Reader(str(root), None)


@pytest.mark.slow
def test_debian_rules_equal_nltk_reader(tmp_path: Path, monkeypatch) -> None:
    """Both rules against nltk's reader over the Debian files, every part of speech (~30 s:
    nltk parses every synset): `synset-names` is the reference's
    ``{ss.name().split(".")[0].replace("_", " ") for ss in wn.all_synsets()}``, `lemmas`
    every ``lemma_names()``."""
    reader = _nltk_reader(tmp_path, monkeypatch)
    source = debian_dir()
    all_names: set[str] = set()
    for pos, name in (("n", "data.noun"), ("a", "data.adj"), ("v", "data.verb"), ("r", "data.adv")):
        expected_lemmas: set[str] = set()
        expected_names: set[str] = set()
        for synset in reader.all_synsets(pos):
            expected_lemmas.update(n.replace("_", " ") for n in synset.lemma_names())
            expected_names.add(synset.name().split(".")[0].replace("_", " "))
        with (source / name).open(encoding="utf-8") as handle:
            synsets = list(parse_data_lines(handle, name))
        assert {lemma for lemmas in synsets for lemma in lemmas} == expected_lemmas, name
        assert {synset_name(lemmas) for lemmas in synsets} == expected_names, name
        all_names |= expected_names
    assert set(read_synset_names(find_wordnet(source))) == all_names
    assert len(all_names) == 86_555


def test_omw_lemmas_equal_nltk_reader(tmp_path: Path, monkeypatch) -> None:
    """The OMW fixture through nltk's ``custom_lemmas``, then MetaCLIP 2's expression
    ``{name.replace("_", " ").replace("+", "") for ss in wn.all_synsets(lang=lang) for name in
    ss.lemma_names(lang)}``."""
    reader = _nltk_reader(tmp_path, monkeypatch)
    path = write_omw(tmp_path / "omw" / "wn-data-jpn.tab")
    with path.open(encoding="utf-8") as handle:
        reader.custom_lemmas(handle, "jpn")
    reader.provenances["jpn"] = "test"  # all_synsets(lang=) lists only languages it knows
    expected = {
        name.replace("_", " ").replace("+", "")
        for synset in reader.all_synsets(lang="jpn")
        for name in synset.lemma_names("jpn")
    }
    assert set(read_omw_lemmas(find_wordnet(path))) == expected == set(OMW_LEMMAS)
