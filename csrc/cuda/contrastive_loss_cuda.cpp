// CUDA implementation of letter_fast::contrastive_loss_forward / _backward: checks, the
// O((B + M) d) row preparation (float32, L2 normalization, 1/tau folded into the anchors) and
// the normalization's Jacobian in ATen, then the plain kernels in contrastive_loss_kernel.cu.
// Built only when the extension is compiled with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "launch.h"

namespace letter_fast {
namespace {

constexpr double kNormEps = 1e-12;  // as torch.nn.functional.normalize

void check_inputs(const char* op, const at::Tensor& anchors, const at::Tensor& candidates,
                  const at::Tensor& positives, const std::optional<at::Tensor>& exclude,
                  double temperature) {
  TORCH_CHECK(anchors.dim() == 2 && candidates.dim() == 2 &&
                  anchors.size(1) == candidates.size(1),
              op, " (cuda): expected anchors [B, d] and candidates [M, d], got ", anchors.sizes(),
              " and ", candidates.sizes());
  TORCH_CHECK(anchors.is_cuda() && candidates.device() == anchors.device() &&
                  positives.device() == anchors.device(),
              op, " (cuda): all inputs must be on the same CUDA device");
  TORCH_CHECK(anchors.scalar_type() != at::kDouble, op,
              " (cuda): float64 is not supported on the GPU kernels; use the reference backend");
  TORCH_CHECK(anchors.size(1) <= cuda::kContrastiveMaxDim, op, " (cuda): d must be <= ",
              cuda::kContrastiveMaxDim, ", got ", anchors.size(1));
  TORCH_CHECK(positives.dim() == 1 && positives.size(0) == anchors.size(0) &&
                  positives.scalar_type() == at::kLong,
              op, " (cuda): positives must be int64 [B]");
  if (exclude.has_value())
    TORCH_CHECK(exclude->dim() == 1 && exclude->size(0) == anchors.size(0) &&
                    exclude->scalar_type() == at::kLong && exclude->device() == anchors.device(),
                op, " (cuda): exclude must be int64 [B] on the anchors' device");
  TORCH_CHECK(temperature > 0, op, " (cuda): temperature must be > 0, got ", temperature);
}

// float32 rows, L2-normalized when asked; `norm` receives the clamped norms ([n, 1]).
at::Tensor unit_rows(const at::Tensor& x, bool normalize, at::Tensor* norm) {
  auto rows = x.to(at::kFloat);
  if (!normalize) return rows.contiguous();
  *norm = rows.norm(2, {1}, /*keepdim=*/true).clamp_min(kNormEps);
  return (rows / *norm).contiguous();
}

// Gradient of x / max(||x||, eps) from the unit rows, the clamped norms and the output gradient.
at::Tensor unit_rows_backward(const at::Tensor& unit, const at::Tensor& norm, const at::Tensor& g) {
  const auto projected = g - unit * (unit * g).sum({1}, /*keepdim=*/true);
  return at::where(norm <= kNormEps, g, projected) / norm;
}

const int64_t* exclude_ptr(const std::optional<at::Tensor>& exclude, at::Tensor* keep) {
  if (!exclude.has_value()) return nullptr;
  *keep = exclude->contiguous();
  return keep->data_ptr<int64_t>();
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& anchors,
                                                const at::Tensor& candidates,
                                                const at::Tensor& positives,
                                                const std::optional<at::Tensor>& exclude,
                                                double temperature, bool normalize) {
  check_inputs("contrastive_loss_forward", anchors, candidates, positives, exclude, temperature);
  const c10::cuda::CUDAGuard guard(anchors.device());
  const int64_t B = anchors.size(0), M = candidates.size(0), d = anchors.size(1);
  const auto opts = anchors.options().dtype(at::kFloat);
  auto loss = at::empty({B}, opts), lse = at::empty({B}, opts.dtype(at::kDouble));  // see launch.h
  if (B == 0) return {loss, lse};
  at::Tensor a_norm, c_norm, excl;
  const auto a = (unit_rows(anchors, normalize, &a_norm) / temperature).contiguous();
  const auto c = unit_rows(candidates, normalize, &c_norm);
  const auto pos = positives.contiguous();
  const cudaError_t err = cuda::contrastive_forward(
      a.data_ptr<float>(), c.data_ptr<float>(), pos.data_ptr<int64_t>(), exclude_ptr(exclude, &excl),
      B, M, d, loss.data_ptr<float>(), lse.data_ptr<double>(),
      c10::cuda::getCurrentCUDAStream(anchors.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess, "contrastive_loss_forward (cuda): kernel launch failed: ",
              cudaGetErrorString(err));
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& anchors,
    const at::Tensor& candidates, const at::Tensor& positives,
    const std::optional<at::Tensor>& exclude, const at::Tensor& lse, double temperature,
    bool normalize, bool anchors_grad, bool candidates_grad) {
  check_inputs("contrastive_loss_backward", anchors, candidates, positives, exclude, temperature);
  const c10::cuda::CUDAGuard guard(anchors.device());
  const int64_t B = anchors.size(0), M = candidates.size(0), d = anchors.size(1);
  auto grad_a = at::zeros({B, d}, anchors.options().dtype(at::kFloat));
  auto grad_c = at::zeros({M, d}, candidates.options().dtype(at::kFloat));
  if (B > 0 && (anchors_grad || candidates_grad)) {
    at::Tensor a_norm, c_norm, excl;
    const auto a_unit = unit_rows(anchors, normalize, &a_norm);
    const auto a = (a_unit / temperature).contiguous();
    const auto c = unit_rows(candidates, normalize, &c_norm);
    const auto pos = positives.contiguous();
    const auto g = grad_loss.to(at::kFloat).contiguous();
    const auto coef = (g + grad_lse.to(at::kFloat)).contiguous();
    const auto lse64 = lse.to(at::kDouble);
    const auto lse_hi = lse64.to(at::kFloat).contiguous();
    const auto lse_lo = (lse64 - lse_hi.to(at::kDouble)).to(at::kFloat).contiguous();  // lse = hi + lo
    const int64_t* x = exclude_ptr(exclude, &excl);
    const auto stream = c10::cuda::getCurrentCUDAStream(anchors.device().index()).stream();
    if (anchors_grad) {
      const cudaError_t err = cuda::contrastive_grad_anchors(
          a.data_ptr<float>(), c.data_ptr<float>(), pos.data_ptr<int64_t>(), x,
          lse_hi.data_ptr<float>(), lse_lo.data_ptr<float>(), coef.data_ptr<float>(),
          g.data_ptr<float>(), B, M, d,
          static_cast<float>(1.0 / temperature), grad_a.data_ptr<float>(), stream);
      TORCH_CHECK(err == cudaSuccess, "contrastive_loss_backward (cuda): kernel launch failed: ",
                  cudaGetErrorString(err));
      if (normalize) grad_a = unit_rows_backward(a_unit, a_norm, grad_a);
    }
    if (candidates_grad) {
      const cudaError_t err = cuda::contrastive_grad_candidates(
          a.data_ptr<float>(), c.data_ptr<float>(), pos.data_ptr<int64_t>(), x,
          lse_hi.data_ptr<float>(), lse_lo.data_ptr<float>(), coef.data_ptr<float>(),
          g.data_ptr<float>(), B, M, d,
          grad_c.data_ptr<float>(), stream);
      TORCH_CHECK(err == cudaSuccess, "contrastive_loss_backward (cuda): kernel launch failed: ",
                  cudaGetErrorString(err));
      if (normalize) grad_c = unit_rows_backward(c, c_norm, grad_c);
    }
  }
  return {grad_a.to(anchors.scalar_type()), grad_c.to(candidates.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CUDA, m) {
  m.impl("contrastive_loss_forward", &forward_cuda);
  m.impl("contrastive_loss_backward", &backward_cuda);
}

}  // namespace letter_fast
