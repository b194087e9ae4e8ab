// The baseline variant of every CPU kernel: the build's own flags (x86-64 / arm64 baseline, or
// -march=native with LETTER_FAST_NATIVE_ARCH=1). See dispatch.h.
#define LETTER_FAST_CPU_ISA baseline
#define LETTER_FAST_CPU_ISA_NS letter_fast_isa_baseline
#include "kernels.h"
