// GPU tests run where a CUDA device exists and report themselves skipped, with the reason, elsewhere.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "lrlab/device.hpp"

#define LRLAB_REQUIRE_GPU()                                  \
  do {                                                       \
    std::string lrlab_why_;                                  \
    if (!::lrlab::cuda_available(&lrlab_why_)) GTEST_SKIP() << lrlab_why_; \
  } while (0)
