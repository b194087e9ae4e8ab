// CPU and Meta implementations of letter_fast::sinkhorn_assign (schema in csrc/letter_fast.cpp).
// Thin launcher: memory-safety checks, float32 contiguous input, then sinkhorn_assign_kernel.h.
// User-facing validation lives in letter_fast/ops/sinkhorn_assign.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "isa/dispatch.h"  // kernels: sinkhorn_assign_kernel.h, one variant per ISA

namespace letter_fast {
namespace {

void check_args(const at::Tensor& dist, double epsilon, int64_t iters, int64_t absorb_every) {
  TORCH_CHECK(dist.dim() == 2, "sinkhorn_assign: dist must be [B, N], got ", dist.sizes());
  TORCH_CHECK(dist.size(1) > 0, "sinkhorn_assign: dist needs N > 0 codes, got ", dist.sizes());
  TORCH_CHECK(epsilon > 0, "sinkhorn_assign: epsilon must be > 0, got ", epsilon);
  TORCH_CHECK(iters >= 0 && absorb_every > 0, "sinkhorn_assign: need iters >= 0 and absorb_every > 0, got ",
              iters, ", ", absorb_every);
}

at::Tensor sinkhorn_assign_cpu(const at::Tensor& dist, double epsilon, int64_t iters, int64_t absorb_every) {
  check_args(dist, epsilon, iters, absorb_every);
  TORCH_CHECK(dist.device().is_cpu(), "sinkhorn_assign (cpu): dist must be a CPU tensor");
  const int64_t B = dist.size(0), N = dist.size(1);
  auto codes = at::empty({B}, dist.options().dtype(at::kLong));
  if (B == 0) return codes;
  const auto d = dist.to(at::kFloat).contiguous();
  auto work = at::empty({2, B, N}, d.options());
  cpu_isa::dispatch([&](auto k) {
    k.sinkhorn_assign(d.data_ptr<float>(), B, N, static_cast<float>(epsilon), iters, absorb_every,
                      work.data_ptr<float>(), codes.data_ptr<int64_t>());
  });
  return codes;
}

at::Tensor sinkhorn_assign_meta(const at::Tensor& dist, double epsilon, int64_t iters, int64_t absorb_every) {
  check_args(dist, epsilon, iters, absorb_every);
  return at::empty({dist.size(0)}, dist.options().dtype(at::kLong));
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CPU, m) { m.impl("sinkhorn_assign", &sinkhorn_assign_cpu); }
TORCH_LIBRARY_IMPL(letter_fast, Meta, m) { m.impl("sinkhorn_assign", &sinkhorn_assign_meta); }

}  // namespace letter_fast
