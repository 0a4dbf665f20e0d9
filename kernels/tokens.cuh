// MetaCLIP's spacing() as a token stream, and the n-gram hash.
//
// SPEC section 2: spacing(text) = " " + text + " " with every , . ; : ? ! `
// wrapped in spaces and every \t \n \r turned into a space; an entry e matches
// when " " + e + " " is a substring. Equivalently: split spacing(text) on ' '
// keeping empty tokens t_0..t_m (t_0 and t_m always empty) and look for
// e's tokens as a contiguous run inside t_1..t_{m-1} ("inner tokens").
//
// The inner tokens are read straight off the original bytes, never building
// the spaced string: a run of ordinary bytes is one token, a space-like byte
// ends the current token, a punctuation byte ends the current token and is a
// one-byte token of its own, and the end of the text ends the last token.
// Every token is a contiguous slice of the original text.
//
// MetaCLIP 2's worldwide padding leaves an entry side unpadded when the
// entry's character there is CJK-or-similar or punctuation; those entries are
// matched on the bytes of spacing(text) instead ("byte-level entries", below).
//
// Shared by the kernels (match.cu) and the host index builder, so text and
// metadata are hashed by the same code.
#pragma once
#include "portable.cuh"

// The host build finds separators 16 bytes at a time with SSE2 (baseline x86-64) and hashes
// tokens from unaligned 8-byte loads; the device (and a host without SSE2) reads bytes.
// Defining MC_HOST_SIMD=0 gives the host the device's byte path (the tests compare both).
#ifndef MC_HOST_SIMD
#if !MC_ON_DEVICE && defined(__SSE2__)
#define MC_HOST_SIMD 1
#else
#define MC_HOST_SIMD 0
#endif
#endif
#if MC_HOST_SIMD
#include <emmintrin.h>
#endif
#if MC_ON_DEVICE
#define MC_HOT_FN MC_FN
#else
#define MC_HOT_FN static inline __attribute__((always_inline))
#endif

// Byte classes.
#define MC_ORDINARY 0
#define MC_SPACE 1  // ' ', '\t', '\n', '\r'
#define MC_PUNCT 2  // , . ; : ? ! `

// Bit c set for space-like / wrapped-punctuation bytes c < 64.
#define MC_SPACE_MASK ((1ull << 32) | (1ull << 9) | (1ull << 10) | (1ull << 13))
#define MC_PUNCT_MASK                                                     \
  ((1ull << 44) | (1ull << 46) | (1ull << 59) | (1ull << 58) | (1ull << 63) | \
   (1ull << 33))

MC_FN int mc_byte_class(mc_u8 c) {
  if (c < 64) {
    if ((MC_SPACE_MASK >> c) & 1ull) return MC_SPACE;
    if ((MC_PUNCT_MASK >> c) & 1ull) return MC_PUNCT;
    return MC_ORDINARY;
  }
  return c == '`' ? MC_PUNCT : MC_ORDINARY;
}

// The token scanner's hot test: does byte c end an ordinary run?
MC_FN int mc_is_separator(mc_u8 c) {
  return c < 64 ? (int)(((MC_SPACE_MASK | MC_PUNCT_MASK) >> c) & 1ull) : c == '`';
}

// ---------------------------------------------------------------- hashing ---
#define MC_FNV_BASIS 0xcbf29ce484222325ull
#define MC_FNV_PRIME 0x100000001b3ull
#define MC_NGRAM_SEED 0x9e3779b97f4a7c15ull

