// CPU build of kernels/match.cu (draws.cuh included): the CUDA grid becomes an OpenMP loop over
// blocks, each block a sequential loop over its threads (portable.cuh).
#include <omp.h>

#include "../../kernels/match.cu"
#include "cpu_api.h"

namespace {

constexpr unsigned kBlock = 64;  // emulated threads per block

template <typename Kernel>
void launch(int64_t n_rows, int n_threads, const Kernel& kernel) {
  if (n_rows <= 0) return;
  const unsigned grid = (unsigned)((n_rows + kBlock - 1) / kBlock);
  if (n_threads <= 0) n_threads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 16) num_threads(n_threads)
  for (long b = 0; b < (long)grid; ++b) {
    gridDim = {grid, 1, 1};
    blockDim = {kBlock, 1, 1};
    blockIdx = {(unsigned)b, 0, 0};
    for (unsigned t = 0; t < kBlock; ++t) {
      threadIdx = {t, 0, 0};
      kernel();
    }
  }
}

// `launch` for kernels whose work per thread is small (the balance draws): on one host
// thread the grid is one emulated thread whose grid-stride loop covers every row, so the
// launch coordinates (thread-local variables, a call each to reach from a shared library)
// are read once, not once a row.
template <typename Kernel>
void launch_light(int64_t n_rows, int n_threads, const Kernel& kernel) {
  if (n_rows <= 0) return;
  if (n_threads != 1) return launch(n_rows, n_threads, kernel);
  gridDim = {1, 1, 1};
  blockDim = {1, 1, 1};
  blockIdx = {0, 0, 0};
  threadIdx = {0, 0, 0};
  kernel();
}

}  // namespace

extern "C" {

int mc_local_cap(void) { return MC_LOCAL_CAP; }
int mc_max_threads(void) { return omp_get_max_threads(); }

// The index arguments of every kernel (match.cu's MC_INDEX_PARAMS).
#define MC_CPU_INDEX_PARAMS                                  \
  const uint64_t *slots, uint64_t mask, const int32_t *blob, \
      const uint64_t *byte_slots, uint64_t byte_mask, const int32_t *byte_blob
#define MC_CPU_DISPATCH(KERNEL, ...)                                                     \
  if (offsets_are_64) {                                                                  \
    const auto* off = static_cast<const int64_t*>(offsets);                              \
    launch(n_rows, n_threads, [&] {                                                      \
      KERNEL<mc_i64>(MC_INDEX_ARGS, chars, off, valid, valid_bit_offset, rows,           \
                     n_rows, __VA_ARGS__);                                               \
    });                                                                                  \
  } else {                                                                               \
    const auto* off = static_cast<const int32_t*>(offsets);                              \
    launch(n_rows, n_threads, [&] {                                                      \
      KERNEL<mc_i32>(MC_INDEX_ARGS, chars, off, valid, valid_bit_offset, rows,           \
                     n_rows, __VA_ARGS__);                                               \
    });                                                                                  \
  }

void mc_cpu_match_fixed(MC_CPU_INDEX_PARAMS,
                        const uint8_t* chars, const void* offsets, int offsets_are_64,
                        const uint8_t* valid, int64_t valid_bit_offset,
                        const int64_t* rows, int64_t n_rows,
                        int32_t* out_ids, int32_t* out_count, int64_t* spill,
                        int64_t spill_cap, uint64_t* spill_used, int n_threads) {
  MC_CPU_DISPATCH(mc_match_fixed, out_ids, out_count, spill, spill_cap,
                  spill_used)
}

void mc_cpu_count_raw(MC_CPU_INDEX_PARAMS,
                      const uint8_t* chars, const void* offsets, int offsets_are_64,
                      const uint8_t* valid, int64_t valid_bit_offset,
                      const int64_t* rows, int64_t n_rows,
                      int64_t* out_count, int n_threads) {
  MC_CPU_DISPATCH(mc_count_raw, out_count)
}

void mc_cpu_fill_raw(MC_CPU_INDEX_PARAMS,
                     const uint8_t* chars, const void* offsets, int offsets_are_64,
                     const uint8_t* valid, int64_t valid_bit_offset,
                     const int64_t* rows, int64_t n_rows,
                     const int64_t* out_offsets, int32_t* out_ids, int n_threads) {
  MC_CPU_DISPATCH(mc_fill_raw, out_offsets, out_ids)
}

void mc_cpu_gather_fixed_rows(const int32_t* fixed_ids, const int32_t* counts,
                              const int64_t* out_offsets, int64_t n_rows, int32_t* out_ids,
                              int n_threads) {
  launch(n_rows, n_threads,
         [&] { mc_gather_fixed_rows(fixed_ids, counts, out_offsets, n_rows, out_ids); });
}

int mc_draw_max_ts(void) { return MC_DRAW_MAX_TS; }

void mc_cpu_sure_texts(const int64_t* offsets, const int32_t* entry_ids, const uint64_t* counts,
                       int64_t n_entries, double t_min, int64_t n_texts, uint8_t* states,
                       int n_threads) {
  launch_light(n_texts, n_threads, [&] {
    mc_sure_texts(offsets, entry_ids, counts, n_entries, t_min, n_texts, states);
  });
}

void mc_cpu_draw_undecided(const int64_t* offsets, const int32_t* entry_ids,
                           const uint64_t* counts, const int64_t* rows, const uint64_t* keys,
                           int64_t n_rows, uint64_t seed, const double* ts, int n_ts,
                           uint8_t* kept, double* chances, int n_threads) {
  launch_light(n_rows, n_threads, [&] {
    mc_draw_undecided(offsets, entry_ids, counts, rows, keys, n_rows, seed, ts, n_ts, kept,
                      chances);
  });
}

}  // extern "C"
