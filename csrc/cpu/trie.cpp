// CPU and Meta implementations of letter_fast::trie_step and letter_fast::trie_walk (schemas in
// csrc/letter_fast.cpp). Thin launchers: memory-safety checks, dtype dispatch, trie_kernel.h.
// Friendly validation lives in letter_fast/genrec/beam_search.py.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "isa/dispatch.h"  // trie_step / walk / constrain: trie_kernel.h, one variant per ISA
#include "trie_kernel.h"      // trie_build (scalar code: one copy)

namespace letter_fast {
namespace {

void check_step(const at::Tensor& node, const at::Tensor& log_probs, const at::Tensor& scores,
                const at::Tensor& child_ptr, const at::Tensor& child_code, int64_t beams_per_query,
                int64_t k) {
  TORCH_CHECK(log_probs.dim() == 2, "trie_step: log_probs must be [rows, N], got ", log_probs.sizes());
  const int64_t R = log_probs.size(0);
  TORCH_CHECK(beams_per_query >= 1 && R % beams_per_query == 0, "trie_step: rows=", R,
              " must be a multiple of beams_per_query=", beams_per_query);
  TORCH_CHECK(k >= 1, "trie_step: k must be >= 1, got ", k);
  TORCH_CHECK(node.dim() == 1 && node.size(0) == R && node.scalar_type() == at::kLong,
              "trie_step: node must be int64 [rows]");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == R && scores.scalar_type() == at::kFloat,
              "trie_step: scores must be float32 [rows]");
  TORCH_CHECK(child_ptr.dim() == 1 && child_ptr.size(0) >= 1 && child_ptr.scalar_type() == at::kInt,
              "trie_step: child_ptr must be int32 [nodes + 1]");
  TORCH_CHECK(child_code.dim() == 1 &&
                  (child_code.scalar_type() == at::kShort || child_code.scalar_type() == at::kInt),
              "trie_step: child_code must be int16 or int32 [children]");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> trie_step_cpu(
    const at::Tensor& node, const at::Tensor& log_probs, const at::Tensor& scores,
    const at::Tensor& child_ptr, const at::Tensor& child_code, int64_t beams_per_query, int64_t k) {
  check_step(node, log_probs, scores, child_ptr, child_code, beams_per_query, k);
  const int64_t R = log_probs.size(0), N = log_probs.size(1), Q = R / beams_per_query;
  auto parent = at::empty({Q, k}, node.options());
  auto code = at::empty({Q, k}, node.options());
  auto child = at::empty({Q, k}, node.options());
  auto score = at::empty({Q, k}, scores.options());
  if (Q == 0) return {parent, code, child, score};
  const auto node_c = node.contiguous(), scores_c = scores.contiguous();
  const auto ptr_c = child_ptr.contiguous(), code_c = child_code.contiguous();
  // Node ids come from the index's own step outputs; check them anyway, a bad id would read
  // out of bounds.
  const int64_t num_nodes = ptr_c.size(0) - 1;
  const int64_t* nodes = node_c.data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r) {
    TORCH_CHECK(nodes[r] < num_nodes, "trie_step: node[", r, "]=", nodes[r], " is not a node of this level (",
                num_nodes, " nodes)");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, log_probs.scalar_type(), "trie_step_cpu", [&] {
    const auto* lp = log_probs.data_ptr<scalar_t>();
    cpu_isa::dispatch([&](auto kernels) {
      if (code_c.scalar_type() == at::kShort) {
        at::parallel_for(0, Q, 4, [&](int64_t q0, int64_t q1) {
          kernels.trie_step(nodes, lp, log_probs.stride(0), log_probs.stride(1),
                            scores_c.data_ptr<float>(), ptr_c.data_ptr<int32_t>(),
                            code_c.data_ptr<int16_t>(), q0, q1, beams_per_query, N, k,
                            parent.data_ptr<int64_t>(), code.data_ptr<int64_t>(),
                            child.data_ptr<int64_t>(), score.data_ptr<float>());
        });
      } else {
        at::parallel_for(0, Q, 4, [&](int64_t q0, int64_t q1) {
          kernels.trie_step(nodes, lp, log_probs.stride(0), log_probs.stride(1),
                            scores_c.data_ptr<float>(), ptr_c.data_ptr<int32_t>(),
                            code_c.data_ptr<int32_t>(), q0, q1, beams_per_query, N, k,
                            parent.data_ptr<int64_t>(), code.data_ptr<int64_t>(),
                            child.data_ptr<int64_t>(), score.data_ptr<float>());
        });
      }
    });
  });
  return {parent, code, child, score};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> trie_step_meta(
    const at::Tensor& node, const at::Tensor& log_probs, const at::Tensor& scores,
    const at::Tensor& child_ptr, const at::Tensor& child_code, int64_t beams_per_query, int64_t k) {
  check_step(node, log_probs, scores, child_ptr, child_code, beams_per_query, k);
  const int64_t Q = log_probs.size(0) / beams_per_query;
  return {at::empty({Q, k}, node.options()), at::empty({Q, k}, node.options()),
          at::empty({Q, k}, node.options()), at::empty({Q, k}, scores.options())};
}

at::Tensor trie_walk_cpu(const at::Tensor& prefix, at::TensorList child_ptr, at::TensorList child_code) {
  TORCH_CHECK(prefix.dim() == 2 && prefix.scalar_type() == at::kLong, "trie_walk: prefix must be int64 [Q, t]");
  const int64_t Q = prefix.size(0), t = prefix.size(1);
  TORCH_CHECK(static_cast<int64_t>(child_ptr.size()) == t && static_cast<int64_t>(child_code.size()) == t,
              "trie_walk: need one child_ptr and one child_code per prefix level (", t, "), got ",
              child_ptr.size(), " and ", child_code.size());
  auto out = at::empty({Q}, prefix.options());
  if (Q == 0) return out;
  std::vector<at::Tensor> ptrs, codes;
  std::vector<const int32_t*> ptr_data;
  const bool short_codes = t == 0 || child_code[0].scalar_type() == at::kShort;
  std::vector<const int16_t*> code16;
  std::vector<const int32_t*> code32;
  for (int64_t l = 0; l < t; ++l) {
    TORCH_CHECK(child_ptr[l].scalar_type() == at::kInt && child_ptr[l].dim() == 1,
                "trie_walk: child_ptr must be int32 vectors");
    TORCH_CHECK(child_code[l].scalar_type() == (short_codes ? at::kShort : at::kInt) && child_code[l].dim() == 1,
                "trie_walk: child_code must be int16 or int32 vectors, all of one dtype");
    ptrs.push_back(child_ptr[l].contiguous());
    codes.push_back(child_code[l].contiguous());
    ptr_data.push_back(ptrs.back().data_ptr<int32_t>());
    if (short_codes) code16.push_back(codes.back().data_ptr<int16_t>());
    else code32.push_back(codes.back().data_ptr<int32_t>());
  }
  const auto* p = prefix.data_ptr<int64_t>();
  cpu_isa::dispatch([&](auto kernels) {
    at::parallel_for(0, Q, 2048, [&](int64_t i0, int64_t i1) {
      if (short_codes) {
        kernels.trie_walk(p, prefix.stride(0), prefix.stride(1), i0, i1, t, ptr_data.data(), code16.data(),
                          out.data_ptr<int64_t>());
      } else {
        kernels.trie_walk(p, prefix.stride(0), prefix.stride(1), i0, i1, t, ptr_data.data(), code32.data(),
                          out.data_ptr<int64_t>());
      }
  });
  });
  return out;
}

at::Tensor trie_walk_meta(const at::Tensor& prefix, at::TensorList, at::TensorList) {
  return at::empty({prefix.size(0)}, prefix.options());
}

std::tuple<at::Tensor, at::Tensor> trie_constrain_logits_cpu(
    const at::Tensor& input_ids, const at::Tensor& scores, int64_t start, at::TensorList child_ptr,
    at::TensorList child_code, const at::Tensor& token_of, const at::Tensor& code_of, int64_t eos) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "trie_constrain_logits: input_ids must be int64 [rows, len]");
  TORCH_CHECK(scores.dim() == 2 && scores.size(0) == input_ids.size(0), "trie_constrain_logits: scores must be [rows, vocab]");
  const int64_t rows = input_ids.size(0), vocab = scores.size(1), L = static_cast<int64_t>(child_ptr.size());
  const int64_t t = input_ids.size(1) - start;
  TORCH_CHECK(start >= 0 && t >= 0, "trie_constrain_logits: start must lie in [0, len]");
  TORCH_CHECK(L >= 1 && static_cast<int64_t>(child_code.size()) == L, "trie_constrain_logits: one CSR per level");
  TORCH_CHECK(token_of.dim() == 2 && token_of.size(0) == L && token_of.scalar_type() == at::kLong &&
                  code_of.dim() == 2 && code_of.size(0) == L && code_of.scalar_type() == at::kLong,
              "trie_constrain_logits: token_of [L, N] and code_of [L, vocab] must be int64");
  TORCH_CHECK(eos >= 0 && eos < vocab, "trie_constrain_logits: eos outside the vocab");
  const auto tok_c = token_of.contiguous(), code_c = code_of.contiguous();
  TORCH_CHECK(tok_c.numel() == 0 || (tok_c.min().item<int64_t>() >= 0 && tok_c.max().item<int64_t>() < vocab),
              "trie_constrain_logits: code token ids must lie in [0, vocab=", vocab, ")");
  const auto ids_c = input_ids.contiguous();
  const auto sc = scores.stride(1) == 1 ? scores : scores.contiguous();
  auto out = at::empty({rows, vocab}, scores.options().memory_format(at::MemoryFormat::Contiguous));
  auto dead = at::empty({rows}, scores.options().dtype(at::kBool));
  if (rows == 0) return {out, dead};
  const bool short_codes = child_code[0].scalar_type() == at::kShort;
  std::vector<at::Tensor> keep;
  std::vector<const int32_t*> ptrs;
  std::vector<const int16_t*> c16;
  std::vector<const int32_t*> c32;
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK(child_ptr[l].scalar_type() == at::kInt && child_code[l].scalar_type() == (short_codes ? at::kShort : at::kInt),
                "trie_constrain_logits: child_ptr int32, child_code int16/int32 (one dtype)");
    keep.push_back(child_ptr[l].contiguous());
    ptrs.push_back(keep.back().data_ptr<int32_t>());
    keep.push_back(child_code[l].contiguous());
    if (short_codes) c16.push_back(keep.back().data_ptr<int16_t>());
    else c32.push_back(keep.back().data_ptr<int32_t>());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "trie_constrain_logits", [&] {
    cpu_isa::dispatch([&](auto kernels) {
      at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
        if (short_codes) {
          kernels.trie_constrain_logits(
              ids_c.data_ptr<int64_t>(), ids_c.size(1), r0, r1, start, t, L, ptrs.data(), c16.data(),
              tok_c.data_ptr<int64_t>(), tok_c.size(1), code_c.data_ptr<int64_t>(), code_c.size(1), eos,
              sc.data_ptr<scalar_t>(), sc.stride(0), vocab, out.data_ptr<scalar_t>(), dead.data_ptr<bool>());
        } else {
          kernels.trie_constrain_logits(
              ids_c.data_ptr<int64_t>(), ids_c.size(1), r0, r1, start, t, L, ptrs.data(), c32.data(),
              tok_c.data_ptr<int64_t>(), tok_c.size(1), code_c.data_ptr<int64_t>(), code_c.size(1), eos,
              sc.data_ptr<scalar_t>(), sc.stride(0), vocab, out.data_ptr<scalar_t>(), dead.data_ptr<bool>());
        }
    });
    });
  });
  return {out, dead};
}

