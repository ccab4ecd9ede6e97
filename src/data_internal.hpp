// Helpers shared by the data readers (data_*.cpp); not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lrlab::data_detail {

// Whether `bytes` start with the gzip magic number 1f 8b.
bool is_gzip(const std::string& bytes);

// The whole file; throws lrlab::Error naming the path when it cannot be read or is larger
// than max_bytes (checked before reading).
std::string read_file(const std::string& path, size_t max_bytes);

bool file_exists(const std::string& path);

}  // namespace lrlab::data_detail
