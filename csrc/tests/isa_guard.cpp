// Runs a C++ test binary compiled for one instruction-set variant only where this CPU has it:
//     isa_guard avx2|avx512 ./test_x_avx2
// exits 77 (CTest's SKIP_RETURN_CODE) on a CPU without the variant's features, so the AVX-512 build
// of a test is skipped there rather than killed by an illegal instruction. The feature sets are
// those of csrc/cpu/isa/dispatch.cpp.
#include <unistd.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: isa_guard avx2|avx512 TEST [ARGS...]\n");
    return 2;
  }
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq");
  const bool ok = std::strcmp(argv[1], "avx2") == 0 ? avx2 : std::strcmp(argv[1], "avx512") == 0 && avx512;
  if (!ok) {
    std::printf("this CPU lacks the %s features: skipped\n", argv[1]);
    return 77;
  }
  execv(argv[2], argv + 2);
  std::perror("isa_guard: execv");
  return 2;
}
