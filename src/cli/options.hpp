// Parsing helpers for option values that CLI11's validators do not cover.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "lrlab/train.hpp"

namespace lrlab::cli {

// `s` without the spaces, tabs and carriage returns around it.
std::string trimmed(const std::string& s);

// "256,128" -> {256, 128} (spaces around the numbers allowed; "none" or "": no hidden layer);
// throws lrlab::Error naming the option.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option);
// A positive finite number; throws lrlab::Error naming the option.
double parse_rate(const std::string& text, const std::string& option);

// Throws lrlab::Error ("<where><option>: ...") for a value CLI11 would misread silently: an empty
// one where a number is wanted (read as 0), or a whole number with a leading zero (CLI11 converts
// in base 0, so --epochs 010 would be 8).
void check_value(const CLI::Option& opt, const std::string& value, const std::string& where = "");
// check_value over every value `sub`'s options were given.
void require_values(const CLI::App& sub);

// What is wrong with `text` as a value of a CLI11 option of type INT, UINT or FLOAT, or "" when
// nothing is: CLI11's own conversion, checked against the type's range.
std::string number_error(const std::string& type, const std::string& text);

// CLI11's Range for a whole-number option, saying first what is wrong with a value that is no whole
// number ("'abc' is not a whole number", where Range says "Value abc not in range 0 to 10").
CLI::Validator whole_range(int64_t lo, int64_t hi);

// Adds to every option of `sub` that takes numbers a check that names what is wrong with a value
// CLI11 cannot convert ("--epochs: 'abc' is not a whole number", where CLI11 alone says "Could not
// convert: --epochs = abc") or would convert to something else: a number past the type's range
// (CLI11 takes the largest one), a negative one for an unsigned option (CLI11 wraps it around).
void add_number_checks(CLI::App& sub);

// The options of the run that train, find-lr and sweep share: the data, the model, the minibatch,
// the seed, the device and the numerics, worded alike in each command's --help. --hidden's text goes
// to `hidden`, for parse_int_list. `o` and `hidden` must outlive the parse.
void add_run_options(CLI::App& sub, TrainOptions& o, std::string& hidden, const std::string& seed_help);

// Accepts a whole number from 0 to 2^64-1 written in decimal: CLI11 alone would take "-1" as
// 2^64-1 and clamp larger numbers to it, so two different seeds typed would run as one.
CLI::Validator unsigned_64();

}  // namespace lrlab::cli
