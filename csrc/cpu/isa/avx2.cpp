// The AVX2 + FMA variant of every CPU kernel (x86-64 only; see dispatch.h).
#include "dispatch.h"
#if LETTER_FAST_X86_VARIANTS
#define LETTER_FAST_CPU_ISA avx2
#define LETTER_FAST_CPU_ISA_NS letter_fast_isa_avx2
#define LETTER_FAST_CPU_ISA_TARGET ("avx2,fma,f16c")
#include "kernels.h"
#endif
