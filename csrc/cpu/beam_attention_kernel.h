// Decoder self-attention of beam search, one new query per beam, over the beam's own history,
// read in place from the per-step projections (no gathered key/value cache). Torch-free.
//
// At decoding step t every row r (a beam) has a new query q_r and its ancestors' keys and values
// at positions p < t, stored where step p wrote them: row anc[p][r] of step p's projection
// qkv_p [rows_p, 3, H, dk] (q, k, v). Position t is the row itself (qkv_t). For each head h:
//     s_p = <q_{r,h}, k_{p, anc_p(r), h}> + bias[h][p]          (T5: no 1/sqrt(dk) scaling)
//     out_{r,h} = sum_p softmax(s)_p v_{p, anc_p(r), h}
// A beam search that gathers its key/value cache through the parent index at every step copies
// t * rows * 2 * H * dk values per layer and step; here the ancestors are followed by index and
// only the dk-wide rows that are used are read.
//
// Used by the torch launcher (beam_attention.cpp); only the standard library here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace letter_fast {
namespace cpu {
namespace beam_attention {

// bfloat16 storage (the upper 16 bits of a float32); float32 passes through.
struct BFloat16Bits {
  uint16_t bits;
};
inline float to_float(float x) { return x; }
inline float to_float(BFloat16Bits x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline void from_float(float x, float* out) { *out = x; }
inline void from_float(float x, BFloat16Bits* out) {  // round to nearest even, as torch
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
    out->bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  out->bits = static_cast<uint16_t>(u >> 16);
}

// qkv[p]: pointer to step p's [rows_p, 3, H, dk] projections (contiguous), p = 0..t.
// anc: [t][rows] ancestor row of each current row at positions p < t. bias: [H][t + 1] float.
// out: [rows][H][dk].
template <typename T>
void attend(const std::vector<const T*>& qkv, const int64_t* anc, const float* bias, int64_t rows,
            int64_t heads, int64_t dk, T* out) {
  const int64_t t = static_cast<int64_t>(qkv.size()) - 1;
  const int64_t row_stride = 3 * heads * dk, inner = heads * dk;
#pragma omp parallel if (rows * (t + 1) * inner >= (1 << 16))
  {
    std::vector<const T*> row_of(static_cast<size_t>(t + 1));
    std::vector<float> q(static_cast<size_t>(dk)), acc(static_cast<size_t>(dk)), s(static_cast<size_t>(t + 1));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t p = 0; p < t; ++p) row_of[p] = qkv[p] + anc[p * rows + r] * row_stride;
      row_of[t] = qkv[t] + r * row_stride;
      for (int64_t h = 0; h < heads; ++h) {
        const T* qh = row_of[t] + h * dk;  // slot 0: the query
        for (int64_t k = 0; k < dk; ++k) q[k] = to_float(qh[k]);
        float m = -INFINITY;
        for (int64_t p = 0; p <= t; ++p) {
          const T* kh = row_of[p] + inner + h * dk;  // slot 1: keys
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t k = 0; k < dk; ++k) dot += q[k] * to_float(kh[k]);
          s[p] = dot + bias[h * (t + 1) + p];
          m = std::max(m, s[p]);
        }
        float total = 0.0f;
        for (int64_t p = 0; p <= t; ++p) {
          s[p] = std::exp(s[p] - m);
          total += s[p];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t p = 0; p <= t; ++p) {
          const T* vh = row_of[p] + 2 * inner + h * dk;  // slot 2: values
          const float w = s[p] / total;
#pragma omp simd
          for (int64_t k = 0; k < dk; ++k) acc[k] += w * to_float(vh[k]);
        }
        T* o = out + r * inner + h * dk;
        for (int64_t k = 0; k < dk; ++k) from_float(acc[k], o + k);
      }
    }
  }
}

}  // namespace beam_attention
}  // namespace cpu
}  // namespace letter_fast
