// Builds the probe tables of kernels/tokens.cuh for a metadata list.
//
// Token table: every matchable entry padded on both sides, with tokens
// e_1..e_k, contributes its proper prefixes e_1..e_L (L < k) as MC_SLOT_PREFIX
// keys and its full token sequence as an MC_SLOT_ENTRY key carrying its id.
// Keys are the same n-gram hashes the kernels compute for texts (tokens.cuh),
// so both sides share one hash code.
//
// Byte table: every matchable entry with an unpadded side contributes the
// byte keys of its proper character prefixes (MC_SLOT_PREFIX) and of itself
// (MC_SLOT_ENTRY), and its first byte to the blob's per-byte start flags.
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <new>
#include <unordered_map>
#include <vector>

#include "../../kernels/tokens.cuh"
#include "cpu_api.h"

namespace {

struct Table {
  std::vector<uint64_t> slots;
  std::vector<int32_t> blob;  // verification records, see tokens.cuh
  int64_t n_keys = 0;
  int64_t n_merged = 0;
};

// The id of a prefix record, and of a hot-token record (build_token_table).
constexpr int32_t kPrefix = -1;
constexpr int32_t kHotToken = -2;

struct KeyRecord {
  uint64_t hash;
  int32_t id;  // an entry id, kPrefix or kHotToken
  int32_t n_parts;  // tokens (token table) or characters (byte table) of the key
  int32_t n_bytes;  // bytes of the key (its tokens joined by single spaces, or its characters)
  bool operator<(const KeyRecord& o) const {
    return hash != o.hash ? hash < o.hash : id < o.id;
  }
};

struct KeyGroup {
  uint64_t hash;
  uint32_t flags;
  size_t first, last;  // range of entry-id records in the sorted records
  int32_t n_parts, n_bytes;  // the key's size (the smallest of its records'), see fill_table
};

struct Entries {
  const uint8_t* chars;
  const int64_t* offsets;
  const uint8_t* pad_flags;
  const uint8_t* bytes(int32_t id) const { return chars + offsets[id]; }
  int64_t size(int32_t id) const { return offsets[id + 1] - offsets[id]; }
};

// Appends the records of one token-table entry; returns its token count, or 0
// when one of its tokens can never equal a text token (the entry never matches).
int64_t add_token_entry(const uint8_t* e, int64_t len, int32_t id,
                        std::vector<KeyRecord>& out) {
  std::vector<uint64_t> chain;
  std::vector<int32_t> ends;  // the byte length of each prefix
  uint64_t h = MC_NGRAM_SEED;
  int64_t start = 0;
  for (int64_t i = 0; i <= len; ++i) {
    if (i < len && e[i] != ' ') continue;
    if (!mc_token_matchable(e + start, i - start)) return 0;
    h = mc_ngram_extend(h, mc_token_hash(e + start, i - start));
    chain.push_back(h);
    ends.push_back((int32_t)i);
    start = i + 1;
  }
  for (size_t k = 0; k + 1 < chain.size(); ++k)
    out.push_back({chain[k], -1, (int32_t)k + 1, ends[k]});
  out.push_back({chain.back(), id, (int32_t)chain.size(), ends.back()});
  return (int64_t)chain.size();
}

// Whether a byte-level entry can occur in some spacing(text), which holds no
// tab, line break or carriage return and has a space on both sides of every
// wrapped punctuation byte. (At the entry's ends that space is the padding, or
// a text byte outside the entry.)
bool bytes_matchable(const uint8_t* e, int64_t len) {
  for (int64_t i = 0; i < len; ++i) {
    const int cls = mc_byte_class(e[i]);
    if (cls == MC_SPACE && e[i] != ' ') return false;
    if (cls == MC_PUNCT && ((i > 0 && e[i - 1] != ' ') || (i + 1 < len && e[i + 1] != ' ')))
      return false;
  }
  return true;
}

// Appends the records of one byte-table entry; returns false when it never
// matches (see bytes_matchable, or bytes that do not end on a character end).
bool add_byte_entry(const uint8_t* e, int64_t len, int32_t id, std::vector<KeyRecord>& out) {
  if (len == 0 || !bytes_matchable(e, len)) return false;
  std::vector<uint64_t> chain;
  std::vector<int32_t> ends;  // the byte length of each prefix
  uint64_t h = MC_FNV_BASIS;
  for (int64_t i = 0; i < len;) {
    const int64_t end = i + 1 + mc_utf8_tail(e[i]);
    if (end > len) return false;
    for (; i < end; ++i) h = mc_fnv_byte(h, e[i]);
    chain.push_back(mc_byte_key(h));
    ends.push_back((int32_t)end);
  }
  for (size_t k = 0; k + 1 < chain.size(); ++k)
    out.push_back({chain[k], -1, (int32_t)k + 1, ends[k]});
  out.push_back({chain.back(), id, (int32_t)chain.size(), ends.back()});
  return true;
}

// Sorts the records and groups those of one key.
std::vector<KeyGroup> group_records(std::vector<KeyRecord>& records) {
  std::sort(records.begin(), records.end());
  std::vector<KeyGroup> groups;
  for (size_t i = 0; i < records.size();) {
    KeyGroup g{records[i].hash, 0, i, i, records[i].n_parts, records[i].n_bytes};
    size_t j = i;
    for (; j < records.size() && records[j].hash == g.hash; ++j) {
      if (records[j].id != kHotToken)
        g.flags |= records[j].id == kPrefix ? MC_SLOT_PREFIX : MC_SLOT_ENTRY;
      g.n_parts = std::min(g.n_parts, records[j].n_parts);
      g.n_bytes = std::min(g.n_bytes, records[j].n_bytes);
    }
    // Prefix and hot-token records (negative ids) sort first: the entry ids are the tail.
    g.first = i;
    while (g.first < j && records[g.first].id < 0) ++g.first;
    g.last = j;
    groups.push_back(g);
    i = j;
  }
  return groups;
}

// Appends the verification records of `ids` to the blob; returns their
// payload, or -1 when the blob outgrows the slot payload. `with_pad` stores
// each entry's padding flags in its length word (byte table).
int64_t append_records(const std::vector<int32_t>& ids, const Entries& entries, bool with_pad,
                       std::vector<int32_t>& blob) {
  if (blob.size() > MC_SLOT_PAYLOAD_MAX) return -1;
  const int64_t payload = (int64_t)blob.size();
  blob.push_back((int32_t)ids.size());
  for (int32_t id : ids) {
    const int64_t len = entries.size(id);
    const uint32_t pad = with_pad ? (uint32_t)entries.pad_flags[id] : 0u;
    const size_t at = blob.size();
    blob.resize(at + (size_t)mc_record_words(len), 0);
    blob[at] = id;
    blob[at + 1] = (int32_t)((uint32_t)len | (pad << MC_RECORD_FLAGS_SHIFT));
    std::memcpy(&blob[at + 2], entries.bytes(id), (size_t)len);
  }
  return payload;
}

// The second slot word of an entry the slot can hold inline (MC_SLOT_INLINE:
// 1..8 bytes, no zero byte, an id that fits the payload), else 0.
uint64_t inline_bytes(const Entries& entries, int32_t id) {
  const int64_t len = entries.size(id);
  if (len < 1 || len > 8 || (uint64_t)id > MC_SLOT_PAYLOAD_MAX) return 0;
  const uint8_t* e = entries.bytes(id);
  uint64_t word = 0;
  for (int64_t i = 0; i < len; ++i) {
    if (e[i] == 0) return 0;
    word |= (uint64_t)e[i] << (8 * i);
  }
  return word;
}

// Places the keys of `records` in a linear-probing table of at least
// `min_capacity` slots at load <= max_load, appending the records to t.blob
// (which holds the table's header words). `inline_ok`: a slot whose only
// candidate is a short entry holds it inline (token table).
// Returns false when too large.
//
// Keys are placed fewest tokens (characters) first, then fewest bytes: a key
// placed earlier is never moved from its home by a later one, and short keys
// are the ones texts probe most ("a", "of", "the": frequent words are short),
// so they are found at their home slot. Which slots are taken, and so the
// cost of a probe that finds nothing, does not depend on the order.
bool fill_table(std::vector<KeyRecord>& records, const Entries& entries, bool with_pad,
                bool inline_ok, uint64_t min_capacity, double max_load, Table& t) {
  const std::vector<KeyGroup> groups = group_records(records);
  for (const KeyGroup& g : groups) t.n_keys += g.flags != 0;
  uint64_t capacity = min_capacity;
  while ((double)capacity * max_load < (double)groups.size()) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  std::vector<int64_t> owner(capacity, -1);                   // group at each slot
  std::unordered_map<uint64_t, std::vector<size_t>> merged;  // extra groups per slot
  std::vector<size_t> order(groups.size());
  for (size_t gi = 0; gi < groups.size(); ++gi) order[gi] = gi;
  std::stable_sort(order.begin(), order.end(), [&groups](size_t a, size_t b) {
    return groups[a].n_parts != groups[b].n_parts ? groups[a].n_parts < groups[b].n_parts
                                                  : groups[a].n_bytes < groups[b].n_bytes;
  });
  for (size_t gi : order) {
    const uint64_t fp = groups[gi].hash >> 32;
    uint64_t pos = groups[gi].hash & mask;
    while (owner[pos] >= 0 && (groups[owner[pos]].hash >> 32) != fp) pos = (pos + 1) & mask;
    if (owner[pos] < 0) {
      owner[pos] = (int64_t)gi;
    } else {
      merged[pos].push_back(gi);
      ++t.n_merged;
    }
  }
  t.slots.assign(capacity * MC_SLOT_WORDS, 0);
  std::vector<int32_t> ids;
  for (uint64_t pos = 0; pos < capacity; ++pos) {
    if (owner[pos] < 0) continue;
    const KeyGroup& g = groups[owner[pos]];
    uint32_t flags = g.flags;
    ids.clear();
    for (size_t r = g.first; r < g.last; ++r) ids.push_back(records[r].id);
    auto extra = merged.find(pos);
    if (extra != merged.end()) {
      for (size_t gi : extra->second) {
        flags |= groups[gi].flags;
        for (size_t r = groups[gi].first; r < groups[gi].last; ++r) ids.push_back(records[r].id);
      }
      std::sort(ids.begin(), ids.end());
    }
    uint64_t* slot = &t.slots[pos * MC_SLOT_WORDS];
    const uint64_t inlined = inline_ok && ids.size() == 1 ? inline_bytes(entries, ids[0]) : 0;
    if (inlined != 0) {
      slot[0] = mc_slot_pack(g.hash, (uint32_t)ids[0], flags | MC_SLOT_INLINE);
      slot[1] = inlined;
      continue;
    }
    int64_t payload = 0;
    if (!ids.empty()) payload = append_records(ids, entries, with_pad, t.blob);
    if (payload < 0) return false;
    slot[0] = mc_slot_pack(g.hash, (uint32_t)payload, flags);
  }
  t.blob.push_back(0);  // tail padding for 8-byte reads (tokens.cuh)
  t.blob.push_back(0);
  return true;
}

// The token table plus its multi-token filter (tokens.cuh).
//
// Texts are made of a few tokens more than any other: the empty token (every
// ", " or ". " makes one: "a, b" is " a ,  b ") and the wrapped punctuation
// bytes. Most metadata has no entry beginning with them, so each probe for
// them would walk its home slot's cluster to an empty slot; instead each gets
// a slot of its own with no flags, placed first (at its home), where the probe
// stops at once. Such slots are not counted in n_keys.
bool build_token_table(std::vector<KeyRecord>& records, const Entries& entries,
                       int64_t max_tokens, double max_load, Table& t) {
  const uint8_t hot[] = {',', '.', ';', ':', '?', '!', '`'};
  for (int64_t len = 0; len <= (int64_t)sizeof hot; ++len) {
    const uint8_t* token = len == 0 ? hot : hot + len - 1;  // "" then each byte
    const uint64_t hash = mc_ngram_extend(MC_NGRAM_SEED, mc_token_hash(token, len == 0 ? 0 : 1));
    if ((hash >> 32) != 0) records.push_back({hash, kHotToken, 0, 0});  // (a 0 key is empty)
  }
  t.blob.push_back((int32_t)max_tokens);  // blob[0], see tokens.cuh
  if (!fill_table(records, entries, false, true, 2 * MC_FILTER_SLOTS_PER_WORD, max_load, t))
    return false;
  const uint64_t capacity = t.slots.size() / MC_SLOT_WORDS;
  const uint64_t filter = t.slots.size();
  t.slots.resize(filter + capacity / MC_FILTER_SLOTS_PER_WORD, 0);
  for (const KeyRecord& r : records) {
    if (r.n_parts < 2) continue;
    t.slots[filter + mc_filter_word(r.hash, capacity - 1)] |= mc_filter_bits(r.hash);
  }
  return true;
}

// The byte table; its blob header holds the longest entry and the per-byte
// flags (tokens.cuh). One empty slot when there are no byte-level entries.
bool build_byte_table(std::vector<KeyRecord>& records, const Entries& entries,
                      const std::vector<int32_t>& byte_ids, double max_load, Table& t) {
  t.blob.assign(MC_BYTE_HEADER_WORDS, 0);
  uint8_t starts[256] = {};  // MC_BYTE_STARTS_* of each first byte
  for (int32_t id : byte_ids) {
    t.blob[0] = std::max(t.blob[0], (int32_t)entries.size(id));
    const bool padded = entries.pad_flags[id] & MC_PAD_LEFT;
    starts[entries.bytes(id)[0]] |= padded ? MC_BYTE_STARTS_PADDED : MC_BYTE_STARTS_FREE;
  }
  auto* flags = reinterpret_cast<uint8_t*>(&t.blob[1]);
  for (int v = 0; v < 256; ++v) {
    const int cls = mc_byte_class((uint8_t)v);
    const uint8_t spaced = cls == MC_SPACE ? (uint8_t)' ' : (uint8_t)v;
    flags[v] = (uint8_t)(starts[spaced] | (cls == MC_SPACE ? MC_BYTE_IS_SPACE : 0u) |
                         (cls == MC_PUNCT ? MC_BYTE_IS_PUNCT : 0u));
  }
  return fill_table(records, entries, true, false, records.empty() ? 1 : 16, max_load, t);
}

}  // namespace

