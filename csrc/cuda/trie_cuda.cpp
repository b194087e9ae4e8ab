// CUDA implementation of letter_fast::trie_step: checks, dtype mapping, scratch, stream, then the
// plain kernel in trie_kernel.cu. Built only when the extension is compiled with CUDA.
// (trie_walk on CUDA tensors runs the vectorized PyTorch walk; see letter_fast/genrec/beam_search.py.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "launch.h"

namespace letter_fast {
namespace {

cuda::ElementType lp_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::ElementType::kFloat32;
    case at::kHalf: return cuda::ElementType::kFloat16;
    case at::kBFloat16: return cuda::ElementType::kBFloat16;
    default: TORCH_CHECK(false, "trie_step (cuda): log_probs must be float32, float16 or bfloat16, got ", t);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> trie_step_cuda(
    const at::Tensor& node, const at::Tensor& log_probs, const at::Tensor& scores,
    const at::Tensor& child_ptr, const at::Tensor& child_code, int64_t beams_per_query, int64_t k) {
  TORCH_CHECK(log_probs.dim() == 2, "trie_step (cuda): log_probs must be [rows, N], got ", log_probs.sizes());
  const int64_t R = log_probs.size(0), N = log_probs.size(1);
  TORCH_CHECK(beams_per_query >= 1 && R % beams_per_query == 0 && k >= 1,
              "trie_step (cuda): rows must be a multiple of beams_per_query >= 1 and k >= 1");
  TORCH_CHECK(node.dim() == 1 && node.size(0) == R && node.scalar_type() == at::kLong,
              "trie_step (cuda): node must be int64 [rows]");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == R && scores.scalar_type() == at::kFloat,
              "trie_step (cuda): scores must be float32 [rows]");
  TORCH_CHECK(child_ptr.scalar_type() == at::kInt && child_ptr.dim() == 1,
              "trie_step (cuda): child_ptr must be int32");
  TORCH_CHECK(child_code.dim() == 1 &&
                  (child_code.scalar_type() == at::kShort || child_code.scalar_type() == at::kInt),
              "trie_step (cuda): child_code must be int16 or int32");
  TORCH_CHECK(log_probs.is_cuda(), "trie_step (cuda): log_probs must be a CUDA tensor");
  for (const auto* t : {&node, &scores, &child_ptr, &child_code}) {
    TORCH_CHECK(t->device() == log_probs.device(), "trie_step (cuda): all inputs must be on ", log_probs.device());
  }
  TORCH_CHECK(beams_per_query * N < (int64_t{1} << 32), "trie_step (cuda): beams_per_query * N must be < 2^32");
  const c10::cuda::CUDAGuard guard(log_probs.device());
  const int64_t Q = R / beams_per_query;
  auto parent = at::empty({Q, k}, node.options());
  auto code = at::empty({Q, k}, node.options());
  auto child = at::empty({Q, k}, node.options());
  auto score = at::empty({Q, k}, scores.options());
  if (Q == 0) return {parent, code, child, score};
  const auto node_c = node.contiguous(), scores_c = scores.contiguous();
  const auto ptr_c = child_ptr.contiguous(), code_c = child_code.contiguous();
  const int64_t scratch_elems = cuda::trie_step_scratch_elems(Q, beams_per_query, N);
  at::Tensor scratch;
  if (scratch_elems > 0) scratch = at::empty({scratch_elems}, node.options());
  const cudaError_t err = cuda::trie_step(
      lp_type(log_probs.scalar_type()), node_c.data_ptr<int64_t>(), log_probs.data_ptr(), log_probs.stride(0),
      log_probs.stride(1), scores_c.data_ptr<float>(), ptr_c.data_ptr<int32_t>(), code_c.data_ptr(),
      code_c.scalar_type() == at::kInt, Q, beams_per_query, N, k, parent.data_ptr<int64_t>(),
      code.data_ptr<int64_t>(), child.data_ptr<int64_t>(), score.data_ptr<float>(),
      scratch_elems > 0 ? scratch.data_ptr<int64_t>() : nullptr,
      c10::cuda::getCurrentCUDAStream(log_probs.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "trie_step (cuda): kernel launch failed: ", cudaGetErrorString(err));
  return {parent, code, child, score};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CUDA, m) { m.impl("trie_step", &trie_step_cuda); }

}  // namespace letter_fast