MC_FN mc_u64 mc_fmix64(mc_u64 k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// Token hash: the token's bytes as little-endian 8-byte words, the last one
// zero-padded; every word but the last is folded by one multiply, the last is
// xored in, and the length is mixed in so that trailing zero bytes count:
//   h = 0; for each word w but the last: h = mc_word_fold(h, w);
//   hash = h ^ last ^ len * MC_TOKEN_LEN_MUL            ("" hashes to 0)
// A token of up to 8 bytes (most words) costs no multiply at all, and distinct
// tokens of up to 7 bytes get distinct hashes; the n-gram fold below (a
// bijection of the token hash) does the mixing. Replaces FNV-1a, one serial
// multiply a byte. Texts and entries get it from the same code (mc_token_hash).
#define MC_TOKEN_LEN_MUL 0x9fb21c651e98df25ull
#define MC_WORD_MUL 0xff51afd7ed558ccdull

MC_FN mc_u64 mc_word_fold(mc_u64 h, mc_u64 word) {
  h = (h ^ word) * MC_WORD_MUL;
  return h ^ (h >> 32);
}

// The token hash from its bytes, read one at a time (the device's way).
MC_FN mc_u64 mc_token_hash_bytes(const mc_u8* bytes, mc_i64 len) {
  mc_u64 h = 0, word = 0;
  for (mc_i64 i = 0; i < len; ++i) {
    if (i > 0 && (i & 7) == 0) {
      h = mc_word_fold(h, word);
      word = 0;
    }
    word |= (mc_u64)bytes[i] << (8 * (i & 7));
  }
  return h ^ word ^ (mc_u64)len * MC_TOKEN_LEN_MUL;
}

#if MC_HOST_SIMD
MC_FN mc_u64 mc_load8(const mc_u8* p) {
  mc_u64 word;
  memcpy(&word, p, 8);
  return word;
}
#endif

// The hash of the token text[start..start + len), reading only text[0..n). The host
// loads whole words: the last one as the 8 bytes that end the token, shifted down (or, for
// a token inside the first 8 bytes, the text's first 8 bytes shifted and masked), so only a
// text of under 8 bytes takes the byte loop. This part takes the rarer tokens: longer than
// 8 bytes, or ending within the text's first 8; out of line on the host, to keep the scan
// loop that inlines mc_token_hash_at small.
MC_OUTLINED_FN mc_u64 mc_token_hash_rest(const mc_u8* text, mc_i64 start, mc_i64 len,
                                         mc_i64 n) {
#if MC_HOST_SIMD
  const mc_i64 end = start + len;
  const mc_u64 with_len = (mc_u64)len * MC_TOKEN_LEN_MUL;
  if (end >= 8 && len > 0) {
    mc_u64 h = 0;
    mc_i64 p = start;
    for (; end - p > 8; p += 8) h = mc_word_fold(h, mc_load8(text + p));
    return h ^ (mc_load8(text + end - 8) >> (8 * (8 - (end - p)))) ^ with_len;  // end - p: 1..8
  }
  if (end < 8 && n >= 8) {  // len <= 7
    return ((mc_load8(text) >> (8 * start)) & ((1ull << (8 * len)) - 1)) ^ with_len;
  }
#else
  (void)n;
#endif
  return mc_token_hash_bytes(text + start, len);
}

MC_HOT_FN mc_u64 mc_token_hash_at(const mc_u8* text, mc_i64 start, mc_i64 len, mc_i64 n) {
#if MC_HOST_SIMD
  const mc_i64 end = start + len;
  if (len <= 8 && end >= 8) {  // one word (most tokens); a shift by 64 is undefined
    const mc_u64 ending = mc_load8(text + end - 8);
    return (len > 0 ? ending >> (64 - 8 * len) : 0) ^ (mc_u64)len * MC_TOKEN_LEN_MUL;
  }
#endif
  return mc_token_hash_rest(text, start, len, n);
}

// The hash of a metadata entry's token (bytes between ' ' separators).
MC_FN mc_u64 mc_token_hash(const mc_u8* bytes, mc_i64 len) {
  return mc_token_hash_at(bytes, 0, len, len);
}

// Hash of a token sequence: fold each token's hash into the running
// n-gram hash. Order-sensitive; used identically for texts and entries.
MC_FN mc_u64 mc_ngram_extend(mc_u64 ngram_hash, mc_u64 token_hash) {
  return mc_fmix64(ngram_hash * 0x2545f4914f6cdd1dull + token_hash);
}

// ------------------------------------------------------------ token stream ---
struct McToken {
  mc_i64 start;  // byte offset of the token in the original text
  mc_i64 len;    // 0 for an empty token
  mc_u64 hash;   // mc_token_hash of the token bytes
};

// Iterator over the inner tokens t_1..t_{m-1}. A plain value: copying it
// forks the stream, which is how a probe looks ahead from a start token.
struct McTokenStream {
  const mc_u8* text;
  mc_i64 n;
  mc_i64 pos;        // where the next token starts
  int punct_next;    // the byte at pos is a wrapped punctuation token
  int done;          // the last token has been produced
#if MC_HOST_SIMD
  mc_i64 sep_base;   // the text offset of sep_bits' bit 0
  mc_u64 sep_bits;   // bit k: text[sep_base + k] is a separator (only bytes inside the text)
#endif
};

MC_FN McTokenStream mc_stream_begin(const mc_u8* text, mc_i64 n) {
  McTokenStream s;
  s.text = text;
  s.n = n;
  s.pos = 0;
  s.punct_next = 0;
  s.done = 0;
#if MC_HOST_SIMD
  s.sep_base = -64;  // nothing classified yet
  s.sep_bits = 0;
#endif
  return s;
}

#if MC_HOST_SIMD
// Bit k set when byte k of the 16 in v is a separator (mc_is_separator).
MC_FN mc_u32 mc_separator_mask16(__m128i v) {
  // Pairs one bit apart: ' ' '!' and ':' ';' (mask 0xFE), ',' '.' (0xFD), '\t' '\r' (0xFB).
  const __m128i fe = _mm_and_si128(v, _mm_set1_epi8((char)0xFE));
  __m128i m = _mm_or_si128(_mm_cmpeq_epi8(fe, _mm_set1_epi8(' ')),
                           _mm_cmpeq_epi8(fe, _mm_set1_epi8(':')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(_mm_and_si128(v, _mm_set1_epi8((char)0xFD)),
                                     _mm_set1_epi8(',')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(_mm_and_si128(v, _mm_set1_epi8((char)0xFB)),
                                     _mm_set1_epi8('\t')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8('?')));
  m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8('`')));
  return (mc_u32)_mm_movemask_epi8(m);
}

// Separator bits of text[base..min(base + 64, n)), bit k for byte base + k. Never reads
// outside text[0..n): a last chunk of under 16 bytes is the 16 bytes that end the text
// (shifted down), or, in a text of under 16 bytes, read byte by byte. Out of line: it
// runs about once per 64 bytes, and inlined it would crowd the scan loop's inlining.
MC_OUTLINED_FN mc_u64 mc_separator_bits64(const mc_u8* text, mc_i64 n, mc_i64 base) {
  mc_u64 bits = 0;
  for (int k = 0; k < 64; k += 16) {
    const mc_i64 at = base + k;
    const mc_i64 left = n - at;
    if (left <= 0) break;
    mc_u64 chunk;
    if (left >= 16) {
      chunk = mc_separator_mask16(_mm_loadu_si128((const __m128i*)(text + at)));
    } else if (n >= 16) {
      chunk = mc_separator_mask16(_mm_loadu_si128((const __m128i*)(text + n - 16))) >>
              (16 - left);
    } else {
      chunk = 0;
      for (mc_i64 i = 0; i < left; ++i) chunk |= (mc_u64)mc_is_separator(text[at + i]) << i;
    }
    bits |= chunk << k;
  }
  return bits;
}

// The first separator at or after `from`, or n.
MC_FN mc_i64 mc_next_separator(McTokenStream* s, mc_i64 from) {
  for (;;) {
    const mc_i64 offset = from - s->sep_base;
    if (offset < 64) {
      const mc_u64 bits = s->sep_bits >> offset;
      if (bits) return from + __builtin_ctzll(bits);
    }
    // Every byte from `from` up to the classified window's end is ordinary.
    const mc_i64 next = s->sep_base + 64 > from ? s->sep_base + 64 : from;
    if (next >= s->n) return s->n;
    s->sep_base = next;
    s->sep_bits = mc_separator_bits64(s->text, s->n, next);
    from = next;
  }
}
#endif

// Produces the next inner token; returns 0 when the stream is exhausted.
MC_HOT_FN int mc_stream_next(McTokenStream* s, McToken* tok) {
  if (s->done) return 0;
  if (s->punct_next) {
    const mc_u8 c = s->text[s->pos];
    tok->start = s->pos;
    tok->len = 1;
    tok->hash = (mc_u64)c ^ MC_TOKEN_LEN_MUL;  // mc_token_hash of the one byte
    s->pos += 1;
    s->punct_next = 0;
    return 1;
  }
  const mc_i64 start = s->pos;
#if MC_HOST_SIMD
  const mc_i64 i = mc_next_separator(s, start);
  tok->hash = mc_token_hash_at(s->text, start, i - start, s->n);
#else
  // mc_token_hash_bytes, fused with the separator search.
  mc_u64 h = 0, word = 0;
  int shift = 0;
  mc_i64 i = start;
  for (; i < s->n; ++i) {
    const mc_u8 c = s->text[i];
    if (mc_is_separator(c)) break;
    if (shift == 64) {
      h = mc_word_fold(h, word);
      word = 0;
      shift = 0;
    }
    word |= (mc_u64)c << shift;
    shift += 8;
  }
  tok->hash = h ^ word ^ (mc_u64)(i - start) * MC_TOKEN_LEN_MUL;
#endif
  tok->start = start;
  tok->len = i - start;
  if (i >= s->n) {
    s->done = 1;  // the closing space of spacing() ends this last token
  } else if (mc_byte_class(s->text[i]) == MC_SPACE) {
    s->pos = i + 1;
  } else {  // wrapped punctuation: it becomes the next token
    s->pos = i;
    s->punct_next = 1;
  }
  return 1;
}

// A metadata token can equal some text token only if it is empty, a single
// wrapped punctuation byte, or a run of ordinary bytes (no space-like bytes:
// the entry is split on ' ', so tabs, newlines and CRs are what can remain).
MC_FN int mc_token_matchable(const mc_u8* bytes, mc_i64 len) {
  if (len == 1 && mc_byte_class(bytes[0]) == MC_PUNCT) return 1;
  for (mc_i64 i = 0; i < len; ++i)
    if (mc_byte_class(bytes[i]) != MC_ORDINARY) return 0;
  return 1;
}

// ------------------------------------------------------- probe table slots ---
// Two 64-bit words per slot (MC_SLOT_WORDS), linear probing, key word 0 = empty.
// The key word:
//   bits 63..32  fingerprint: the high 32 bits of the n-gram hash
//   bits 31..3   payload: for MC_SLOT_ENTRY, the int32 word offset in the
//                verification blob of this slot's entries (below); for
//                MC_SLOT_INLINE, the id of the slot's one entry
//   bits 2..0    flags
// The second word holds, for an MC_SLOT_INLINE slot, its entry's bytes
// (little-endian, zero-padded to 8 bytes), and 0 otherwise. A slot is 16
// bytes and the table 16-byte aligned, so both words share one cache line:
// an entry of up to 8 bytes (most matched words, and short n-grams such as
// "a dog") is verified from the line the probe already read, with no second
// miss for a record elsewhere.
// The home position is the hash's low bits. Keys that share a fingerprint and
// meet in a probe run are merged into the first such slot at build time, so a
// lookup may stop at the first slot whose fingerprint matches.
//
// Verification blob (int32 words): word 0 is the most tokens of any entry
// (no probe run goes further); at a slot's payload, the number of entries
// whose token sequence hashes to this slot, then for each of them its id, its
// byte length and its UTF-8 bytes padded to whole words; two zero words end
// the blob so 8-byte reads of the last record stay inside. Every candidate is
// compared byte by byte with the text's tokens, so a hash collision costs
// time, never a false match; one slot's candidates share a cache line or two.
#define MC_SLOT_WORDS 2
#define MC_SLOT_PREFIX 1u  // some entry continues past this n-gram
#define MC_SLOT_ENTRY 2u   // some entry ends at this n-gram
// With MC_SLOT_ENTRY: the slot's only candidate is one entry of 1..8 bytes and
// no zero byte (so its length is where its bytes end), whose id is the payload
// and whose bytes (its tokens joined by single spaces) are the slot's second
// word. The token table's builder inlines every such entry (the byte table
// never does).
#define MC_SLOT_INLINE 4u
#define MC_SLOT_PAYLOAD_BITS 29
#define MC_SLOT_PAYLOAD_MAX ((1u << MC_SLOT_PAYLOAD_BITS) - 1u)

MC_FN mc_u64 mc_slot_pack(mc_u64 hash, mc_u32 payload, mc_u32 flags) {
  return (hash & 0xffffffff00000000ull) | ((mc_u64)payload << 3) | (mc_u64)flags;
}
MC_FN mc_u32 mc_slot_flags(mc_u64 slot) { return (mc_u32)(slot & 7u); }
MC_FN mc_u32 mc_slot_payload(mc_u64 slot) {
  return (mc_u32)((slot >> 3) & MC_SLOT_PAYLOAD_MAX);
}
// Words taken by one candidate record: id, length, bytes rounded up.
MC_FN mc_i64 mc_record_words(mc_i64 n_bytes) { return 2 + (n_bytes + 3) / 4; }

// The byte length of an MC_SLOT_INLINE slot's entry from its bytes word.
MC_FN mc_i64 mc_inline_len(mc_u64 bytes) {
#if MC_ON_DEVICE
  return 8 - __clzll((long long)bytes) / 8;
#else
  return 8 - __builtin_clzll(bytes) / 8;
#endif
}

// Whether text[0..len) equals the low `len` bytes of `bytes` (len 0..8).
// `readable`: bytes that may be read from `text` (the host then loads one
// word when 8 are readable; the device assembles the bytes).
MC_FN int mc_inline_part_equal(mc_u64 bytes, const mc_u8* text, mc_i64 len, mc_i64 readable) {
#if MC_ON_DEVICE
  (void)readable;
#else
  if (readable >= 8 && len > 0) {
    mc_u64 word;
    memcpy(&word, text, 8);
    return ((word ^ bytes) << (64 - 8 * len)) == 0;
  }
#endif
  for (mc_i64 i = 0; i < len; ++i)
    if (text[i] != (mc_u8)(bytes >> (8 * i))) return 0;
  return 1;
}

// Whether the text token text[0..len) equals an MC_SLOT_INLINE entry.
MC_FN int mc_inline_equal(mc_u64 bytes, const mc_u8* text, mc_i64 len, mc_i64 readable) {
  return len == mc_inline_len(bytes) && mc_inline_part_equal(bytes, text, len, readable);
}

// Multi-token filter: a blocked Bloom filter (two bits in one 64-bit word)
// over every key of two or more tokens, stored right after the table's slots
// (at word MC_SLOT_WORDS * (mask + 1)) with one word per
// MC_FILTER_SLOTS_PER_WORD slots. A failed extension probe
// (the usual fate of "a" + next word) is answered by this small, cache-resident
// array instead of a miss in the large table. No false negatives.
#define MC_FILTER_SLOTS_PER_WORD 32

// The filter word of `hash` is the top log2(words) bits of a multiply: a right
// shift by 64 - log2(words), done as two shifts (63 - log2, then 1) so that a
// one-word filter (a shift by 64, undefined in C) gets word 0.
MC_FN int mc_filter_shift(mc_u64 mask) {
  return 63 - mc_log2_pow2((mask + 1) / MC_FILTER_SLOTS_PER_WORD);
}
MC_FN mc_u64 mc_filter_word_at(mc_u64 hash, int shift) {
  return ((hash * 0x9e3779b97f4a7c15ull) >> shift) >> 1;
}
MC_FN mc_u64 mc_filter_word(mc_u64 hash, mc_u64 mask) {
  return mc_filter_word_at(hash, mc_filter_shift(mask));
}
MC_FN const mc_u64* mc_filter_words(const mc_u64* slots, mc_u64 mask) {
  return slots + MC_SLOT_WORDS * (mask + 1);
}
MC_FN mc_u64 mc_filter_bits(mc_u64 hash) {
  return (1ull << ((hash >> 26) & 63)) | (1ull << ((hash >> 36) & 63));
}

// The first word of the slot where a probe for `hash` starts (for prefetching).
MC_FN const mc_u64* mc_home_slot(const mc_u64* slots, mc_u64 mask, mc_u64 hash) {
  return slots + MC_SLOT_WORDS * (hash & mask);
}

// Returns the slot for `hash` (its first word), or null when no entry starts
// with this n-gram.
MC_FN const mc_u64* mc_probe(const mc_u64* MC_RESTRICT slots, mc_u64 mask, mc_u64 hash) {
  const mc_u64 fp = hash >> 32;
  mc_u64 pos = hash & mask;
  for (;;) {
    const mc_u64* slot = slots + MC_SLOT_WORDS * pos;
    if (slot[0] == 0) return 0;
    if ((slot[0] >> 32) == fp) return slot;
    pos = (pos + 1) & mask;
  }
}

// ---------------------------------------------------- byte-level entries ---
// An entry with an unpadded side matches where its bytes occur in
// spacing(text), preceded by a space when it is left-padded (MC_PAD_LEFT) and
// followed by one when it is right-padded (MC_PAD_RIGHT). The padding flags
// come from metaclip_gpu/engine/metadata.py (the one place that classifies
// characters); entries padded on both sides stay in the token table above.
//
// The byte-level entries have a table of their own with the slot layout
// above, keyed by mc_byte_key of the FNV-1a hash of the UTF-8 bytes of the
// entry's first c characters, for every c: the proper prefixes as
// MC_SLOT_PREFIX keys, the whole entry as MC_SLOT_ENTRY. A character is a lead
// byte plus the continuation bytes it announces (mc_utf8_tail), on both sides,
// so an entry's character ends and the text's coincide wherever their bytes
// are equal, valid UTF-8 or not.
//
// Byte blob (int32 words): word 0 is the longest entry in bytes (0 when there
// are no byte-level entries: the kernels skip the byte scan); words 1..64 are
// a table of 256 bytes, one per byte value v, of MC_BYTE_* flags: v's class
// and whether v's spaced byte (' ' for a space-like v) begins some entry that
// is not left-padded, or some left-padded one (a run starts only where an
// entry may begin); then the records as in the token blob, except that a
// record's length word carries the entry's padding flags in bits 30 and 31;
// two zero words end the blob.
#define MC_PAD_LEFT 1u
#define MC_PAD_RIGHT 2u
#define MC_PAD_BOTH 3u
#define MC_RECORD_FLAGS_SHIFT 30
#define MC_RECORD_LEN_MASK ((1u << MC_RECORD_FLAGS_SHIFT) - 1u)
#define MC_BYTE_STARTS_FREE 1u    // begins an entry that is not left-padded
#define MC_BYTE_STARTS_PADDED 2u  // begins a left-padded entry (needs ' ' before)
#define MC_BYTE_IS_SPACE 4u       // class MC_SPACE: its spaced byte is ' '
#define MC_BYTE_IS_PUNCT 8u       // class MC_PUNCT: its spaced bytes are " v "
#define MC_BYTE_HEADER_WORDS 65
#define MC_BYTES_SEED 0x4f1bbcdcbfa53e0bull

// Continuation bytes announced by a UTF-8 lead byte (0 for ASCII and for any
// byte that cannot lead a character).
MC_FN int mc_utf8_tail(mc_u8 b) {
  if (b < 0xC0) return 0;
  if (b < 0xE0) return 1;
  if (b < 0xF0) return 2;
  return b < 0xF8 ? 3 : 0;
}

MC_FN mc_u64 mc_fnv_byte(mc_u64 h, mc_u8 b) { return (h ^ (mc_u64)b) * MC_FNV_PRIME; }

// Table key of a byte prefix from its running FNV-1a hash.
MC_FN mc_u64 mc_byte_key(mc_u64 fnv) { return mc_fmix64(fnv ^ MC_BYTES_SEED); }

// The table of MC_BYTE_* flags, one byte per byte value (byte blob words 1..64).
MC_FN const mc_u8* mc_byte_flag_table(const mc_i32* byte_blob) {
  return (const mc_u8*)(byte_blob + 1);
}

// The MC_BYTE_STARTS_* flags that let an entry begin at a spaced byte, given
// whether a space precedes it (0 or 1): any, or only MC_BYTE_STARTS_FREE.
MC_FN mc_u32 mc_starts_mask(mc_u32 after_space) {
  return MC_BYTE_STARTS_FREE | (after_space * MC_BYTE_STARTS_PADDED);
}

// spacing(text) read byte by byte, never built. A plain value: copying it
// forks the stream.
struct McSpacedCursor {
  const mc_u8* text;
  mc_i64 n;
  mc_i64 i;  // the text byte being read; -1 and n: spacing()'s outer spaces
  int part;  // for a wrapped punctuation c, which byte of " c " comes next
};

// The cursor at byte `part` of text byte i's spaced form (i = -1 and i = n:
// spacing()'s outer spaces).
MC_FN McSpacedCursor mc_spaced_at(const mc_u8* text, mc_i64 n, mc_i64 i, int part) {
  McSpacedCursor c;
  c.text = text;
  c.n = n;
  c.i = i;
  c.part = part;
  return c;
}

// The next byte of spacing(text), or -1 past its end.
MC_FN int mc_spaced_next(McSpacedCursor* c) {
  const mc_i64 i = c->i;
  if (i < 0 || i == c->n) {
    ++c->i;
    return ' ';
  }
  if (i > c->n) return -1;
  const mc_u8 b = c->text[i];
  const int cls = mc_byte_class(b);
  if (cls == MC_PUNCT) {
    const int part = c->part;
    c->part = part == 2 ? 0 : part + 1;
    c->i += part == 2;
    return part == 1 ? (int)b : ' ';
  }
  ++c->i;
  return cls == MC_SPACE ? ' ' : (int)b;
}

// Reads one character of spacing(text) into the FNV-1a hash *h; returns its
// byte count, or 0 when spacing(text) ends first.
MC_FN int mc_spaced_char(McSpacedCursor* c, mc_u64* h) {
  int b = mc_spaced_next(c);
  if (b < 0) return 0;
  const int width = 1 + mc_utf8_tail((mc_u8)b);
  for (int k = 1;; ++k) {
    *h = mc_fnv_byte(*h, (mc_u8)b);
    if (k == width) return width;
    b = mc_spaced_next(c);
    if (b < 0) return 0;
  }
}

// Whether the next `len` bytes of spacing(text) from `c` are e[0..len).
MC_FN int mc_spaced_equal(McSpacedCursor c, const mc_u8* e, mc_i64 len) {
  for (mc_i64 k = 0; k < len; ++k)
    if (mc_spaced_next(&c) != (int)e[k]) return 0;
  return 1;
}

// ------------------------------------------------------------- signature ---
// Bump when the table, filter or record layout changes in a way the values
// below do not show.
// 3: two-word slots, inline entries of up to 8 bytes; 4: the word-wise token hash
#define MC_INDEX_LAYOUT 4

// A value that changes with every byte class, hash function and layout
// constant a built index depends on. The index builder stores it; the CPU
// cache is keyed by it and the GPU backend compares the device's value with
// it, so an index is never read by code that hashes differently (a stale
// cache, or an editable install whose extension was not rebuilt).
MC_FN mc_u64 mc_index_signature() {
  mc_u64 h = MC_NGRAM_SEED;
  for (int c = 0; c < 256; ++c) h = h * 31u + (mc_u64)mc_byte_class((mc_u8)c);
  const mc_u8 probe[8] = {'m', 'e', 't', 'a', 'c', 'l', 'i', 'p'};
  for (int len = 0; len <= 8; ++len) h = mc_ngram_extend(h, mc_token_hash(probe, len));
  h ^= mc_filter_word(h, 0xffffffull) ^ mc_filter_bits(h);
  for (int b = 0xBF; b <= 0xFF; b += 8) h = h * 31u + (mc_u64)mc_utf8_tail((mc_u8)b);
  h = mc_byte_key(mc_fnv_byte(h, 'w')) ^ ((mc_u64)MC_RECORD_FLAGS_SHIFT << 48) ^
      ((mc_u64)MC_BYTE_HEADER_WORDS << 52);
  h ^= ((mc_u64)MC_INDEX_LAYOUT << 56) ^ ((mc_u64)MC_FILTER_SLOTS_PER_WORD << 40) ^
       ((mc_u64)MC_SLOT_PAYLOAD_BITS << 32) ^ ((mc_u64)MC_SLOT_WORDS << 60) ^
       mc_slot_pack(h, 12345u, MC_SLOT_ENTRY | MC_SLOT_INLINE);
  return mc_fmix64(h);
}