struct McBuiltIndex {
  Table tokens;
  Table bytes;
  int64_t n_unmatchable = 0;
  int64_t max_tokens = 0;
  int64_t n_byte_entries = 0;
};

extern "C" {

McBuiltIndex* mc_index_build(const uint8_t* chars, const int64_t* offsets,
                             const uint8_t* pad_flags, int64_t n_entries,
                             double max_load) try {
  auto* index = new McBuiltIndex();
  const Entries entries{chars, offsets, pad_flags};
  std::vector<KeyRecord> token_records, byte_records;
  std::vector<int32_t> byte_ids;
  token_records.reserve((size_t)n_entries * 2);
  for (int32_t id = 0; id < (int32_t)n_entries; ++id) {
    if (pad_flags[id] != MC_PAD_BOTH) {
      if (add_byte_entry(entries.bytes(id), entries.size(id), id, byte_records))
        byte_ids.push_back(id);
      else
        ++index->n_unmatchable;
      continue;
    }
    const int64_t n_tokens = add_token_entry(entries.bytes(id), entries.size(id), id,
                                             token_records);
    if (n_tokens == 0) ++index->n_unmatchable;
    index->max_tokens = std::max(index->max_tokens, n_tokens);
  }
  index->n_byte_entries = (int64_t)byte_ids.size();
  if (!build_token_table(token_records, entries, index->max_tokens, max_load, index->tokens) ||
      !build_byte_table(byte_records, entries, byte_ids, max_load, index->bytes)) {
    delete index;
    return nullptr;
  }
  return index;
} catch (const std::bad_alloc&) {
  return nullptr;
}

void mc_index_info(const McBuiltIndex* index, int64_t* out) {
  out[0] = (int64_t)index->tokens.slots.size();  // table words + filter words
  out[1] = (int64_t)index->tokens.blob.size();
  out[2] = index->tokens.n_keys;
  out[3] = index->n_unmatchable;
  out[4] = index->tokens.n_merged + index->bytes.n_merged;
  out[5] = index->max_tokens;
  out[6] = (int64_t)index->bytes.slots.size();  // table words
  out[7] = (int64_t)index->bytes.blob.size();
  out[8] = index->bytes.n_keys;
  out[9] = index->n_byte_entries;
}

void mc_index_export(const McBuiltIndex* index, uint64_t* slots, int32_t* blob,
                     uint64_t* byte_slots, int32_t* byte_blob) {
  std::copy(index->tokens.slots.begin(), index->tokens.slots.end(), slots);
  std::copy(index->tokens.blob.begin(), index->tokens.blob.end(), blob);
  std::copy(index->bytes.slots.begin(), index->bytes.slots.end(), byte_slots);
  std::copy(index->bytes.blob.begin(), index->bytes.blob.end(), byte_blob);
}

void mc_index_free(McBuiltIndex* index) { delete index; }

uint64_t mc_index_signature_host(void) { return mc_index_signature(); }

}  // extern "C"
