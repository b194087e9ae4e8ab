// CPU and Meta implementations of letter_fast::beam_attention (schema in csrc/letter_fast.cpp).
// Thin launcher: shape, dtype and index-range checks (they guard the kernel's memory reads), then
// beam_attention_kernel.h. The Python API and the reference: letter_fast/ops/beam_attention.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "isa/dispatch.h"  // kernels: beam_attention_kernel.h, one variant per ISA

namespace letter_fast {
namespace {

// rows, heads, d_kv of the call; checks what both implementations rely on.
std::tuple<int64_t, int64_t, int64_t> check_args(at::TensorList qkv, const at::Tensor& anc, const at::Tensor& bias) {
  TORCH_CHECK(!qkv.empty(), "beam_attention: qkv needs at least the current step's projections");
  const auto& cur = qkv.back();
  TORCH_CHECK(cur.dim() == 4 && cur.size(1) == 3, "beam_attention: qkv[p] must be [rows_p, 3, H, d_kv], got ",
              cur.sizes());
  const int64_t t = static_cast<int64_t>(qkv.size()) - 1, rows = cur.size(0), H = cur.size(2), dk = cur.size(3);
  for (const auto& x : qkv) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == 3 && x.size(2) == H && x.size(3) == dk,
                "beam_attention: every qkv[p] must be [rows_p, 3, ", H, ", ", dk, "], got ", x.sizes());
    TORCH_CHECK(x.scalar_type() == cur.scalar_type(), "beam_attention: qkv steps differ in dtype");
  }
  TORCH_CHECK(anc.dim() == 2 && anc.size(0) == t && anc.size(1) == rows && anc.scalar_type() == at::kLong,
              "beam_attention: anc must be int64 [", t, ", ", rows, "], got ", anc.scalar_type(), " ", anc.sizes());
  TORCH_CHECK(bias.dim() == 2 && bias.size(0) == H && bias.size(1) == t + 1,
              "beam_attention: bias must be [", H, ", ", t + 1, "], got ", bias.sizes());
  return {rows, H, dk};
}

template <typename T>
void run(at::TensorList qkv, const at::Tensor& anc, const at::Tensor& bias, int64_t rows, int64_t H, int64_t dk,
         at::Tensor& out, std::vector<at::Tensor>& keep) {
  std::vector<const T*> ptrs;
  for (const auto& x : qkv) {
    keep.push_back(x.contiguous());
    ptrs.push_back(reinterpret_cast<const T*>(keep.back().data_ptr()));
  }
  cpu_isa::dispatch([&](auto k) {
    k.beam_attention(ptrs, anc.data_ptr<int64_t>(), bias.data_ptr<float>(), rows, H, dk,
                     reinterpret_cast<T*>(out.data_ptr()));
  });
}

at::Tensor beam_attention_cpu(at::TensorList qkv, const at::Tensor& anc_in, const at::Tensor& bias_in) {
  const auto [rows, H, dk] = check_args(qkv, anc_in, bias_in);
  const auto dtype = qkv.back().scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "beam_attention (cpu): float32 or bfloat16, got ", dtype);
  const auto anc = anc_in.contiguous();
  const auto bias = bias_in.to(at::kFloat).contiguous();
  // Ancestor rows index earlier steps' projections: out-of-range would read outside them.
  for (int64_t p = 0; p < anc.size(0); ++p) {
    if (rows == 0) break;
    const auto [lo, hi] = at::aminmax(anc[p]);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < qkv[p].size(0), "beam_attention: anc[", p,
                "] must index the ", qkv[p].size(0), " rows of qkv[", p, "]");
  }
  auto out = at::empty({rows, H * dk}, qkv.back().options());
  if (rows == 0) return out;
  std::vector<at::Tensor> keep;
  if (dtype == at::kFloat)
    run<float>(qkv, anc, bias, rows, H, dk, out, keep);
  else
    run<c10::BFloat16>(qkv, anc, bias, rows, H, dk, out, keep);
  return out;
}

at::Tensor beam_attention_meta(at::TensorList qkv, const at::Tensor& anc, const at::Tensor& bias) {
  const auto [rows, H, dk] = check_args(qkv, anc, bias);
  return at::empty({rows, H * dk}, qkv.back().options());
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CPU, m) { m.impl("beam_attention", &beam_attention_cpu); }
TORCH_LIBRARY_IMPL(letter_fast, Meta, m) { m.impl("beam_attention", &beam_attention_meta); }

}  // namespace letter_fast
