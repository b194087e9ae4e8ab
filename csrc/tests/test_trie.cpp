// Plain C++ unit test of the CPU trie kernels (build, walk, step) against naive oracles.
// Built by CMakeLists.txt without Python or torch: `cmake -B build && cmake --build build && ctest`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "../cpu/trie_kernel.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) { std::printf("FAIL: %s\n", what); ++failures; }
}

void check_catalog(int64_t V, int64_t L, int64_t N, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> code(0, N - 1);
  std::set<std::vector<int64_t>> unique;
  while (static_cast<int64_t>(unique.size()) < V) {
    std::vector<int64_t> row(L);
    for (auto& c : row) c = code(gen);
    unique.insert(row);
  }
  std::vector<std::vector<int64_t>> rows(unique.begin(), unique.end());
  std::shuffle(rows.begin(), rows.end(), gen);
  std::vector<int64_t> flat;
  for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const std::vector<int64_t> levels(L, N);
  const auto built = letter_fast::cpu::build_trie(flat.data(), L, 1, V, levels);
  expect(built.bad_row < 0, "no out-of-range code");
  expect(static_cast<int64_t>(built.leaf_start.size()) == V, "one identifier per item");

  // Oracle: node ids are ranks of the distinct prefixes in lexicographic order.
  for (int64_t t = 1; t <= L; ++t) {
    std::set<std::vector<int64_t>> prefixes;
    for (auto& r : rows) prefixes.insert(std::vector<int64_t>(r.begin(), r.begin() + t));
    expect(built.child_code[t - 1].size() == prefixes.size(), "node count per level");
  }
  // Walk every item and compare its leaf with its rank; order[leaf] must be the item's row.
  std::vector<const int32_t*> ptr;
  std::vector<const int32_t*> codes;
  for (int64_t l = 0; l < L; ++l) { ptr.push_back(built.child_ptr[l].data()); codes.push_back(built.child_code[l].data()); }
  std::vector<int64_t> leaf(V);
  letter_fast::cpu::trie_walk<int32_t>(flat.data(), L, 1, 0, V, L, ptr.data(), codes.data(), leaf.data());
  std::vector<std::vector<int64_t>> sorted_rows(unique.begin(), unique.end());
  for (int64_t v = 0; v < V; ++v) {
    const int64_t rank = std::lower_bound(sorted_rows.begin(), sorted_rows.end(), rows[v]) - sorted_rows.begin();
    expect(leaf[v] == rank, "walk finds the item's identifier");
    expect(built.order[leaf[v]] == v, "order maps identifiers back to rows");
  }

  // Step at level 1 with B beams per query against a brute-force sort of all candidates.
  if (L < 2) return;
  const int64_t Q = 3, B = 4, k = 7, level = 1;
  const int64_t nodes = static_cast<int64_t>(built.child_ptr[level].size()) - 1;
  std::uniform_int_distribution<int64_t> pick(-1, nodes - 1);
  std::normal_distribution<float> normal;
  std::vector<int64_t> node(Q * B);
  std::vector<float> lp(Q * B * N), score(Q * B);
  for (auto& n : node) n = pick(gen);
  for (auto& x : lp) x = std::round(normal(gen) * 2) / 2;  // ties on purpose
  for (auto& s : score) s = std::round(normal(gen));
  std::vector<int64_t> parent(Q * k), out_code(Q * k), child(Q * k);
  std::vector<float> out_score(Q * k);
  letter_fast::cpu::trie_step<float, int32_t>(node.data(), lp.data(), N, 1, score.data(), built.child_ptr[level].data(),
                                              built.child_code[level].data(), 0, Q, B, N, k, parent.data(),
                                              out_code.data(), child.data(), out_score.data());
  for (int64_t q = 0; q < Q; ++q) {
    std::vector<std::pair<float, int64_t>> cands;  // (-score, flat) sorts best first
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = q * B + b, n = node[r];
      if (n < 0) continue;
      for (int64_t c = built.child_ptr[level][n]; c < built.child_ptr[level][n + 1]; ++c)
        cands.push_back({-(score[r] + lp[r * N + built.child_code[level][c]]), b * N + (c - built.child_ptr[level][n])});
    }
    std::sort(cands.begin(), cands.end());
    for (int64_t i = 0; i < k; ++i) {
      if (i < static_cast<int64_t>(cands.size())) {
        const int64_t b = cands[i].second / N, slot = cands[i].second % N, r = q * B + b;
        expect(parent[q * k + i] == r, "step parent");
        expect(child[q * k + i] == built.child_ptr[level][node[r]] + slot, "step child");
        expect(out_score[q * k + i] == -cands[i].first, "step score");
      } else {
        expect(parent[q * k + i] == -1 && std::isinf(out_score[q * k + i]), "step padding");
      }
    }
  }
}

}  // namespace

int main() {
  check_catalog(1, 1, 1, 1);
  check_catalog(50, 3, 5, 2);
  check_catalog(500, 4, 9, 3);
  check_catalog(300, 2, 300, 4);
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
