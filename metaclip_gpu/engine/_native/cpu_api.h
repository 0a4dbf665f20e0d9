/* C interface of the CPU build of the kernels (kernels/match.cu) and of the
   probe-table builder. Declared once here; cffi reads the same declarations
   (see build_ext.py). */
#ifndef METACLIP_CPU_API_H
#define METACLIP_CPU_API_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct McBuiltIndex McBuiltIndex;

/* Builds the probe tables for entries given as Arrow large_string buffers;
   pad_flags[i] holds entry i's MC_PAD_LEFT | MC_PAD_RIGHT flags (tokens.cuh):
   entries padded on both sides go to the token table, the others to the byte
   table. Returns NULL on allocation failure or when the index is too large. */
McBuiltIndex* mc_index_build(const uint8_t* chars, const int64_t* offsets,
                             const uint8_t* pad_flags, int64_t n_entries, double max_load);
/* out[0] slots array length (MC_SLOT_WORDS a table slot, then the filter words), out[1] verification blob
   words, out[2] distinct n-gram keys, out[3] entries that can never match,
   out[4] keys merged by fingerprint, out[5] most tokens in one entry,
   out[6] byte-table words (MC_SLOT_WORDS a slot), out[7] byte blob words, out[8] distinct byte keys,
   out[9] byte-level entries (matchable ones). */
void mc_index_info(const McBuiltIndex* index, int64_t* out);
/* mc_index_signature() of kernels/tokens.cuh as this build computes it. */
uint64_t mc_index_signature_host(void);
void mc_index_export(const McBuiltIndex* index, uint64_t* slots, int32_t* blob,
                     uint64_t* byte_slots, int32_t* byte_blob);
void mc_index_free(McBuiltIndex* index);

int mc_local_cap(void);
int mc_max_threads(void);

/* The three kernels, run on `n_threads` host threads; the index arguments are
   the token table, its mask and blob, then the byte table's (kernels/tokens.cuh). `offsets` holds int32
   or int64 values as `offsets_are_64` says; `valid` and `rows` may be NULL. mc_cpu_match_fixed
   writes slot-major rows (out_ids[k * n_rows + i]) and appends ids past MC_LOCAL_CAP to
   `spill` (capacity `spill_cap`) as row << 32 | id keys, counting them in *spill_used. */
void mc_cpu_match_fixed(const uint64_t* slots, uint64_t mask, const int32_t* blob,
                        const uint64_t* byte_slots, uint64_t byte_mask,
                        const int32_t* byte_blob,
                        const uint8_t* chars, const void* offsets, int offsets_are_64,
                        const uint8_t* valid, int64_t valid_bit_offset,
                        const int64_t* rows, int64_t n_rows,
                        int32_t* out_ids, int32_t* out_count, int64_t* spill,
                        int64_t spill_cap, uint64_t* spill_used, int n_threads);
void mc_cpu_count_raw(const uint64_t* slots, uint64_t mask, const int32_t* blob,
                      const uint64_t* byte_slots, uint64_t byte_mask,
                      const int32_t* byte_blob,
                      const uint8_t* chars, const void* offsets, int offsets_are_64,
                      const uint8_t* valid, int64_t valid_bit_offset,
                      const int64_t* rows, int64_t n_rows,
                      int64_t* out_count, int n_threads);
void mc_cpu_fill_raw(const uint64_t* slots, uint64_t mask, const int32_t* blob,
                     const uint64_t* byte_slots, uint64_t byte_mask,
                     const int32_t* byte_blob,
                     const uint8_t* chars, const void* offsets, int offsets_are_64,
                     const uint8_t* valid, int64_t valid_bit_offset,
                     const int64_t* rows, int64_t n_rows,
                     const int64_t* out_offsets, int32_t* out_ids, int n_threads);

void mc_cpu_gather_fixed_rows(const int32_t* fixed_ids, const int32_t* counts,
                              const int64_t* out_offsets, int64_t n_rows, int32_t* out_ids,
                              int n_threads);

/* The balance stage's kernels (kernels/draws.cuh), on `n_threads` host threads.
   mc_cpu_sure_texts writes each text's MC_TEXT_* state (0 unmatched, 1 sure at t_min,
   2 undecided, 3 an entry id outside [0, n_entries)); mc_cpu_draw_undecided writes the kept
   flags and chances of the undecided texts `rows` for each of `n_ts` (<= mc_draw_max_ts())
   thresholds, [n_ts, n_rows] each. */
int mc_draw_max_ts(void);
void mc_cpu_sure_texts(const int64_t* offsets, const int32_t* entry_ids, const uint64_t* counts,
                       int64_t n_entries, double t_min, int64_t n_texts, uint8_t* states,
                       int n_threads);
void mc_cpu_draw_undecided(const int64_t* offsets, const int32_t* entry_ids,
                           const uint64_t* counts, const int64_t* rows, const uint64_t* keys,
                           int64_t n_rows, uint64_t seed, const double* ts, int n_ts,
                           uint8_t* kept, double* chances, int n_threads);

/* XXH64 (xxHash's, with `seed`) of the values of an Arrow binary column: value i of `rows`
   (all n values when `rows` is NULL) is data[offsets[r] .. offsets[r + 1]), the offsets int32
   or int64 as `offsets_are_64` says (already shifted by the array's offset). Host only
   (key_hash.cpp), for the balance stage's text keys (pipeline/keys.py). */
void mc_xxh64_binary(const uint8_t* data, const void* offsets, int offsets_are_64,
                     const int64_t* rows, int64_t n, uint64_t seed, uint64_t* out);

#ifdef __cplusplus
}
#endif
#endif
