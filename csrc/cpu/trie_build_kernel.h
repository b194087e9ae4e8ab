// Item index (prefix trie) construction on the CPU, free of torch headers. Layout and meaning:
// letter_fast/genrec/item_index.py. Two passes over the V identifiers:
//
// 1. pack each identifier (c_0..c_{L-1}) into one key of bit fields, c_0 in the highest
//    (field l is ceil(log2 N_l) bits wide, so key order is lexicographic identifier order;
//    callers check the fields fit 63 bits), and sort (key, row) pairs with a stable LSD radix
//    sort over the key's significant bits (11-bit digits: 3 passes for 4 x 8-bit codes);
//    32-bit keys and rows whenever they fit, to halve the memory traffic;
// 2. one scan of the sorted keys: the highest bit where a key differs from its predecessor
//    names the first level that differs, which opens a new node on that and every deeper
//    level, in lexicographic order: exactly the CSR numbering (a node's children start at the
//    next level's current size).
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace letter_fast {
namespace cpu {

struct TrieBuild {
  std::vector<int32_t> order;                    // [V] rows in identifier order (stable)
  std::vector<std::vector<int32_t>> child_ptr;   // L vectors, level t: [n_t + 1]
  std::vector<std::vector<int32_t>> child_code;  // L vectors, level t: [n_{t+1}]
  std::vector<int64_t> leaf_start;               // [n_L] first sorted position of each identifier
  int64_t bad_row = -1, bad_level = -1, bad_value = 0;  // first out-of-range code, if any
};

inline int field_bits(int64_t n) {
  int b = 0;
  while ((int64_t{1} << b) < n) ++b;
  return b;
}

// Total bits of the packed key (callers need <= 63 for the native build).
inline int packed_bits(const std::vector<int64_t>& levels) {
  int total = 0;
  for (auto n : levels) total += field_bits(n);
  return total;
}

template <typename Key>
void radix_sort_pairs(std::vector<Key>& keys, std::vector<int32_t>& rows, int significant_bits) {
  constexpr int kDigit = 11;
  constexpr size_t kBuckets = size_t{1} << kDigit;
  const size_t n = keys.size();
  std::vector<Key> keys_tmp(n);
  std::vector<int32_t> rows_tmp(n);
  std::vector<size_t> count(kBuckets);
  for (int shift = 0; shift < significant_bits; shift += kDigit) {
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) ++count[(keys[i] >> shift) & (kBuckets - 1)];
    size_t sum = 0;
    for (auto& c : count) { const size_t c0 = c; c = sum; sum += c0; }
    for (size_t i = 0; i < n; ++i) {
      const size_t dst = count[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_tmp[dst] = keys[i];
      rows_tmp[dst] = rows[i];
    }
    keys.swap(keys_tmp);
    rows.swap(rows_tmp);
  }
}

template <typename Key>
void build_trie_keys(const int64_t* codes, int64_t stride_row, int64_t stride_col, int64_t V,
                     const std::vector<int64_t>& levels, TrieBuild& out) {
  const int64_t L = static_cast<int64_t>(levels.size());
  std::vector<int> shift(L), width(L);
  int total = 0;
  for (int64_t l = L - 1; l >= 0; --l) { shift[l] = total; width[l] = field_bits(levels[l]); total += width[l]; }
  // level_of_bit[b]: the level whose field holds bit b (fields of width 0 hold none)
  std::vector<int64_t> level_of_bit(64, 0);
  for (int64_t l = 0; l < L; ++l)
    for (int b = shift[l]; b < shift[l] + width[l]; ++b) level_of_bit[b] = l;

  std::vector<Key> keys(V);
  out.order.resize(V);
  for (int64_t v = 0; v < V; ++v) {
    Key key = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t c = codes[v * stride_row + l * stride_col];
      if (c < 0 || c >= levels[l]) {
        out.bad_row = v; out.bad_level = l; out.bad_value = c;
        return;
      }
      key |= static_cast<Key>(c) << shift[l];
    }
    keys[v] = key;
    out.order[v] = static_cast<int32_t>(v);
  }
  radix_sort_pairs(keys, out.order, total);

  out.child_ptr.assign(L, {});
  out.child_code.assign(L, {});
  out.child_ptr[0].push_back(0);  // the root's children start at node 0 of level 1
  for (int64_t i = 0; i < V; ++i) {
    int64_t d = 0;  // first level whose code differs from the previous identifier (L: same identifier)
    if (i > 0) {
      const uint64_t diff = static_cast<uint64_t>(keys[i - 1] ^ keys[i]);
      d = diff ? level_of_bit[63 - __builtin_clzll(diff)] : L;
    }
    for (int64_t t = d; t < L; ++t) {  // a new node of depth t + 1
      const int32_t code = static_cast<int32_t>((keys[i] >> shift[t]) & ((Key{1} << width[t]) - 1));
      out.child_code[t].push_back(code);
      if (t + 1 < L) out.child_ptr[t + 1].push_back(static_cast<int32_t>(out.child_code[t + 1].size()));
    }
    if (d < L) out.leaf_start.push_back(i);
  }
  for (int64_t t = 0; t < L; ++t) out.child_ptr[t].push_back(static_cast<int32_t>(out.child_code[t].size()));
}

// codes: [V][L] at codes[v * stride_row + l * stride_col]; levels: N_l. Requires V < 2^31 and
// packed_bits(levels) <= 63.
inline TrieBuild build_trie(const int64_t* codes, int64_t stride_row, int64_t stride_col, int64_t V,
                            const std::vector<int64_t>& levels) {
  if (V >= (int64_t{1} << 31) || packed_bits(levels) > 63) throw std::length_error("build_trie: too large");
  TrieBuild out;
  if (packed_bits(levels) <= 32) build_trie_keys<uint32_t>(codes, stride_row, stride_col, V, levels, out);
  else build_trie_keys<uint64_t>(codes, stride_row, stride_col, V, levels, out);
  return out;
}

}  // namespace cpu
}  // namespace letter_fast
