// Metadata matching kernels: one thread per text.
//
// For each inner token t_j of spacing(text) (see tokens.cuh) the thread
// probes the n-grams t_j, t_j t_{j+1}, ... in the index while the probe table
// says some entry continues (MC_SLOT_PREFIX); at every n-gram that ends an
// entry (MC_SLOT_ENTRY) it verifies each candidate id byte by byte and emits
// the ids that really match. When the index has byte-level entries (worldwide
// padding, tokens.cuh), a second scan runs over the bytes of spacing(text):
// from every byte that may begin such an entry it extends character by
// character while the byte table says an entry may continue, and verifies the
// candidates that end there (bytes, then the space each padded side needs).
// Both scans emit into the same per-text sink.
//
// Kernels (each instantiated for int32 and int64 string offsets):
//   mc_match_fixed_*  single pass; keeps the text's MC_LOCAL_CAP smallest
//                     distinct ids sorted in a per-thread list and writes them
//                     to the text's slot-major column of `out_ids`;
//                     the others go to a global spill (count -1), and a text
//                     whose ids do not fit the spill gets count -2 (the caller
//                     re-runs those texts with the two kernels below).
//   mc_count_raw_*    number of (position, id) hits per text, duplicates kept.
//   mc_fill_raw_*     the same hits, written from the text's CSR offset.
//   mc_gather_fixed_rows  moves mc_match_fixed's rows into CSR order.
//   mc_index_signature_kernel  the hash/layout signature (tokens.cuh).
//   mc_sure_texts, mc_draw_undecided  the balance stage's draws (draws.cuh), here so
//                     the GPU keeps one module (one translation unit) for every kernel.
//
// Texts are Arrow/cuDF string columns: `chars` plus offsets, an optional
// validity bitmap (LSB order, starting at bit `valid_bit_offset`; a null text
// matches nothing) and an optional row list (`rows`, when `n_rows` rows of a
// larger column are to be processed). Invalid UTF-8 is matched as bytes.
#include "portable.cuh"
#include "tokens.cuh"
#include "draws.cuh"

#ifndef MC_LOCAL_CAP
#define MC_LOCAL_CAP 64
#endif

struct McIndex {
  const mc_u64* MC_RESTRICT slots;
  mc_u64 mask;
  const mc_i32* MC_RESTRICT blob;  // verification records (tokens.cuh)
  const mc_u64* MC_RESTRICT byte_slots;  // the byte-level entries' table
  mc_u64 byte_mask;
  const mc_i32* MC_RESTRICT byte_blob;
  mc_i32 max_bytes;  // byte_blob[0]: 0 when there are no byte-level entries
  // The multi-token filter (tokens.cuh), located once per launch rather than per probe.
  const mc_u64* MC_RESTRICT filter;
  int filter_shift;
};

// An McIndex over a launch's index arguments.
MC_FN McIndex mc_make_index(const mc_u64* slots, mc_u64 mask, const mc_i32* blob,
                            const mc_u64* byte_slots, mc_u64 byte_mask,
                            const mc_i32* byte_blob) {
  McIndex ix;
  ix.slots = slots;
  ix.mask = mask;
  ix.blob = blob;
  ix.byte_slots = byte_slots;
  ix.byte_mask = byte_mask;
  ix.byte_blob = byte_blob;
  ix.max_bytes = byte_blob[0];
  ix.filter = mc_filter_words(slots, mask);
  ix.filter_shift = mc_filter_shift(mask);
  return ix;
}

// Whether the multi-token filter (tokens.cuh) may hold `hash`, from the McIndex's copy of
// where the filter is.
MC_FN int mc_index_may_contain(const McIndex& ix, mc_u64 hash) {
  const mc_u64 bits = mc_filter_bits(hash);
  return (ix.filter[mc_filter_word_at(hash, ix.filter_shift)] & bits) == bits;
}

// ------------------------------------------------------------ text scans ---
// Both scans call sink.emit(id) for every verified (start token, entry) hit of
// one text and stop early when sink.full(). mc_scan_text picks one per index.

