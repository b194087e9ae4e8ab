// Fused softmax contrastive loss (InfoNCE) on the CPU, free of torch headers.
//
// For anchors a_i (i < B), candidates c_j (j < M), positives p_i, an optional excluded
// candidate x_i per row and temperature tau (LETTER's L_CF and L_div, docs/method.md, sections 2.5-2.6):
//     s_ij   = <a_i, c_j> / tau                  (rows L2-normalized first when `normalize`)
//     lse_i  = log sum_{j != x_i} exp(s_ij)
//     loss_i = lse_i - s_{i, p_i}
// and, for upstream gradients g_i (of loss_i) and h_i (of lse_i), with P_ij = exp(s_ij - lse_i)
// (0 for j = x_i) and W_ij = (g_i + h_i) P_ij - g_i [j = p_i]:
//     dL/da_i = (1/tau) sum_j W_ij c_j            dL/dc_j = (1/tau) sum_i W_ij a_i
// followed by the normalization's Jacobian (I - a a^T) / ||a|| when `normalize`.
//
// lse is handed from the forward to the backward pass in double, whatever T is. Why: at low
// temperatures |lse| ~ |s| / tau is large (40-100 at tau = 0.05), and rounding it to float moves
// it by up to half an ulp (~2e-6), which scales every P_ij of the row by one common factor
// (1 + delta). Where one candidate dominates, its weight W_ij ~ P_ij - [j = p_i] then has an
// absolute error delta instead of float's ~6e-8, and the gradients come out 20-30x less accurate
// than PyTorch's float32 softmax - onehot (measured at tau = 0.05), which keeps the row max and
// log(sum) apart. The backward splits the double lse into lse_hi + lse_lo (two floats) and forms
// (s_ij - lse_hi) - lse_lo: the first difference is exact for the logits that matter (Sterbenz),
// so P_ij keeps float accuracy.
//
// Nothing of size [B, M] is ever stored. The forward pass walks the candidates in register tiles
// of kRows anchors x kLanes candidates and keeps an online log-sum-exp per row (a running max and
// a per-lane running sum), so it writes one value per row. The backward pass recomputes each tile
// once and feeds both gradients from it (W @ C for the anchors, W^T @ A for the candidates);
// anchors and candidates are split into one group per thread and visited in a rotating schedule
// so each accumulator row has a single writer at a time: no atomics, no per-thread [M, d]
// copies, results deterministic for a given thread count, extra memory O((B + M) d).
//
// Dot products use a tile-wise transposed copy of the candidates: the inner loop is one
// broadcast of a_i[k] and one contiguous vector load per FMA row, which the compiler turns into
// AVX2/AVX-512 FMAs (as in residual_quantize_kernel.h). exp() on float is a vectorizable polynomial (below);
// double (used for gradcheck) calls std::exp.
//
// Used by the torch launcher (contrastive_loss.cpp) and the plain C++ test
// (csrc/tests/test_contrastive_loss.cpp), hence only the standard library here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "fast_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace letter_fast {
namespace cpu {
namespace contrastive {

constexpr int64_t kRows = 8;    // anchors per register tile
constexpr int64_t kLanes = 32;  // candidates per register tile: 2 AVX-512 float vectors
constexpr int64_t kVec = 32;    // width of the gradient accumulators (2 vectors); d is padded to it
constexpr int64_t kRowPad = 32;  // rows padded so either input can be the tile's rows or lanes
constexpr int64_t kParallelWork = 1 << 18;  // below this many multiply-adds a loop runs serially
// Row blocks that share one sweep over the other side: each lane tile is read once per
// kPanel * kRows rows while it is in L1/L2, instead of once per block from memory (at
// B = 16384, d = 128 the other side is 16 MB: streaming it per block of 8 rows was 3x slower).
constexpr int64_t kPanel = 8;
constexpr double kNormEps = 1e-12;  // as torch.nn.functional.normalize

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }


// Rows of an input matrix laid out for the kernels: [rows_pad][dim_pad] row-major, optionally
// L2-normalized and multiplied by `scale`, zero padding; plus 1 / max(||row||, eps).
// The norm, 1/norm and the product x * (scale / norm) are formed in double and rounded once:
// O((B + M) d) work, and it keeps normalized low-temperature logits as accurate as PyTorch's
// x / ||x|| / tau (a float chain of three roundings measured up to 3x PyTorch's gradient error).
template <typename T>
struct PackedRows {
  int64_t rows = 0, rows_pad = 0, dim = 0, dim_pad = 0;
  std::vector<T> data;
  std::vector<double> inv_norm;

