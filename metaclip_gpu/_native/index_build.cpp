// Builds the probe table of kernels/tokens.cuh for a metadata list.
//
// Every matchable entry with tokens e_1..e_k contributes its proper prefixes
// e_1..e_L (L < k) as MC_SLOT_PREFIX keys and its full token sequence as an
// MC_SLOT_ENTRY key carrying its id. Keys are the same n-gram hashes the
// kernels compute for texts (tokens.cuh), so both sides share one hash code.
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <new>
#include <unordered_map>
#include <vector>

#include "../../kernels/tokens.cuh"
#include "cpu_api.h"

struct McBuiltIndex {
  std::vector<uint64_t> slots;
  std::vector<int32_t> blob;  // verification records, see tokens.cuh
  int64_t n_keys = 0;
  int64_t n_unmatchable = 0;
  int64_t n_merged = 0;
  int64_t max_tokens = 0;
};

namespace {

struct KeyRecord {
  uint64_t hash;
  int32_t id;  // -1 for a prefix record
  int32_t n_tokens;
  bool operator<(const KeyRecord& o) const {
    return hash != o.hash ? hash < o.hash : id < o.id;
  }
};

struct KeyGroup {
  uint64_t hash;
  uint32_t flags;
  size_t first, last;  // range of entry-id records in the sorted records
};

// Appends the records of one entry; returns its token count, or 0 when one
// of its tokens can never equal a text token (the entry never matches).
int64_t add_entry(const uint8_t* e, int64_t len, int32_t id, std::vector<KeyRecord>& out) {
  std::vector<uint64_t> chain;
  uint64_t h = MC_NGRAM_SEED;
  int64_t start = 0;
  for (int64_t i = 0; i <= len; ++i) {
    if (i < len && e[i] != ' ') continue;
    if (!mc_token_matchable(e + start, i - start)) return 0;
    h = mc_ngram_extend(h, mc_token_hash(e + start, i - start));
    chain.push_back(h);
    start = i + 1;
  }
  for (size_t k = 0; k + 1 < chain.size(); ++k) out.push_back({chain[k], -1, (int32_t)k + 1});
  out.push_back({chain.back(), id, (int32_t)chain.size()});
  return (int64_t)chain.size();
}

}  // namespace

extern "C" {

McBuiltIndex* mc_index_build(const uint8_t* chars, const int64_t* offsets,
                             int64_t n_entries, double max_load) try {
  auto* index = new McBuiltIndex();
  std::vector<KeyRecord> records;
  records.reserve((size_t)n_entries * 2);
  for (int64_t id = 0; id < n_entries; ++id) {
    const int64_t n_tokens = add_entry(chars + offsets[id], offsets[id + 1] - offsets[id],
                                       (int32_t)id, records);
    if (n_tokens == 0) ++index->n_unmatchable;
    index->max_tokens = std::max(index->max_tokens, n_tokens);
  }
  std::sort(records.begin(), records.end());

  std::vector<KeyGroup> groups;
  for (size_t i = 0; i < records.size();) {
    KeyGroup g{records[i].hash, 0, i, i};
    size_t j = i;
    for (; j < records.size() && records[j].hash == g.hash; ++j)
      g.flags |= records[j].id < 0 ? MC_SLOT_PREFIX : MC_SLOT_ENTRY;
    // Prefix records (id -1) sort first: the entry ids are the tail.
    g.first = i;
    while (g.first < j && records[g.first].id < 0) ++g.first;
    g.last = j;
    groups.push_back(g);
    i = j;
  }
  index->n_keys = (int64_t)groups.size();

  uint64_t capacity = 2 * MC_FILTER_SLOTS_PER_WORD;
  while ((double)capacity * max_load < (double)groups.size()) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  std::vector<int64_t> owner(capacity, -1);                   // group at each slot
  std::unordered_map<uint64_t, std::vector<size_t>> merged;  // extra groups per slot
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const uint64_t fp = groups[gi].hash >> 32;
    uint64_t pos = groups[gi].hash & mask;
    while (owner[pos] >= 0 && (groups[owner[pos]].hash >> 32) != fp) pos = (pos + 1) & mask;
    if (owner[pos] < 0) {
      owner[pos] = (int64_t)gi;
    } else {
      merged[pos].push_back(gi);
      ++index->n_merged;
    }
  }

  // The table's slots, then the multi-token filter (tokens.cuh).
  index->slots.assign(capacity + capacity / MC_FILTER_SLOTS_PER_WORD, 0);
  index->blob.push_back((int32_t)index->max_tokens);  // blob[0], see tokens.cuh
  for (const KeyRecord& r : records) {
    if (r.n_tokens < 2) continue;
    index->slots[capacity + mc_filter_word(r.hash, mask)] |= mc_filter_bits(r.hash);
  }
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
    uint32_t payload = 0;
    if (!ids.empty()) {
      if (index->blob.size() > MC_SLOT_PAYLOAD_MAX) {
        delete index;
        return nullptr;
      }
      payload = (uint32_t)index->blob.size();
      index->blob.push_back((int32_t)ids.size());
      for (int32_t id : ids) {
        const int64_t len = offsets[id + 1] - offsets[id];
        const size_t at = index->blob.size();
        index->blob.resize(at + (size_t)mc_record_words(len), 0);
        index->blob[at] = id;
        index->blob[at + 1] = (int32_t)len;
        std::memcpy(&index->blob[at + 2], chars + offsets[id], (size_t)len);
      }
    }
    index->slots[pos] = mc_slot_pack(g.hash, payload, flags);
  }
  index->blob.push_back(0);  // tail padding for 8-byte reads (tokens.cuh)
  index->blob.push_back(0);
  return index;
} catch (const std::bad_alloc&) {
  return nullptr;
}

void mc_index_info(const McBuiltIndex* index, int64_t* out) {
  out[0] = (int64_t)index->slots.size();  // table slots + filter words
  out[1] = (int64_t)index->blob.size();
  out[2] = index->n_keys;
  out[3] = index->n_unmatchable;
  out[4] = index->n_merged;
  out[5] = index->max_tokens;
}

void mc_index_export(const McBuiltIndex* index, uint64_t* slots, int32_t* blob) {
  std::copy(index->slots.begin(), index->slots.end(), slots);
  std::copy(index->blob.begin(), index->blob.end(), blob);
}

void mc_index_free(McBuiltIndex* index) { delete index; }

uint64_t mc_index_signature_host(void) { return mc_index_signature(); }

}  // extern "C"
