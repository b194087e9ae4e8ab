// Fused nearest-code residual quantization on the CPU, free of torch headers.
//
// For each row z_b and level l = 0..L-1 (LETTER / TIGER RQ-VAE, see docs/method.md#residual-quantization):
//     c_l   = argmin_n ||r - e_{l,n}||^2          (ties -> lowest n, like torch.argmin)
//     r    <- r - e_{l,c_l}                        (r starts at z_b)
//     zhat  = sum_l e_{l,c_l}                      (accumulated in float32)
//
// ||r - e||^2 = ||r||^2 - 2 r.e + ||e||^2, and ||r||^2 is the same for every code of a row, so the
// kernel ranks codes by ||e||^2 - 2 r.e. The dot products are computed in register tiles of
// kRowBlock rows x kCodeTile codes over a transposed copy of each codebook ([d][N_pad]), so the
// inner loop is one broadcast of r[k] and one contiguous vector load per FMA row: the compiler
// turns it into AVX2/AVX-512 FMAs. Nothing of size [B, N] is ever stored: each row keeps one
// running (distance, index) pair per SIMD lane.
//
// This header is used by the torch launcher (residual_quantize.cpp) and by the plain C++ unit test
// (csrc/tests/test_residual_quantize.cpp), which is why it depends on nothing but the standard library.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace letter_fast {
namespace cpu {

constexpr int64_t kRowBlock = 8;   // rows sharing one pass over a code tile (tuned over 2..12)
constexpr int64_t kCodeTile = 32;  // codes per register tile: 2 AVX-512 vectors (tuned over 16..64)

inline int64_t padded_codes(int64_t n) { return (n + kCodeTile - 1) / kCodeTile * kCodeTile; }

// Codebooks rearranged for the kernel: per level a [d][n_pad] transposed copy and the squared
// norms, padded with +inf so padding codes never win.
struct PackedCodebooks {
  int64_t levels = 0, codes = 0, dim = 0, codes_padded = 0;
  std::vector<float> rows;        // [L][N][d]  original layout, for the residual update
  std::vector<float> transposed;  // [L][d][n_pad]
  std::vector<float> sq_norms;    // [L][n_pad]

  PackedCodebooks(const float* codebooks, int64_t L, int64_t N, int64_t d)
      : levels(L), codes(N), dim(d), codes_padded(padded_codes(N)),
        rows(codebooks, codebooks + L * N * d),
        transposed(static_cast<size_t>(L * d * codes_padded), 0.0f),
        sq_norms(static_cast<size_t>(L * codes_padded), std::numeric_limits<float>::infinity()) {
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t n = 0; n < N; ++n) {
        const float* e = codebooks + (l * N + n) * d;
        float norm = 0.0f;
        for (int64_t k = 0; k < d; ++k) {
          transposed[(l * d + k) * codes_padded + n] = e[k];
          norm += e[k] * e[k];
        }
        sq_norms[l * codes_padded + n] = norm;
      }
    }
  }
};

