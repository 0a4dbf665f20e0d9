"""kernels/tokens.cuh's token stream and token hash, against SPEC section 2 and one another.

The host finds separators 16 bytes at a time (SSE2) and hashes tokens from 8-byte loads; the
device reads bytes. tests/native/token_scan_check.cpp runs the stream over texts and prints
every inner token with the hash the stream computed and the hash of the same bytes hashed
alone (as the index builder hashes an entry's token). It is built both ways (the host's SIMD
path, and -DMC_HOST_SIMD=0: the device's byte path) with AddressSanitizer where the compiler
has it, so a read past a text's end fails. Both must give the tokens of spacing(text) split on
' ' and the word-wise hash this file writes out in Python.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from token_hashing import M64, TOKEN_LEN_MUL, token_hash, word_fold

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "native" / "token_scan_check.cpp"
KERNELS = ROOT / "kernels"

SPACE_LIKE = b" \t\n\r"
PUNCT = b",.;:?!`"
SEPARATORS = SPACE_LIKE + PUNCT


# ------------------------------------------------------------ the reference ---
def inner_tokens(text: bytes) -> list[bytes]:
    """t_1 .. t_{m-1} of spacing(text) split on ' ' (SPEC section 2), built as the spec says."""
    spaced = b" " + text + b" "
    for c in PUNCT:
        spaced = spaced.replace(bytes([c]), b" " + bytes([c]) + b" ")
    for c in b"\t\n\r":
        spaced = spaced.replace(bytes([c]), b" ")
    return spaced.split(b" ")[1:-1]


# ------------------------------------------------------------------ the driver ---
def _compiler() -> list[str]:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no host C++ compiler (g++/c++ or $CXX)")
    return shlex.split(cxx)


def _asan_flags(cxx: list[str], folder: Path) -> list[str]:
    """-fsanitize=address where the compiler can build and run it, else nothing."""
    probe = folder / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    exe = folder / "probe"
    flags = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    built = subprocess.run([*cxx, *flags, str(probe), "-o", str(exe)], capture_output=True)
    if built.returncode != 0 or subprocess.run([str(exe)], capture_output=True).returncode != 0:
        return []
    return flags


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checker built with the host's SIMD path and with the device's byte path."""
    folder = tmp_path_factory.mktemp("token_scan")
    cxx = _compiler()
    sanitize = _asan_flags(cxx, folder)
    built = {}
    for name, defines in {"simd": [], "bytes": ["-DMC_HOST_SIMD=0"]}.items():
        exe = folder / f"check_{name}"
        subprocess.run(
            [*cxx, "-O2", "-std=c++17", "-fno-strict-aliasing", *sanitize, *defines,
             "-I", str(KERNELS), str(CHECK), "-o", str(exe)],
            check=True,
        )  # fmt: skip
        built[name] = exe
    return built


def scan(exe: Path, texts: list[bytes]) -> list[list[tuple[int, int, int, int]]]:
    """(start, length, stream hash, entry hash) of each inner token of each text."""
    data = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout
    lines = out.decode().splitlines()
    assert len(lines) == len(texts)
    result = []
    for line in lines:
        fields = line.split()
        count = int(fields[0])
        assert len(fields) == 1 + 4 * count
        result.append(
            [
                (int(s), int(n), int(h, 16), int(e, 16))
                for s, n, h, e in zip(*[iter(fields[1:])] * 4, strict=True)
            ]
        )
    return result


def check_texts(drivers: dict[str, Path], texts: list[bytes]) -> None:
    """Every path gives spacing()'s tokens, each hashed as token_hash, as an entry too."""
    expected = [inner_tokens(t) for t in texts]
    for name, exe in drivers.items():
        for text, want, got in zip(texts, expected, scan(exe, texts), strict=True):
            assert [text[s : s + n] for s, n, _, _ in got] == want, (name, text)
            for start, length, stream_hash, entry_hash in got:
                token = text[start : start + length]
                assert stream_hash == entry_hash == token_hash(token), (name, text, token)


# ----------------------------------------------------------------- the cases ---
ORDINARY = bytes(b for b in range(256) if b not in SEPARATORS)
TOKEN_LENGTHS = (0, 1, 7, 8, 9, 15, 16, 17, 100)


def test_every_separator_at_every_offset(drivers: dict[str, Path]) -> None:
    """Each separator alone at each offset of ordinary texts around the 16-byte chunk and
    64-byte window edges, so a chunk's bit for every byte and every text end is exercised."""
    texts = []
    for n in (1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 130):
        filler = bytes(ORDINARY[(7 * i + n) % len(ORDINARY)] for i in range(n))
        texts.append(filler)
        for sep in SEPARATORS:
            for at in range(n):
                texts.append(filler[:at] + bytes([sep]) + filler[at + 1 :])
    check_texts(drivers, texts)


def test_random_byte_strings(drivers: dict[str, Path]) -> None:
    """Random bytes of every value, separators denser or sparser, lengths 0..200."""
    rng = random.Random(13)
    texts = []
    for _ in range(1500):
        n = rng.randrange(0, 201)
        density = rng.choice((0.02, 0.15, 0.5))
        texts.append(
            bytes(
                rng.choice(SEPARATORS) if rng.random() < density else rng.randrange(256)
                for _ in range(n)
            )
        )
    check_texts(drivers, texts)


def test_tokens_of_every_length_at_every_offset(drivers: dict[str, Path]) -> None:
    """Tokens of 0, 1, 7, 8, 9, 15, 16, 17 and 100 bytes (invalid UTF-8 and NUL bytes among
    them) at the start, middle and end of texts of every length around 8 and 16 bytes: the
    host loads the 8 bytes that end a token, or the text's first 8, or reads bytes."""
    rng = random.Random(7)
    pieces = [b"\xff\xfe\xc3", b"\x00\x00", "日本語".encode(), b"abcdefghijklmnopq" * 6]
    texts = []
    for length in TOKEN_LENGTHS:
        for piece in pieces:
            token = (piece * (length // max(len(piece), 1) + 1))[:length]
            token = bytes(b if b not in SEPARATORS else 0x41 for b in token)
            for before in range(0, 20):
                for sep in (b" ", b",", b"\t"):
                    prefix = bytes(rng.choice(ORDINARY) for _ in range(before))
                    texts.append(prefix + sep + token)  # the token ends the text
                    texts.append(prefix + sep + token + sep + b"x")
                    texts.append(token + sep + prefix)  # the token starts the text
    check_texts(drivers, texts)


def test_token_hash_values() -> None:
    """The reference above is tokens.cuh's function: a token of up to 8 bytes hashes to its
    bytes xored with its length times a constant, and the empty token to 0."""
    assert token_hash(b"") == 0
    assert token_hash(b"a") == 0x61 ^ TOKEN_LEN_MUL
    assert token_hash(b"a\x00") == 0x61 ^ ((2 * TOKEN_LEN_MUL) & M64)
    assert token_hash(b"metaclip") == int.from_bytes(b"metaclip", "little") ^ (
        (8 * TOKEN_LEN_MUL) & M64
    )
    nine = word_fold(0, int.from_bytes(b"metaclip", "little")) ^ ord("s")
    assert token_hash(b"metaclips") == nine ^ ((9 * TOKEN_LEN_MUL) & M64)
