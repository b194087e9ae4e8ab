// Plain C++ unit test of the CPU Sinkhorn assignment kernel against a naive double-precision
// log-domain Sinkhorn (logsumexp updates of the potentials, no kernel matrix, no absorption):
// the same iterates in exact arithmetic, so codes agree except at float near-ties.
// Built by CMakeLists.txt without Python or torch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "../cpu/sinkhorn_assign_kernel.h"

namespace {

std::vector<int64_t> naive(const std::vector<float>& dist, int64_t B, int64_t N, double eps, int iters) {
  if (B == 0) return {};
  const double lo = *std::min_element(dist.begin(), dist.end());
  const double hi = *std::max_element(dist.begin(), dist.end());
  const double scale = 1.0 / (std::max(hi - lo, 1e-12) * eps);
  std::vector<double> C(B * N), F(B), G(N, std::numeric_limits<double>::infinity());
  for (int64_t i = 0; i < B * N; ++i) C[i] = (dist[i] - lo) * scale;
  for (int64_t b = 0; b < B; ++b) F[b] = -*std::min_element(C.begin() + b * N, C.begin() + (b + 1) * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n) G[n] = std::min(G[n], C[b * N + n] + F[b]);
  for (auto& g : G) g = -g;
  auto lse = [](const std::vector<double>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    double s = 0;
    for (double v : x) s += std::exp(v - m);
    return m + std::log(s);
  };
  std::vector<double> col(B), row(N);
  for (int it = 0; it < iters; ++it) {
    for (int64_t n = 0; n < N; ++n) {  // columns sum to 1/N
      for (int64_t b = 0; b < B; ++b) col[b] = F[b] - C[b * N + n];
      G[n] = -std::log(double(N)) - lse(col);
    }
    for (int64_t b = 0; b < B; ++b) {  // rows sum to 1/B
      for (int64_t n = 0; n < N; ++n) row[n] = G[n] - C[b * N + n];
      F[b] = -std::log(double(B)) - lse(row);
    }
  }
  std::vector<int64_t> codes(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t best = 0;
    for (int64_t n = 1; n < N; ++n)
      if (G[n] - C[b * N + n] > G[best] - C[b * N + best]) best = n;
    codes[b] = best;
  }
  return codes;
}

int check(int64_t B, int64_t N, int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(B * d), c(N * d), dist(B * N);
  for (auto& v : x) v = normal(rng);
  for (auto& v : c) v = normal(rng);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0;
      for (int64_t k = 0; k < d; ++k) s += (x[b * d + k] - c[n * d + k]) * (x[b * d + k] - c[n * d + k]);
      dist[b * N + n] = s;
    }
  std::vector<float> work(2 * B * N);
  std::vector<int64_t> got(B, -1);
  letter_fast::cpu::sinkhorn::assign(dist.data(), B, N, 0.003f, 50, 10, work.data(), got.data());
  const auto want = naive(dist, B, N, 0.003, 50);
  int64_t same = 0, same_nearest = 0;
  std::vector<int64_t> load_got(N, 0), load_want(N, 0);
  for (int64_t b = 0; b < B; ++b) {
    same += got[b] == want[b];
    same_nearest += std::min_element(dist.begin() + b * N, dist.begin() + (b + 1) * N) - dist.begin() - b * N == want[b];
    if (got[b] < 0 || got[b] >= N) {
      std::printf("FAIL B=%lld N=%lld: code %lld out of range\n", (long long)B, (long long)N, (long long)got[b]);
      return 1;
    }
    ++load_got[got[b]];
    ++load_want[want[b]];
  }
  const double agree = B ? double(same) / B : 1.0;
  const double agree_nearest = B ? double(same_nearest) / B : 1.0;
  const int64_t max_got = B ? *std::max_element(load_got.begin(), load_got.end()) : 0;
  const int64_t max_want = B ? *std::max_element(load_want.begin(), load_want.end()) : 0;
  // float32 iterates drift from the float64 ones at the plan's near-ties (eps = 0.003 makes the plan
  // sharp): ~2% of codes differ. The balance must match, and the kernel must be far closer to the
  // naive plan than the unbalanced nearest code is.
  const bool ok = agree >= 0.97 && max_got <= max_want + 1 && max_got + 1 >= max_want &&
                  (N == 1 || B == 0 || agree > agree_nearest + 0.05);
  std::printf("%s B=%lld N=%lld: agreement %.4f (nearest code: %.4f), max load %lld (naive %lld)\n",
              ok ? "ok  " : "FAIL", (long long)B, (long long)N, agree, agree_nearest, (long long)max_got,
              (long long)max_want);
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  int failures = 0;
  failures += check(1024, 256, 32, 1);
  failures += check(999, 7, 8, 2);
  failures += check(300, 64, 16, 3);
  failures += check(5, 1, 4, 4);
  failures += check(0, 16, 4, 5);
  return failures ? 1 : 0;
}