  PackedRows(const T* x, int64_t n, int64_t d, int64_t row_multiple, bool normalize, double scale)
      : rows(n), rows_pad(round_up(std::max<int64_t>(n, 1), row_multiple)), dim(d),
        dim_pad(round_up(std::max<int64_t>(d, 1), kVec)),
        data(static_cast<size_t>(rows_pad * dim_pad), T(0)), inv_norm(static_cast<size_t>(n), 1.0) {
#pragma omp parallel for schedule(static) if (n * d >= kParallelWork)
    for (int64_t r = 0; r < n; ++r) {
      const T* src = x + r * d;
      double factor = scale;
      if (normalize) {
        double sq = 0;
        for (int64_t k = 0; k < d; ++k) sq += static_cast<double>(src[k]) * src[k];
        inv_norm[r] = 1.0 / std::max(std::sqrt(sq), kNormEps);
        factor *= inv_norm[r];
      }
      T* dst = data.data() + r * dim_pad;
      for (int64_t k = 0; k < d; ++k) dst[k] = static_cast<T>(src[k] * factor);
    }
  }
  const T* row(int64_t r) const { return data.data() + r * dim_pad; }
};

// Candidates transposed tile by tile for the dot products: [cols_pad / kLanes][dim][kLanes].
// Each tile is contiguous: a plain [dim][cols_pad] transpose puts the rows a tile reads at a
// power-of-two stride, which maps them all to one L1 set (measured: 15x slower).
template <typename T>
std::vector<T> transpose_tiles(const PackedRows<T>& c) {
  const int64_t tiles = c.rows_pad / kLanes;
  std::vector<T> t(static_cast<size_t>(c.rows_pad * c.dim), T(0));
#pragma omp parallel for schedule(static) if (c.rows * c.dim >= kParallelWork)
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int64_t j = tile * kLanes; j < std::min(c.rows, (tile + 1) * kLanes); ++j)
      for (int64_t k = 0; k < c.dim; ++k)
        t[(tile * c.dim + k) * kLanes + j - tile * kLanes] = c.row(j)[k];
  return t;
}

// acc[i][j] = <a_i, c_{n0+j}> for kRows rows a (stride a_stride) and one transposed tile ct.
// The tile starts from the k = 0 products rather than from zeros (same sums, bit for bit): a
// zero fill per tile is a memset that GCC's generic tuning, the one the portable build's kernel
// variants get, expands to `rep stosq`, slow on AMD Zen (see residual_quantize_kernel.h).
template <typename T>
inline void dot_tile(const T* a, int64_t a_stride, const T* ct, int64_t dim,
                     T (&acc)[kRows][kLanes]) {
  if (dim == 0) {
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = 0; j < kLanes; ++j) acc[i][j] = T(0);
    return;
  }
  for (int64_t i = 0; i < kRows; ++i) {
    const T a0 = a[i * a_stride];
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) acc[i][j] = a0 * ct[j];
  }
  for (int64_t k = 1; k < dim; ++k) {
    const T* ck = ct + k * kLanes;
    for (int64_t i = 0; i < kRows; ++i) {
      const T ak = a[i * a_stride + k];
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) acc[i][j] += ak * ck[j];
    }
  }
}

// Masks a tile in place: padding columns (>= M) and each row's excluded column get -inf.
template <typename T>
inline void mask_tile(int64_t n0, int64_t M, const int64_t* exclude_rows, T (&acc)[kRows][kLanes]) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  if (n0 + kLanes > M)
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = std::max<int64_t>(M - n0, 0); j < kLanes; ++j) acc[i][j] = kNegInf;
  if (exclude_rows)
    for (int64_t i = 0; i < kRows; ++i) {
      const int64_t x = exclude_rows[i] - n0;
      if (x >= 0 && x < kLanes) acc[i][x] = kNegInf;
    }
}

// One call's inputs, packed once. Anchors carry the 1/tau factor, so a tile is already s_ij.
// Both sides are also kept tile-transposed: the forward pass and the anchors' gradient use the
// candidates as tile lanes, the candidates' gradient uses the anchors as tile lanes (so every
// pass has the same fast shape: broadcast rows, vector lanes, row-owned outputs).
template <typename T>
struct Problem {
  int64_t B, M, d;
  T temperature;
  bool normalize;
  PackedRows<T> anchors;     // [B_pad][d_pad], (normalized) / tau
  PackedRows<T> candidates;  // [M_pad][d_pad], (normalized)
  std::vector<T> candidates_t;  // [M_pad / kLanes][d][kLanes]
  std::vector<int64_t> positives, exclude;  // [B_pad]; exclude = -1 for none and for padding