#ifndef MC_TOKEN_RING  // tokens a thread keeps (a power of two)
#if MC_ON_DEVICE
#define MC_TOKEN_RING 16
#else
#define MC_TOKEN_RING 64
#endif
#endif
#ifndef MC_READ_AHEAD  // tokens read (and their slots prefetched) ahead of use
#if MC_ON_DEVICE
#define MC_READ_AHEAD 0
#else
#define MC_READ_AHEAD 16  // about a whole alt-text: its probes overlap in memory
#endif
#endif

// The text bytes an n-gram spans, from its first token's start to its last
// token's end, and whether they are its tokens joined by single ' ' bytes
// (always so for one token). When they are, the n-gram equals an entry exactly
// when those bytes do: one comparison instead of one a token. Punctuation
// tokens ("dog," -> "dog" ","), tabs and line breaks between tokens leave the
// span not joined, and the token-by-token comparison decides.
struct McSpan {
  mc_i64 start;
  mc_i64 end;
  int joined;
  MC_METHOD void begin(const McToken& t) {
    start = t.start;
    end = t.start + t.len;
    joined = 1;
  }
  // Adds the n-gram's next token (`text` is the whole text; the byte at `end` exists,
  // since a token follows it).
  MC_METHOD void extend(const McToken& t, const mc_u8* text) {
    joined &= (int)(t.start == end + 1) & (int)(text[end] == ' ');  // no branches
    end = t.start + t.len;
  }
};

// Emits the verified candidates of an MC_SLOT_ENTRY slot. `Tokens` yields the
// n-gram's k-th token through at(k); `span` says where they are in the text.
template <typename Tokens, typename Sink>
MC_FN void mc_emit_verified(const McIndex& ix, mc_u64 slot, const mc_u8* text, mc_i64 text_len,
                            const Tokens& tokens, int n_tokens, const McSpan& span,
                            Sink& sink) {
  const mc_i32* record = ix.blob + mc_slot_payload(slot);
  const mc_i32 count = *record++;
  for (mc_i32 c = 0; c < count; ++c) {
    const mc_i32 id = record[0];
    const mc_i64 e_len = record[1];
    const mc_u8* e = (const mc_u8*)(record + 2);
    record += mc_record_words(e_len);
    if (span.joined) {  // the common case: one token, or tokens one ' ' apart
      if (e_len == span.end - span.start &&
          mc_bytes_equal(e, text + span.start, e_len, text_len - span.start))
        sink.emit(id);
      continue;
    }
    // The entry must be exactly the n-gram's tokens joined by single spaces.
    mc_i64 at = 0;
    int ok = 1;
    for (int k = 0; ok && k < n_tokens; ++k) {
      const McToken tok = tokens.at(k);
      if (k > 0) {
        ok = at < e_len && e[at] == ' ';
        ++at;
      }
      ok = ok && at + tok.len <= e_len &&
           mc_bytes_equal(e + at, text + tok.start, tok.len, text_len - tok.start);
      at += tok.len;
    }
    if (ok && at == e_len) sink.emit(id);
  }
}

// Whether an MC_SLOT_INLINE slot's entry (`bytes`) is the n-gram's tokens
// joined by single spaces.
template <typename Tokens>
MC_FN int mc_inline_matches(mc_u64 bytes, const mc_u8* text, mc_i64 text_len,
                            const Tokens& tokens, int n_tokens, const McSpan& span) {
  if (span.joined)  // the common case: one token, or tokens one ' ' apart
    return mc_inline_equal(bytes, text + span.start, span.end - span.start,
                           text_len - span.start);
  McToken tok = tokens.at(0);
  const mc_i64 e_len = mc_inline_len(bytes);
  mc_i64 at = 0;
  for (int k = 0;;) {
    const mc_u64 rest = at < 8 ? bytes >> (8 * at) : 0;  // (a shift by 64 is undefined)
    if (at + tok.len > e_len ||
        !mc_inline_part_equal(rest, text + tok.start, tok.len, text_len - tok.start))
      return 0;
    at += tok.len;
    if (++k == n_tokens) return at == e_len;
    if (at >= e_len || (mc_u8)(bytes >> (8 * at)) != ' ') return 0;
    ++at;
    tok = tokens.at(k);
  }
}

