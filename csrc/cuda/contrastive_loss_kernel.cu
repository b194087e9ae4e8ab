// Fused softmax contrastive loss on the GPU (math: csrc/cpu/contrastive_loss_kernel.h).
//
// One thread owns one output row (an anchor in the forward and anchor-gradient kernels, a
// candidate in the candidate-gradient kernel): the row lives in registers (kDim floats, the
// padded width), and so does its gradient accumulator. A block of kThreads rows walks the other
// side in tiles staged in shared memory; every thread of a warp reads the same element at the
// same time, which shared memory serves as a broadcast. The forward pass keeps an online
// log-sum-exp per row (running max and sum) and writes one value per row; the backward kernels
// recompute the logits. Nothing of size [B, M] is stored, no atomics are used, and results are
// deterministic. float32 FMAs throughout (no TF32).
//
// lse is written in double and read back as two floats, lse_hi + lse_lo, forming
// (s - lse_hi) - lse_lo: float32 rounding of a large lse (|s| / tau at low temperatures) would
// scale a row's softmax weights by a common 1 + delta and cost the gradients 20-30x float32
// accuracy where one candidate dominates (why in detail: csrc/cpu/contrastive_loss_kernel.h).
#include <cfloat>
#include <cstdint>

#include "device_math.cuh"
#include "launch.h"

