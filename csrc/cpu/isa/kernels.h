// The body of one kernel variant: csrc/cpu/isa/<variant>.cpp defines LETTER_FAST_CPU_ISA (the
// Isa enumerator), LETTER_FAST_CPU_ISA_NS (a namespace of its own) and, except for the baseline,
// LETTER_FAST_CPU_ISA_TARGET, then includes this file, which compiles every kernel header inside that namespace and defines
// Kernels<LETTER_FAST_CPU_ISA> (entries.inc) on top of them.
//
// Why the namespace: the kernels are inline functions and templates, which the linker merges
// across translation units by name. Compiled three times under one name, the linker would keep one
// copy, possibly the AVX-512 one, for every caller: exactly the illegal instruction this design
// avoids. Everything the kernel headers include comes first, outside the target region and the
// namespace, so the standard library keeps one baseline copy that all variants share.
#pragma once

#if !defined(LETTER_FAST_CPU_ISA) || !defined(LETTER_FAST_CPU_ISA_NS)
#error "include csrc/cpu/isa/kernels.h only from csrc/cpu/isa/<variant>.cpp"
#endif

#include "dispatch.h"

// Everything the kernel headers include (they are included below inside a namespace).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// The target region: every function defined from here to the end of the file (kernels, their
// OpenMP bodies, the entries) is compiled for LETTER_FAST_CPU_ISA_TARGET, a GCC target string
// such as ("avx2,fma,f16c"). The baseline variant has none and uses the build's flags.
// The strings name instruction sets only, never "arch=" or "tune=": GCC inlines a function into
// one with another target only where arch and tune agree, so a tune= here stops every standard
// library helper (std::min, std::vector::operator[], ...) from inlining into the kernels
// (residual_quantize measured 2.1x slower with "tune=znver3"). The variants therefore run GCC's
// generic tuning even where -march=native would pick a CPU's own; the kernel headers are written
// so that it makes no difference (see residual_quantize_kernel.h).
#define LF_ISA_STR(x) #x
#define LF_ISA_PRAGMA(x) _Pragma(LF_ISA_STR(x))
#ifdef LETTER_FAST_CPU_ISA_TARGET
#if defined(__clang__)
LF_ISA_PRAGMA(clang attribute push(__attribute__((target LETTER_FAST_CPU_ISA_TARGET)), apply_to = function))
#else
LF_ISA_PRAGMA(GCC push_options)
LF_ISA_PRAGMA(GCC target LETTER_FAST_CPU_ISA_TARGET)
#endif
#endif

namespace LETTER_FAST_CPU_ISA_NS {
#include "../beam_attention_kernel.h"
#include "../contrastive_loss_kernel.h"
#include "../residual_quantize_kernel.h"
#include "../sinkhorn_assign_kernel.h"
#include "../trie_kernel.h"
}  // namespace LETTER_FAST_CPU_ISA_NS

