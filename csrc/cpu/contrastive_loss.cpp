// CPU and Meta implementations of letter_fast::contrastive_loss_forward / _backward (schemas in
// csrc/letter_fast.cpp). Thin launcher: checks that protect memory safety, conversion to the
// accumulation type (float32, or float64 for float64 inputs), then contrastive_loss_kernel.h.
// User-facing validation with friendly messages lives in letter_fast/ops/contrastive_loss.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "isa/dispatch.h"  // kernels: contrastive_loss_kernel.h, one variant per ISA

namespace letter_fast {
namespace {

// float64 inputs accumulate in float64 (gradcheck); every other float type in float32.
at::ScalarType accumulation_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(const char* op, const at::Tensor& anchors, const at::Tensor& candidates,
                  const at::Tensor& positives, const std::optional<at::Tensor>& exclude,
                  double temperature) {
  TORCH_CHECK(anchors.dim() == 2 && candidates.dim() == 2, op,
              ": anchors must be [B, d] and candidates [M, d], got ", anchors.sizes(), " and ",
              candidates.sizes());
  TORCH_CHECK(anchors.size(1) == candidates.size(1), op, ": anchors have d=", anchors.size(1),
              " but candidates have d=", candidates.size(1));
  TORCH_CHECK(anchors.scalar_type() == candidates.scalar_type(), op,
              ": anchors and candidates must share a dtype, got ", anchors.scalar_type(), " and ",
              candidates.scalar_type());
  TORCH_CHECK(at::isFloatingType(anchors.scalar_type()), op, ": anchors must be floating point");
  TORCH_CHECK(positives.dim() == 1 && positives.size(0) == anchors.size(0) &&
                  positives.scalar_type() == at::kLong,
              op, ": positives must be int64 [B=", anchors.size(0), "], got ",
              positives.scalar_type(), " ", positives.sizes());
  if (exclude.has_value())
    TORCH_CHECK(exclude->dim() == 1 && exclude->size(0) == anchors.size(0) &&
                    exclude->scalar_type() == at::kLong,
                op, ": exclude must be int64 [B=", anchors.size(0), "], got ",
                exclude->scalar_type(), " ", exclude->sizes());
  TORCH_CHECK(temperature > 0, op, ": temperature must be > 0, got ", temperature);
}

// Index ranges are checked here too: an out-of-range index would read out of bounds.
void check_indices(const char* op, const at::Tensor& positives, const at::Tensor& exclude,
                   int64_t M) {
  const int64_t* p = positives.data_ptr<int64_t>();
  const int64_t* x = exclude.defined() ? exclude.data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; i < positives.size(0); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < M, op, ": positives[", i, "] = ", p[i],
                " is outside [0, ", M, ")");
    if (x) {
      TORCH_CHECK(x[i] >= 0 && x[i] < M, op, ": exclude[", i, "] = ", x[i], " is outside [0, ", M, ")");
      TORCH_CHECK(x[i] != p[i], op, ": row ", i, " excludes its own positive ", p[i]);
    }
  }
}

struct Prepared {
  at::Tensor anchors, candidates, positives, exclude;  // contiguous, accumulation type / int64
};

