// Which CPU kernel variant runs (see dispatch.h).
#include "dispatch.h"

#include <cstdlib>
#include <stdexcept>

namespace letter_fast {
namespace cpu_isa {
namespace {

// Highest variant this CPU (and its OS: __builtin_cpu_supports checks that the OS saves the
// AVX / AVX-512 registers) can run. The AVX-512 variant is compiled for F, CD, VL, BW and DQ (the
// x86-64-v4 set, every AVX-512 CPU since Skylake-SP), the AVX2 variant for AVX2 + FMA + F16C
// (x86-64-v3 without the bit-manipulation extensions the kernels do not need).
Isa detect() {
#if LETTER_FAST_X86_VARIANTS
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("f16c");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq");
  if (v4) return Isa::avx512;
  if (v3) return Isa::avx2;
#endif
  return Isa::baseline;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Isa choose() {
  const Isa best = detect();
  const char* env = std::getenv("LETTER_FAST_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  for (int i = 0; i <= static_cast<int>(Isa::avx512); ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (want != name(isa)) continue;
    if (isa > best)
      throw std::invalid_argument("LETTER_FAST_CPU_ISA=" + want + ": this CPU runs only " +
                                  joined(supported()) + "; unset it or pick one of those");
    return isa;
  }
  throw std::invalid_argument("LETTER_FAST_CPU_ISA=" + want + " is not a kernel variant of this build (" +
                              joined(built()) + ")");
}

}  // namespace

const char* name(Isa isa) {
  switch (isa) {
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    default:
#ifdef LETTER_FAST_NATIVE_ARCH
      return "native";
#else
      return "baseline";
#endif
  }
}

std::vector<std::string> built() {
#if LETTER_FAST_X86_VARIANTS
  return {name(Isa::baseline), name(Isa::avx2), name(Isa::avx512)};
#else
  return {name(Isa::baseline)};
#endif
}

std::vector<std::string> supported() {
  std::vector<std::string> out;
  for (int i = 0; i <= static_cast<int>(detect()); ++i) out.push_back(name(static_cast<Isa>(i)));
  return out;
}

Isa active() {
  // A static local: chosen at the first kernel call, then fixed for the process (thread-safe).
  static const Isa isa = choose();
  return isa;
}

}  // namespace cpu_isa
}  // namespace letter_fast
