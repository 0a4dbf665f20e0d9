// Metadata matching kernels: one thread per text.
//
// For each inner token t_j of spacing(text) (see tokens.cuh) the thread
// probes the n-grams t_j, t_j t_{j+1}, ... in the index while the probe table
// says some entry continues (MC_SLOT_PREFIX); at every n-gram that ends an
// entry (MC_SLOT_ENTRY) it verifies each candidate id byte by byte and emits
// the ids that really match.
//
// Kernels (each instantiated for int32 and int64 string offsets):
//   mc_match_fixed_*  single pass; keeps the text's distinct ids sorted in a
//                     per-thread buffer of MC_LOCAL_CAP and writes them to the
//                     text's fixed-width row of `out_ids`; count = -1 when the
//                     buffer overflows (the caller re-runs those texts with
//                     the two kernels below).
//   mc_count_raw_*    number of (position, id) hits per text, duplicates kept.
//   mc_fill_raw_*     the same hits, written from the text's CSR offset.
//
// Texts are Arrow/cuDF string columns: `chars` plus offsets, an optional
// validity bitmap (LSB order, starting at bit `valid_bit_offset`; a null text
// matches nothing) and an optional row list (`rows`, when `n_rows` rows of a
// larger column are to be processed). Invalid UTF-8 is matched as bytes.
#include "portable.cuh"
#include "tokens.cuh"

#ifndef MC_LOCAL_CAP
#define MC_LOCAL_CAP 32
#endif

struct McIndex {
  const mc_u64* MC_RESTRICT slots;
  mc_u64 mask;
  const mc_i32* MC_RESTRICT hit_lists;
  const mc_i64* MC_RESTRICT entry_offsets;
  const mc_u8* MC_RESTRICT entry_chars;
};

// Does entry `id` consist exactly of the `n_tokens` tokens that `stream`
// produces next? `first` is the first of them, already read by the caller.
MC_FN int mc_verify(const McIndex& ix, mc_i32 id, const mc_u8* text,
                    McTokenStream stream, McToken first, int n_tokens) {
  const mc_u8* e = ix.entry_chars + ix.entry_offsets[id];
  const mc_i64 e_len = ix.entry_offsets[id + 1] - ix.entry_offsets[id];
  mc_i64 at = 0;  // read position in the entry
  McToken tok = first;
  for (int k = 0; k < n_tokens; ++k) {
    if (k > 0) {
      if (at >= e_len || e[at] != ' ') return 0;
      ++at;
      if (!mc_stream_next(&stream, &tok)) return 0;
    }
    if (at + tok.len > e_len) return 0;
    for (mc_i64 b = 0; b < tok.len; ++b)
      if (e[at + b] != text[tok.start + b]) return 0;
    at += tok.len;
    // The entry's token must end here too.
    if (at < e_len && e[at] != ' ') return 0;
  }
  return at == e_len;
}

// Calls sink.emit(id) for every verified (start token, entry) hit of one
// text. Stops early when sink.full() says the sink cannot take more.
template <typename Sink>
MC_FN void mc_scan_text(const McIndex& ix, const mc_u8* text, mc_i64 n, Sink& sink) {
  McTokenStream stream = mc_stream_begin(text, n);
  for (;;) {
    McToken first;
    if (!mc_stream_next(&stream, &first)) break;
    McTokenStream ahead = stream;  // positioned after the n-gram's last token
    mc_u64 h = mc_ngram_extend(MC_NGRAM_SEED, first.hash);
    int n_tokens = 1;
    for (;;) {
      const mc_u64 slot = mc_probe(ix.slots, ix.mask, h);
      if (slot == 0) break;
      const mc_u32 flags = mc_slot_flags(slot);
      if (flags & MC_SLOT_ENTRY) {
        const mc_u32 payload = mc_slot_payload(slot);
        if (flags & MC_SLOT_LIST) {
          const mc_i32 count = ix.hit_lists[payload];
          for (mc_i32 c = 0; c < count; ++c) {
            const mc_i32 id = ix.hit_lists[payload + 1 + c];
            if (mc_verify(ix, id, text, stream, first, n_tokens)) sink.emit(id);
          }
        } else {
          const mc_i32 id = (mc_i32)payload;
          if (mc_verify(ix, id, text, stream, first, n_tokens)) sink.emit(id);
        }
        if (sink.full()) return;
      }
      if (!(flags & MC_SLOT_PREFIX)) break;
      McToken next;
      if (!mc_stream_next(&ahead, &next)) break;
      h = mc_ngram_extend(h, next.hash);
      ++n_tokens;
    }
  }
}