Prepared prepare(const char* op, const at::Tensor& anchors, const at::Tensor& candidates,
                 const at::Tensor& positives, const std::optional<at::Tensor>& exclude) {
  TORCH_CHECK(anchors.device().is_cpu() && candidates.device().is_cpu() &&
                  positives.device().is_cpu(),
              op, " (cpu): inputs must be CPU tensors");
  const auto acc = accumulation_type(anchors);
  Prepared p{anchors.to(acc).contiguous(), candidates.to(acc).contiguous(), positives.contiguous(),
             exclude.has_value() ? exclude->contiguous() : at::Tensor()};
  check_indices(op, p.positives, p.exclude, candidates.size(0));
  return p;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& anchors,
                                               const at::Tensor& candidates,
                                               const at::Tensor& positives,
                                               const std::optional<at::Tensor>& exclude,
                                               double temperature, bool normalize) {
  const char* op = "contrastive_loss_forward";
  check_inputs(op, anchors, candidates, positives, exclude, temperature);
  const auto opts = anchors.options().dtype(accumulation_type(anchors));
  const int64_t B = anchors.size(0);
  // lse in float64 whatever the inputs: the backward needs it to more than float32 precision
  // (contrastive_loss_kernel.h says why).
  auto loss = at::empty({B}, opts), lse = at::empty({B}, opts.dtype(at::kDouble));
  if (B == 0) return {loss, lse};
  const auto p = prepare(op, anchors, candidates, positives, exclude);
  AT_DISPATCH_FLOATING_TYPES(loss.scalar_type(), "contrastive_loss_forward_cpu", [&] {
    cpu_isa::dispatch([&](auto k) {
      k.contrastive_loss_forward(
          p.anchors.data_ptr<scalar_t>(), p.candidates.data_ptr<scalar_t>(), B, p.candidates.size(0),
          p.anchors.size(1), p.positives.data_ptr<int64_t>(),
          p.exclude.defined() ? p.exclude.data_ptr<int64_t>() : nullptr,
          static_cast<scalar_t>(temperature), normalize, loss.data_ptr<scalar_t>(), lse.data_ptr<double>());
    });
  });
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& anchors,
    const at::Tensor& candidates, const at::Tensor& positives,
    const std::optional<at::Tensor>& exclude, const at::Tensor& lse, double temperature,
    bool normalize, bool anchors_grad, bool candidates_grad) {
  const char* op = "contrastive_loss_backward";
  check_inputs(op, anchors, candidates, positives, exclude, temperature);
  const int64_t B = anchors.size(0);
  for (const at::Tensor* t : {&grad_loss, &grad_lse, &lse})
    TORCH_CHECK(t->dim() == 1 && t->size(0) == B, op, ": grad_loss, grad_lse and lse must be [B=",
                B, "], got ", t->sizes());
  const auto acc = accumulation_type(anchors);
  // Outputs in the inputs' dtype; a gradient that is not needed is returned as zeros unfilled
  // by the kernel (the autograd rule drops it).
  auto grad_a = at::zeros(anchors.sizes(), anchors.options().dtype(acc));
  auto grad_c = at::zeros(candidates.sizes(), candidates.options().dtype(acc));
  if (B > 0 && (anchors_grad || candidates_grad)) {
    const auto p = prepare(op, anchors, candidates, positives, exclude);
    const auto gl = grad_loss.to(acc).contiguous(), gh = grad_lse.to(acc).contiguous();
    const auto l = lse.to(at::kDouble).contiguous();
    AT_DISPATCH_FLOATING_TYPES(acc, "contrastive_loss_backward_cpu", [&] {
      cpu_isa::dispatch([&](auto k) {
        k.contrastive_loss_backward(
            p.anchors.data_ptr<scalar_t>(), p.candidates.data_ptr<scalar_t>(), B, p.candidates.size(0),
            p.anchors.size(1), p.positives.data_ptr<int64_t>(),
            p.exclude.defined() ? p.exclude.data_ptr<int64_t>() : nullptr,
            static_cast<scalar_t>(temperature), normalize, gl.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(),
            l.data_ptr<double>(), anchors_grad ? grad_a.data_ptr<scalar_t>() : nullptr,
            candidates_grad ? grad_c.data_ptr<scalar_t>() : nullptr);
      });
    });
  }
  return {grad_a.to(anchors.scalar_type()), grad_c.to(candidates.scalar_type())};
}

// Shapes only: lets torch.compile / FakeTensor trace through the ops.
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& anchors,
                                                const at::Tensor& candidates,
                                                const at::Tensor& positives,
                                                const std::optional<at::Tensor>& exclude,
                                                double temperature, bool normalize) {
  check_inputs("contrastive_loss_forward", anchors, candidates, positives, exclude, temperature);
  const auto opts = anchors.options().dtype(accumulation_type(anchors));
  return {at::empty({anchors.size(0)}, opts), at::empty({anchors.size(0)}, opts.dtype(at::kDouble))};
}

std::tuple<at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& anchors,
    const at::Tensor& candidates, const at::Tensor& positives,
    const std::optional<at::Tensor>& exclude, const at::Tensor& lse, double temperature,
    bool normalize, bool anchors_grad, bool candidates_grad) {
  check_inputs("contrastive_loss_backward", anchors, candidates, positives, exclude, temperature);
  return {at::empty(anchors.sizes(), anchors.options()),
          at::empty(candidates.sizes(), candidates.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(letter_fast, CPU, m) {
  m.impl("contrastive_loss_forward", &forward_cpu);
  m.impl("contrastive_loss_backward", &backward_cpu);
}
TORCH_LIBRARY_IMPL(letter_fast, Meta, m) {
  m.impl("contrastive_loss_forward", &forward_meta);
  m.impl("contrastive_loss_backward", &backward_meta);
}

}  // namespace letter_fast
