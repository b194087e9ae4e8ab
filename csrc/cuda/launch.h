// Host-side entry points of the plain CUDA kernels in csrc/cuda/*.cu.
// Deliberately free of torch headers: the .cu files compile with nvcc in seconds and can be
// compile-checked on machines without a GPU; the torch launchers (*_cuda.cpp) include this.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace letter_fast {
namespace cuda {

enum class ElementType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Largest latent width the residual-quantization kernel keeps in registers.
constexpr int64_t kRqMaxDim = 256;

// z: B rows (element type `type`) at z[b * stride_row + k * stride_col]; codebooks [L][N][d]
// float32 contiguous; sq_norms [L][N] float32; codes [B][L] int64; z_hat [B][d] of `type`.
cudaError_t residual_quantize(ElementType type, const void* z, int64_t stride_row,
                              int64_t stride_col, int64_t B, const float* codebooks,
                              const float* sq_norms, int64_t L, int64_t N, int64_t d,
                              int64_t* codes, void* z_hat, cudaStream_t stream);

// Widest row the contrastive kernels keep in registers (a row and its gradient accumulator).
constexpr int64_t kContrastiveMaxDim = 128;

// Fused softmax contrastive loss (csrc/cuda/contrastive_loss_kernel.cu). All float arrays are float32
// contiguous: anchors [B][d] already L2-normalized when asked and multiplied by 1/tau, so a dot
// product is the logit; candidates [M][d]; positives [B] and exclude [B] (nullptr: none) int64.
// forward writes loss [B] and lse [B] (double: the backward reads it as lse_hi + lse_lo, two
// floats, to keep float32 accuracy at low temperatures; contrastive_loss_kernel.cu says why).
cudaError_t contrastive_forward(const float* anchors, const float* candidates,
                                const int64_t* positives, const int64_t* exclude, int64_t B,
                                int64_t M, int64_t d, float* loss, double* lse,
                                cudaStream_t stream);

// Gradients with respect to the (normalized) rows: with W_ij = coef_i exp(s_ij - lse_i)
// - g_i [j = p_i] (0 for j = exclude_i), grad_anchors = inv_tau * W C and grad_candidates =
// W^T anchors (the anchors carry 1/tau). coef = grad_loss + grad_lse, g = grad_loss.
cudaError_t contrastive_grad_anchors(const float* anchors, const float* candidates,
                                     const int64_t* positives, const int64_t* exclude,
                                     const float* lse_hi, const float* lse_lo, const float* coef, const float* g,
                                     int64_t B, int64_t M, int64_t d, float inv_tau,
                                     float* grad_anchors, cudaStream_t stream);
cudaError_t contrastive_grad_candidates(const float* anchors, const float* candidates,
                                        const int64_t* positives, const int64_t* exclude,
                                        const float* lse_hi, const float* lse_lo, const float* coef, const float* g,
                                        int64_t B, int64_t M, int64_t d,
                                        float* grad_candidates, cudaStream_t stream);
// Trie-masked beam step (math: csrc/cpu/trie_kernel.h). node [Q*B] int64, log_probs rows of
// `type` at lp[r * stride_row + code * stride_col], scores [Q*B] float32, child_ptr int32,
// child_code int16 (code_is_int32 = false) or int32; outputs [Q][k]. `scratch` is int64 device
// memory of trie_step_scratch_elems(Q, B, N) elements (may be null when that is 0).
int64_t trie_step_scratch_elems(int64_t Q, int64_t B, int64_t N);
cudaError_t trie_step(ElementType type, const int64_t* node, const void* log_probs, int64_t stride_row,
                      int64_t stride_col, const float* scores, const int32_t* child_ptr, const void* child_code,
                      bool code_is_int32, int64_t Q, int64_t B, int64_t N, int64_t k, int64_t* out_parent,
                      int64_t* out_code, int64_t* out_child, float* out_score, int64_t* scratch,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace letter_fast