// Distinct ids kept sorted in a small per-thread array.
struct McSortedSink {
  mc_i32 ids[MC_LOCAL_CAP];
  int n;
  int overflow;
  MC_METHOD void emit(mc_i32 id) {
    int i = n;
    while (i > 0 && ids[i - 1] > id) --i;
    if (i > 0 && ids[i - 1] == id) return;
    if (n == MC_LOCAL_CAP) {
      overflow = 1;
      return;
    }
    for (int k = n; k > i; --k) ids[k] = ids[k - 1];
    ids[i] = id;
    ++n;
  }
  MC_METHOD int full() const { return overflow; }
};

struct McCountSink {
  mc_i64 n;
  MC_METHOD void emit(mc_i32) { ++n; }
  MC_METHOD int full() const { return 0; }
};

struct McFillSink {
  mc_i32* out;
  mc_i64 n;
  MC_METHOD void emit(mc_i32 id) { out[n++] = id; }
  MC_METHOD int full() const { return 0; }
};

// Row i of the launch: its text's bytes, or null (n = -1) for a null text.
template <typename Off>
MC_FN const mc_u8* mc_text_of(const mc_u8* chars, const Off* offsets,
                              const mc_u8* valid, mc_i64 valid_bit_offset,
                              mc_i64 row, mc_i64* n) {
  if (valid != 0) {
    const mc_i64 bit = valid_bit_offset + row;
    if (!((valid[bit >> 3] >> (bit & 7)) & 1)) {
      *n = -1;
      return 0;
    }
  }
  const mc_i64 begin = (mc_i64)offsets[row];
  *n = (mc_i64)offsets[row + 1] - begin;
  return chars + begin;
}

#define MC_INDEX_PARAMS                                                      \
  const mc_u64 *slots, mc_u64 mask, const mc_i32 *hit_lists,                \
      const mc_i64 *entry_offsets, const mc_u8 *entry_chars
#define MC_TEXT_PARAMS(Off)                                                  \
  const mc_u8 *chars, const Off *offsets, const mc_u8 *valid,              \
      mc_i64 valid_bit_offset, const mc_i64 *rows, mc_i64 n_rows
#define MC_MAKE_INDEX() {slots, mask, hit_lists, entry_offsets, entry_chars}
// Below, valid == 0 means "no validity bitmap" and rows == 0 "rows 0..n_rows-1".

template <typename Off>
MC_FN void mc_match_fixed(MC_INDEX_PARAMS, MC_TEXT_PARAMS(Off), mc_i32* out_ids,
                          mc_i32* out_count) {
  const McIndex ix = MC_MAKE_INDEX();
  for (mc_i64 i = mc_global_thread(); i < n_rows; i += mc_global_stride()) {
    const mc_i64 row = rows ? rows[i] : i;
    mc_i64 n;
    const mc_u8* text = mc_text_of(chars, offsets, valid, valid_bit_offset, row, &n);
    McSortedSink sink;
    sink.n = 0;
    sink.overflow = 0;
    if (n >= 0) mc_scan_text(ix, text, n, sink);
    if (sink.overflow) {
      out_count[i] = -1;
      continue;
    }
    mc_i32* out = out_ids + i * (mc_i64)MC_LOCAL_CAP;
    for (int k = 0; k < sink.n; ++k) out[k] = sink.ids[k];
    out_count[i] = sink.n;
  }
}

