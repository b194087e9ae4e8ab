// The trie ops on the CPU, free of torch headers: the trie-masked beam step, the trie walk, and
// the build of the index (end of this file).
//
// Step (math in letter_fast/ops/trie.py): query q owns the rows
// r = q*B .. q*B + B - 1 (its beams). Row r sits at trie node node[r] of level t (-1: dead), whose
// children are child_ptr[node] .. child_ptr[node + 1] - 1 with codes child_code[...] (ascending).
// Each child slot j of row r is a candidate scored
//     s = scores[r] + float(log_probs[r, code])             (float32, the same add everywhere)
// and only real children with s > -inf compete. The k best per query are returned, ordered by s
// descending and, for equal s, by the lower (local_row * N + j): the order of a stable sort over
// the dense [B, N] slot matrix, which is what the reference backend does. A size-k buffer per
// query (TopK) keeps the work at O(B * children) plus O(k) per admission; nothing of the
// catalog's size is touched.
//
// Walk: the node at level t of each prefix (c_0..c_{t-1}), by binary search of each code among
// its node's sorted children; -1 once a code is not a child.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

namespace letter_fast {
namespace cpu {

struct StepCandidate {
  float score;
  int64_t flat;  // local_row * N + slot: the tie-break, lower first
};

// "a ranks before b"
inline bool ranks_before(const StepCandidate& a, const StepCandidate& b) {
  return a.score > b.score || (a.score == b.score && a.flat < b.flat);
}

// The k kept candidates of one query, best first. Candidates arrive in ascending `flat` order (beam
// by beam, children by slot), so a newcomer whose score equals a kept one ranks after it: the
// tie-break costs nothing and a full buffer admits only s > worst. For small k a sorted array
// (one compare to reject, a short shift to insert) beats a heap, whose every admission is two
// O(log k) sifts; level 0 of a decode (one beam, N children, ~k ln(N/k) admissions) is the
// case where that shows. Large k keeps the heap: the array's O(k) insert would dominate.
class TopK {
 public:
  static constexpr int64_t kSortedMax = 64;

  explicit TopK(int64_t k) : k_(k), sorted_(k <= kSortedMax) { kept_.reserve(static_cast<size_t>(k)); }

  void clear() { kept_.clear(); }
  bool full() const { return static_cast<int64_t>(kept_.size()) == k_; }
  // Only meaningful when full(): a candidate must score above this to be kept.
  float worst() const { return sorted_ ? kept_.back().score : kept_.front().score; }

  // cand.flat exceeds every kept flat, cand.score > -inf, and a full buffer only gets cand.score > worst()
  // (the caller's one-compare reject), so the newcomer always enters and, when full, the worst leaves.
  void offer(const StepCandidate& cand) {
    if (sorted_) {
      if (full()) kept_.pop_back();
      // after every kept score >= cand.score (equal scores: the kept one has the lower flat)
      auto it = kept_.end();
      while (it != kept_.begin() && (it - 1)->score < cand.score) --it;
      kept_.insert(it, cand);
    } else if (!full()) {
      kept_.push_back(cand);
      std::push_heap(kept_.begin(), kept_.end(), ranks_before);
    } else {
      std::pop_heap(kept_.begin(), kept_.end(), ranks_before);
      kept_.back() = cand;
      std::push_heap(kept_.begin(), kept_.end(), ranks_before);
    }
  }

  // best first
  const std::vector<StepCandidate>& ranked() {
    if (!sorted_) std::sort_heap(kept_.begin(), kept_.end(), ranks_before);
    return kept_;
  }

