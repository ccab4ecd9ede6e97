#include "lrlab/blas_env.hpp"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>

namespace lrlab {

std::string blas_core_name() { return openblas_get_corename(); }

std::string blas_core_override() {
#if defined(__x86_64__)
  const std::string core = blas_core_name();
  const bool generic = core == "Prescott" || core == "Core2" || core == "Penryn" || core == "Nehalem" ||
                       core == "Atom" || core == "Barcelona" || core == "Opteron";
  if (!generic) return {};
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return {};
}

void tune_blas_or_reexec(char** argv) {
  if (std::getenv("LRLAB_NO_BLAS_TUNE") || std::getenv("OPENBLAS_CORETYPE")) return;
  const std::string core = blas_core_override();
  if (core.empty()) return;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  execv("/proc/self/exe", argv);
  // execv returned: carry on with the slower kernels rather than fail.
}

void set_blas_threads(int threads) {
  if (!std::getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(threads < 1 ? 1 : threads);
}

int blas_threads() { return openblas_get_num_threads(); }

void use_single_threaded_blas() {
  // 1: OpenBLAS's pthread build. Its OpenMP build (2) sizes each GEMM by the calling thread's OpenMP
  // count, which the CPU backend's loops hold at 1 while they run (src/cpu_pool.hpp), and setting
  // its thread count would set the caller's OpenMP count too.
  if (openblas_get_parallel() == 1 && blas_threads() != 1) set_blas_threads(1);
}

}  // namespace lrlab
