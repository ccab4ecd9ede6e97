// The test executables' main: OpenBLAS loads with the kernels the lrlab command and the benchmarks
// use (blas_env.hpp). Where it falls back to its generic kernels (some virtual machines hide the
// CPU model), the tests would otherwise check GEMMs the product never runs.
#include <gtest/gtest.h>

#include "lrlab/blas_env.hpp"

int main(int argc, char** argv) {
  lrlab::tune_blas_or_reexec(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
