// Host-side entry points of the plain CUDA kernels in csrc/cuda/*.cu.
// Deliberately free of torch headers: the .cu files compile with nvcc in seconds and can be
// compile-checked on machines without a GPU; the torch launchers (*_cuda.cpp) include this.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace letter_fast {
namespace cuda {

enum class ElementType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Largest latent width the residual-quantization kernel keeps in registers.
constexpr int64_t kRqMaxDim = 256;

// z: B rows (element type `type`) at z[b * stride_row + k * stride_col]; codebooks [L][N][d]
// float32 contiguous; sq_norms [L][N] float32; codes [B][L] int64; z_hat [B][d] of `type`.
cudaError_t residual_quantize(ElementType type, const void* z, int64_t stride_row,
                              int64_t stride_col, int64_t B, const float* codebooks,
                              const float* sq_norms, int64_t L, int64_t N, int64_t d,
                              int64_t* codes, void* z_hat, cudaStream_t stream);

}  // namespace cuda
}  // namespace letter_fast