template <typename Off>
MC_FN void mc_count_raw(MC_INDEX_PARAMS, MC_TEXT_PARAMS(Off), mc_i64* out_count) {
  const McIndex ix = MC_MAKE_INDEX();
  for (mc_i64 i = mc_global_thread(); i < n_rows; i += mc_global_stride()) {
    const mc_i64 row = rows ? rows[i] : i;
    mc_i64 n;
    const mc_u8* text = mc_text_of(chars, offsets, valid, valid_bit_offset, row, &n);
    McCountSink sink;
    sink.n = 0;
    if (n >= 0) mc_scan_text(ix, text, n, sink);
    out_count[i] = sink.n;
  }
}

template <typename Off>
MC_FN void mc_fill_raw(MC_INDEX_PARAMS, MC_TEXT_PARAMS(Off), const mc_i64* out_offsets,
                       mc_i32* out_ids) {
  const McIndex ix = MC_MAKE_INDEX();
  for (mc_i64 i = mc_global_thread(); i < n_rows; i += mc_global_stride()) {
    const mc_i64 row = rows ? rows[i] : i;
    mc_i64 n;
    const mc_u8* text = mc_text_of(chars, offsets, valid, valid_bit_offset, row, &n);
    McFillSink sink;
    sink.out = out_ids + out_offsets[i];
    sink.n = 0;
    if (n >= 0) mc_scan_text(ix, text, n, sink);
  }
}

// ------------------------------------------------------ exported kernels ---
// Plain C names so cupy.RawModule and the CPU launcher find them. `has_valid`
// and `has_rows` say whether `valid` / `rows` point at real data (a caller
// without them passes any small array).
#define MC_EXPORT_KERNELS(SUFFIX, Off)                                          \
  MC_KERNEL void mc_match_fixed_##SUFFIX(                                       \
      MC_INDEX_PARAMS, const mc_u8* chars, const Off* offsets,                  \
      const mc_u8* valid, int has_valid, mc_i64 valid_bit_offset,               \
      const mc_i64* rows, int has_rows, mc_i64 n_rows, mc_i32* out_ids,         \
      mc_i32* out_count) {                                                      \
    mc_match_fixed<Off>(slots, mask, hit_lists, entry_offsets, entry_chars,     \
                        chars, offsets, has_valid ? valid : 0,                  \
                        valid_bit_offset, has_rows ? rows : 0, n_rows, out_ids, \
                        out_count);                                             \
  }                                                                             \
  MC_KERNEL void mc_count_raw_##SUFFIX(                                         \
      MC_INDEX_PARAMS, const mc_u8* chars, const Off* offsets,                  \
      const mc_u8* valid, int has_valid, mc_i64 valid_bit_offset,               \
      const mc_i64* rows, int has_rows, mc_i64 n_rows, mc_i64* out_count) {     \
    mc_count_raw<Off>(slots, mask, hit_lists, entry_offsets, entry_chars,       \
                      chars, offsets, has_valid ? valid : 0, valid_bit_offset,  \
                      has_rows ? rows : 0, n_rows, out_count);                  \
  }                                                                             \
  MC_KERNEL void mc_fill_raw_##SUFFIX(                                          \
      MC_INDEX_PARAMS, const mc_u8* chars, const Off* offsets,                  \
      const mc_u8* valid, int has_valid, mc_i64 valid_bit_offset,               \
      const mc_i64* rows, int has_rows, mc_i64 n_rows,                          \
      const mc_i64* out_offsets, mc_i32* out_ids) {                             \
    mc_fill_raw<Off>(slots, mask, hit_lists, entry_offsets, entry_chars,        \
                     chars, offsets, has_valid ? valid : 0, valid_bit_offset,   \
                     has_rows ? rows : 0, n_rows, out_offsets, out_ids);        \
  }

MC_EXPORT_KERNELS(i32, mc_i32)
MC_EXPORT_KERNELS(i64, mc_i64)