// The fast scan: each token is read once into a small ring; the ring reads
// MC_READ_AHEAD tokens ahead and prefetches their 1-gram slots. Exact when no
// entry has more than MC_TOKEN_RING - MC_READ_AHEAD - 1 tokens.
//
// On the host the ring also keys, when it reads token p, the 2-gram that ends
// at p, asks the filter about it and, when the filter lets it through,
// prefetches its slot too: in dense metadata nearly every word begins some
// entry, so a probe run goes on to its 2-gram at almost every token, and that
// slot would otherwise miss the cache right when the run needs it.
struct McTokenRing {
  McToken tok[MC_TOKEN_RING];
#if MC_READ_AHEAD > 0
  // Each token's 1-gram key, computed once for the prefetch and kept for the probe (the
  // device reads nothing ahead, so it recomputes the key rather than hold 128 more bytes).
  mc_u64 first_hash[MC_TOKEN_RING];
  mc_u64 second_hash[MC_TOKEN_RING];       // the key of the 2-gram starting at each token
  mc_u8 second_may[MC_TOKEN_RING];         // the filter may hold the 2-gram
#endif
  mc_i64 produced;  // tokens read so far
  McTokenStream stream;
  // Token k (counting from t_1), reading up to k + MC_READ_AHEAD; 0 past the end.
  MC_METHOD int get(const McIndex& ix, mc_i64 k, McToken* out) {
    while (produced <= k + MC_READ_AHEAD) {
      McToken t;
      if (!mc_stream_next(&stream, &t)) break;
      const int at = (int)(produced & (MC_TOKEN_RING - 1));
      tok[at] = t;
#if MC_READ_AHEAD > 0
      const mc_u64 h = mc_ngram_extend(MC_NGRAM_SEED, t.hash);
      first_hash[at] = h;
      mc_prefetch(mc_home_slot(ix.slots, ix.mask, h));
      if (produced > 0) {
        const int before = (int)((produced - 1) & (MC_TOKEN_RING - 1));
        const mc_u64 h2 = mc_ngram_extend(first_hash[before], t.hash);
        second_hash[before] = h2;
        const int may = mc_index_may_contain(ix, h2);
        second_may[before] = (mc_u8)may;
        // Without a branch (whether the filter lets a 2-gram through is a coin toss in
        // dense text): otherwise it prefetches the 1-gram's line again, already on its way.
        const mc_u64 pick = (mc_u64)0 - (mc_u64)may;  // all ones when `may`
        mc_prefetch(mc_home_slot(ix.slots, ix.mask, h ^ ((h ^ h2) & pick)));
      }
#endif
      ++produced;
    }
    if (k >= produced) return 0;
    *out = tok[k & (MC_TOKEN_RING - 1)];
    return 1;
  }
};

// One probe run: the n-grams that start at the window's first token, extended
// while the table says an entry may continue. Returns 0 once the sink is full.
// A Window gives the run's k-th token (at), reads its next one (extend) and
// finds the slots of its 1-gram (first_slot) and longer n-grams (next_slot:
// null when the filter or the table has no such key).
template <typename Window, typename Sink>
MC_FN int mc_probe_run(const McIndex& ix, int max_tokens, const mc_u8* text, mc_i64 n,
                       Window& window, Sink& sink) {
  mc_u64 h = window.first_key();
  const mc_u64* at = window.first_slot(ix, h);
  int n_tokens = 1;
  McSpan span;
  span.begin(window.at(0));
  for (;;) {
    if (at == 0) return 1;
    const mc_u64 slot = at[0];
    const mc_u32 flags = mc_slot_flags(slot);
    if (flags & MC_SLOT_INLINE) {  // one entry of up to 8 bytes, held in the slot
      if (mc_inline_matches(at[1], text, n, window, n_tokens, span)) {
        sink.emit((mc_i32)mc_slot_payload(slot));
        if (sink.full()) return 0;
      }
    } else if (flags & MC_SLOT_ENTRY) {
      mc_emit_verified(ix, slot, text, n, window, n_tokens, span, sink);
      if (sink.full()) return 0;
    }
    if (!(flags & MC_SLOT_PREFIX) || n_tokens >= max_tokens) return 1;
    McToken next;
    if (!window.extend(ix, n_tokens, &next)) return 1;
    h = mc_ngram_extend(h, next.hash);
    ++n_tokens;
    span.extend(next, text);
    at = window.next_slot(ix, n_tokens, h);
  }
}

