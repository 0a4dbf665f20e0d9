// One-thread driver of kernels/match.cu's host build, for `valgrind --tool=callgrind`
// (bench/profile/profile_kernel.py dumps the inputs and reads the instruction counts).
// Runs what match() runs for a batch: mc_match_fixed over every text, then, for the texts it
// hands back (count -2: the id spill ran out), mc_count_raw and mc_fill_raw. The library sort
// and gather that follow in Python are not counted.
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "match.cu"

template <typename T>
static std::vector<T> load(const char* dir, const char* name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  const long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  std::vector<T> out(bytes / sizeof(T) + 1);
  if (fread(out.data(), 1, bytes, f) != (size_t)bytes) exit(3);
  fclose(f);
  out.resize(bytes / sizeof(T));
  return out;
}

static void one_thread(mc_i64 n) {  // the grid of a one-thread CPU launch over n rows
  gridDim = {1, 1, 1};
  blockDim = {(unsigned)n, 1, 1};
  blockIdx = {0, 0, 0};
}

// The measured region (callgrind --toggle-collect=run_kernels).
// The outputs are allocated (and their pages touched) by the caller, outside it.
struct Outputs {
  std::vector<mc_i32> ids, count;
  std::vector<mc_i64> spill;
};

__attribute__((noinline)) mc_i64 run_kernels(MC_INDEX_PARAMS, const mc_u8* chars,
                                             const mc_i64* offsets, mc_i64 n_rows,
                                             Outputs& outputs) {
  std::vector<mc_i32>& out_ids = outputs.ids;
  std::vector<mc_i32>& out_count = outputs.count;
  std::vector<mc_i64>& spill = outputs.spill;
  mc_u64 spill_used = 0;
  one_thread(n_rows);
  for (mc_i64 t = 0; t < n_rows; ++t) {
    threadIdx = {(unsigned)t, 0, 0};
    mc_match_fixed<mc_i64>(MC_INDEX_ARGS, chars, offsets, 0, 0, 0, n_rows, out_ids.data(),
                           out_count.data(), spill.data(), (mc_i64)spill.size(), &spill_used);
  }
  std::vector<mc_i64> redo;
  mc_i64 total = 0;
  for (mc_i64 i = 0; i < n_rows; ++i) {
    if (out_count[i] == MC_COUNT_REDO) redo.push_back(i);
    total += out_count[i] >= 0 ? out_count[i] : 0;
  }
  const mc_i64 n_redo = (mc_i64)redo.size();
  if (n_redo) {
    std::vector<mc_i64> raw(n_redo), raw_offsets(n_redo + 1, 0);
    one_thread(n_redo);
    for (mc_i64 t = 0; t < n_redo; ++t) {
      threadIdx = {(unsigned)t, 0, 0};
      mc_count_raw<mc_i64>(MC_INDEX_ARGS, chars, offsets, 0, 0, redo.data(), n_redo, raw.data());
    }
    for (mc_i64 i = 0; i < n_redo; ++i) raw_offsets[i + 1] = raw_offsets[i] + raw[i];
    std::vector<mc_i32> raw_ids(raw_offsets[n_redo] + 1);
    for (mc_i64 t = 0; t < n_redo; ++t) {
      threadIdx = {(unsigned)t, 0, 0};
      mc_fill_raw<mc_i64>(MC_INDEX_ARGS, chars, offsets, 0, 0, redo.data(), n_redo,
                          raw_offsets.data(), raw_ids.data());
    }
  }
  if (getenv("HARNESS_VERBOSE"))
    fprintf(stderr, "texts %lld, ids in fixed rows %lld, spilled %llu, redone %lld\n",
            (long long)n_rows, (long long)total, (unsigned long long)spill_used,
            (long long)n_redo);
  return total;
}

static double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// DIR [REPEATS]: with REPEATS, also prints the least thread CPU time of that many runs,
// in ns a text (an A/B figure less disturbed by other processes than wall time).
// --signature: prints mc_index_signature() of this build (profile_kernel.py checks that the
// index it dumps was built by code that hashes the same way).
int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--signature") {
    printf("%llu\n", (unsigned long long)mc_index_signature());
    return 0;
  }
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s DIR [REPEATS]\n", argv[0]);
    return 2;
  }
  const char* dir = argv[1];
  auto slots = load<mc_u64>(dir, "slots.bin");
  auto blob = load<mc_i32>(dir, "blob.bin");
  auto byte_slots = load<mc_u64>(dir, "byte_slots.bin");
  auto byte_blob = load<mc_i32>(dir, "byte_blob.bin");
  auto masks = load<mc_u64>(dir, "masks.bin");
  auto chars = load<mc_u8>(dir, "chars.bin");
  auto offsets = load<mc_i64>(dir, "offsets.bin");
  chars.resize(chars.size() + 8);
  const mc_i64 n_rows = (mc_i64)offsets.size() - 1;
  Outputs outputs{std::vector<mc_i32>((size_t)n_rows * MC_LOCAL_CAP, 0),
                  std::vector<mc_i32>(n_rows, 0), std::vector<mc_i64>(n_rows * 64 + 64, 0)};
  const int repeats = argc == 3 ? atoi(argv[2]) : 1;
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double started = thread_seconds();
    run_kernels(slots.data(), masks[0], blob.data(), byte_slots.data(), masks[1],
                byte_blob.data(), chars.data(), offsets.data(), n_rows, outputs);
    const double seconds = thread_seconds() - started;
    best = seconds < best ? seconds : best;
  }
  if (argc == 3) printf("%.1f\n", best * 1e9 / (double)n_rows);
  return 0;
}