// Nearest code of level `level` for kRowBlock residual rows `r` ([kRowBlock][d]); writes indices.
inline void nearest_codes(const PackedCodebooks& cb, int64_t level, const float* r,
                          int64_t* best_index) {
  const int64_t d = cb.dim, n_pad = cb.codes_padded;
  const float* et = cb.transposed.data() + level * d * n_pad;
  const float* norms = cb.sq_norms.data() + level * n_pad;

  if (d == 0) {  // every distance is 0: code 0, like argmin
    for (int64_t i = 0; i < kRowBlock; ++i) best_index[i] = 0;
    return;
  }

  alignas(64) float lane_best[kRowBlock][kCodeTile];
  alignas(64) int32_t lane_index[kRowBlock][kCodeTile];
  // Lane j starts as code j at distance +inf: where no code beats +inf the reduction below still
  // picks code 0 (lane 0), and the start is no zero fill (see the tile below for why that matters).
  for (int64_t i = 0; i < kRowBlock; ++i)
    for (int64_t j = 0; j < kCodeTile; ++j) {
      lane_best[i][j] = std::numeric_limits<float>::infinity();
      lane_index[i][j] = static_cast<int32_t>(j);
    }

  for (int64_t n0 = 0; n0 < n_pad; n0 += kCodeTile) {
    // The tile starts from the k = 0 products, not from zeros (fma(r, e, 0) == r * e, so the sums
    // are the same bits). A zero-filled tile costs a 1 KiB memset per tile that the compiler keeps
    // for the d = 0 path; GCC's generic tuning, the one the portable build's kernel variants get,
    // expands it to `rep stosq`, which on AMD Zen cost this kernel ~10% against -march=native
    // (-mtune=znver3 emits a memset call instead). benchmarks/results/portable_build.md.
    alignas(64) float acc[kRowBlock][kCodeTile];
    for (int64_t i = 0; i < kRowBlock; ++i) {
      const float r0 = r[i * d];
#pragma omp simd aligned(acc : 64)
      for (int64_t j = 0; j < kCodeTile; ++j) acc[i][j] = r0 * et[n0 + j];
    }
    for (int64_t k = 1; k < d; ++k) {
      const float* ek = et + k * n_pad + n0;
      for (int64_t i = 0; i < kRowBlock; ++i) {
        const float rk = r[i * d + k];
#pragma omp simd aligned(acc : 64)
        for (int64_t j = 0; j < kCodeTile; ++j) acc[i][j] += rk * ek[j];
      }
    }
    // Strict '<' while n grows keeps the lowest index among equal distances in every lane.
    for (int64_t i = 0; i < kRowBlock; ++i) {
#pragma omp simd
      for (int64_t j = 0; j < kCodeTile; ++j) {
        const float dist = norms[n0 + j] - 2.0f * acc[i][j];
        const bool better = dist < lane_best[i][j];
        lane_best[i][j] = better ? dist : lane_best[i][j];
        lane_index[i][j] = better ? static_cast<int32_t>(n0 + j) : lane_index[i][j];
      }
    }
  }
  // Lane reduction, vectorized: the minimum distance, then the lowest index that attains it.
  for (int64_t i = 0; i < kRowBlock; ++i) {
    float best = std::numeric_limits<float>::infinity();
#pragma omp simd reduction(min : best)
    for (int64_t j = 0; j < kCodeTile; ++j) best = std::min(best, lane_best[i][j]);
    // Values, not std::min's references: `std::min(index, hit ? lane_index[j] : index)` selects
    // between two addresses, which GCC vectorizes only as a gather; its generic tuning (the
    // portable build's variants) rejects gathers and left this loop scalar, with `index` on the
    // stack, while -march=native (-mtune=znver3) gathered. As a select of values it is a masked
    // vpminsd under every tuning.
    constexpr int32_t kNone = std::numeric_limits<int32_t>::max();
    int32_t index = kNone;
#pragma omp simd reduction(min : index)
    for (int64_t j = 0; j < kCodeTile; ++j) {
      const int32_t candidate = lane_best[i][j] == best ? lane_index[i][j] : kNone;
      index = candidate < index ? candidate : index;
    }
    // All distances +inf can only happen for overflowing inputs; fall back to code 0 like argmin.
    best_index[i] = index == kNone ? 0 : index;
  }
}

// Element conversion hooks: the launcher specialises these for half / bfloat16.
template <typename T>
inline float load_as_float(const T& x) { return static_cast<float>(x); }
template <typename T>
inline T store_from_float(float x) { return static_cast<T>(x); }

// z: B rows of d elements at z[b * stride_row + k * stride_col] (any strides, any element type
// the hooks convert). codes: [B][L] contiguous int64; zhat: [B][d] contiguous, element type Out.
template <typename In, typename Out>
void residual_quantize(const In* z, int64_t stride_row, int64_t stride_col, int64_t B,
                       const PackedCodebooks& cb, int64_t* codes, Out* zhat) {
  const int64_t d = cb.dim, L = cb.levels;
  const int64_t blocks = (B + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
    std::vector<float> residual(static_cast<size_t>(kRowBlock * d));
    std::vector<float> sum(static_cast<size_t>(kRowBlock * d));
    int64_t chosen[kRowBlock];
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t b0 = blk * kRowBlock;
      const int64_t rows = std::min(kRowBlock, B - b0);
      for (int64_t i = 0; i < kRowBlock; ++i) {
        // A short last block repeats its last row; the extra results are discarded.
        const int64_t b = b0 + std::min(i, rows - 1);
        for (int64_t k = 0; k < d; ++k)
          residual[i * d + k] = load_as_float(z[b * stride_row + k * stride_col]);
      }
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t l = 0; l < L; ++l) {
        nearest_codes(cb, l, residual.data(), chosen);
        for (int64_t i = 0; i < kRowBlock; ++i) {
          const float* e = cb.rows.data() + (l * cb.codes + chosen[i]) * d;
          for (int64_t k = 0; k < d; ++k) {
            residual[i * d + k] -= e[k];
            sum[i * d + k] += e[k];
          }
        }
        for (int64_t i = 0; i < rows; ++i) codes[(b0 + i) * L + l] = chosen[i];
      }
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t k = 0; k < d; ++k)
          zhat[(b0 + i) * d + k] = store_from_float<Out>(sum[i * d + k]);
    }
  }
}

}  // namespace cpu
}  // namespace letter_fast
