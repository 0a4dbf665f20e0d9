"""kernels/tokens.cuh's token hash and n-gram key, written out in Python for the tests."""

from __future__ import annotations

M64 = (1 << 64) - 1
TOKEN_LEN_MUL = 0x9FB21C651E98DF25  # MC_TOKEN_LEN_MUL
WORD_MUL = 0xFF51AFD7ED558CCD  # MC_WORD_MUL
NGRAM_SEED = 0x9E3779B97F4A7C15  # MC_NGRAM_SEED
NGRAM_MUL = 0x2545F4914F6CDD1D  # mc_ngram_extend's multiplier


def word_fold(h: int, word: int) -> int:
    """mc_word_fold."""
    h = ((h ^ word) * WORD_MUL) & M64
    return h ^ (h >> 32)


def token_hash(token: bytes) -> int:
    """mc_token_hash: little-endian 8-byte words, the last zero-padded; all but the last
    folded by a multiply, the last xored in, the length mixed in."""
    words = [int.from_bytes(token[i : i + 8], "little") for i in range(0, len(token), 8)] or [0]
    h = 0
    for word in words[:-1]:
        h = word_fold(h, word)
    return h ^ words[-1] ^ ((len(token) * TOKEN_LEN_MUL) & M64)


def fmix64(k: int) -> int:
    """mc_fmix64."""
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def ngram_key(tokens: list[bytes]) -> int:
    """The probe-table key of a token sequence (mc_ngram_extend from MC_NGRAM_SEED)."""
    h = NGRAM_SEED
    for token in tokens:
        h = fmix64((h * NGRAM_MUL + token_hash(token)) & M64)
    return h
