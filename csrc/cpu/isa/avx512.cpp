// The AVX-512 variant of every CPU kernel (x86-64 only; see dispatch.h). 512-bit vectors are
// asked for explicitly: csrc/cpu/*_kernel.h size their register tiles for 32 zmm registers, and
// GCC otherwise prefers 256-bit vectors even where AVX-512 exists.
#include "dispatch.h"
#if LETTER_FAST_X86_VARIANTS
#define LETTER_FAST_CPU_ISA avx512
#define LETTER_FAST_CPU_ISA_NS letter_fast_isa_avx512
#define LETTER_FAST_CPU_ISA_TARGET \
  ("avx2,fma,f16c,avx512f,avx512cd,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#include "kernels.h"
#endif