template <typename T>
at::Tensor to_tensor(const std::vector<T>& v, at::ScalarType type) {
  auto t = at::empty({static_cast<int64_t>(v.size())}, at::TensorOptions().dtype(type));
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return t;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor> trie_build_cpu(
    const at::Tensor& codes, at::IntArrayRef num_codes) {
  TORCH_CHECK_VALUE(codes.dim() == 2 && codes.scalar_type() == at::kLong && codes.device().is_cpu(),
                    "trie_build: codes must be a CPU int64 [V, L] tensor");
  const int64_t V = codes.size(0), L = codes.size(1);
  TORCH_CHECK_VALUE(static_cast<int64_t>(num_codes.size()) == L && L >= 1 && V >= 1,
                    "trie_build: need V >= 1 rows and one num_codes entry per level");
  std::vector<int64_t> levels(num_codes.begin(), num_codes.end());
  for (auto n : levels) TORCH_CHECK_VALUE(n >= 1, "trie_build: num_codes must be >= 1");
  TORCH_CHECK_VALUE(cpu::packed_bits(levels) <= 63 && V < (int64_t{1} << 31),
                    "trie_build: needs sum(ceil(log2 num_codes)) <= 63 bits and V < 2^31 (use the PyTorch build)");
  const auto built = cpu::build_trie(codes.data_ptr<int64_t>(), codes.stride(0), codes.stride(1), V, levels);
  TORCH_CHECK_VALUE(built.bad_row < 0, "ItemIndex.from_codes: codes[", built.bad_row, ", ", built.bad_level, "] = ",
                    built.bad_value, " is out of range: level ", built.bad_level, " has num_codes=",
                    levels[built.bad_level], " (codes must lie in [0, ", levels[built.bad_level], "))");
  std::vector<at::Tensor> ptr, code;
  for (int64_t t = 0; t < L; ++t) {
    ptr.push_back(to_tensor(built.child_ptr[t], at::kInt));
    code.push_back(to_tensor(built.child_code[t], at::kInt));
  }
  return {to_tensor(built.order, at::kInt), ptr, code, to_tensor(built.leaf_start, at::kLong)};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CPU, m) {
  m.impl("trie_step", &trie_step_cpu);
  m.impl("trie_walk", &trie_walk_cpu);
  m.impl("trie_build", &trie_build_cpu);
  m.impl("trie_constrain_logits", &trie_constrain_logits_cpu);
}
TORCH_LIBRARY_IMPL(letter_fast, Meta, m) {
  m.impl("trie_step", &trie_step_meta);
  m.impl("trie_walk", &trie_walk_meta);
}

}  // namespace letter_fast
