// parse_optimizer shares src/optimizer.cpp with the Optimizer class, whose steps call the update
// loops of kernels/optimizer_cuda.cu (nvcc only) and src/optimizer_cpu.cpp (OpenMP). The optimizer
// fuzzer only parses specs, so it links these stand-ins instead; reaching one is a bug.
#include <cstdlib>

#include "optimizer_kernels.hpp"

namespace lrlab::detail {

void cpu_grad_sq(const FusedArgs&, std::vector<double>&, double*) { std::abort(); }
void cpu_update(const FusedArgs&, const ReplicaState*) { std::abort(); }
size_t cuda_grad_sq_scratch(const FusedArgs&) { std::abort(); }
void cuda_grad_sq(const FusedArgs&, double*, void*, size_t, cudaStream_t) { std::abort(); }
void cuda_prepare(ReplicaState*, const double*, int, const OptimizerHyper&, bool, int64_t, cudaStream_t) {
  std::abort();
}
int64_t cuda_update_resident_blocks(OptimKind, bool, int, int, int) { std::abort(); }
void cuda_update(const FusedArgs&, const ReplicaState*, int64_t, cudaStream_t) { std::abort(); }
void cuda_fill(float*, int64_t, float, cudaStream_t) { std::abort(); }

}  // namespace lrlab::detail
