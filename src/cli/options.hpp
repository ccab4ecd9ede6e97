// Parsing helpers for option values that CLI11's validators do not cover.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lrlab::cli {

// "256,128" -> {256, 128} (spaces around the numbers allowed; "none" or "": no hidden layer);
// throws lrlab::Error naming the option.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option);
// A positive finite number; throws lrlab::Error naming the option.
double parse_rate(const std::string& text, const std::string& option);

// Throws lrlab::Error naming the option when one of `sub`'s options was given an empty value
// (`--val-fraction ""`): CLI11 reads it as 0 or as the option's default, silently.
void require_values(const CLI::App& sub);

// Accepts a whole number from 0 to 2^64-1 written in decimal: CLI11 alone would take "-1" as
// 2^64-1 and clamp larger numbers to it, so two different seeds typed would run as one.
CLI::Validator unsigned_64();

}  // namespace lrlab::cli
