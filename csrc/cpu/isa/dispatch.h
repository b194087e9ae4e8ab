// Run-time choice of the CPU kernels' instruction set.
//
// One binary has to run on every x86-64 CPU and still use AVX-512 where the CPU has it. The
// kernels (csrc/cpu/*_kernel.h) are plain C++ that the compiler auto-vectorizes, so instead of
// compiling the whole extension with -march=native, csrc/cpu/isa/{baseline,avx2,avx512}.cpp each
// compile every kernel once more for one instruction set (a `#pragma GCC target` region around
// the kernel headers, which are wrapped in a namespace of their own so the three copies never
// share a symbol), and the launchers (csrc/cpu/<op>.cpp) call the variant chosen once, at the
// first call, from the CPU's features (`__builtin_cpu_supports`) and the environment variable
// LETTER_FAST_CPU_ISA (baseline | avx2 | avx512: force a variant; a variant the CPU lacks is an
// error, not a crash). faiss (AVX2/AVX-512 builds) and PyTorch (DispatchStub, ATEN_CPU_CAPABILITY)
// make the same choice the same way. On arm64 the baseline already has NEON; with
// LETTER_FAST_NATIVE_ARCH=1 (setup.py) everything is compiled with -march=native and the only
// variant is "native".
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <string>
#include <vector>

#if !defined(LETTER_FAST_NATIVE_ARCH) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(_M_X64))
#define LETTER_FAST_X86_VARIANTS 1
#else
#define LETTER_FAST_X86_VARIANTS 0
#endif

namespace letter_fast {
namespace cpu_isa {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };

// "baseline" ("native" in a LETTER_FAST_NATIVE_ARCH build), "avx2", "avx512".
const char* name(Isa isa);
// The variants compiled into this binary, lowest first.
std::vector<std::string> built();
// The variants this CPU can run, lowest first.
std::vector<std::string> supported();
// The variant the kernels use: the best one this CPU supports, or LETTER_FAST_CPU_ISA. Chosen once;
// throws std::invalid_argument (a Python ValueError) when LETTER_FAST_CPU_ISA names an unknown
// variant or one this CPU cannot run.
Isa active();

template <Isa I>
struct Kernels;
template <>
struct Kernels<Isa::baseline> {
#include "entries.inc"
};
#if LETTER_FAST_X86_VARIANTS
template <>
struct Kernels<Isa::avx2> {
#include "entries.inc"
};
template <>
struct Kernels<Isa::avx512> {
#include "entries.inc"
};
#endif

// Calls f(Kernels<I>{}) for the active variant: launchers write
//     cpu_isa::dispatch([&](auto k) { k.residual_quantize(...); });
template <typename F>
void dispatch(F&& f) {
#if LETTER_FAST_X86_VARIANTS
  switch (active()) {
    case Isa::avx512:
      f(Kernels<Isa::avx512>{});
      return;
    case Isa::avx2:
      f(Kernels<Isa::avx2>{});
      return;
    default:
      break;
  }
#endif
  f(Kernels<Isa::baseline>{});
}

}  // namespace cpu_isa
}  // namespace letter_fast