 private:
  int64_t k_;
  bool sorted_;
  std::vector<StepCandidate> kept_;  // sorted: best first; heap: a max-heap under ranks_before, front() worst
};

// Queries [q_begin, q_end); the launcher splits queries over torch's thread pool (at::parallel_for),
// so no second OpenMP runtime spins beside torch's.
template <typename LogProb, typename Code>
void trie_step(const int64_t* node, const LogProb* log_probs, int64_t lp_stride_row, int64_t lp_stride_col,
               const float* scores, const int32_t* child_ptr, const Code* child_code, int64_t q_begin,
               int64_t q_end, int64_t beams_per_query, int64_t N, int64_t k, int64_t* out_parent,
               int64_t* out_code, int64_t* out_child, float* out_score) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  TopK top(k);
  for (int64_t q = q_begin; q < q_end; ++q) {
    top.clear();
    for (int64_t b = 0; b < beams_per_query; ++b) {
      const int64_t r = q * beams_per_query + b;
      const int64_t n = node[r];
      if (n < 0) continue;
      const float base = scores[r];
      if (!(base > neg_inf)) continue;
      const int64_t lo = child_ptr[n], hi = child_ptr[n + 1];
      const LogProb* row = log_probs + r * lp_stride_row;
      // A node with all N children (the top levels of a large catalog) has codes 0..N-1 in slot
      // order: read the row straight, without the child_code gather.
      const bool dense = hi - lo == N;
      for (int64_t c = lo; c < hi; ++c) {
        const int64_t code = dense ? c - lo : static_cast<int64_t>(child_code[c]);
        const float s = base + static_cast<float>(row[code * lp_stride_col]);
        if (!(s > neg_inf) || (top.full() && !(s > top.worst()))) continue;
        top.offer(StepCandidate{s, b * N + (c - lo)});
      }
    }
    const auto& kept = top.ranked();
    for (int64_t i = 0; i < k; ++i) {
      const int64_t o = q * k + i;
      if (i < static_cast<int64_t>(kept.size())) {
        const int64_t b = kept[i].flat / N, slot = kept[i].flat % N;
        const int64_t r = q * beams_per_query + b;
        const int64_t child = child_ptr[node[r]] + slot;
        out_parent[o] = r;
        out_code[o] = static_cast<int64_t>(child_code[child]);
        out_child[o] = child;
        out_score[o] = kept[i].score;
      } else {
        out_parent[o] = out_code[o] = out_child[o] = -1;
        out_score[o] = neg_inf;
      }
    }
  }
}

// prefix rows [i_begin, i_end) of t codes at prefix[i * stride_row + l * stride_col]; child_ptr[l] / child_code[l]
// per level; out[i] = node id at level t or -1.
template <typename Code>
void trie_walk(const int64_t* prefix, int64_t stride_row, int64_t stride_col, int64_t i_begin, int64_t i_end,
               int64_t t, const int32_t* const* child_ptr, const Code* const* child_code, int64_t* out) {
  for (int64_t i = i_begin; i < i_end; ++i) {
    int64_t n = 0;
    for (int64_t l = 0; l < t && n >= 0; ++l) {
      const int64_t code = prefix[i * stride_row + l * stride_col];
      const Code* first = child_code[l] + child_ptr[l][n];
      const Code* last = child_code[l] + child_ptr[l][n + 1];
      const Code* it = std::lower_bound(first, last, code,
                                        [](Code a, int64_t v) { return static_cast<int64_t>(a) < v; });
      n = (it != last && static_cast<int64_t>(*it) == code) ? (it - child_code[l]) : -1;
    }
    out[i] = n;
  }
}

// Hugging Face logits constraint, one pass per row (letter_fast/genrec/hf.py documents the rule):
// map the row's t generated tokens to codes (code_of[l * vocab_codes + token], -1: none), walk the
// trie, then write the output row: -inf everywhere except the allowed tokens (the node's
// children as token ids token_of[t * token_stride + code]; only EOS once t >= L or off the
// trie), which keep their input scores. dead[r] = 1 when every allowed token scores -inf.
template <typename Score, typename Code>
void trie_constrain_logits(const int64_t* ids, int64_t ids_stride, int64_t r_begin, int64_t r_end, int64_t start,
                           int64_t t,
                           int64_t L, const int32_t* const* child_ptr, const Code* const* child_code,
                           const int64_t* token_of, int64_t token_stride, const int64_t* code_of,
                           int64_t vocab_codes, int64_t eos, const Score* scores, int64_t scores_stride,
                           int64_t vocab, Score* out, bool* dead) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r = r_begin; r < r_end; ++r) {
    int64_t n = t < L ? 0 : -1;
    for (int64_t l = 0; l < t && n >= 0; ++l) {
      const int64_t tok = ids[r * ids_stride + start + l];
      const int64_t code = (tok >= 0 && tok < vocab_codes) ? code_of[l * vocab_codes + tok] : -1;
      if (code < 0) { n = -1; break; }
      const Code* first = child_code[l] + child_ptr[l][n];
      const Code* last = child_code[l] + child_ptr[l][n + 1];
      const Code* it = std::lower_bound(first, last, code,
                                        [](Code a, int64_t v) { return static_cast<int64_t>(a) < v; });
      n = (it != last && static_cast<int64_t>(*it) == code) ? (it - child_code[l]) : -1;
    }
    const Score* in = scores + r * scores_stride;
    Score* o = out + r * vocab;
    std::fill(o, o + vocab, static_cast<Score>(neg_inf));
    bool all_neg_inf = true;
    if (n >= 0) {
      for (int64_t c = child_ptr[t][n]; c < child_ptr[t][n + 1]; ++c) {
        const int64_t tok = token_of[t * token_stride + static_cast<int64_t>(child_code[t][c])];
        o[tok] = in[tok];
        all_neg_inf &= !(static_cast<float>(in[tok]) > neg_inf);
      }
    } else {
      o[eos] = in[eos];
      all_neg_inf = !(static_cast<float>(in[eos]) > neg_inf);
    }
    dead[r] = all_neg_inf;
  }
}

// ---------------------------------------------------------------------------------------------- trie build
//
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
