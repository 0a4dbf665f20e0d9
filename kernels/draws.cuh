// Balance-stage kernels (SPEC 4, metaclip_gpu/pipeline/draws.py): one thread per text of a
// chunk's match CSR (`offsets` int64 [n_texts + 1] from 0, `entry_ids` int32), over the
// global per-entry `counts` (uint64 [n_entries]).
//
//   mc_sure_texts      each text's state (MC_TEXT_*): no pair, a pair of an entry with
//                      count <= t_min (kept whatever its draws), undecided, or an entry id
//                      outside [0, n_entries) (the caller reports it).
//   mc_draw_undecided  for the undecided texts `rows` and their keys, over each text's pairs
//                      in order: the draw u(seed, key, entry) of draws.py and, for each of the
//                      `n_ts` thresholds, p = t / max(count, t), kept |= u < p and
//                      log_sum += log1p(-p); the text's chance to be kept is -expm1(log_sum),
//                      exactly 1.0 when a pair has p == 1 (count <= t).
//
// Bit for bit with the NumPy reference on the host: the draw is integer arithmetic and one
// exact product, p one IEEE division, and the log-sum adds the same terms in the same order
// from 0.0 (as draws._text_chances' bincount does) with the C library's log1p / expm1, which
// NumPy also calls where it has no SIMD version of its own. The GPU's libdevice log1p / expm1
// may differ from the host's in the last bit: the kept set never depends on them.
#pragma once

#include "portable.cuh"

#if !MC_ON_DEVICE
#include <cmath>
#endif

#ifndef MC_DRAW_MAX_TS  // thresholds one mc_draw_undecided launch handles
#define MC_DRAW_MAX_TS 8
#endif

#define MC_TEXT_UNMATCHED 0
#define MC_TEXT_SURE 1
#define MC_TEXT_UNDECIDED 2
#define MC_TEXT_BAD_ID 3

MC_FN double mc_log1p(double x) {
#if MC_ON_DEVICE
  return log1p(x);
#else
  return std::log1p(x);
#endif
}

MC_FN double mc_expm1(double x) {
#if MC_ON_DEVICE
  return expm1(x);
#else
  return std::expm1(x);
#endif
}

// SplitMix64's finalizer with its increment (draws.splitmix64), modulo 2**64.
MC_FN mc_u64 mc_splitmix64(mc_u64 x) {
  mc_u64 z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// u(seed, key, entry) in [0, 1): the top 53 bits of the chain, an exact double.
MC_FN double mc_uniform_draw(mc_u64 seed, mc_u64 key, mc_i32 entry) {
  const mc_u64 h = mc_splitmix64(seed ^ mc_splitmix64(key ^ mc_splitmix64((mc_u64)(mc_i64)entry)));
  return (double)(h >> 11) * (1.0 / 9007199254740992.0);  // 2**-53
}

// Each text's MC_TEXT_* state at the smallest threshold `t_min`. Every entry id is checked.
// Every pair's count is read, without a branch: on the host, one 125k-row cc3m shard (1.2M
// pairs) took 2.6 ms so against 3.9 ms stopping at the first sure pair (mispredicted
// branches cost more than the reads they save). A per-entry flag (count <= t_min, one byte an
// entry) took 1.7-2.4 ms to gather plus 0.3-0.7 ms to build for each chunk: no clear gain,
// and a pass over every entry however small the chunk, so the counts are read directly.
MC_KERNEL void mc_sure_texts(const mc_i64* MC_RESTRICT offsets,
                             const mc_i32* MC_RESTRICT entry_ids,
                             const mc_u64* MC_RESTRICT counts, mc_i64 n_entries, double t_min,
                             mc_i64 n_texts, mc_u8* MC_RESTRICT states) {
  const mc_i64 stride = mc_global_stride();
  for (mc_i64 i = mc_global_thread(); i < n_texts; i += stride) {
    const mc_i64 begin = offsets[i], end = offsets[i + 1];
    int sure = 0, bad = 0;
    for (mc_i64 j = begin; j < end; ++j) {
      const mc_u64 e = (mc_u64)(mc_i64)entry_ids[j];  // a negative id: past n_entries
      const int in_range = e < (mc_u64)n_entries;
      bad |= !in_range;
      sure |= in_range & ((double)counts[in_range ? e : 0] <= t_min);
    }
    states[i] = bad ? MC_TEXT_BAD_ID
                    : (begin == end ? MC_TEXT_UNMATCHED
                                    : (sure ? MC_TEXT_SURE : MC_TEXT_UNDECIDED));
  }
}

// Masks and chances of the undecided texts `rows` (n_rows of them, keys `keys`): kept and
// chances are [n_ts, n_rows] (kept[k * n_rows + r] for threshold ts[k]); n_ts is at most
// MC_DRAW_MAX_TS (the caller splits longer lists). The entry ids of `rows` must be in range
// (mc_sure_texts checked them).
MC_KERNEL void mc_draw_undecided(const mc_i64* MC_RESTRICT offsets,
                                 const mc_i32* MC_RESTRICT entry_ids,
                                 const mc_u64* MC_RESTRICT counts,
                                 const mc_i64* MC_RESTRICT rows, const mc_u64* MC_RESTRICT keys,
                                 mc_i64 n_rows, mc_u64 seed, const double* MC_RESTRICT ts,
                                 int n_ts, mc_u8* MC_RESTRICT kept,
                                 double* MC_RESTRICT chances) {
  if (n_ts > MC_DRAW_MAX_TS) n_ts = MC_DRAW_MAX_TS;
  const mc_i64 stride = mc_global_stride();
  for (mc_i64 r = mc_global_thread(); r < n_rows; r += stride) {
    const mc_i64 text = rows[r];
    const mc_u64 key = keys[r];
    int any_kept[MC_DRAW_MAX_TS], certain[MC_DRAW_MAX_TS];
    double log_sum[MC_DRAW_MAX_TS];
    for (int k = 0; k < n_ts; ++k) {
      any_kept[k] = 0;
      certain[k] = 0;
      log_sum[k] = 0.0;
    }
    for (mc_i64 j = offsets[text]; j < offsets[text + 1]; ++j) {
      const mc_i32 e = entry_ids[j];
      const double u = mc_uniform_draw(seed, key, e);
      const double count = (double)counts[e];
      for (int k = 0; k < n_ts; ++k) {
        const double t = ts[k];
        const double p = t / (count > t ? count : t);  // draws.keep_probability
        any_kept[k] |= u < p;
        if (p >= 1.0) {
          certain[k] = 1;  // -expm1(log1p(-1) + ...) = -expm1(-inf) = 1.0: skip the logs
        } else {
          log_sum[k] += mc_log1p(-p);
        }
      }
    }
    for (int k = 0; k < n_ts; ++k) {
      kept[k * n_rows + r] = (mc_u8)any_kept[k];
      chances[k * n_rows + r] = certain[k] ? 1.0 : -mc_expm1(log_sum[k]);
    }
  }
}
