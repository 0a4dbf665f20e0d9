// XXH64 of the values of an Arrow binary column, for the balance stage's text keys
// (metaclip_gpu/pipeline/keys.py). Host only: the hash is xxHash's own XXH64, from the copy of
// the xxHash library that pyarrow ships in its C++ headers (arrow/vendored/xxhash), so the
// values equal the `xxhash` package's xxh64_intdigest bit for bit.
#define XXH_INLINE_ALL
#include "arrow/vendored/xxhash/xxhash.h"

#include "cpu_api.h"

namespace {

template <typename Offset>
void hash_values(const uint8_t* data, const Offset* offsets, const int64_t* rows, int64_t n,
                 uint64_t seed, uint64_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = rows ? rows[i] : i;
    const int64_t start = (int64_t)offsets[r];
    const int64_t length = (int64_t)offsets[r + 1] - start;
    out[i] = (uint64_t)XXH64(data + start, (size_t)length, (XXH64_hash_t)seed);
  }
}

}  // namespace

extern "C" void mc_xxh64_binary(const uint8_t* data, const void* offsets, int offsets_are_64,
                                const int64_t* rows, int64_t n, uint64_t seed, uint64_t* out) {
  if (offsets_are_64) {
    hash_values(data, static_cast<const int64_t*>(offsets), rows, n, seed, out);
  } else {
    hash_values(data, static_cast<const int32_t*>(offsets), rows, n, seed, out);
  }
}
