// Balanced assignment by log-stabilized Sinkhorn scaling on the CPU, free of torch headers.
//
// LC-Rec's "uniform semantic mapping" as LETTER uses it for the last codebook level in training
// (docs/method.md#sinkhorn; reference: letter_fast/ops/reference/sinkhorn_assign.py::sinkhorn_assign_reference,
// which this kernel follows step for step). For distances D [B, N]:
//     C = (D - min D) / ((max D - min D) * eps)                 cost, rescaled to [0, 1/eps]
//     K = exp(f_b + g_n - C_bn)                                 kernel on log-potentials f, g
//     repeat: v = (1/N) / K^T u ;  u = (1/B) / K v              plan u_b K_bn v_n, marginals 1/B, 1/N
//     every `absorb_every` iterations: f += log u, g += log v, rebuild K, u = v = 1
//     code_b = argmax_n K_bn v_n
// f, g start at the row minima of C and then the column minima of C - f, so every row and column
// of K holds a 1; entries are floored at e^-80 (no float denormals: they are ~100x slower).
//
// Where the torch version runs two matrix-vector products and a dozen small ops per iteration,
// this kernel makes one pass over K per iteration: the row pass computes (K v)_b, hence u_b, and
// while row b is in L1 adds u_b K_b into the column sums K^T u the next iteration needs. Rows are
// split over threads, each with private column sums reduced after the pass (N floats each).
//
// exp is the vectorized polynomial of fast_math.h (relative error < 2e-7).
// Used by the torch launcher (sinkhorn_assign.cpp); only the standard library here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fast_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace letter_fast {
namespace cpu {
namespace sinkhorn {

constexpr float kFloor = -80.0f;     // log of the smallest kernel entry kept (e^-80 > FLT_MIN)
constexpr float kTiny = 1e-30f;      // guards the divisions, as the reference's clamp_min
constexpr int64_t kParallelWork = 1 << 16;  // below this many entries a pass runs serially

inline int num_threads(int64_t work) {
#ifdef _OPENMP
  return work >= kParallelWork ? omp_get_max_threads() : 1;
#else
  (void)work;
  return 1;
#endif
}

// op(...op(init, x[0])..., x[n-1]) for an associative, commutative op (min, max) in 16 lanes:
// GCC leaves a plain reduction over std::min scalar, but vectorizes the lane-wise form.
template <typename Op>
inline float row_reduce(const float* __restrict x, int64_t n, float init, Op op) {
  constexpr int64_t kW = 16;
  alignas(64) float lanes[kW];
  for (int64_t j = 0; j < kW; ++j) lanes[j] = init;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
#pragma omp simd
    for (int64_t j = 0; j < kW; ++j) lanes[j] = op(lanes[j], x[i + j]);
  }
  float r = init;
  for (int64_t j = 0; j < kW; ++j) r = op(r, lanes[j]);
  for (; i < n; ++i) r = op(r, x[i]);
  return r;
}

// codes[b] for distances dist [B][N] (row-major, float32). `work` must hold 2 * B * N floats.
// Loops read and write through restrict-qualified raw pointers: through std::vector captured by
// the OpenMP regions the compiler had to assume aliasing and ran them ~10x slower.
inline void assign(const float* __restrict dist, int64_t B, int64_t N, float epsilon, int64_t iters,
                   int64_t absorb_every, float* __restrict work, int64_t* __restrict codes) {
  if (B == 0) return;
  const int64_t total = B * N;
  const int threads = num_threads(total);
  float* __restrict cost = work;
  float* __restrict kernel = work + total;
  std::vector<float> f_(B), g_(N, std::numeric_limits<float>::infinity()), u_(B, 1.0f), v_(N, 1.0f);
  std::vector<float> partial_(static_cast<size_t>(threads) * N), colsum_(N);
  float* __restrict f = f_.data();
  float* __restrict g = g_.data();
  float* __restrict u = u_.data();
  float* __restrict v = v_.data();
  float* __restrict partial = partial_.data();
  float* __restrict colsum = colsum_.data();

  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
#pragma omp parallel for num_threads(threads) reduction(min : lo) reduction(max : hi)
  for (int64_t b = 0; b < B; ++b) {
    lo = std::min(lo, row_reduce(dist + b * N, N, lo, [](float x, float y) { return x < y ? x : y; }));
    hi = std::max(hi, row_reduce(dist + b * N, N, hi, [](float x, float y) { return x > y ? x : y; }));
  }
  const float scale = 1.0f / (std::max(hi - lo, 1e-12f) * epsilon);

  // cost and f_b = -min_n C_bn
#pragma omp parallel for num_threads(threads)
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict d = dist + b * N;
    float* __restrict c = cost + b * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) c[n] = (d[n] - lo) * scale;
    f[b] = -row_reduce(c, N, std::numeric_limits<float>::infinity(),
                       [](float x, float y) { return x < y ? x : y; });
  }
  // g_n = -min_b (C_bn + f_b): serial over rows, vector over codes (N floats stay in L1)
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict c = cost + b * N;
    const float fb = f[b];
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) g[n] = c[n] + fb < g[n] ? c[n] + fb : g[n];
  }
  for (int64_t n = 0; n < N; ++n) g[n] = -g[n];

  auto thread_partial = [&]() -> float* {
#ifdef _OPENMP
    return partial + omp_get_thread_num() * N;
#else
    return partial;
#endif
  };
  auto reduce_partials = [&] {
    for (int64_t n = 0; n < N; ++n) colsum[n] = 0.0f;
    for (int t = 0; t < threads; ++t) {
      const float* __restrict p = partial + t * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) colsum[n] += p[n];
    }
  };
  // K from f, g, and the column sums K^T 1 (u = 1 after every rebuild).
  auto rebuild = [&] {
    std::fill(partial, partial + threads * N, 0.0f);
#pragma omp parallel num_threads(threads)
    {
      float* __restrict acc = thread_partial();
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        float* __restrict k = kernel + b * N;
        const float* __restrict c = cost + b * N;
        const float fb = f[b];
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          k[n] = exp_approx(std::max(fb + g[n] - c[n], kFloor));
          acc[n] += k[n];
        }
      }
    }
    reduce_partials();
  };

  rebuild();
  const float a = 1.0f / static_cast<float>(B), bmass = 1.0f / static_cast<float>(N);
  for (int64_t it = 0; it < iters; ++it) {
    for (int64_t n = 0; n < N; ++n) v[n] = bmass / std::max(colsum[n], kTiny);
    const bool absorb = (it + 1) % absorb_every == 0 && it + 1 < iters;
    std::fill(partial, partial + threads * N, 0.0f);
#pragma omp parallel num_threads(threads)
    {
      float* __restrict acc = thread_partial();
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        const float* __restrict k = kernel + b * N;
        float row = 0.0f;
#pragma omp simd reduction(+ : row)
        for (int64_t n = 0; n < N; ++n) row += k[n] * v[n];
        const float ub = a / std::max(row, kTiny);
        u[b] = ub;
        if (!absorb) {  // this row's share of the next iteration's K^T u, while it is in L1
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) acc[n] += ub * k[n];
        }
      }
    }
    if (absorb) {
      for (int64_t b = 0; b < B; ++b) f[b] += std::log(u[b]);
      for (int64_t n = 0; n < N; ++n) g[n] += std::log(v[n]);
      rebuild();
    } else {
      reduce_partials();
    }
  }
  // Q_bn = u_b K_bn v_n, u_b constant along a row. Ties go to the lowest code (as torch.argmax).
#pragma omp parallel for num_threads(threads)
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict k = kernel + b * N;
    int64_t best = 0;
    float best_q = k[0] * v[0];
    for (int64_t n = 1; n < N; ++n) {
      const float q = k[n] * v[n];
      if (q > best_q) {
        best_q = q;
        best = n;
      }
    }
    codes[b] = best;
  }
}

}  // namespace sinkhorn
}  // namespace cpu
}  // namespace letter_fast