// The slot of an n-gram of two or more tokens, or null: the filter first.
MC_FN const mc_u64* mc_probe_filtered(const McIndex& ix, mc_u64 h) {
  return mc_index_may_contain(ix, h) ? mc_probe(ix.slots, ix.mask, h) : 0;
}

struct McRingWindow {  // the n-gram starting at token j of the ring
  McTokenRing* ring;
  mc_i64 j;
  MC_METHOD McToken at(int k) const { return ring->tok[(j + k) & (MC_TOKEN_RING - 1)]; }
  MC_METHOD mc_u64 first_key() const {
#if MC_READ_AHEAD > 0
    return ring->first_hash[j & (MC_TOKEN_RING - 1)];
#else
    return mc_ngram_extend(MC_NGRAM_SEED, at(0).hash);
#endif
  }
  MC_METHOD const mc_u64* first_slot(const McIndex& ix, mc_u64 h) const {
    return mc_probe(ix.slots, ix.mask, h);
  }
  MC_METHOD const mc_u64* next_slot(const McIndex& ix, int n_tokens, mc_u64 h) const {
#if MC_READ_AHEAD > 0
    if (n_tokens == 2) {  // keyed and filtered when its second token was read
      const int at = (int)(j & (MC_TOKEN_RING - 1));
      return ring->second_may[at] ? mc_probe(ix.slots, ix.mask, ring->second_hash[at]) : 0;
    }
#endif
    return mc_probe_filtered(ix, h);
  }
  MC_METHOD int extend(const McIndex& ix, int k, McToken* out) {
    const mc_i64 at = j + k;
    if (at < ring->produced) {  // almost always: read ahead already (a predictable branch)
      *out = ring->tok[at & (MC_TOKEN_RING - 1)];
      return 1;
    }
    return ring->get(ix, at, out);
  }
};

template <typename Sink>
MC_FN void mc_scan_ring(const McIndex& ix, int max_tokens, const mc_u8* text, mc_i64 n,
                        Sink& sink) {
  McTokenRing ring;
  ring.produced = 0;

  ring.stream = mc_stream_begin(text, n);
  McToken first;
  for (mc_i64 j = 0; ring.get(ix, j, &first); ++j) {
    McRingWindow window = {&ring, j};
    if (!mc_probe_run(ix, max_tokens, text, n, window, sink)) return;
  }
}

// The general scan, for metadata with longer entries: each probe run re-reads
// its tokens from a copy of the stream, so it needs no buffer at all.
struct McStreamWindow {  // the n-gram whose first token is `first`
  McTokenStream after_first;
  McToken first;
  McTokenStream ahead;  // positioned after the n-gram's last token
  MC_METHOD mc_u64 first_key() const { return mc_ngram_extend(MC_NGRAM_SEED, first.hash); }
  MC_METHOD McToken at(int k) const {
    McTokenStream s = after_first;
    McToken t = first;
    for (int i = 0; i < k; ++i) mc_stream_next(&s, &t);
    return t;
  }
  MC_METHOD int extend(const McIndex&, int, McToken* out) { return mc_stream_next(&ahead, out); }
  MC_METHOD const mc_u64* first_slot(const McIndex& ix, mc_u64 h) const {
    return mc_probe(ix.slots, ix.mask, h);
  }
  MC_METHOD const mc_u64* next_slot(const McIndex& ix, int, mc_u64 h) const {
    return mc_probe_filtered(ix, h);
  }
};

template <typename Sink>
MC_FN void mc_scan_stream(const McIndex& ix, int max_tokens, const mc_u8* text, mc_i64 n,
                          Sink& sink) {
  McTokenStream stream = mc_stream_begin(text, n);
  McStreamWindow window;
  while (mc_stream_next(&stream, &window.first)) {
    window.after_first = stream;
    window.ahead = stream;
    if (!mc_probe_run(ix, max_tokens, text, n, window, sink)) return;
  }
}

