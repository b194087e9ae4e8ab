// Plain C++ unit test of the CPU contrastive-loss kernel against a naive double-precision loop
// that builds the full logit matrix. Built by CMakeLists.txt without Python or torch.
// `test_contrastive --bench B d` times forward + backward instead (one call each).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../cpu/contrastive_loss_kernel.h"

namespace {

namespace ck = letter_fast::cpu::contrastive;

struct Naive {
  std::vector<double> loss, lse, grad_a, grad_c;
};

// Full matrix, double, autograd written out by hand; g = upstream gradient of each row's loss.
Naive naive(const std::vector<double>& a0, const std::vector<double>& c0, int64_t B, int64_t M,
            int64_t d, const std::vector<int64_t>& pos, const std::vector<int64_t>& excl,
            double tau, bool normalize, const std::vector<double>& g) {
  auto unit = [&](const std::vector<double>& x, int64_t n, std::vector<double>& inv) {
    std::vector<double> y(x);
    inv.assign(n, 1.0);
    if (!normalize) return y;
    for (int64_t r = 0; r < n; ++r) {
      double sq = 0;
      for (int64_t k = 0; k < d; ++k) sq += x[r * d + k] * x[r * d + k];
      inv[r] = 1.0 / std::max(std::sqrt(sq), 1e-12);
      for (int64_t k = 0; k < d; ++k) y[r * d + k] *= inv[r];
    }
    return y;
  };
  std::vector<double> inv_a, inv_c;
  const auto a = unit(a0, B, inv_a), c = unit(c0, M, inv_c);
  Naive out{std::vector<double>(B), std::vector<double>(B), std::vector<double>(B * d, 0.0),
            std::vector<double>(M * d, 0.0)};
  std::vector<double> s(M);
  for (int64_t i = 0; i < B; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j < M; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < d; ++k) dot += a[i * d + k] * c[j * d + k];
      s[j] = (!excl.empty() && excl[i] == j) ? -INFINITY : dot / tau;
      mx = std::max(mx, s[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < M; ++j) sum += std::exp(s[j] - mx);
    out.lse[i] = mx + std::log(sum);
    out.loss[i] = out.lse[i] - s[pos[i]];
    for (int64_t j = 0; j < M; ++j) {
      const double w = g[i] * (std::exp(s[j] - out.lse[i]) - (j == pos[i] ? 1.0 : 0.0)) / tau;
      for (int64_t k = 0; k < d; ++k) {
        out.grad_a[i * d + k] += w * c[j * d + k];
        out.grad_c[j * d + k] += w * a[i * d + k];
      }
    }
  }
  auto project = [&](const std::vector<double>& x, const std::vector<double>& inv, int64_t n,
                     std::vector<double>& gr) {
    if (!normalize) return;
    for (int64_t r = 0; r < n; ++r) {
      double ug = 0;
      for (int64_t k = 0; k < d; ++k) ug += x[r * d + k] * gr[r * d + k];
      for (int64_t k = 0; k < d; ++k) gr[r * d + k] = (gr[r * d + k] - x[r * d + k] * ug) * inv[r];
    }
  };
  project(a, inv_a, B, out.grad_a);
  project(c, inv_c, M, out.grad_c);
  return out;
}

// Largest |x - y| / (1 + |y|).
template <typename T>
double worst(const std::vector<T>& x, const std::vector<double>& y) {
  double w = 0;
  for (size_t i = 0; i < y.size(); ++i)
    w = std::max(w, std::abs(static_cast<double>(x[i]) - y[i]) / (1.0 + std::abs(y[i])));
  return w;
}

template <typename T>
int check(int64_t B, int64_t M, int64_t d, bool with_exclude, bool normalize, double tau,
          unsigned seed, double tol) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int64_t> pick(0, M - 1);
  std::vector<double> a(B * d), c(M * d), g(B);
  for (auto& x : a) x = normal(gen);
  for (auto& x : c) x = normal(gen);
  for (auto& x : g) x = normal(gen);
  std::vector<int64_t> pos(B), excl;
  for (auto& p : pos) p = pick(gen);
  if (with_exclude) {
    excl.resize(B);
    for (int64_t i = 0; i < B; ++i) excl[i] = (pos[i] + 1 + pick(gen) % (M - 1)) % M;
  }
  const auto want = naive(a, c, B, M, d, pos, excl, tau, normalize, g);

