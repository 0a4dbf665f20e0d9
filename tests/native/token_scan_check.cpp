// Test driver for kernels/tokens.cuh's token stream and token hash (tests/test_token_scan.py).
// Reads texts from stdin (a little-endian uint32 byte count, then the bytes; repeated) and
// prints, for each text, one line: the token count, then for each inner token its start,
// its length, the hash the stream computed and mc_token_hash of the token's bytes copied
// alone (how the index builder hashes an entry's token), in hex.
// Each text and each token copy lives in an allocation of exactly its size, so a build with
// -fsanitize=address catches any read past the text's end. Built as it is (the host's SSE2
// path) and with -DMC_HOST_SIMD=0 (the device's byte path).
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tokens.cuh"

int main() {
  unsigned char header[4];
  while (fread(header, 1, 4, stdin) == 4) {
    const mc_i64 n = (mc_i64)header[0] | ((mc_i64)header[1] << 8) | ((mc_i64)header[2] << 16) |
                     ((mc_i64)header[3] << 24);
    mc_u8* text = (mc_u8*)malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(text, 1, (size_t)n, stdin) != (size_t)n) return 3;
    McTokenStream stream = mc_stream_begin(text, n);
    McToken tok;
    int count = 0;
    static char line[1 << 16];
    line[0] = 0;
    int at = 0;
    while (mc_stream_next(&stream, &tok)) {
      mc_u8* alone = (mc_u8*)malloc(tok.len > 0 ? (size_t)tok.len : 1);
      memcpy(alone, text + tok.start, (size_t)tok.len);
      const mc_u64 entry_hash = mc_token_hash(alone, tok.len);
      free(alone);
      at += snprintf(line + at, sizeof line - at, " %lld %lld %016llx %016llx",
                     (long long)tok.start, (long long)tok.len, (unsigned long long)tok.hash,
                     (unsigned long long)entry_hash);
      ++count;
      if (at > (int)sizeof line - 100) return 4;
    }
    printf("%d%s\n", count, line);
    free(text);
  }
  return 0;
}