  Problem(const T* a, const T* c, int64_t B_, int64_t M_, int64_t d_, const int64_t* pos,
          const int64_t* excl, T tau, bool norm)
      : B(B_), M(M_), d(d_), temperature(tau), normalize(norm),
        anchors(a, B_, d_, kRowPad, norm, 1.0 / static_cast<double>(tau)),
        candidates(c, M_, d_, kRowPad, norm, 1.0),
        candidates_t(transpose_tiles(candidates)),
        positives(static_cast<size_t>(anchors.rows_pad), 0),
        exclude(static_cast<size_t>(anchors.rows_pad), -1) {
    for (int64_t i = 0; i < B; ++i) {
      positives[i] = pos[i];
      if (excl) exclude[i] = excl[i];
    }
  }
  int64_t m_pad() const { return candidates.rows_pad; }
  const T* ct(int64_t n0) const { return candidates_t.data() + n0 * d; }  // tile at column n0
  bool parallel() const { return B * M * d >= kParallelWork; }
};

// loss [B] and lse [B] (lse in double: see the top of this file).
template <typename T>
void forward(const Problem<T>& pb, T* loss, double* lse) {
  const int64_t blocks = round_up(pb.B, kRows) / kRows, m_pad = pb.m_pad();
  const int64_t dp = pb.anchors.dim_pad, panels = (blocks + kPanel - 1) / kPanel;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (pb.parallel())
  for (int64_t panel = 0; panel < panels; ++panel) {
    const int64_t first = panel * kPanel, count = std::min(kPanel, blocks - first);
    // Online log-sum-exp state of the panel's rows: a running max per row, a sum per lane.
    T run_max[kPanel][kRows];
    alignas(64) T run_sum[kPanel][kRows][kLanes];
    for (int64_t b = 0; b < kPanel; ++b)
      for (int64_t i = 0; i < kRows; ++i) {
        run_max[b][i] = kNegInf;
        for (int64_t j = 0; j < kLanes; ++j) run_sum[b][i][j] = T(0);
      }
    for (int64_t n0 = 0; n0 < m_pad; n0 += kLanes) {
      for (int64_t b = 0; b < count; ++b) {
        const int64_t i0 = (first + b) * kRows;
        alignas(64) T acc[kRows][kLanes];
        dot_tile(pb.anchors.row(i0), dp, pb.ct(n0), pb.d, acc);
        mask_tile(n0, pb.M, pb.exclude.data() + i0, acc);
        for (int64_t i = 0; i < kRows; ++i) {
          T tile_max = kNegInf;
#pragma omp simd reduction(max : tile_max)
          for (int64_t j = 0; j < kLanes; ++j) tile_max = std::max(tile_max, acc[i][j]);
          if (tile_max == kNegInf) continue;  // all masked
          T* sum = run_sum[b][i];
          if (tile_max > run_max[b][i]) {
            // Rescale the running sums to the new max (exp(-inf) = 0 on the first tile).
            const T factor = exp_approx(run_max[b][i] - tile_max);
#pragma omp simd
            for (int64_t j = 0; j < kLanes; ++j) sum[j] *= factor;
            run_max[b][i] = tile_max;
          }
          const T m = run_max[b][i];
#pragma omp simd
          for (int64_t j = 0; j < kLanes; ++j) sum[j] += exp_approx(acc[i][j] - m);
        }
      }
    }
    for (int64_t b = 0; b < count; ++b)
      for (int64_t i = 0; i < kRows; ++i) {
        const int64_t row = (first + b) * kRows + i;
        if (row >= pb.B) break;
        T total = 0;
        for (int64_t j = 0; j < kLanes; ++j) total += run_sum[b][i][j];
        const T log_total = std::log(total);
        const T* ai = pb.anchors.row(row);
        const T* cp = pb.candidates.row(pb.positives[row]);
        T positive_logit = 0;
        for (int64_t k = 0; k < pb.d; ++k) positive_logit += ai[k] * cp[k];
        lse[row] = static_cast<double>(run_max[b][i]) + static_cast<double>(log_total);
        // (max - s_p) + log(total), not lse - s_p: where the positive dominates, the loss is far
        // smaller than lse and would inherit lse's float rounding.
        loss[row] = (run_max[b][i] - positive_logit) + log_total;
      }
  }
}

