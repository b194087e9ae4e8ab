// CUDA implementation of letter_fast::residual_quantize: checks, dtype mapping, stream, then the
// plain kernel in residual_quantize_kernel.cu. Built only when the extension is compiled with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "launch.h"

namespace letter_fast {
namespace {

cuda::ElementType element_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::ElementType::kFloat32;
    case at::kHalf: return cuda::ElementType::kFloat16;
    case at::kBFloat16: return cuda::ElementType::kBFloat16;
    default: TORCH_CHECK(false, "residual_quantize (cuda): z must be float32, float16 or bfloat16, got ", t);
  }
}

std::tuple<at::Tensor, at::Tensor> residual_quantize_cuda(const at::Tensor& z,
                                                          const at::Tensor& codebooks) {
  TORCH_CHECK(z.dim() == 2 && codebooks.dim() == 3 && codebooks.size(2) == z.size(1),
              "residual_quantize (cuda): expected z [B, d] and codebooks [L, N, d], got ",
              z.sizes(), " and ", codebooks.sizes());
  TORCH_CHECK(z.is_cuda() && codebooks.device() == z.device(),
              "residual_quantize (cuda): z and codebooks must be on the same CUDA device");
  TORCH_CHECK(z.size(1) <= cuda::kRqMaxDim, "residual_quantize (cuda): d must be <= ",
              cuda::kRqMaxDim, ", got ", z.size(1));
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t B = z.size(0), d = z.size(1), L = codebooks.size(0), N = codebooks.size(1);
  auto codes = at::empty({B, L}, z.options().dtype(at::kLong));
  auto z_hat = at::empty({B, d}, z.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0) return {codes, z_hat};
  const auto cb = codebooks.to(at::kFloat).contiguous();
  const auto sq_norms = cb.square().sum(-1).contiguous();
  const cudaError_t err = cuda::residual_quantize(
      element_type(z.scalar_type()), z.data_ptr(), z.stride(0), z.stride(1), B,
      cb.data_ptr<float>(), sq_norms.data_ptr<float>(), L, N, d, codes.data_ptr<int64_t>(),
      z_hat.data_ptr(), c10::cuda::getCurrentCUDAStream(z.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "residual_quantize (cuda): kernel launch failed: ",
              cudaGetErrorString(err));
  return {codes, z_hat};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CUDA, m) { m.impl("residual_quantize", &residual_quantize_cuda); }

}  // namespace letter_fast
