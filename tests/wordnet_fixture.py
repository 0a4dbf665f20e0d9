"""A tiny WordNet 3.0 database (data.noun/verb/adj/adv in the real format) for tests."""

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
}


def write_wordnet(folder: Path) -> Path:
    """Writes the tiny database into `folder` and returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in DATA.items():
        (folder / name).write_text(HEADER + "".join(line + "\n" for line in lines))
    return folder
