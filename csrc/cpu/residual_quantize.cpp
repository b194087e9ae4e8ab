// CPU and Meta implementations of letter_fast::residual_quantize (schema in csrc/letter_fast.cpp).
// Thin launcher: argument checks that protect memory safety, dtype dispatch, then residual_quantize_kernel.h.
// User-facing validation with friendly messages lives in letter_fast/ops/residual_quantize.py.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "isa/dispatch.h"  // kernels: residual_quantize_kernel.h, one variant per ISA

namespace letter_fast {
namespace {

void check_shapes(const at::Tensor& z, const at::Tensor& codebooks) {
  TORCH_CHECK(z.dim() == 2, "residual_quantize: z must be [B, d], got ", z.sizes());
  TORCH_CHECK(codebooks.dim() == 3, "residual_quantize: codebooks must be [L, N, d], got ",
              codebooks.sizes());
  TORCH_CHECK(codebooks.size(2) == z.size(1), "residual_quantize: z has d=", z.size(1),
              " but codebooks have d=", codebooks.size(2));
  TORCH_CHECK(codebooks.size(0) > 0 && codebooks.size(1) > 0,
              "residual_quantize: codebooks must have L > 0 levels and N > 0 codes, got ",
              codebooks.sizes());
}

std::tuple<at::Tensor, at::Tensor> residual_quantize_cpu(const at::Tensor& z,
                                                         const at::Tensor& codebooks) {
  check_shapes(z, codebooks);
  TORCH_CHECK(z.device().is_cpu() && codebooks.device().is_cpu(),
              "residual_quantize (cpu): z and codebooks must be CPU tensors");
  const int64_t B = z.size(0), d = z.size(1), L = codebooks.size(0), N = codebooks.size(1);
  TORCH_CHECK(N <= std::numeric_limits<int32_t>::max(), "residual_quantize: N too large");
  auto codes = at::empty({B, L}, z.options().dtype(at::kLong));
  auto z_hat = at::empty({B, d}, z.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0) return {codes, z_hat};

  const auto cb = codebooks.to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(),
                                  "residual_quantize_cpu", [&] {
    cpu_isa::dispatch([&](auto k) {
      k.residual_quantize(z.data_ptr<scalar_t>(), z.stride(0), z.stride(1), B,
                          cb.data_ptr<float>(), L, N, d, codes.data_ptr<int64_t>(),
                          z_hat.data_ptr<scalar_t>());
    });
  });
  return {codes, z_hat};
}

// Shapes only: lets torch.compile / FakeTensor trace through the op.
std::tuple<at::Tensor, at::Tensor> residual_quantize_meta(const at::Tensor& z,
                                                          const at::Tensor& codebooks) {
  check_shapes(z, codebooks);
  return {at::empty({z.size(0), codebooks.size(0)}, z.options().dtype(at::kLong)),
          at::empty({z.size(0), z.size(1)}, z.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CPU, m) { m.impl("residual_quantize", &residual_quantize_cpu); }
TORCH_LIBRARY_IMPL(letter_fast, Meta, m) { m.impl("residual_quantize", &residual_quantize_meta); }

}  // namespace letter_fast
