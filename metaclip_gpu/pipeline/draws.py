"""Stage `balance` (SPEC section 4, MetaCLIP's Algorithm 1): which matched texts to keep.

``p[e] = t / max(count[e], t)``: entries with ``count <= t`` (the tail) keep probability 1, a
head entry keeps about ``t`` of its texts. A text is kept iff, for at least one of its matched
entries ``e``, a uniform draw ``u(text, e) < p[e]``; a text with no match is never kept.

Determinism. MetaCLIP draws ``u`` from a global RNG, so its curated set depends on the order
it sees the pairs in. Here ``u`` is a counter-based function of ``(seed, text key, entry id)``
only (`uniform_draws`), so the curated set is the same for any sharding, partition count,
worker count, backend (NumPy or CuPy, bit for bit) and re-run.

The draw, in exact unsigned 64-bit arithmetic (every ``+`` and ``*`` modulo ``2**64``)::

    splitmix64(x):
        z = x + 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    h = splitmix64(S ^ splitmix64(K ^ splitmix64(E)))
    u = (h >> 11) * 2**-53                      # the top 53 bits, a double in [0, 1)

with ``S = seed mod 2**64`` (a negative seed as its two's complement), ``K`` the text key as a
uint64 (signed integer keys as their two's complement, i.e. an int64 key reinterpreted) and
``E`` the entry id (non-negative). ``(h >> 11)`` is below ``2**53``, so its conversion to a
double and the product are exact; NumPy and CuPy give the same bits.

Every function takes its array module from its inputs (NumPy or CuPy), is vectorized over the
flat (text, entry) pairs of the match CSR (``offsets`` int64 ``[n_texts + 1]`` with
``offsets[0] == 0`` and ``offsets[-1] == len(entry_ids)``, as in `MatchResult`), and computes
per-text reductions (`csr_segments`) or a weighted bincount, with no Python loop over
texts. As SPEC 3 requires (and `MatchResult` guarantees), a text lists each entry at most once:
a repeated (text, entry) pair would get the same draw twice while `expected_kept` would count
it twice. The text keys are the caller's (SPEC 4: a stable id column, else a hash of the text
bytes combined with its shard-relative position); any integer dtype is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaclip_gpu.engine.arrays import array_module
from metaclip_gpu.pipeline.csr_segments import check_csr, covers, csr_rows, pair_owner, segment_any

U64_MASK = (1 << 64) - 1
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_MUL1 = 0xBF58476D1CE4E5B9
SPLITMIX_MUL2 = 0x94D049BB133111EB
DRAW_SCALE = 2.0**-53

SOLVE_RTOL = 1e-9
SOLVE_MAX_ITER = 100

_GAMMA = np.uint64(SPLITMIX_GAMMA)
_MUL1 = np.uint64(SPLITMIX_MUL1)
_MUL2 = np.uint64(SPLITMIX_MUL2)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


# --- the counter-based uniform draws -------------------------------------------------------


def splitmix64(x: Any) -> Any:
    """SplitMix64's finalizer (with its increment) applied elementwise to a uint64 array.

    ``z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
    z = (z ^ z >> 27) * 0x94D049BB133111EB; return z ^ z >> 31``, all modulo ``2**64``.
    """
    with np.errstate(over="ignore"):
        z = x + _GAMMA
        z = (z ^ (z >> _S30)) * _MUL1
        z = (z ^ (z >> _S27)) * _MUL2
        return z ^ (z >> _S31)


def uniform_draws(seed: int, text_keys: Any, entry_ids: Any) -> Any:
    """The draws ``u(seed, key, entry)`` in ``[0, 1)``, float64, one per (key, entry) pair.

    `text_keys` and `entry_ids` are integer arrays of the same shape (the flat pairs of a CSR:
    each pair's text key and entry id). Formula (module docstring)::

        h = splitmix64(S ^ splitmix64(K ^ splitmix64(E)));  u = (h >> 11) * 2**-53

    A value depends only on ``(seed, key, entry)``: not on its position, the other pairs, the
    chunking or the backend.
    """
    xp = array_module(text_keys, entry_ids)
    keys = _as_u64(xp, text_keys, "text_keys")
    ids = _as_u64(xp, entry_ids, "entry_ids")
    if keys.shape != ids.shape:
        raise ValueError(f"text_keys {keys.shape} and entry_ids {ids.shape} differ in shape")
    s = np.uint64(int(seed) & U64_MASK)
    h = splitmix64(splitmix64(keys ^ splitmix64(ids)) ^ s)  # = splitmix64(S ^ ...)
    return (h >> _S11).astype(xp.float64) * DRAW_SCALE


def csr_uniform_draws(offsets: Any, entry_ids: Any, text_keys: Any, seed: int) -> Any:
    """`uniform_draws` for every (text, entry) pair of a CSR; `text_keys` has one key per text."""
    xp = array_module(offsets, entry_ids, text_keys)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    keys = xp.asarray(text_keys)
    if keys.shape != (len(offsets) - 1,):
        raise ValueError(f"text_keys has shape {keys.shape}, expected ({len(offsets) - 1},)")
    owner = pair_owner(xp, offsets, len(entry_ids))
    return uniform_draws(seed, keys[owner], entry_ids)


# --- keep probabilities and masks -------------------------------------------------------------


def keep_probability(counts: Any, t: float) -> Any:
    """``p[e] = t / max(count[e], t)`` as float64: 1.0 where ``count <= t`` (count 0 included).

    Raises ValueError unless ``t > 0`` and finite.
    """
    t = _check_t(t)
    xp = array_module(counts)
    c = xp.asarray(counts).astype(xp.float64)
    return t / xp.maximum(c, t)


def keep_mask(
    offsets: Any, entry_ids: Any, text_keys: Any, counts: Any, t: float, seed: int
) -> Any:
    """Which texts balancing keeps: bool ``[n_texts]``.

    Text ``i`` (entries ``entry_ids[offsets[i]:offsets[i + 1]]``, key ``text_keys[i]``) is kept
    iff ``u(seed, text_keys[i], e) < p[e]`` for at least one of its entries ``e``, with
    ``p = keep_probability(counts, t)`` over the global `counts`. A text with no match is never
    kept; a text with an entry of ``count <= t`` always is.
    """
    return keep_masks(offsets, entry_ids, text_keys, counts, [t], seed)[t]


def keep_masks(
    offsets: Any, entry_ids: Any, text_keys: Any, counts: Any, ts: Iterable[float], seed: int
) -> dict[float, Any]:
    """`keep_mask` for several thresholds from one matching pass: ``{t: mask}``.

    `text_keys`: one key per text, or a function of text indices (ascending, an array of
    `offsets`' module) returning those texts' keys, called once for the texts whose draws
    matter (a text with an entry of ``count <= min(ts)`` is kept whatever its draws), so
    costly keys are hashed only for them.

    The draws depend only on ``(seed, key, entry)``, not on ``t``, so they are computed once
    and compared with each ``t``'s keep probabilities. For ``t1 <= t2`` the kept set of ``t1``
    is a subset of that of ``t2``.
    """
    ts = list(ts)
    for t in ts:
        _check_t(t)
    xp = array_module(offsets, entry_ids, text_keys, counts)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    counts = xp.asarray(counts)
    # A text with an entry of count <= t keeps p = 1 there, and u < 1: it is kept whatever
    # its draws. Sure at the smallest t means sure at every t, so only the other matched
    # texts (few, past the smallest t) need draws.
    sure = segment_any(xp, offsets, counts[entry_ids] <= min(ts))
    undecided = _Undecided.draw(xp, offsets, entry_ids, sure, text_keys, seed)
    masks: dict[float, Any] = {}
    for t in ts:
        p = keep_probability(counts, t)
        masks[t] = undecided.mask(sure, p[undecided.entry_ids])
    return masks


def keep_mask_from_probs(
    offsets: Any, entry_ids: Any, text_keys: Any, pair_probs: Any, seed: int
) -> Any:
    """`keep_mask` with the keep probability of every (text, entry) pair given directly.

    For pools whose texts draw ``p`` from different arrays (MetaCLIP 2: one per language):
    text ``i`` is kept iff ``u(seed, text_keys[i], e) < pair_probs[j]`` for one of its pairs
    ``j`` (entry ``e = entry_ids[j]``). The same draws as `keep_masks`.
    """
    xp = array_module(offsets, entry_ids, text_keys, pair_probs)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    pair_probs = xp.asarray(pair_probs)
    sure = segment_any(xp, offsets, pair_probs >= 1.0)  # kept whatever the draws
    undecided = _Undecided.draw(xp, offsets, entry_ids, sure, text_keys, seed)
    return undecided.mask(sure, pair_probs[undecided.positions])


@dataclass(frozen=True)
class _Undecided:
    """The matched texts no sure pair decides (`rows`), as a sub-CSR (`offsets`, the flat
    `positions` of their pairs, their `entry_ids`) with the draws of those pairs."""

    rows: Any
    offsets: Any
    positions: Any
    entry_ids: Any
    draws: Any

    @classmethod
    def draw(
        cls, xp: Any, offsets: Any, entry_ids: Any, sure: Any, text_keys: Any, seed: int
    ) -> _Undecided:
        """`text_keys`: an array of every text's key, or a function of `rows` giving theirs."""
        rows = xp.flatnonzero((offsets[1:] > offsets[:-1]) & ~sure)
        sub_offsets, positions = csr_rows(xp, offsets, rows)
        ids = entry_ids[positions]
        keys = text_keys(rows) if callable(text_keys) else xp.asarray(text_keys)[rows]
        return cls(
            rows, sub_offsets, positions, ids, csr_uniform_draws(sub_offsets, ids, keys, seed)
        )

    def mask(self, sure: Any, probs: Any) -> Any:
        """Kept texts: the sure ones, and the undecided ones with a draw below its `probs`."""
        xp = array_module(sure, probs)
        mask = sure.copy()
        mask[self.rows] = segment_any(xp, self.offsets, self.draws < probs)
        return mask


def keep_chances(offsets: Any, pair_probs: Any) -> Any:
    """Each text's chance to be kept, ``1 - prod(1 - p)`` over its pairs: float64 ``[n]``.

    Exactly 1 for a text with a pair of ``p >= 1``, 0 for a text with no pair; otherwise
    ``-expm1(sum log1p(-p))`` (no cancellation). The reference's per-sample probability
    (MetaCLIP 2 ``curate()``).
    """
    xp = array_module(offsets, pair_probs)
    offsets = xp.asarray(offsets).astype(xp.int64, copy=False)
    probs = xp.asarray(pair_probs, dtype=xp.float64)
    return _chances(xp, offsets, pair_owner(xp, offsets, len(probs)), probs)


# --- expected size and solving for t ----------------------------------------------------------


def expected_kept(offsets: Any, entry_ids: Any, counts: Any, t: float) -> float:
    """The expected number of kept texts: ``sum over texts of 1 - prod_{e in text}(1 - p[e])``.

    Computed per text as ``-expm1(sum log1p(-p[e]))`` (a weighted bincount per text, so no
    cancellation between texts); a text with an entry of ``p[e] == 1`` contributes exactly 1,
    a text with no match 0.
    """
    xp = array_module(offsets, entry_ids, counts)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    pair_counts = xp.asarray(counts)[entry_ids]
    return float(_text_chances(xp, offsets, pair_counts, _check_t(t)).sum())


def _text_chances(xp: Any, offsets: Any, pair_counts: Any, t: float, sure: Any = None) -> Any:
    """Per text ``1 - prod(1 - p[e])`` at `t`, float64 ``[n_texts]``, from its pairs' counts.

    A text with a pair of ``count <= t`` (`sure`, computed when not given) is 1.0 and an
    unmatched one 0.0 without a logarithm; only the other texts' pairs go through
    ``log1p``, each text's terms added in pair order as `_expected_from_pairs` adds them, so
    every value (and a sum over the array) is the same bit for bit, at a fraction of the cost
    when most texts are sure (a low-count entry in nearly every text, as in real pools).
    """
    if sure is None:
        sure = segment_any(xp, offsets, pair_counts <= t)
    chances = sure.astype(xp.float64)
    rows = xp.flatnonzero((offsets[1:] > offsets[:-1]) & ~sure)
    if len(rows):
        if len(rows) == len(offsets) - 1 and covers(offsets, len(pair_counts)):
            sub_offsets, rest = offsets, pair_counts.astype(xp.float64)  # every text: no gather
        else:
            sub_offsets, positions = csr_rows(xp, offsets, rows)
            rest = pair_counts[positions].astype(xp.float64)
        log_miss = xp.log1p(-(t / xp.maximum(rest, t)))
        owner = pair_owner(xp, sub_offsets, len(rest))
        chances[rows] = -xp.expm1(xp.bincount(owner, weights=log_miss, minlength=len(rows)))
    return chances


def solve_t(offsets: Any, entry_ids: Any, counts: Any, target_size: float) -> float:
    """The threshold ``t`` whose `expected_kept` equals `target_size`.

    `expected_kept` is non-decreasing in ``t``; ``t`` is found by bisection (geometric while
    the bracket spans more than a factor 2, then arithmetic) until the bracket is within a
    relative ``1e-9`` or after 100 iterations, and the bracket's midpoint is returned. The
    search starts on ``[1, max(count)]`` and moves the lower end below 1 when even ``t = 1``
    keeps more than `target_size`. As the lower end ``lo`` rises, texts with an entry of
    ``count <= lo`` (kept with probability 1 for every ``t`` left in the bracket) are counted
    once and dropped from the pairs the later evaluations scan.

    When `target_size` is at least the number of matched texts, every matched text can be
    kept: the result is then ``max(count)`` (at least 1.0), at which every ``p`` is 1.
    Raises ValueError when ``target_size <= 0``.
    """
    if not target_size > 0:
        raise ValueError(f"target_size must be > 0, got {target_size}")
    xp = array_module(offsets, entry_ids, counts)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    pair_counts = xp.asarray(counts)[entry_ids].astype(xp.float64)
    n_matched = int((offsets[1:] > offsets[:-1]).sum())
    hi = max(float(pair_counts.max()) if len(pair_counts) else 0.0, 1.0)
    if target_size >= n_matched:
        return hi
    pairs = _PairSet.build(xp, offsets, pair_counts, 0.0)  # drops unmatched texts

    lo = 1.0
    while pairs.expected(lo) > target_size:  # -> pairs.sure as t -> 0
        hi, lo = lo, lo / 2.0
        if pairs.sure >= target_size or lo < 1e-300:
            raise ValueError(
                f"no t > 0 keeps as few as {target_size} texts in expectation: "
                f"{pairs.sure} texts match an entry of count 0 (counts not of this pool?)"
            )
    compacted_at = 0.0
    for _ in range(SOLVE_MAX_ITER):
        if hi - lo <= SOLVE_RTOL * hi:
            break
        if lo > 1.1 * compacted_at:
            pairs, compacted_at = pairs.drop_sure(lo), lo
        mid = math.sqrt(lo * hi) if hi > 2.0 * lo else 0.5 * (lo + hi)
        if pairs.expected(mid) < target_size:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class _PairSet:
    """The pairs `solve_t` still scans: a CSR of per-pair counts (float64) with pair owners,
    plus `sure`, the number of texts dropped because they are kept for every ``t`` searched."""

    xp: Any
    offsets: Any
    owner: Any
    pair_counts: Any
    sure: int

    @classmethod
    def build(cls, xp: Any, offsets: Any, pair_counts: Any, lo: float, sure: int = 0) -> _PairSet:
        """Drops the unmatched texts and those with an entry of ``count <= lo``."""
        sure_pairs = pair_counts <= lo
        has_sure = segment_any(xp, offsets, sure_pairs)
        lengths = offsets[1:] - offsets[:-1]
        keep_text = (lengths > 0) & ~has_sure
        owner = pair_owner(xp, offsets, len(pair_counts))
        keep_pair = keep_text[owner]
        new_offsets = xp.zeros(int(keep_text.sum()) + 1, dtype=xp.int64)
        xp.cumsum(lengths[keep_text], out=new_offsets[1:])
        new_pairs = pair_counts[keep_pair]
        new_owner = pair_owner(xp, new_offsets, len(new_pairs))
        return cls(xp, new_offsets, new_owner, new_pairs, sure + int(has_sure.sum()))

    def drop_sure(self, lo: float) -> _PairSet:
        return _PairSet.build(self.xp, self.offsets, self.pair_counts, lo, self.sure)

    def expected(self, t: float) -> float:
        return self.sure + _expected_from_pairs(
            self.xp, self.offsets, self.owner, self.pair_counts, t
        )


# --- helpers ----------------------------------------------------------------------------------


def _check_t(t: float) -> float:
    value = float(t)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"t must be a positive finite number, got {t!r}")
    return value


def _as_u64(xp: Any, array: Any, name: str) -> Any:
    """An integer array as uint64, signed values as their two's complement."""
    a = xp.asarray(array)
    if a.dtype.kind == "u":
        return a.astype(xp.uint64, copy=False)
    if a.dtype.kind == "i":
        return a.astype(xp.int64, copy=False).view(xp.uint64)
    raise TypeError(f"{name} must be integers, got dtype {a.dtype}")


def _expected_from_pairs(xp: Any, offsets: Any, owner: Any, pair_counts: Any, t: float) -> float:
    """`expected_kept` from the per-pair counts (float64) and owners, for one ``t``."""
    if len(pair_counts) == 0:
        return 0.0
    # `_chances` without its pass over the sure texts: p <= 1 here, and a pair of p == 1 adds
    # log1p(-1) = -inf to its text's sum, whose chance -expm1(-inf) is then exactly 1.0. The
    # other texts' sums add the same terms in the same order: the same figure, bit for bit.
    with np.errstate(divide="ignore"):
        log_miss = xp.log1p(-(t / xp.maximum(pair_counts, t)))
    sum_log_miss = xp.bincount(owner, weights=log_miss, minlength=len(offsets) - 1)
    return float((-xp.expm1(sum_log_miss)).sum())


def _chances(xp: Any, offsets: Any, owner: Any, p: Any) -> Any:
    """Per text ``1 - prod(1 - p)`` over its pairs (`keep_chances`), from the pair owners."""
    n_texts = len(offsets) - 1
    if len(p) == 0:
        return xp.zeros(n_texts, dtype=xp.float64)
    any_sure = segment_any(xp, offsets, p >= 1.0)  # those texts: exactly 1
    rest = (~any_sure)[owner]  # the log-sum only over the other texts' pairs (all p < 1)
    sum_log_miss = xp.bincount(owner[rest], weights=xp.log1p(-p[rest]), minlength=n_texts)
    return xp.where(any_sure, 1.0, -xp.expm1(sum_log_miss))
