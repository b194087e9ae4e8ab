// Trie-masked beam step and trie walk on the CPU, free of torch headers.
//
// Step (math in letter_fast/genrec/beam_search.py): query q owns the rows
// r = q*B .. q*B + B - 1 (its beams). Row r sits at trie node node[r] of level t (-1: dead), whose
// children are child_ptr[node] .. child_ptr[node + 1] - 1 with codes child_code[...] (ascending).
// Each child slot j of row r is a candidate scored
//     s = scores[r] + float(log_probs[r, code])             (float32, the same add everywhere)
// and only real children with s > -inf compete. The k best per query are returned, ordered by s
// descending and, for equal s, by the lower (local_row * N + j): the order of a stable sort over
// the dense [B, N] slot matrix, which is what the reference backend does. A size-k heap per
// query keeps the work at O(B * children * log k); nothing of the catalog's size is touched.
//
// Walk: the node at level t of each prefix (c_0..c_{t-1}), by binary search of each code among
// its node's sorted children; -1 once a code is not a child.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
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

// Queries [q_begin, q_end); the launcher splits queries over torch's thread pool (at::parallel_for),
// so no second OpenMP runtime spins beside torch's.
template <typename LogProb, typename Code>
void trie_step(const int64_t* node, const LogProb* log_probs, int64_t lp_stride_row, int64_t lp_stride_col,
               const float* scores, const int32_t* child_ptr, const Code* child_code, int64_t q_begin,
               int64_t q_end, int64_t beams_per_query, int64_t N, int64_t k, int64_t* out_parent,
               int64_t* out_code, int64_t* out_child, float* out_score) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  {
    std::vector<StepCandidate> heap;  // a max-heap under ranks_before: front() is the worst kept
    heap.reserve(static_cast<size_t>(k));
    for (int64_t q = q_begin; q < q_end; ++q) {
      heap.clear();
      for (int64_t b = 0; b < beams_per_query; ++b) {
        const int64_t r = q * beams_per_query + b;
        const int64_t n = node[r];
        if (n < 0) continue;
        const float base = scores[r];
        if (!(base > neg_inf)) continue;
        const int64_t lo = child_ptr[n], hi = child_ptr[n + 1];
        const LogProb* row = log_probs + r * lp_stride_row;
        for (int64_t c = lo; c < hi; ++c) {
          const float s = base + static_cast<float>(row[static_cast<int64_t>(child_code[c]) * lp_stride_col]);
          if (!(s > neg_inf)) continue;
          const StepCandidate cand{s, b * N + (c - lo)};
          if (static_cast<int64_t>(heap.size()) < k) {
            heap.push_back(cand);
            std::push_heap(heap.begin(), heap.end(), ranks_before);
          } else if (ranks_before(cand, heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), ranks_before);
            heap.back() = cand;
            std::push_heap(heap.begin(), heap.end(), ranks_before);
          }
        }
      }
      std::sort_heap(heap.begin(), heap.end(), ranks_before);  // best first
      for (int64_t i = 0; i < k; ++i) {
        const int64_t o = q * k + i;
        if (i < static_cast<int64_t>(heap.size())) {
          const int64_t b = heap[i].flat / N, slot = heap[i].flat % N;
          const int64_t r = q * beams_per_query + b;
          const int64_t child = child_ptr[node[r]] + slot;
          out_parent[o] = r;
          out_code[o] = static_cast<int64_t>(child_code[child]);
          out_child[o] = child;
          out_score[o] = heap[i].score;
        } else {
          out_parent[o] = out_code[o] = out_child[o] = -1;
          out_score[o] = neg_inf;
        }
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

}  // namespace cpu
}  // namespace letter_fast