// ------------------------------------------------------ byte-level scan ---
// Emits the candidates of a byte-table MC_SLOT_ENTRY slot that match the
// `len` spaced bytes from `start`: equal bytes, a space before when the entry
// is left-padded (`after_space`) and after when right-padded (read at `end`).
template <typename Sink>
MC_FN void mc_emit_bytes(const McIndex& ix, mc_u64 slot, const McSpacedCursor& start,
                         mc_i64 len, int after_space, McSpacedCursor end, Sink& sink) {
  const int space_follows = mc_spaced_next(&end) == ' ';
  const mc_i32* record = ix.byte_blob + mc_slot_payload(slot);
  const mc_i32 count = *record++;
  for (mc_i32 c = 0; c < count; ++c) {
    const mc_i32 id = record[0];
    const mc_u32 word = (mc_u32)record[1];
    const mc_i64 e_len = (mc_i64)(word & MC_RECORD_LEN_MASK);
    const mc_u32 pad = word >> MC_RECORD_FLAGS_SHIFT;
    const mc_u8* e = (const mc_u8*)(record + 2);
    record += mc_record_words(e_len);
    if (e_len != len || ((pad & MC_PAD_LEFT) && !after_space) ||
        ((pad & MC_PAD_RIGHT) && !space_follows))
      continue;
    if (mc_spaced_equal(start, e, e_len)) sink.emit(id);
  }
}

// One byte-level run: the prefixes of spacing(text) from `start`, one
// character longer each time, while the byte table says an entry may continue.
// Returns 0 once the sink is full.
template <typename Sink>
MC_FN int mc_byte_run(const McIndex& ix, const McSpacedCursor& start, int after_space,
                      Sink& sink) {
  McSpacedCursor at = start;
  mc_u64 h = MC_FNV_BASIS;
  for (mc_i64 len = 0; len < ix.max_bytes;) {
    const int width = mc_spaced_char(&at, &h);
    if (width == 0) return 1;
    len += width;
    const mc_u64* found = mc_probe(ix.byte_slots, ix.byte_mask, mc_byte_key(h));
    if (found == 0) return 1;
    const mc_u64 slot = found[0];
    const mc_u32 flags = mc_slot_flags(slot);
    if (flags & MC_SLOT_ENTRY) {
      mc_emit_bytes(ix, slot, start, len, after_space, at, sink);
      if (sink.full()) return 0;
    }
    if (!(flags & MC_SLOT_PREFIX)) return 1;
  }
  return 1;
}

// Runs from every byte of spacing(text) that may begin a byte-level entry.
// Walks the text bytes with the byte blob's per-byte flags (one load a byte):
// an ordinary byte is itself in spacing(text), a space-like byte one ' ', a
// wrapped punctuation c the three bytes " c ", and spacing() adds a ' ' at
// each end. A run starts at spaced byte `part` of text byte i (mc_spaced_at).
template <typename Sink>
MC_OUTLINED_FN void mc_scan_bytes(const McIndex& ix, const mc_u8* text, mc_i64 n, Sink& sink) {
  const mc_u8* MC_RESTRICT flags = mc_byte_flag_table(ix.byte_blob);
  const mc_u32 space = flags[' '];
  if ((space & MC_BYTE_STARTS_FREE) && !mc_byte_run(ix, mc_spaced_at(text, n, -1, 0), 0, sink))
    return;
  mc_u32 after_space = 1;  // whether the spaced byte before text byte i's is ' '
  for (mc_i64 i = 0; i < n; ++i) {
    const mc_u8 b = text[i];
    const mc_u32 f = flags[b];
    if (f & MC_BYTE_IS_PUNCT) {  // " c ": three places to start
      if (((space & mc_starts_mask(after_space)) &&
           !mc_byte_run(ix, mc_spaced_at(text, n, i, 0), after_space, sink)) ||
          ((f & mc_starts_mask(1)) && !mc_byte_run(ix, mc_spaced_at(text, n, i, 1), 1, sink)) ||
          ((space & MC_BYTE_STARTS_FREE) &&
           !mc_byte_run(ix, mc_spaced_at(text, n, i, 2), 0, sink)))
        return;
      after_space = 1;
      continue;
    }
    if ((f & mc_starts_mask(after_space)) &&
        !mc_byte_run(ix, mc_spaced_at(text, n, i, 0), after_space, sink))
      return;
    after_space = (f / MC_BYTE_IS_SPACE) & 1u;
  }
  if (space & mc_starts_mask(after_space))
    mc_byte_run(ix, mc_spaced_at(text, n, n, 0), after_space, sink);
}

