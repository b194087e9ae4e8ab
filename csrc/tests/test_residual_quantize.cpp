// Plain C++ unit test of the CPU residual-quantization kernel against a naive triple loop.
// Built by CMakeLists.txt without Python or torch: `cmake -B build && cmake --build build && ctest`.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../cpu/residual_quantize_kernel.h"

namespace {

// Naive oracle: full distances in double, argmin with lowest-index ties.
void naive(const std::vector<float>& z, const std::vector<float>& cb, int64_t B, int64_t L,
           int64_t N, int64_t d, std::vector<int64_t>& codes) {
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> r(z.begin() + b * d, z.begin() + (b + 1) * d);
    for (int64_t l = 0; l < L; ++l) {
      double best = INFINITY;
      int64_t arg = 0;
      for (int64_t n = 0; n < N; ++n) {
        double dist = 0;
        for (int64_t k = 0; k < d; ++k) {
          const double diff = r[k] - cb[(l * N + n) * d + k];
          dist += diff * diff;
        }
        if (dist < best) { best = dist; arg = n; }
      }
      codes[b * L + l] = arg;
      for (int64_t k = 0; k < d; ++k) r[k] -= cb[(l * N + arg) * d + k];
    }
  }
}

int check(int64_t B, int64_t L, int64_t N, int64_t d, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> z(B * d), cb(L * N * d);
  for (auto& x : z) x = normal(gen);
  for (auto& x : cb) x = normal(gen);
  std::vector<int64_t> got(B * L), want(B * L);
  std::vector<float> zhat(B * d);
  letter_fast::cpu::PackedCodebooks packed(cb.data(), L, N, d);
  letter_fast::cpu::residual_quantize(z.data(), d, 1, B, packed, got.data(), zhat.data());
  naive(z, cb, B, L, N, d, want);
  int64_t bad = 0;
  for (int64_t i = 0; i < B * L; ++i) bad += got[i] != want[i];
  // Random Gaussian data has no float-rounding near-ties at these sizes (checked by the seed).
  if (bad) std::printf("FAIL B=%lld L=%lld N=%lld d=%lld: %lld codes differ\n", (long long)B,
                       (long long)L, (long long)N, (long long)d, (long long)bad);
  return bad ? 1 : 0;
}

}  // namespace

int main() {
  int failures = 0;
  failures += check(1, 1, 1, 1, 1);
  failures += check(5, 3, 7, 3, 2);
  failures += check(33, 4, 256, 32, 3);
  failures += check(17, 2, 300, 48, 4);
  failures += check(9, 8, 65, 128, 5);
  std::printf("%s\n", failures ? "residual_quantize kernel tests FAILED" : "residual_quantize kernel tests passed");
  return failures ? 1 : 0;
}
