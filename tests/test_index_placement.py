"""Where the index builder places keys in the probe table (engine/_native/index_build.cpp).

A probe walks from a key's home slot (its hash's low bits) to the key or to an empty slot.
The builder places short keys first, so the words texts hold most ("a", "of", "the") sit at
home, and gives the tokens every punctuated text is full of (the empty token: ", " makes one;
each wrapped punctuation byte) a slot of their own, with no flags, at home: a probe for them
stops at once instead of walking to an empty slot. Those slots are no keys (n_keys).
"""

from __future__ import annotations

import itertools
import string

from token_hashing import ngram_key

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle

SLOT_WORDS = 2  # MC_SLOT_WORDS
HOT_TOKENS = [b"", b",", b".", b";", b":", b"?", b"!", b"`"]


def _slot_of(index: MetadataIndex, key: int) -> int:
    """The slot a probe for `key` stops at (the key's, or the empty slot ending its run)."""
    table = index.slots[: SLOT_WORDS * index.stats.table_slots].reshape(-1, SLOT_WORDS)
    pos = key & index.mask
    while table[pos, 0] != 0 and int(table[pos, 0]) >> 32 != key >> 32:
        pos = (pos + 1) & index.mask
    return pos


def _words_homed_at(home: int, mask: int, count: int, below: int) -> list[str]:
    """`count` three-letter words whose key's home slot is `home` and whose key is less than
    `below` (so that placing keys in hash order would place them first)."""
    found = []
    for letters in itertools.product(string.ascii_lowercase, repeat=3):
        word = "".join(letters)
        key = ngram_key([word.encode()])
        if key & mask == home and key < below:
            found.append(word)
            if len(found) == count:
                return found
    raise AssertionError("no such words")


def test_the_shortest_key_sits_at_home() -> None:
    """Longer keys that share "a"'s home slot (and would be placed first in hash order)
    leave it to "a"."""
    mask = MetadataIndex.from_entries(["a"], cache=False).mask
    key_a = ngram_key([b"a"])
    rivals = _words_homed_at(key_a & mask, mask, 3, key_a)
    entries = [*rivals, "a"]
    index = MetadataIndex.from_entries(entries, cache=False)
    assert index.mask == mask
    assert _slot_of(index, key_a) == key_a & mask
    texts = ["a " + " ".join(rivals), "x a y", " ".join(rivals)]
    assert match(texts, index, backend="cpu").to_lists() == FastOracle(entries).match_many(texts)


def test_hot_tokens_have_slots_of_their_own_at_home() -> None:
    """With no entry made of them, the empty token and each punctuation byte still find a
    slot of their own at home; it carries no flags and is not counted as a key."""
    entries = ["dog", "hot dog", "cat"]
    index = MetadataIndex.from_entries(entries, cache=False)
    assert index.stats.n_keys == 4  # dog, hot, hot dog, cat
    table = index.slots[: SLOT_WORDS * index.stats.table_slots].reshape(-1, SLOT_WORDS)
    for token in HOT_TOKENS:
        key = ngram_key([token])
        home = key & index.mask
        assert int(table[home, 0]) >> 32 == key >> 32, token
        assert int(table[home, 0]) & 7 == 0, token  # no MC_SLOT_* flag: nothing to match
    texts = ["a dog, a cat. hot dog!", "dog , cat", "", ",,,", "hot  dog"]
    assert match(texts, index, backend="cpu").to_lists() == FastOracle(entries).match_many(texts)


def test_hot_tokens_that_are_entries_keep_their_entries() -> None:
    """An entry "," or "" (or one starting with them) gets its usual slot and flags."""
    entries = [",", "", ". dog", "dog"]
    index = MetadataIndex.from_entries(entries, cache=False)
    table = index.slots[: SLOT_WORDS * index.stats.table_slots].reshape(-1, SLOT_WORDS)
    for token in (b",", b"", b"."):
        key = ngram_key([token])
        assert int(table[key & index.mask, 0]) & 7 != 0, token
    texts = ["a dog, here. dog", "dog", "x  y", ". dog"]
    assert match(texts, index, backend="cpu").to_lists() == FastOracle(entries).match_many(texts)
