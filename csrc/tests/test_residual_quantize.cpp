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

// duplicate > 0: codes n >= duplicate of every level repeat code n - duplicate exactly, so every
// distance has an exact tie and the lower index must win (as in the oracle and torch.argmin).
int check(int64_t B, int64_t L, int64_t N, int64_t d, unsigned seed, int64_t duplicate = 0) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> z(B * d), cb(L * N * d);
  for (auto& x : z) x = normal(gen);
  for (auto& x : cb) x = normal(gen);
  if (duplicate > 0)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t n = duplicate; n < N; ++n)
        for (int64_t k = 0; k < d; ++k) cb[(l * N + n) * d + k] = cb[(l * N + n - duplicate) * d + k];
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
  failures += check(6, 2, 40, 0, 6);        // d = 0: every distance is 0, code 0
  failures += check(21, 3, 70, 16, 7, 37);  // exact ties across lanes and tiles: lowest index
  failures += check(13, 2, 64, 5, 8, 32);   // a tie between the same lane of two tiles
  std::printf("%s\n", failures ? "residual_quantize kernel tests FAILED" : "residual_quantize kernel tests passed");
  return failures ? 1 : 0;
}