// y = (g - u <u, g>) * inv when ||x|| > eps (u = x * inv, the unit row), else g * inv: the
// gradient of x / max(||x||, eps). In place on g; in double and rounded once (see PackedRows).
template <typename T>
inline void normalize_backward(const T* x, double inv, int64_t d, T* g) {
  if (inv >= 1.0 / kNormEps) {  // the norm was clamped to eps: x / eps is linear
    for (int64_t k = 0; k < d; ++k) g[k] = static_cast<T>(g[k] * inv);
    return;
  }
  double ug = 0;
  for (int64_t k = 0; k < d; ++k) ug += x[k] * inv * g[k];
  for (int64_t k = 0; k < d; ++k) g[k] = static_cast<T>((g[k] - x[k] * inv * ug) * inv);
}

// Per-anchor quantities of the backward pass, zero on padding rows (which then add nothing).
template <typename T>
struct RowTerms {
  std::vector<T> coef, g, lse_hi, lse_lo;  // coef_i = g_i + h_i; lse_i = lse_hi + lse_lo
  RowTerms(const Problem<T>& pb, const T* grad_loss, const T* grad_lse, const double* row_lse)
      : coef(static_cast<size_t>(pb.anchors.rows_pad), T(0)),
        g(static_cast<size_t>(pb.anchors.rows_pad), T(0)),
        lse_hi(static_cast<size_t>(pb.anchors.rows_pad), T(0)),
        lse_lo(static_cast<size_t>(pb.anchors.rows_pad), T(0)) {
    for (int64_t i = 0; i < pb.B; ++i) {
      coef[i] = grad_loss[i] + (grad_lse ? grad_lse[i] : T(0));
      g[i] = grad_loss[i];
      lse_hi[i] = static_cast<T>(row_lse[i]);
      lse_lo[i] = static_cast<T>(row_lse[i] - static_cast<double>(lse_hi[i]));  // 0 for double
    }
  }
};

// acc[r] += sum_l w[r][l] * lanes[l] for a tile: rows of acc at stride dp, lanes row-major at
// stride dp; kVec columns at a time in registers.
template <typename T>
inline void accumulate_rows(const T (&w)[kRows][kLanes], const T* lanes, int64_t dp, T* acc) {
  for (int64_t k0 = 0; k0 < dp; k0 += kVec) {
    alignas(64) T g[kRows][kVec];
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < kVec; ++v) g[r][v] = acc[r * dp + k0 + v];
    for (int64_t l = 0; l < kLanes; ++l) {
      const T* lane = lanes + l * dp + k0;
      for (int64_t r = 0; r < kRows; ++r) {
        const T wrl = w[r][l];
#pragma omp simd
        for (int64_t v = 0; v < kVec; ++v) g[r][v] += wrl * lane[v];
      }
    }
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < kVec; ++v) acc[r * dp + k0 + v] = g[r][v];
  }
}

// acc[l] += sum_r w[r][l] * rows[r] (the transposed tile): the kRows rows' kVec columns stay
// in registers while each lane's accumulator is read, updated and written once.
template <typename T>
inline void accumulate_lanes(const T (&w)[kRows][kLanes], const T* rows, int64_t dp, T* acc) {
  for (int64_t k0 = 0; k0 < dp; k0 += kVec) {
    alignas(64) T a[kRows][kVec];
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < kVec; ++v) a[r][v] = rows[r * dp + k0 + v];
    for (int64_t l = 0; l < kLanes; ++l) {
      alignas(64) T g[kVec];
      for (int64_t v = 0; v < kVec; ++v) g[v] = acc[l * dp + k0 + v];
      for (int64_t r = 0; r < kRows; ++r) {
        const T wrl = w[r][l];
#pragma omp simd
        for (int64_t v = 0; v < kVec; ++v) g[v] += wrl * a[r][v];
      }
      for (int64_t v = 0; v < kVec; ++v) acc[l * dp + k0 + v] = g[v];
    }
  }
}

