// Plain C++ unit test of the CPU beam attention kernel against a naive double-precision loop that
// first gathers each row's ancestors' keys and values (what a key/value cache holds), then takes a
// softmax over the positions. The kernel follows the ancestors by index instead, in float32; both
// must agree to float32 rounding, and bfloat16 storage to bfloat16 rounding.
// Built by CMakeLists.txt without Python or torch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../cpu/beam_attention_kernel.h"

namespace {

namespace ba = letter_fast::cpu::beam_attention;

struct History {
  int64_t heads, dk;
  std::vector<std::vector<float>> qkv;  // step p: [rows_p][3][heads][dk]
  std::vector<int64_t> rows;            // rows_p
  std::vector<int64_t> anc;             // [t][rows_t]
  std::vector<float> bias;              // [heads][t + 1]
};

History make(int64_t steps, int64_t users, int64_t beams, int64_t heads, int64_t dk, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  History h{heads, dk, {}, {}, {}, {}};
  std::vector<std::vector<int64_t>> parents;  // parents[s][r]: row of step s - 1 that row r of step s extends
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t rows = s == 0 ? users : users * beams;
    h.rows.push_back(rows);
    std::vector<float> x(rows * 3 * heads * dk);
    for (auto& v : x) v = normal(rng);
    h.qkv.push_back(x);
    std::vector<int64_t> par(rows, 0);
    if (s > 0) {
      std::uniform_int_distribution<int64_t> pick(0, h.rows[s - 1] - 1);
      for (auto& p : par) p = pick(rng);
    }
    parents.push_back(par);
  }
  const int64_t t = steps - 1, rows = h.rows[t];
  // anc[p][r]: follow the parents back from the last step to step p
  h.anc.assign(t * rows, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t row = r;
    for (int64_t p = t - 1; p >= 0; --p) {
      row = parents[p + 1][row];
      h.anc[p * rows + r] = row;
    }
  }
  h.bias.resize(heads * (t + 1));
  for (auto& v : h.bias) v = normal(rng);
  return h;
}

std::vector<double> naive(const History& h) {
  const int64_t t = static_cast<int64_t>(h.qkv.size()) - 1, rows = h.rows[t], H = h.heads, dk = h.dk;
  auto at = [&](int64_t p, int64_t row, int64_t slot, int64_t head, int64_t k) {
    return static_cast<double>(h.qkv[p][((row * 3 + slot) * H + head) * dk + k]);
  };
  std::vector<double> out(rows * H * dk, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> src(t + 1);
    for (int64_t p = 0; p < t; ++p) src[p] = h.anc[p * rows + r];
    src[t] = r;
    for (int64_t head = 0; head < H; ++head) {
      std::vector<double> s(t + 1);
      for (int64_t p = 0; p <= t; ++p) {
        double dot = 0;
        for (int64_t k = 0; k < dk; ++k) dot += at(t, r, 0, head, k) * at(p, src[p], 1, head, k);
        s[p] = dot + h.bias[head * (t + 1) + p];
      }
      const double m = *std::max_element(s.begin(), s.end());
      double total = 0;
      for (auto& v : s) total += (v = std::exp(v - m));
      for (int64_t p = 0; p <= t; ++p)
        for (int64_t k = 0; k < dk; ++k) out[(r * H + head) * dk + k] += s[p] / total * at(p, src[p], 2, head, k);
    }
  }
  return out;
}

int check(int64_t steps, int64_t users, int64_t beams, int64_t heads, int64_t dk, unsigned seed) {
  History h = make(steps, users, beams, heads, dk, seed);
  const int64_t t = steps - 1, rows = h.rows[t];
  const auto want = naive(h);

  std::vector<const float*> ptrs;
  for (const auto& x : h.qkv) ptrs.push_back(x.data());
  std::vector<float> got(rows * heads * dk, NAN);
  ba::attend(ptrs, h.anc.data(), h.bias.data(), rows, heads, dk, got.data());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }

  // bfloat16 storage: the inputs rounded to bfloat16 (and the naive loop run on the rounded values)
  History hb = h;
  std::vector<std::vector<ba::BFloat16Bits>> qkv_b;
  for (auto& x : hb.qkv) {
    std::vector<ba::BFloat16Bits> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      ba::from_float(x[i], &xb[i]);
      x[i] = ba::to_float(xb[i]);
    }
    qkv_b.push_back(xb);
  }
  const auto want_b = naive(hb);
  std::vector<const ba::BFloat16Bits*> ptrs_b;
  for (const auto& x : qkv_b) ptrs_b.push_back(x.data());
  std::vector<ba::BFloat16Bits> got_b(rows * heads * dk);
  ba::attend(ptrs_b, hb.anc.data(), hb.bias.data(), rows, heads, dk, got_b.data());
  double err_b = 0;
  for (size_t i = 0; i < want_b.size(); ++i) err_b = std::max(err_b, std::abs(ba::to_float(got_b[i]) - want_b[i]));

  // float32: a few ulps of the largest output per position summed; bfloat16 output: its 8-bit mantissa
  const bool ok = err <= 1e-5 * scale * (t + 1) && err_b <= 1.0 / 128 * scale;
  std::printf("%s t=%lld rows=%lld H=%lld dk=%lld: max error %.3g (bf16 %.3g) of max |out| %.3g\n",
              ok ? "ok  " : "FAIL", (long long)t, (long long)rows, (long long)heads, (long long)dk, err, err_b,
              scale);
  return ok ? 0 : 1;
}

int check_single_position() {
  // t = 0: the softmax has one position, so the output is the row's own value, exactly
  History h = make(1, 3, 1, 2, 5, 9);
  std::vector<const float*> ptrs{h.qkv[0].data()};
  std::vector<float> got(3 * 2 * 5, NAN);
  ba::attend(ptrs, h.anc.data(), h.bias.data(), 3, 2, 5, got.data());
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t i = 0; i < 10; ++i)
      if (got[r * 10 + i] != h.qkv[0][(r * 3 + 2) * 10 + i]) {
        std::printf("FAIL t=0: row %lld entry %lld is not the row's value\n", (long long)r, (long long)i);
        return 1;
      }
  std::printf("ok   t=0: each row attends to itself alone\n");
  return 0;
}

}  // namespace

int main() {
  int failures = 0;
  failures += check(2, 5, 3, 2, 8, 1);
  failures += check(4, 7, 4, 4, 16, 2);
  failures += check(5, 3, 10, 1, 3, 3);  // odd head width
  failures += check(6, 64, 20, 6, 64, 4);  // large enough to take the OpenMP path
  failures += check_single_position();
  std::printf("%s\n", failures ? "beam_attention kernel tests FAILED" : "beam_attention kernel tests passed");
  return failures ? 1 : 0;
}