  std::vector<T> at(a.begin(), a.end()), ct(c.begin(), c.end()), gt(g.begin(), g.end());
  std::vector<T> loss(B), ga(B * d), gc(M * d);
  std::vector<double> lse(B);  // the kernel hands lse over in double
  const ck::Problem<T> pb(at.data(), ct.data(), B, M, d, pos.data(),
                          with_exclude ? excl.data() : nullptr, static_cast<T>(tau), normalize);
  ck::forward(pb, loss.data(), lse.data());
  ck::backward(pb, gt.data(), static_cast<const T*>(nullptr), lse.data(), at.data(), ct.data(),
               ga.data(), gc.data());
  const double errs[4] = {worst(loss, want.loss), worst(lse, want.lse), worst(ga, want.grad_a),
                          worst(gc, want.grad_c)};
  const char* names[4] = {"loss", "lse", "grad_anchors", "grad_candidates"};
  int failures = 0;
  for (int q = 0; q < 4; ++q)
    if (!(errs[q] <= tol)) {
      std::printf("FAIL %s B=%lld M=%lld d=%lld exclude=%d normalize=%d tau=%g: %s off by %.3g (tol %.3g)\n",
                  sizeof(T) == 8 ? "double" : "float", (long long)B, (long long)M, (long long)d,
                  with_exclude, normalize, tau, names[q], errs[q], tol);
      ++failures;
    }
  return failures;
}

int bench(int64_t B, int64_t d) {
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> a(B * d), c(B * d), g(B, 1.0f / B), loss(B), ga(B * d), gc(B * d);
  std::vector<double> lse(B);
  for (auto& x : a) x = normal(gen);
  for (auto& x : c) x = normal(gen);
  std::vector<int64_t> pos(B);
  for (int64_t i = 0; i < B; ++i) pos[i] = i;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const ck::Problem<float> pb(a.data(), c.data(), B, B, d, pos.data(), nullptr, 1.0f, false);
  ck::forward(pb, loss.data(), lse.data());
  const auto t1 = clock::now();
  ck::backward(pb, g.data(), static_cast<const float*>(nullptr), lse.data(), a.data(), c.data(),
               ga.data(), static_cast<float*>(nullptr));
  const auto t2 = clock::now();
  ck::backward(pb, g.data(), static_cast<const float*>(nullptr), lse.data(), a.data(), c.data(),
               static_cast<float*>(nullptr), gc.data());
  const auto t3 = clock::now();
  ck::backward(pb, g.data(), static_cast<const float*>(nullptr), lse.data(), a.data(), c.data(),
               ga.data(), gc.data());
  const auto t4 = clock::now();
  const double both = std::chrono::duration<double>(t4 - t3).count();
  const double f = std::chrono::duration<double>(t1 - t0).count();
  const double ba = std::chrono::duration<double>(t2 - t1).count();
  const double bc = std::chrono::duration<double>(t3 - t2).count();
  const double fma = static_cast<double>(B) * B * d;
  std::printf("B=%lld d=%lld forward %.3f s (%.1f GFMA/s), grad_anchors %.3f s (%.1f), "
              "grad_candidates %.3f s (%.1f), both gradients %.3f s (%.1f)\n",
              (long long)B, (long long)d, f, fma / f / 1e9, ba, 2 * fma / ba / 1e9, bc,
              2 * fma / bc / 1e9, both, 3 * fma / both / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--bench") return bench(std::atoll(argv[2]), std::atoll(argv[3]));
  int failures = 0;
  // float accumulates in float32: logits reach ~100 (d=100, tau=0.1), whose rounding (~1e-5)
  // moves the softmax weights by as much relatively.
  const int64_t shapes[][3] = {{1, 2, 1}, {7, 7, 8}, {9, 33, 3}, {40, 31, 32}, {17, 100, 100}, {65, 70, 17}};
  unsigned seed = 1;
  for (const auto& s : shapes)
    for (int ex = 0; ex < 2; ++ex)
      for (int norm = 0; norm < 2; ++norm)
        for (double tau : {1.0, 0.1, 0.05}) {
          // tau = 0.05 on normalized rows only (the usual setting): on raw N(0, 1) rows of
          // d = 100 its logits reach ~200, whose float32 rounding alone exceeds 1e-3.
          if (tau == 0.05 && !norm) continue;
          failures += check<float>(s[0], s[1], s[2], ex, norm, tau, seed, 1e-3);
          failures += check<double>(s[0], s[1], s[2], ex, norm, tau, seed, 1e-9);
          ++seed;
        }
  std::printf("%s\n", failures ? "contrastive kernel tests FAILED" : "contrastive kernel tests passed");
  return failures ? 1 : 0;
}