// Both gradients from one recomputation of each logit tile:
// W_ij = coef_i exp((s_ij - lse_hi_i) - lse_lo_i) - g_i [j = p_i] (0 where masked), acc_a[i] += sum_j W_ij c_j
// and acc_c[j] += sum_i W_ij a_i (a carries 1/tau). The positive's -g_i enters W itself, as in
// (softmax - onehot): added apart, it would cancel against a softmax weight near 1 after
// both were multiplied up, losing float32 digits (seen at tau = 0.05).
// Ownership without atomics: anchors and candidates are split into as many groups as threads;
// in step s thread t works on anchor group t against candidate group (t + s) mod T, so every
// accumulator row has one writer per step; a barrier separates the steps.
template <typename T>
void gradient_sums(const Problem<T>& pb, const RowTerms<T>& rt, bool want_a, bool want_c,
                   std::vector<T>& acc_a, std::vector<T>& acc_c) {
  const int64_t dp = pb.anchors.dim_pad, d = pb.d, M = pb.M;
  const int64_t blocks = round_up(pb.B, kRows) / kRows, tiles = pb.m_pad() / kLanes;
  acc_a.assign(want_a ? static_cast<size_t>(pb.anchors.rows_pad * dp) : 0, T(0));
  acc_c.assign(want_c ? static_cast<size_t>(pb.candidates.rows_pad * dp) : 0, T(0));
#pragma omp parallel if (pb.parallel())
  {
#ifdef _OPENMP
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int64_t threads = 1, t = 0;
#endif
    const int64_t block_begin = blocks * t / threads, block_end = blocks * (t + 1) / threads;
    for (int64_t step = 0; step < threads; ++step) {
      const int64_t group = (t + step) % threads;
      const int64_t tile_begin = tiles * group / threads, tile_end = tiles * (group + 1) / threads;
      // Panels of kPanel row blocks share each candidate tile while it is in cache.
      for (int64_t p0 = block_begin; p0 < block_end; p0 += kPanel) {
        const int64_t p1 = std::min(p0 + kPanel, block_end);
        for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
          const int64_t n0 = tile * kLanes;
          for (int64_t blk = p0; blk < p1; ++blk) {
            const int64_t i0 = blk * kRows;
            alignas(64) T w[kRows][kLanes];
            dot_tile(pb.anchors.row(i0), dp, pb.ct(n0), d, w);
            mask_tile(n0, M, pb.exclude.data() + i0, w);
            for (int64_t i = 0; i < kRows; ++i) {
              const T c = rt.coef[i0 + i], hi = rt.lse_hi[i0 + i], lo = rt.lse_lo[i0 + i];
#pragma omp simd
              for (int64_t j = 0; j < kLanes; ++j) w[i][j] = c * exp_approx((w[i][j] - hi) - lo);
              const int64_t pj = pb.positives[i0 + i] - n0;
              if (pj >= 0 && pj < kLanes) w[i][pj] -= rt.g[i0 + i];
            }
            if (want_a) accumulate_rows(w, pb.candidates.row(n0), dp, acc_a.data() + i0 * dp);
            if (want_c) accumulate_lanes(w, pb.anchors.row(i0), dp, acc_c.data() + n0 * dp);
          }
        }
      }
#pragma omp barrier
    }
  }
}

// Gradients. grad_loss (g) and grad_lse (h, may be null) are [B]; a, c are the raw inputs the
// Problem was packed from (for the normalization's Jacobian). Either output may be null.
template <typename T>
void backward(const Problem<T>& pb, const T* grad_loss, const T* grad_lse, const double* lse,
              const T* a_raw, const T* c_raw, T* grad_anchors, T* grad_candidates) {
  const int64_t B = pb.B, M = pb.M, d = pb.d, dp = pb.anchors.dim_pad;
  const T inv_tau = T(1) / pb.temperature;
  const RowTerms<T> rt(pb, grad_loss, grad_lse, lse);
  std::vector<T> acc_a, acc_c;
  gradient_sums(pb, rt, grad_anchors != nullptr, grad_candidates != nullptr, acc_a, acc_c);

  if (grad_anchors) {
    // dL/da_i = sum_j W_ij c_j / tau, then the normalization's Jacobian.
#pragma omp parallel for schedule(static) if (pb.parallel())
    for (int64_t i = 0; i < B; ++i) {
      T* out = grad_anchors + i * d;
      for (int64_t k = 0; k < d; ++k) out[k] = acc_a[i * dp + k] * inv_tau;
      if (pb.normalize) normalize_backward(a_raw + i * d, pb.anchors.inv_norm[i], d, out);
    }
  }

  if (grad_candidates) {
    // dL/dc_j = sum_i W_ij a_i / tau (the packed anchors carry 1/tau), then the Jacobian.
#pragma omp parallel for schedule(static) if (pb.parallel())
    for (int64_t j = 0; j < M; ++j) {
      T* out = grad_candidates + j * d;
      for (int64_t k = 0; k < d; ++k) out[k] = acc_c[j * dp + k];
      if (pb.normalize) normalize_backward(c_raw + j * d, pb.candidates.inv_norm[j], d, out);
    }
  }
}

}  // namespace contrastive
}  // namespace cpu
}  // namespace letter_fast
