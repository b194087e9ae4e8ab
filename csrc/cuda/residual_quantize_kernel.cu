// Fused nearest-code residual quantization on the GPU (math: csrc/cpu/residual_quantize_kernel.h).
//
// One thread owns one row: its residual lives in registers (kDim floats, kDim = the padded
// latent width), so a row is read once and nothing of size [B, N] is ever written. A block of
// kThreads rows walks each codebook in tiles staged in shared memory; every thread of a warp
// reads the same code at the same time, which shared memory serves as a broadcast. Distances are
// ranked as ||e||^2 - 2 r.e in float32 with plain FMAs (no TF32), ties to the lowest index.
#include <cfloat>

#include "device_math.cuh"
#include "launch.h"

namespace letter_fast {
namespace cuda {
namespace {

constexpr int kThreads = 128;

// kDim: padded width (multiple of 4, >= d); kTile: codes per shared-memory tile.
template <typename T, int kDim, int kTile>
__global__ void __launch_bounds__(kThreads)
    residual_quantize_kernel(const T* __restrict__ z, int64_t stride_row, int64_t stride_col, int64_t B,
              const float* __restrict__ codebooks, const float* __restrict__ sq_norms, int L,
              int N, int d, int64_t* __restrict__ codes, T* __restrict__ z_hat) {
  __shared__ __align__(16) float tile[kTile * kDim];
  __shared__ float tile_norms[kTile];

  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = row < B;

  float r[kDim];
#pragma unroll
  for (int k = 0; k < kDim; ++k)
    r[k] = (active && k < d) ? to_float(z[row * stride_row + k * stride_col]) : 0.0f;

  for (int l = 0; l < L; ++l) {
    const float* cb = codebooks + static_cast<int64_t>(l) * N * d;
    float best = FLT_MAX;
    int best_index = 0;
    bool found = false;
    for (int n0 = 0; n0 < N; n0 += kTile) {
      const int count = min(kTile, N - n0);
      __syncthreads();  // the previous tile is no longer read
      for (int i = threadIdx.x; i < kTile * kDim; i += kThreads) {
        const int n = i / kDim, k = i % kDim;
        tile[i] = (n < count && k < d) ? cb[static_cast<int64_t>(n0 + n) * d + k] : 0.0f;
      }
      for (int n = threadIdx.x; n < kTile; n += kThreads)
        tile_norms[n] = n < count ? sq_norms[static_cast<int64_t>(l) * N + n0 + n] : 0.0f;
      __syncthreads();
      for (int n = 0; n < count; ++n) {
        const float dist = tile_norms[n] - 2.0f * dot<kDim>(r, tile + n * kDim);
        // Strict '<' with n increasing keeps the lowest index among equal distances.
        if (!found || dist < best) {
          best = dist;
          best_index = n0 + n;
          found = true;
        }
      }
    }
    if (active) {
      codes[row * L + l] = best_index;
      const float* e = cb + static_cast<int64_t>(best_index) * d;
#pragma unroll
      for (int k = 0; k < kDim; ++k)
        if (k < d) r[k] -= e[k];
    }
  }
  if (!active) return;
  // z_hat = sum_l e_{l, c_l}, summed in float32 in level order (not z - r, which rounds differently).
  for (int k = 0; k < d; ++k) {
    float sum = 0.0f;
    for (int l = 0; l < L; ++l)
      sum += codebooks[(static_cast<int64_t>(l) * N + codes[row * L + l]) * d + k];
    z_hat[row * d + k] = from_float<T>(sum);
  }
}

template <typename T, int kDim>
cudaError_t launch_for_width(const T* z, int64_t stride_row, int64_t stride_col, int64_t B,
                             const float* codebooks, const float* sq_norms, int L, int N, int d,
                             int64_t* codes, T* z_hat, cudaStream_t stream) {
  // Keep one tile at <= 16 KiB of shared memory whatever the width.
  constexpr int kTile = kDim >= 128 ? 4096 / kDim : 32;
  const int64_t blocks = (B + kThreads - 1) / kThreads;
  residual_quantize_kernel<T, kDim, kTile><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      z, stride_row, stride_col, B, codebooks, sq_norms, L, N, d, codes, z_hat);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const void* z, int64_t stride_row, int64_t stride_col, int64_t B,
                         const float* codebooks, const float* sq_norms, int L, int N, int d,
                         int64_t* codes, void* z_hat, cudaStream_t stream) {
  const T* zt = static_cast<const T*>(z);
  T* out = static_cast<T*>(z_hat);
#define LETTER_FAST_RQ_WIDTH(W)                                                             \
  if (d <= W)                                                                               \
    return launch_for_width<T, W>(zt, stride_row, stride_col, B, codebooks, sq_norms, L, N, \
                                  d, codes, out, stream);
  LETTER_FAST_RQ_WIDTH(8)
  LETTER_FAST_RQ_WIDTH(16)
  LETTER_FAST_RQ_WIDTH(32)
  LETTER_FAST_RQ_WIDTH(64)
  LETTER_FAST_RQ_WIDTH(128)
  LETTER_FAST_RQ_WIDTH(256)
#undef LETTER_FAST_RQ_WIDTH
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t residual_quantize(ElementType type, const void* z, int64_t stride_row,
                              int64_t stride_col, int64_t B, const float* codebooks,
                              const float* sq_norms, int64_t L, int64_t N, int64_t d,
                              int64_t* codes, void* z_hat, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  if (d < 1 || d > kRqMaxDim || N < 1 || L < 1 || N > INT32_MAX || L > INT32_MAX)
    return cudaErrorInvalidValue;
  const int Li = static_cast<int>(L), Ni = static_cast<int>(N), di = static_cast<int>(d);
  switch (type) {
    case ElementType::kFloat32:
      return launch_typed<float>(z, stride_row, stride_col, B, codebooks, sq_norms, Li, Ni, di,
                                 codes, z_hat, stream);
    case ElementType::kFloat16:
      return launch_typed<__half>(z, stride_row, stride_col, B, codebooks, sq_norms, Li, Ni, di,
                                  codes, z_hat, stream);
    case ElementType::kBFloat16:
      return launch_typed<__nv_bfloat16>(z, stride_row, stride_col, B, codebooks, sq_norms, Li,
                                         Ni, di, codes, z_hat, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace letter_fast