namespace letter_fast {
namespace cuda {
namespace {

constexpr int kThreads = 64;  // rows per block: small blocks keep more SMs busy at B ~ 1e4

template <int kDim>
struct Tile {
  // Other-side rows staged per step: at most 16 KiB of shared memory whatever the width.
  static constexpr int kRows = kDim >= 128 ? 4096 / kDim : 32;
};

template <int kDim>
__device__ __forceinline__ void load_row(const float* __restrict__ x, int64_t row, int d,
                                         bool active, float (&r)[kDim]) {
#pragma unroll
  for (int k = 0; k < kDim; ++k) r[k] = (active && k < d) ? x[row * d + k] : 0.0f;
}

// Stages rows [first, first + count) of x ([n][d]) into tile ([kRows][kDim], zero padded).
template <int kDim, int kRows>
__device__ __forceinline__ void stage(const float* __restrict__ x, int64_t first, int count,
                                      int d, float* tile) {
  for (int i = threadIdx.x; i < kRows * kDim; i += kThreads) {
    const int n = i / kDim, k = i % kDim;
    tile[i] = (n < count && k < d) ? x[(first + n) * d + k] : 0.0f;
  }
}

template <int kDim>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const float* __restrict__ anchors, const float* __restrict__ candidates,
                   const int64_t* __restrict__ positives, const int64_t* __restrict__ exclude,
                   int64_t B, int64_t M, int d, float* __restrict__ loss,
                   double* __restrict__ lse) {
  constexpr int kRows = Tile<kDim>::kRows;
  __shared__ __align__(16) float tile[kRows * kDim];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = row < B;
  float a[kDim];
  load_row<kDim>(anchors, row, d, active, a);
  const int64_t excl = (active && exclude) ? exclude[row] : -1;
  float run_max = -FLT_MAX, run_sum = 0.0f;
  for (int64_t n0 = 0; n0 < M; n0 += kRows) {
    const int count = static_cast<int>(M - n0 < kRows ? M - n0 : kRows);
    __syncthreads();  // the previous tile is no longer read
    stage<kDim, kRows>(candidates, n0, count, d, tile);
    __syncthreads();
    for (int n = 0; n < count; ++n) {
      if (n0 + n == excl) continue;
      const float s = dot<kDim>(a, tile + n * kDim);
      if (s > run_max) {
        run_sum = run_sum * __expf(run_max - s) + 1.0f;
        run_max = s;
      } else {
        run_sum += __expf(s - run_max);
      }
    }
  }
  if (!active) return;
  const float log_sum = logf(run_sum);
  // Registers are indexed by compile-time k only (a runtime k would spill the row to memory).
  const float* cp = candidates + positives[row] * d;
  float positive_logit = 0.0f;
#pragma unroll
  for (int k = 0; k < kDim; ++k)
    if (k < d) positive_logit = fmaf(a[k], cp[k], positive_logit);
  lse[row] = static_cast<double>(run_max) + static_cast<double>(log_sum);
  loss[row] = (run_max - positive_logit) + log_sum;  // a small loss keeps its digits (not lse - s_p)
}

template <int kDim>
__global__ void __launch_bounds__(kThreads)
    grad_anchors_kernel(const float* __restrict__ anchors, const float* __restrict__ candidates,
                        const int64_t* __restrict__ positives,
                        const int64_t* __restrict__ exclude, const float* __restrict__ lse_hi,
                        const float* __restrict__ lse_lo, const float* __restrict__ coef, const float* __restrict__ g, int64_t B,
                        int64_t M, int d, float inv_tau, float* __restrict__ grad_anchors) {
  constexpr int kRows = Tile<kDim>::kRows;
  __shared__ __align__(16) float tile[kRows * kDim];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = row < B;
  float a[kDim], acc[kDim];
  load_row<kDim>(anchors, row, d, active, a);
#pragma unroll
  for (int k = 0; k < kDim; ++k) acc[k] = 0.0f;
  const int64_t excl = (active && exclude) ? exclude[row] : -1;
  const int64_t pos = active ? positives[row] : -1;
  const float row_hi = active ? lse_hi[row] : 0.0f, row_lo = active ? lse_lo[row] : 0.0f;
  const float row_coef = active ? coef[row] : 0.0f;
  const float row_g = active ? g[row] : 0.0f;
  for (int64_t n0 = 0; n0 < M; n0 += kRows) {
    const int count = static_cast<int>(M - n0 < kRows ? M - n0 : kRows);
    __syncthreads();
    stage<kDim, kRows>(candidates, n0, count, d, tile);
    __syncthreads();
    for (int n = 0; n < count; ++n) {
      const float* c = tile + n * kDim;
      const int64_t j = n0 + n;
      float w = j == excl ? 0.0f : row_coef * __expf((dot<kDim>(a, c) - row_hi) - row_lo);
      if (j == pos) w -= row_g;
#pragma unroll
      for (int k = 0; k < kDim; ++k) acc[k] = fmaf(w, c[k], acc[k]);
    }
  }
  if (!active) return;
#pragma unroll
  for (int k = 0; k < kDim; ++k)
    if (k < d) grad_anchors[row * d + k] = acc[k] * inv_tau;
}

template <int kDim>
__global__ void __launch_bounds__(kThreads)
    grad_candidates_kernel(const float* __restrict__ anchors,
                           const float* __restrict__ candidates,
                           const int64_t* __restrict__ positives,
                           const int64_t* __restrict__ exclude, const float* __restrict__ lse_hi,
                           const float* __restrict__ lse_lo, const float* __restrict__ coef, const float* __restrict__ g,
                           int64_t B, int64_t M, int d, float* __restrict__ grad_candidates) {
  constexpr int kRows = Tile<kDim>::kRows;
  __shared__ __align__(16) float tile[kRows * kDim];
  __shared__ float tile_hi[kRows], tile_lo[kRows], tile_coef[kRows], tile_g[kRows];
  __shared__ int64_t tile_pos[kRows], tile_excl[kRows];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = col < M;
  float c[kDim], acc[kDim];
  load_row<kDim>(candidates, col, d, active, c);
#pragma unroll
  for (int k = 0; k < kDim; ++k) acc[k] = 0.0f;
  for (int64_t i0 = 0; i0 < B; i0 += kRows) {
    const int count = static_cast<int>(B - i0 < kRows ? B - i0 : kRows);
    __syncthreads();
    stage<kDim, kRows>(anchors, i0, count, d, tile);
    for (int n = threadIdx.x; n < kRows; n += kThreads) {
      const bool ok = n < count;
      tile_hi[n] = ok ? lse_hi[i0 + n] : 0.0f;
      tile_lo[n] = ok ? lse_lo[i0 + n] : 0.0f;
      tile_coef[n] = ok ? coef[i0 + n] : 0.0f;
      tile_g[n] = ok ? g[i0 + n] : 0.0f;
      tile_pos[n] = ok ? positives[i0 + n] : -1;
      tile_excl[n] = (ok && exclude) ? exclude[i0 + n] : -1;
    }
    __syncthreads();
    for (int n = 0; n < count; ++n) {
      const float* a = tile + n * kDim;  // carries 1/tau: the gradient needs no further factor
      float w = tile_excl[n] == col ? 0.0f : tile_coef[n] * __expf((dot<kDim>(c, a) - tile_hi[n]) - tile_lo[n]);
      if (tile_pos[n] == col) w -= tile_g[n];
#pragma unroll
      for (int k = 0; k < kDim; ++k) acc[k] = fmaf(w, a[k], acc[k]);
    }
  }
  if (!active) return;
#pragma unroll
  for (int k = 0; k < kDim; ++k)
    if (k < d) grad_candidates[col * d + k] = acc[k];
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Runs LAUNCH(kDim) for the smallest supported padded width >= d.
#define LETTER_FAST_CONTRASTIVE_WIDTHS(LAUNCH) \
  if (d <= 8) return LAUNCH(8);                \
  if (d <= 16) return LAUNCH(16);              \
  if (d <= 32) return LAUNCH(32);              \
  if (d <= 64) return LAUNCH(64);              \
  if (d <= 128) return LAUNCH(128);            \
  return cudaErrorInvalidValue;

template <int kDim>
cudaError_t launch_forward(const float* anchors, const float* candidates,
                           const int64_t* positives, const int64_t* exclude, int64_t B,
                           int64_t M, int d, float* loss, double* lse, cudaStream_t stream) {
  forward_kernel<kDim><<<blocks_for(B), kThreads, 0, stream>>>(anchors, candidates, positives,
                                                               exclude, B, M, d, loss, lse);
  return cudaGetLastError();
}

template <int kDim>
cudaError_t launch_grad_anchors(const float* anchors, const float* candidates,
                                const int64_t* positives, const int64_t* exclude,
                                const float* lse_hi, const float* lse_lo, const float* coef, const float* g, int64_t B,
                                int64_t M, int d, float inv_tau, float* out, cudaStream_t stream) {
  grad_anchors_kernel<kDim><<<blocks_for(B), kThreads, 0, stream>>>(
      anchors, candidates, positives, exclude, lse_hi, lse_lo, coef, g, B, M, d, inv_tau, out);
  return cudaGetLastError();
}

template <int kDim>
cudaError_t launch_grad_candidates(const float* anchors, const float* candidates,
                                   const int64_t* positives, const int64_t* exclude,
                                   const float* lse_hi, const float* lse_lo, const float* coef, const float* g, int64_t B,
                                   int64_t M, int d, float* out, cudaStream_t stream) {
  grad_candidates_kernel<kDim><<<blocks_for(M), kThreads, 0, stream>>>(
      anchors, candidates, positives, exclude, lse_hi, lse_lo, coef, g, B, M, d, out);
  return cudaGetLastError();
}

bool bad_sizes(int64_t B, int64_t M, int64_t d) {
  return d < 1 || d > kContrastiveMaxDim || B < 0 || M < 0 || B > INT32_MAX * int64_t(kThreads) ||
         M > INT32_MAX * int64_t(kThreads);
}

}  // namespace

cudaError_t contrastive_forward(const float* anchors, const float* candidates,
                                const int64_t* positives, const int64_t* exclude, int64_t B,
                                int64_t M, int64_t d, float* loss, double* lse,
                                cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  if (bad_sizes(B, M, d) || M == 0) return cudaErrorInvalidValue;
  const int di = static_cast<int>(d);
#define LAUNCH(W) \
  launch_forward<W>(anchors, candidates, positives, exclude, B, M, di, loss, lse, stream)
  LETTER_FAST_CONTRASTIVE_WIDTHS(LAUNCH)
#undef LAUNCH
}

cudaError_t contrastive_grad_anchors(const float* anchors, const float* candidates,
                                     const int64_t* positives, const int64_t* exclude,
                                     const float* lse_hi, const float* lse_lo, const float* coef, const float* g,
                                     int64_t B, int64_t M, int64_t d, float inv_tau,
                                     float* grad_anchors, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  if (bad_sizes(B, M, d)) return cudaErrorInvalidValue;
  const int di = static_cast<int>(d);
#define LAUNCH(W)                                                                          \
  launch_grad_anchors<W>(anchors, candidates, positives, exclude, lse_hi, lse_lo, coef, g, B, M, di, \
                         inv_tau, grad_anchors, stream)
  LETTER_FAST_CONTRASTIVE_WIDTHS(LAUNCH)
#undef LAUNCH
}

cudaError_t contrastive_grad_candidates(const float* anchors, const float* candidates,
                                        const int64_t* positives, const int64_t* exclude,
                                        const float* lse_hi, const float* lse_lo, const float* coef, const float* g,
                                        int64_t B, int64_t M, int64_t d,
                                        float* grad_candidates, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (bad_sizes(B, M, d)) return cudaErrorInvalidValue;
  const int di = static_cast<int>(d);
#define LAUNCH(W)                                                                             \
  launch_grad_candidates<W>(anchors, candidates, positives, exclude, lse_hi, lse_lo, coef, g, B, M, di, \
                            grad_candidates, stream)
  LETTER_FAST_CONTRASTIVE_WIDTHS(LAUNCH)
#undef LAUNCH
}

#undef LETTER_FAST_CONTRASTIVE_WIDTHS

}  // namespace cuda
}  // namespace letter_fast
