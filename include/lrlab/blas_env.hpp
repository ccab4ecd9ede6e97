// Host BLAS setup. OpenBLAS picks its kernels from CPUID when it loads; on virtual machines that
// hide the CPU model it can fall back to its oldest x86-64 kernels (Prescott), several times slower
// than the CPU allows. Its choice can only be changed through the environment before it loads.
#pragma once

#include <string>

namespace lrlab {

// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();
// The family this CPU supports, when OpenBLAS chose an older one; empty when its choice is right.
std::string blas_core_override();
// For programs: when blas_core_override() is not empty and OPENBLAS_CORETYPE is unset, sets it and
// re-executes the program (argv as given to main) so OpenBLAS loads with the right kernels. Returns
// normally otherwise, or when LRLAB_NO_BLAS_TUNE is set, or if re-executing fails.
void tune_blas_or_reexec(char** argv);
// Threads OpenBLAS uses for one GEMM (OPENBLAS_NUM_THREADS, when set, wins).
void set_blas_threads(int threads);
int blas_threads();
// What lrlab's CPU backend needs, since it splits the work over its own threads: every GEMM on the
// thread that calls it. Sets OpenBLAS's pthread build (process-wide) to one thread; leaves its
// OpenMP build alone, which sizes a GEMM by the calling thread's OpenMP count, and the backend's
// parallel loops run their items with that count at 1 (src/cpu_pool.hpp). MlpCpu calls this.
void use_single_threaded_blas();

}  // namespace lrlab
