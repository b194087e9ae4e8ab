// The letter_fast native library: every tensor op's schema, defined once, and the pybind11
// module letter_fast._C with build facts. Kernels attach per device in csrc/cpu and csrc/cuda;
// fake (shape) and autograd rules are registered from Python (letter_fast/ops).
#include <torch/extension.h>

#include <stdexcept>

#include "cpu/isa/dispatch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(letter_fast, m) {
  // Nearest-code residual quantization: codes [B, L] int64, z_hat [B, d] in z's dtype.
  m.def("residual_quantize(Tensor z, Tensor codebooks) -> (Tensor codes, Tensor z_hat)");
  // Fused softmax contrastive loss (ops/contrastive_loss.py): per-row loss [B] in float32 (float64
  // for float64 inputs) and log-sum-exp [B] in float64 (the backward needs lse to more than
  // float32 precision at low temperatures); the backward recomputes the logits tile by tile.
  m.def("contrastive_loss_forward(Tensor anchors, Tensor candidates, Tensor positives, "
        "Tensor? exclude, float temperature, bool normalize) -> (Tensor loss, Tensor lse)");
  m.def("contrastive_loss_backward(Tensor grad_loss, Tensor grad_lse, Tensor anchors, "
        "Tensor candidates, Tensor positives, Tensor? exclude, Tensor lse, float temperature, "
        "bool normalize, bool anchors_grad, bool candidates_grad) "
        "-> (Tensor grad_anchors, Tensor grad_candidates)");
  // Balanced assignment of B points to N codes by log-stabilized Sinkhorn (CPU): codes [B] int64.
  // See letter_fast/ops/reference/sinkhorn_assign.py (the reference).
  m.def("sinkhorn_assign(Tensor dist, float epsilon, int iters, int absorb_every) -> Tensor");
  // Beam-search decoder self-attention (CPU): one query per beam over its ancestors' keys/values,
  // read in place from each step's [rows_p, 3, H, d_kv] projections; out [rows, H * d_kv].
  // See letter_fast/ops/beam_attention.py (API and reference).
  m.def("beam_attention(Tensor[] qkv, Tensor anc, Tensor bias) -> Tensor");
  // Trie-masked beam step: top-k valid continuations per query, each [Q, k]
  // (parent row, code, child node: int64; score: float32). See letter_fast/genrec/beam_search.py.
  m.def("trie_step(Tensor node, Tensor log_probs, Tensor scores, Tensor child_ptr, Tensor child_code, "
        "int beams_per_query, int k) -> (Tensor parent, Tensor code, Tensor child, Tensor score)");
  // Trie node of each code prefix [Q, t] (int64, -1 where the prefix leaves the trie).
  m.def("trie_walk(Tensor prefix, Tensor[] child_ptr, Tensor[] child_code) -> Tensor");
  // Item index build (CPU): rows in identifier order (int32), per-level CSR (int32), identifier starts.
  m.def("trie_build(Tensor codes, int[] num_codes) -> (Tensor order, Tensor[] child_ptr, Tensor[] child_code, "
        "Tensor leaf_start)");
  // HF logits constraint (CPU): scores with every token but the allowed ones at -inf, and a
  // per-row flag "all allowed tokens score -inf" (see letter_fast/genrec/hf.py).
  m.def("trie_constrain_logits(Tensor input_ids, Tensor scores, int start, Tensor[] child_ptr, Tensor[] child_code, "
        "Tensor token_of, Tensor code_of, int eos) -> (Tensor out, Tensor dead)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef LETTER_FAST_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
#endif
#ifdef LETTER_FAST_CXX_FLAGS
  info["cxx_flags"] = LETTER_FAST_CXX_FLAGS;
#endif
  // CPU kernel variants (csrc/cpu/isa/dispatch.h): compiled, runnable on this CPU, and the one in use.
  info["cpu_isa_built"] = letter_fast::cpu_isa::built();
  info["cpu_isa_supported"] = letter_fast::cpu_isa::supported();
  try {
    info["cpu_simd"] = letter_fast::cpu_isa::name(letter_fast::cpu_isa::active());
  } catch (const std::invalid_argument& e) {  // a bad LETTER_FAST_CPU_ISA: report it, do not fail
    info["cpu_simd"] = pybind11::none();
    info["cpu_isa_error"] = e.what();
  }
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "letter_fast native kernels (ops are registered under torch.ops.letter_fast)";
  m.def("build_info", &build_info, "What this build of the native extension contains.");
}
