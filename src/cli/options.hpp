// Parsing helpers for option values that CLI11's validators do not cover.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lrlab::cli {

// "256,128" -> {256, 128}; throws lrlab::Error naming the option.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option);
// A positive finite number; throws lrlab::Error naming the option.
double parse_rate(const std::string& text, const std::string& option);

}  // namespace lrlab::cli
