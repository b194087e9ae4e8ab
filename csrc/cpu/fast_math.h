// Vectorizable math shared by the CPU kernels; standard library only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace letter_fast {
namespace cpu {

// exp(x) for float, vectorizable: x = n ln2 + r with |r| <= ln2/2, e^r by the degree-7 Taylor
// polynomial (relative error < 2e-7 on that interval), 2^n built in the exponent bits.
// Returns exactly 0 below -87.3 (including -inf, used for masked logits).
inline float exp_approx(float x) {
  const bool underflow = x < -87.3f;
  x = std::min(std::max(x, -87.3f), 88.0f);
  // Round to nearest by adding 1.5 * 2^23 (std::floor would not vectorize without
  // -fno-trapping-math).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // Cody-Waite: ln2 split in a part exact in float and a small correction.
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));  // vectorizes (checked with -fopt-info-vec)
  return underflow ? 0.0f : p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

}  // namespace cpu
}  // namespace letter_fast
