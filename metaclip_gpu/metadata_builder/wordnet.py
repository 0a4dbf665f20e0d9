"""WordNet strings for the metadata, by one of two rules (`WORDNET_RULES`).

- ``synset-names`` (MetaCLIP 1's English rule, `read_synset_names`): one string per synset, its
  canonical name as nltk forms it, ``ss.name()`` up to the first ``.`` with ``_`` read as space.
  nltk names a synset after its FIRST lemma, lower-cased, so this is that lemma lower-cased and
  cut at its first ``.`` (``St._Louis`` gives ``st``, ``.22`` gives ``""``, which the metadata
  filters then drop). The result equals
  ``{ss.name().split(".")[0].replace("_", " ") for ss in wn.all_synsets()}``.
- ``lemmas`` (MetaCLIP 2's rule for other languages, `read_lemmas`): every lemma name of every
  synset, case kept (``Einstein``, as nltk's ``Synset.lemma_names()``), ``_`` read as space:
  ``{name.replace("_", " ") for s in wn.all_synsets() for name in s.lemma_names()}``.
  For another language, `read_omw_lemmas` reads an Open Multilingual Wordnet tab file (OMW 1.4,
  ``wn-data-<lang>.tab``, what nltk's ``omw-1.4`` corpus holds) the way MetaCLIP 2's
  ``build_multilingual_wordnet.py`` takes it through nltk: each ``<lang>:lemma`` row's value,
  stripped, ``_`` as space, ``+`` removed. Only the ``lemmas`` rule applies there: nltk's synset
  names are English.

Read from the WordNet 3.0 database files ``data.noun``, ``data.verb``, ``data.adj`` and
``data.adv`` (Princeton's ``dict/`` folder, Debian's ``wordnet-base`` in /usr/share/wordnet,
or nltk's ``wordnet`` corpus, which holds the same files). A data line is
``synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt ...`` with
``w_cnt`` two hex digits; lines starting with two spaces are the licence header. An
adjective's word may end in a syntactic marker ``(a)``, ``(p)`` or ``(ip)``, which is not part
of the lemma (nltk drops it too).

`find_wordnet` picks the files: nltk's corpus when nltk is installed and has it, else the
Debian folder (or ``$WNSEARCHDIR``, WordNet's own variable for it); `WordNetNotFound` names
both when neither is there.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DATA_FILES: tuple[str, ...] = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_RULES: tuple[str, ...] = ("synset-names", "lemmas")
DEBIAN_DIR = Path("/usr/share/wordnet")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_OMW_NAME = re.compile(r"wn-[a-z]+-([a-z]{3})(?:_\w+)?\.tab$")


class WordNetError(ValueError):
    """A WordNet data file that cannot be parsed; the message names the file and line."""


class WordNetNotFound(FileNotFoundError):
    """No WordNet database was found where it was looked for."""


@dataclass(frozen=True)
class WordNetSource:
    """Where the data files are: ``kind`` is "nltk", "files" or "omw" (one Open Multilingual
    Wordnet tab file); ``location`` a folder or file (or, for nltk, the corpus pointer's path);
    ``opener`` opens a data file by name as text."""

    kind: str
    location: str
    opener: Any

    def open(self, name: str) -> IO[str]:
        return self.opener(name)


def parse_data_lines(lines: Iterable[str], source: str) -> Iterator[list[str]]:
    """The lemmas (``_`` as space, adjective markers dropped) of each synset in a data file."""
    for number, line in enumerate(lines, start=1):
        if line.startswith("  ") or not line.strip():
            continue
        fields = line.split(" ")
        try:
            w_cnt = int(fields[3], 16)
            words = fields[4 : 4 + 2 * w_cnt : 2]
        except (IndexError, ValueError) as err:
            raise WordNetError(f"{source}: line {number} is not a WordNet data line") from err
        if w_cnt == 0 or len(words) != w_cnt:
            raise WordNetError(f"{source}: line {number} has a bad word count {fields[3]!r}")
        yield [_ADJ_MARKER.sub("", word).replace("_", " ") for word in words]


def _read_synsets(source: WordNetSource) -> Iterator[list[str]]:
    for name in DATA_FILES:
        with source.open(name) as handle:
            yield from parse_data_lines(handle, f"{source.location}/{name}")


def synset_name(lemmas: Sequence[str]) -> str:
    """A synset's name as MetaCLIP 1 takes it: nltk's ``ss.name()`` (the first lemma, lower
    case, then ``.pos.NN``) up to its first ``.``, ``_`` as space (already so in `lemmas`)."""
    return lemmas[0].lower().split(".", 1)[0]


def read_lemmas(source: WordNetSource) -> Counter[str]:
    """Each lemma of the database and the number of synsets it names."""
    synsets: Counter[str] = Counter()
    for lemmas in _read_synsets(source):
        synsets.update(set(lemmas))
    return synsets


def read_synset_names(source: WordNetSource) -> Counter[str]:
    """Each synset name (`synset_name`) and the number of synsets that have it."""
    return Counter(synset_name(lemmas) for lemmas in _read_synsets(source))


def omw_language(path: Path) -> str | None:
    """The ISO 639-3 code of an OMW tab file: from its name (``wn-data-jpn.tab``), else from
    its header line (``# name<TAB>lang<TAB>url<TAB>licence``); None when neither says."""
    named = _OMW_NAME.search(path.name)
    if named:
        return named.group(1)
    with path.open(encoding="utf-8") as handle:
        fields = handle.readline().rstrip("\r\n").split("\t")
    return fields[1].split("_")[0] if fields[0].startswith("#") and len(fields) > 1 else None


def read_omw_lemmas(source: WordNetSource) -> Counter[str]:
    """Each lemma name of an OMW tab file and the number of synsets it names (see the module
    doc). A row is ``offset-pos<TAB>label<TAB>value`` (nltk's ``custom_lemmas``: the line
    stripped, the value the last field); lemma rows have the label ``<lang>:lemma`` (or
    ``lemma``); rows of other labels (``def``, ``exe``) or languages are not lemmas. Comment
    (``#``) and blank lines are skipped; a row with fewer than 3 fields raises `WordNetError`.
    Rows are not checked against WordNet 3.0's offsets (nltk skips the few that are not
    there)."""
    path = Path(source.location)
    lang = omw_language(path)
    pairs: set[tuple[str, str]] = set()
    with source.open(path.name) as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("#") or not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) < 3:
                raise WordNetError(f"{path}: line {number} is not 'offset-pos<TAB>label<TAB>value'")
            label = fields[1].split(":")
            if label[-1] == "lemma" and (len(label) == 1 or lang is None or label[0] == lang):
                name = fields[-1].strip().replace("_", " ").replace("+", "")
                pairs.add((fields[0], name))
    return Counter(name for _, name in pairs)


def read_wordnet(source: WordNetSource, rule: str) -> Counter[str]:
    """The strings WordNet gives under `rule` (one of `WORDNET_RULES`), each with the number
    of synsets that give it."""
    if source.kind == "omw" and rule != "lemmas":
        raise ValueError(
            f"{source.location}: an Open Multilingual Wordnet file gives lemma names only "
            "(MetaCLIP 2's rule for other languages): use the 'lemmas' rule"
        )
    if source.kind == "omw":
        return read_omw_lemmas(source)
    if rule == "synset-names":
        return read_synset_names(source)
    if rule == "lemmas":
        return read_lemmas(source)
    raise ValueError(f"unknown WordNet rule {rule!r}: expected one of {', '.join(WORDNET_RULES)}")


def _folder_source(folder: Path) -> WordNetSource:
    missing = [name for name in DATA_FILES if not (folder / name).is_file()]
    if missing:
        raise WordNetNotFound(f"{folder}: not a WordNet database folder (no {', '.join(missing)})")
    return WordNetSource("files", str(folder), lambda name: open(folder / name, encoding="utf-8"))


def _nltk_source() -> WordNetSource | None:
    """nltk's ``wordnet`` corpus, if nltk is installed and the corpus downloaded."""
    try:
        import nltk.data
    except ImportError:
        return None
    try:
        pointer = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            pointer = nltk.data.find("corpora/wordnet.zip/wordnet/")
        except LookupError:
            return None

    def opener(name: str) -> IO[str]:
        return pointer.join(name).open(encoding="utf-8")

    return WordNetSource("nltk", str(pointer.path), opener)


def find_wordnet(spec: str | os.PathLike[str] = "auto") -> WordNetSource:
    """The WordNet database named by `spec`: a folder holding the data files, an Open
    Multilingual Wordnet ``.tab`` file, or "auto"."""
    if spec != "auto":
        folder = Path(spec)
        if folder.is_file() and folder.suffix == ".tab":
            return WordNetSource(
                "omw", str(folder), lambda name: open(folder.with_name(name), encoding="utf-8")
            )
        if not folder.is_dir():
            raise WordNetNotFound(
                f"{folder}: no such folder (expected WordNet's data.* files) or OMW .tab file"
            )
        return _folder_source(folder)
    found = _nltk_source()
    if found is not None:
        return found
    folder = Path(os.environ.get("WNSEARCHDIR", DEBIAN_DIR))
    if all((folder / name).is_file() for name in DATA_FILES):
        return _folder_source(folder)
    raise WordNetNotFound(
        "no WordNet database found: looked for nltk's 'wordnet' corpus (pip install nltk, then "
        "nltk.download('wordnet')) and for the WordNet 3.0 files in "
        f"{folder} (Debian/Ubuntu: apt-get install wordnet-base); or pass a folder holding "
        "data.noun, data.verb, data.adj and data.adv, or --wordnet none"
    )