// blob[0] holds the most tokens of any entry (tokens.cuh).
template <typename Sink>
MC_FN void mc_scan_text(const McIndex& ix, const mc_u8* text, mc_i64 n, Sink& sink) {
  const int max_tokens = ix.blob[0];
  if (max_tokens + MC_READ_AHEAD + 1 <= MC_TOKEN_RING)
    mc_scan_ring(ix, max_tokens, text, n, sink);
  else
    mc_scan_stream(ix, max_tokens, text, n, sink);
  if (ix.max_bytes > 0 && !sink.full()) mc_scan_bytes(ix, text, n, sink);
}

// The distinct ids of one text, kept in a per-thread list: ascending, at most
// MC_LOCAL_CAP of them. Emitted ids are appended unsorted to a short tail
// (MC_SINK_TAIL); when the tail is full, and when the text ends (finish), it is
// sorted by a sorting network and merged with the list into the other buffer,
// dropping duplicates, in one branch-free pass. A dense text's 50 ids cost
// three small sorts and three merges instead of a search and a shift per id
// (callgrind: about half the sink's instructions and mispredicted branches).
//
// A text with more distinct ids than MC_LOCAL_CAP does not stop and is not
// scanned again: the merge keeps the MC_LOCAL_CAP smallest ids in the list and
// appends the larger ones to a global spill as (row << 32 | id) keys, at
// positions taken with one atomicAdd each; the caller sorts and deduplicates
// the spilled keys with the list (match.py; an id may be both spilled and,
// later, in the list, or spilled twice). So a text's cost keeps growing by
// about the same step per id on both sides of MC_LOCAL_CAP. Only when the
// spill's capacity runs out does the text stop (count MC_COUNT_REDO) and the
// caller re-run it through count and fill; spill_used still counts every key
// asked for, so the caller can size the next spill from it.
#define MC_SINK_TAIL 16  // mc_sort16's size
#define MC_COUNT_SPILLED (-1)  // the row holds MC_LOCAL_CAP ids, the rest are spilled
#define MC_COUNT_REDO (-2)     // the spill ran out: the caller re-runs the text
#define MC_ID_SENTINEL 0x7fffffff  // above every entry id (ids are int32 positions)

// Sorts v[0..8) and v[0..16) ascending: Batcher's odd-even merge sort, 19 and
// 63 compare-exchanges with no data-dependent branch (an insertion sort of 16
// random ids mispredicts about one branch an id).
#define MC_CSWAP(a, b)                        \
  do {                                        \
    const mc_i32 lo_ = v[a] < v[b] ? v[a] : v[b]; \
    const mc_i32 hi_ = v[a] < v[b] ? v[b] : v[a]; \
    v[a] = lo_;                               \
    v[b] = hi_;                               \
  } while (0)
MC_FN void mc_sort8(mc_i32* v) {
  MC_CSWAP(0, 1); MC_CSWAP(2, 3); MC_CSWAP(0, 2); MC_CSWAP(1, 3); MC_CSWAP(1, 2);
  MC_CSWAP(4, 5); MC_CSWAP(6, 7); MC_CSWAP(4, 6); MC_CSWAP(5, 7); MC_CSWAP(5, 6);
  MC_CSWAP(0, 4); MC_CSWAP(2, 6); MC_CSWAP(2, 4); MC_CSWAP(1, 5); MC_CSWAP(3, 7);
  MC_CSWAP(3, 5); MC_CSWAP(1, 2); MC_CSWAP(3, 4); MC_CSWAP(5, 6);
}
MC_FN void mc_sort16(mc_i32* v) {
  mc_sort8(v);
  mc_sort8(v + 8);
  // the two halves merged
  MC_CSWAP(0, 8); MC_CSWAP(4, 12); MC_CSWAP(4, 8); MC_CSWAP(2, 10); MC_CSWAP(6, 14);
  MC_CSWAP(6, 10); MC_CSWAP(2, 4); MC_CSWAP(6, 8); MC_CSWAP(10, 12); MC_CSWAP(1, 9);
  MC_CSWAP(5, 13); MC_CSWAP(5, 9); MC_CSWAP(3, 11); MC_CSWAP(7, 15); MC_CSWAP(7, 11);
  MC_CSWAP(3, 5); MC_CSWAP(7, 9); MC_CSWAP(11, 13); MC_CSWAP(1, 2); MC_CSWAP(3, 4);
  MC_CSWAP(5, 6); MC_CSWAP(7, 8); MC_CSWAP(9, 10); MC_CSWAP(11, 12); MC_CSWAP(13, 14);
}
#undef MC_CSWAP

