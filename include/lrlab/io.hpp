// Whole-file reads and crash-safe writes for the files lrlab produces (schedule tables, reports,
// checkpoints): a reader never sees a half-written file.
#pragma once

#include <cstddef>
#include <string>

namespace lrlab {

// Writes `bytes` to a temporary file in the target's directory, flushes and fsyncs it, renames it
// over `path` and fsyncs the directory, so a crash leaves either the old file or the new one.
// Throws lrlab::Error ("cannot write 'PATH': <reason>") on failure, leaving no temporary behind.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Reads the whole file. Throws lrlab::Error when it is missing, unreadable or larger than max_bytes.
std::string read_file(const std::string& path, size_t max_bytes);

// dir + "/" + name, without doubling a slash the user typed ("--out sweep/").
std::string path_join(const std::string& dir, const std::string& name);

}  // namespace lrlab