namespace letter_fast {
namespace cpu_isa {
namespace {
namespace kern = ::LETTER_FAST_CPU_ISA_NS::letter_fast::cpu;
using K = Kernels<Isa::LETTER_FAST_CPU_ISA>;
}  // namespace

template <typename T>
void K::residual_quantize(const T* z, int64_t stride_row, int64_t stride_col, int64_t B,
                          const float* codebooks, int64_t L, int64_t N, int64_t d, int64_t* codes,
                          T* z_hat) {
  const kern::PackedCodebooks packed(codebooks, L, N, d);
  kern::residual_quantize<T, T>(z, stride_row, stride_col, B, packed, codes, z_hat);
}

template <typename T>
void K::contrastive_loss_forward(const T* anchors, const T* candidates, int64_t B, int64_t M,
                                 int64_t d, const int64_t* positives, const int64_t* exclude,
                                 T temperature, bool normalize, T* loss, double* lse) {
  const kern::contrastive::Problem<T> problem(anchors, candidates, B, M, d, positives, exclude,
                                              temperature, normalize);
  kern::contrastive::forward(problem, loss, lse);
}

template <typename T>
void K::contrastive_loss_backward(const T* anchors, const T* candidates, int64_t B, int64_t M,
                                  int64_t d, const int64_t* positives, const int64_t* exclude,
                                  T temperature, bool normalize, const T* grad_loss,
                                  const T* grad_lse, const double* lse, T* grad_anchors,
                                  T* grad_candidates) {
  const kern::contrastive::Problem<T> problem(anchors, candidates, B, M, d, positives, exclude,
                                              temperature, normalize);
  kern::contrastive::backward(problem, grad_loss, grad_lse, lse, anchors, candidates, grad_anchors,
                              grad_candidates);
}

void K::sinkhorn_assign(const float* dist, int64_t B, int64_t N, float epsilon, int64_t iters,
                        int64_t absorb_every, float* work, int64_t* codes) {
  kern::sinkhorn::assign(dist, B, N, epsilon, iters, absorb_every, work, codes);
}

template <typename T>
void K::beam_attention(const std::vector<const T*>& qkv, const int64_t* anc, const float* bias,
                       int64_t rows, int64_t heads, int64_t dk, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    kern::beam_attention::attend<float>(qkv, anc, bias, rows, heads, dk, out);
  } else {
    // c10::BFloat16 and the kernel's BFloat16Bits are both the upper 16 bits of a float32.
    static_assert(std::is_same_v<T, c10::BFloat16> && sizeof(T) == sizeof(kern::beam_attention::BFloat16Bits));
    using Bits = kern::beam_attention::BFloat16Bits;
    std::vector<const Bits*> steps;
    for (const T* p : qkv) steps.push_back(reinterpret_cast<const Bits*>(p));
    kern::beam_attention::attend<Bits>(steps, anc, bias, rows, heads, dk, reinterpret_cast<Bits*>(out));
  }
}

template <typename LogProb, typename Code>
void K::trie_step(const int64_t* node, const LogProb* log_probs, int64_t lp_stride_row,
                  int64_t lp_stride_col, const float* scores, const int32_t* child_ptr,
                  const Code* child_code, int64_t q_begin, int64_t q_end, int64_t beams_per_query,
                  int64_t N, int64_t k, int64_t* out_parent, int64_t* out_code, int64_t* out_child,
                  float* out_score) {
  kern::trie_step<LogProb, Code>(node, log_probs, lp_stride_row, lp_stride_col, scores, child_ptr,
                                 child_code, q_begin, q_end, beams_per_query, N, k, out_parent,
                                 out_code, out_child, out_score);
}

template <typename Code>
void K::trie_walk(const int64_t* prefix, int64_t stride_row, int64_t stride_col, int64_t i_begin,
                  int64_t i_end, int64_t t, const int32_t* const* child_ptr,
                  const Code* const* child_code, int64_t* out) {
  kern::trie_walk<Code>(prefix, stride_row, stride_col, i_begin, i_end, t, child_ptr, child_code, out);
}

template <typename Score, typename Code>
void K::trie_constrain_logits(const int64_t* ids, int64_t ids_stride, int64_t r_begin,
                              int64_t r_end, int64_t start, int64_t t, int64_t L,
                              const int32_t* const* child_ptr, const Code* const* child_code,
                              const int64_t* token_of, int64_t token_stride,
                              const int64_t* code_of, int64_t vocab_codes, int64_t eos,
                              const Score* scores, int64_t scores_stride, int64_t vocab, Score* out,
                              bool* dead) {
  kern::trie_constrain_logits<Score, Code>(ids, ids_stride, r_begin, r_end, start, t, L, child_ptr,
                                           child_code, token_of, token_stride, code_of, vocab_codes,
                                           eos, scores, scores_stride, vocab, out, dead);
}

// Every instantiation the launchers call (they see only the declarations in dispatch.h).
#define LF_RQ(T)                                                                              \
  template void K::residual_quantize<T>(const T*, int64_t, int64_t, int64_t, const float*,    \
                                        int64_t, int64_t, int64_t, int64_t*, T*);
#define LF_CONTRASTIVE(T)                                                                     \
  template void K::contrastive_loss_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, \
                                               const int64_t*, const int64_t*, T, bool, T*, double*); \
  template void K::contrastive_loss_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, \
                                                const int64_t*, const int64_t*, T, bool,       \
                                                const T*, const T*, const double*, T*, T*);
#define LF_ATTEND(T)                                                                          \
  template void K::beam_attention<T>(const std::vector<const T*>&, const int64_t*,           \
                                     const float*, int64_t, int64_t, int64_t, T*);
#define LF_TRIE(T, C)                                                                         \
  template void K::trie_step<T, C>(const int64_t*, const T*, int64_t, int64_t, const float*,  \
                                   const int32_t*, const C*, int64_t, int64_t, int64_t,       \
                                   int64_t, int64_t, int64_t*, int64_t*, int64_t*, float*);   \
  template void K::trie_constrain_logits<T, C>(                                              \
      const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,                   \
      const int32_t* const*, const C* const*, const int64_t*, int64_t, const int64_t*,        \
      int64_t, int64_t, const T*, int64_t, int64_t, T*, bool*);
#define LF_WALK(C)                                                                            \
  template void K::trie_walk<C>(const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t,  \
                                const int32_t* const*, const C* const*, int64_t*);

LF_RQ(float)
LF_RQ(double)
LF_RQ(c10::Half)
LF_RQ(c10::BFloat16)
LF_CONTRASTIVE(float)
LF_CONTRASTIVE(double)
LF_ATTEND(float)
LF_ATTEND(c10::BFloat16)
LF_TRIE(float, int16_t)
LF_TRIE(float, int32_t)
LF_TRIE(double, int16_t)
LF_TRIE(double, int32_t)
LF_TRIE(c10::Half, int16_t)
LF_TRIE(c10::Half, int32_t)
LF_TRIE(c10::BFloat16, int16_t)
LF_TRIE(c10::BFloat16, int32_t)
LF_WALK(int16_t)
LF_WALK(int32_t)

#undef LF_RQ
#undef LF_CONTRASTIVE
#undef LF_ATTEND
#undef LF_TRIE
#undef LF_WALK

}  // namespace cpu_isa
}  // namespace letter_fast

#ifdef LETTER_FAST_CPU_ISA_TARGET
#if defined(__clang__)
LF_ISA_PRAGMA(clang attribute pop)
#else
LF_ISA_PRAGMA(GCC pop_options)
#endif
#endif
#undef LF_ISA_PRAGMA
#undef LF_ISA_STR
