// The whole input is an optimizer spec.
#include "fuzz_common.hpp"
#include "lrlab/optimizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec = lrlab::fuzz::bytes_of(data, size);
  lrlab::fuzz::expect_only_errors([&] {
    lrlab::OptimizerHyper h = lrlab::parse_optimizer(spec);
    (void)lrlab::optimizer_name(h.kind);
    (void)lrlab::bytes_per_param(h);
  });
  return 0;
}