struct McIdSink {
  // Two buffers: the list (ids[0..n) of buffer `cur`) and the one the next merge
  // writes; one more place each for a sentinel.
  mc_i32 buffers[2][MC_LOCAL_CAP + MC_SINK_TAIL + 1];
  mc_i32 tail[MC_SINK_TAIL + 1];  // one more place for a sentinel
  mc_i32* ids;  // the list
  int n;
  int n_tail;
  int cur;
  int spilled;  // some id went to the spill
  int lost;     // the spill ran out
  mc_i64 row;
  mc_i64* spill;
  mc_i64 spill_cap;
  mc_u64* spill_used;

  MC_METHOD void begin(mc_i64 r) {
    cur = 0;
    ids = buffers[0];
    n = 0;
    n_tail = 0;
    spilled = 0;
    lost = 0;
    row = r;
  }
  MC_METHOD void emit(mc_i32 id) {
    tail[n_tail++] = id;
    if (n_tail == MC_SINK_TAIL) merge_tail();
  }
  // Ends the text: its ids are ids[0..n).
  MC_METHOD void finish() {
    if (n_tail > 0) merge_tail();
  }
  MC_METHOD void merge_tail() {
    for (int k = n_tail; k <= MC_SINK_TAIL; ++k) tail[k] = MC_ID_SENTINEL;
    if (n_tail <= 8)  // most texts' last (or only) tail
      mc_sort8(tail);
    else
      mc_sort16(tail);
    ids[n] = MC_ID_SENTINEL;
    mc_i32* out = buffers[cur ^ 1];
    int i = 0, j = 0, m = 0;
    mc_i32 last = -1;  // below every id
    for (int step = n + n_tail; step > 0; --step) {
      const mc_i32 a = ids[i], b = tail[j];
      const int take_list = a <= b;
      const mc_i32 v = take_list ? a : b;
      i += take_list;
      j += 1 - take_list;
      out[m] = v;
      m += v != last;
      last = v;
    }
    cur ^= 1;
    ids = out;
    n_tail = 0;
    n = m;
    if (n > MC_LOCAL_CAP) {  // keep the smallest; spill the rest
      for (int k = MC_LOCAL_CAP; k < n; ++k) to_spill(ids[k]);
      n = MC_LOCAL_CAP;
    }
  }
  MC_METHOD void to_spill(mc_i32 id) {
    spilled = 1;
    const mc_u64 at = atomicAdd(spill_used, (mc_u64)1);
    if (at < (mc_u64)spill_cap)
      spill[at] = (row << 32) | (mc_i64)id;
    else
      lost = 1;
  }
  MC_METHOD int full() const { return lost; }
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

#define MC_INDEX_PARAMS                                                       \
  const mc_u64 *slots, mc_u64 mask, const mc_i32 *blob, const mc_u64 *byte_slots, \
      mc_u64 byte_mask, const mc_i32 *byte_blob
#define MC_INDEX_ARGS slots, mask, blob, byte_slots, byte_mask, byte_blob
#define MC_TEXT_PARAMS(Off)                                                  \
  const mc_u8 *chars, const Off *offsets, const mc_u8 *valid,              \
      mc_i64 valid_bit_offset, const mc_i64 *rows, mc_i64 n_rows
#define MC_MAKE_INDEX() mc_make_index(slots, mask, blob, byte_slots, byte_mask, byte_blob)
// Below, valid == 0 means "no validity bitmap" and rows == 0 "rows 0..n_rows-1".

// Output layout, slot-major: slot k of launch row i is out_ids[k * n_rows + i]
// (a (MC_LOCAL_CAP, n_rows) array). On the GPU the threads of a warp hold
// consecutive rows, so when they store their k-th ids together the 32 stores
// fall in one 128-byte line and coalesce into one transaction; a row-major
// layout put each thread's row MC_LOCAL_CAP * 4 = 128+ bytes from the next, so
// the same stores touched 32 lines. mc_gather_fixed reads the same way. On the
// CPU one thread runs a block of consecutive rows, so its stores to a slot
// also land on shared cache lines, and rows past a batch's longest text are
// never touched.
template <typename Off>
MC_FN void mc_match_fixed(MC_INDEX_PARAMS, MC_TEXT_PARAMS(Off), mc_i32* out_ids,
                          mc_i32* out_count, mc_i64* spill, mc_i64 spill_cap,
                          mc_u64* spill_used) {
  const McIndex ix = MC_MAKE_INDEX();
  McIdSink sink;
  sink.spill = spill;
  sink.spill_cap = spill_cap;
  sink.spill_used = spill_used;
  for (mc_i64 i = mc_global_thread(); i < n_rows; i += mc_global_stride()) {
    const mc_i64 row = rows ? rows[i] : i;
    mc_i64 n;
    const mc_u8* text = mc_text_of(chars, offsets, valid, valid_bit_offset, row, &n);
    sink.begin(i);
    if (n >= 0) mc_scan_text(ix, text, n, sink);
    sink.finish();
    if (sink.lost) {
      out_count[i] = MC_COUNT_REDO;
      continue;
    }
    for (int k = 0; k < sink.n; ++k) out_ids[k * n_rows + i] = sink.ids[k];
    out_count[i] = sink.spilled ? MC_COUNT_SPILLED : sink.n;
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

// Copies each text's ids from mc_match_fixed's slot-major rows to its CSR
// position; a text with a negative count (spilled or to redo) is skipped: the
// caller fills its place.
MC_FN void mc_gather_fixed(const mc_i32* fixed_ids, const mc_i32* counts,
                           const mc_i64* out_offsets, mc_i64 n_rows, mc_i32* out_ids) {
  for (mc_i64 i = mc_global_thread(); i < n_rows; i += mc_global_stride()) {
    mc_i32* out = out_ids + out_offsets[i];
    for (mc_i32 k = 0; k < counts[i]; ++k) out[k] = fixed_ids[k * n_rows + i];
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
      mc_i32* out_count, mc_i64* spill, mc_i64 spill_cap, mc_u64* spill_used) {  \
    mc_match_fixed<Off>(MC_INDEX_ARGS,                                          \
                        chars, offsets, has_valid ? valid : 0,                  \
                        valid_bit_offset, has_rows ? rows : 0, n_rows, out_ids, \
                        out_count, spill, spill_cap, spill_used);               \
  }                                                                             \
  MC_KERNEL void mc_count_raw_##SUFFIX(                                         \
      MC_INDEX_PARAMS, const mc_u8* chars, const Off* offsets,                  \
      const mc_u8* valid, int has_valid, mc_i64 valid_bit_offset,               \
      const mc_i64* rows, int has_rows, mc_i64 n_rows, mc_i64* out_count) {     \
    mc_count_raw<Off>(MC_INDEX_ARGS,                                            \
                      chars, offsets, has_valid ? valid : 0, valid_bit_offset,  \
                      has_rows ? rows : 0, n_rows, out_count);                  \
  }                                                                             \
  MC_KERNEL void mc_fill_raw_##SUFFIX(                                          \
      MC_INDEX_PARAMS, const mc_u8* chars, const Off* offsets,                  \
      const mc_u8* valid, int has_valid, mc_i64 valid_bit_offset,               \
      const mc_i64* rows, int has_rows, mc_i64 n_rows,                          \
      const mc_i64* out_offsets, mc_i32* out_ids) {                             \
    mc_fill_raw<Off>(MC_INDEX_ARGS,                                             \
                     chars, offsets, has_valid ? valid : 0, valid_bit_offset,   \
                     has_rows ? rows : 0, n_rows, out_offsets, out_ids);        \
  }

// Writes mc_index_signature() as this build computes it (one thread).
MC_KERNEL void mc_index_signature_kernel(mc_u64* out) {
  if (mc_global_thread() == 0) out[0] = mc_index_signature();
}

MC_KERNEL void mc_gather_fixed_rows(const mc_i32* fixed_ids, const mc_i32* counts,
                                    const mc_i64* out_offsets, mc_i64 n_rows,
                                    mc_i32* out_ids) {
  mc_gather_fixed(fixed_ids, counts, out_offsets, n_rows, out_ids);
}

MC_EXPORT_KERNELS(i32, mc_i32)
MC_EXPORT_KERNELS(i64, mc_i64)
