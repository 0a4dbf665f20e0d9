"""A tiny WordNet 3.0 database (data.noun/verb/adj/adv in the real format) for tests, and
what each rule reads from it: `LEMMAS` (every lemma name) and `SYNSET_NAMES` (nltk's
``ss.name()`` up to the first "."; the real WordNet 3.0 has first lemmas such as ``St._Louis``
and ``.22_caliber`` too)."""

from __future__ import annotations

from pathlib import Path

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
DATA: dict[str, list[str]] = {
    "data.noun": [
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  ",
        "02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus "
        "Canis  ",
        "10998305 18 n 02 Einstein 0 Albert_Einstein 0 001 @i 10301261 n 0000 | physicist  ",
        # w_cnt is hexadecimal: 0b = 11 words
        "99999999 03 n 0b w1 0 w2 0 w3 0 w4 0 w5 0 w6 0 w7 0 w8 0 w9 0 w10 0 w11 0 000 | test ",
        # a first lemma with dots: its synset name is cut at the first one ("st")
        "08956760 15 n 02 St._Louis 0 Saint_Louis 0 000 | a city in Missouri  ",
        # ... and one starting with a dot: its synset name is "" (the filters drop it)
        "03533000 06 n 01 .22_caliber 0 000 | a .22 caliber firearm  ",
    ],
    "data.verb": [
        "01166351 34 v 02 dog 0 chase 0 000 01 + 08 00 | go after with the intent to catch  ",
    ],
    "data.adj": [
        "00001740 00 a 01 able 0 000 | having the necessary means  ",
        "01383756 00 s 02 galore(ip) 0 in_abundance(p) 0 000 | in great numbers  ",
        "01736122 00 a 01 elect(ip) 0 000 | elected but not yet in office  ",
    ],
    "data.adv": [
        "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment  ",
    ],
}
LEMMAS: dict[str, int] = {
    "entity": 1,
    "dog": 2,
    "domestic dog": 1,
    "Einstein": 1,
    "Albert Einstein": 1,
    **{f"w{i}": 1 for i in range(1, 12)},
    "chase": 1,
    "able": 1,
    "galore": 1,
    "in abundance": 1,
    "elect": 1,
    "a cappella": 1,
    "St. Louis": 1,
    "Saint Louis": 1,
    ".22 caliber": 1,
}
SYNSET_NAMES: dict[str, int] = {
    "entity": 1,
    "dog": 2,  # the noun and the verb
    "einstein": 1,  # lower case, as nltk names it
    "w1": 1,
    "st": 1,
    "": 1,
    "able": 1,
    "galore": 1,
    "elect": 1,
    "a cappella": 1,
}


def write_wordnet(folder: Path) -> Path:
    """Writes the tiny database into `folder` and returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in DATA.items():
        (folder / name).write_text(HEADER + "".join(line + "\n" for line in lines))
    return folder


# An Open Multilingual Wordnet tab file (OMW 1.4's format) over real WordNet 3.0 offsets.
OMW_LINES = [
    "# Japanese Wordnet\tjpn\thttp://compling.hss.ntu.edu.sg/wnja\tCC BY 3.0",
    "02084071-n\tjpn:lemma\t犬",
    "02084071-n\tjpn:lemma\tイヌ",
    "02084071-n\tjpn:def\t家畜化された動物",  # a definition, not a lemma
    "02084071-n\tfra:lemma\tchien",  # another language's row
    "00001740-n\tjpn:lemma\t  実体 ",  # stripped
    "00001740-n\tjpn:lemma\t犬",  # a second synset with the same name
    "00001740-v\tjpn:lemma\t呼吸_する",  # "_" reads as a space
    "00003553-a\tjpn:lemma\t新+興",  # "+" (Japanese and Chinese morpheme marks) is removed
    "00001740-a\tjpn:lemma\tできる",
    "00001740-a\tjpn:lemma\tできる",  # repeated row: one synset
    "",
]
OMW_LEMMAS: dict[str, int] = {"犬": 2, "イヌ": 1, "実体": 1, "呼吸 する": 1, "新興": 1, "できる": 1}


def write_omw(path: Path) -> Path:
    """Writes the tiny OMW tab file at `path` (name it ``wn-data-jpn.tab``) and returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(OMW_LINES), encoding="utf-8")
    return path
