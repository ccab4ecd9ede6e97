// Whole-file reads and crash-safe writes for the files lrlab produces (schedule tables, reports,
// checkpoints): a reader never sees a half-written file.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace lrlab {

// Writes `bytes` to a temporary file in the target's directory, flushes and fsyncs it, renames it
// over `path` and fsyncs the directory, so a crash leaves either the old file or the new one. A
// replaced file keeps its permissions; a symbolic link is followed (the file it points to is
// replaced, the link stays); a stream (see is_stream) is written in place, appending.
// Throws lrlab::Error ("cannot write 'PATH': <reason>") on failure, leaving no temporary behind.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Whether `path` is a stream rather than a file: one of this process's descriptors by name
// (/dev/stdout, /dev/fd/N, /proc/self/fd/N, or a link to one) or an existing device or pipe. A
// stream takes each write as more output, so what is rewritten as it grows (a log, a checkpoint)
// goes to it once, at the end.
bool is_stream(const std::string& path);

// Reads the whole file. Throws lrlab::Error when it is missing, unreadable or larger than max_bytes.
std::string read_file(const std::string& path, size_t max_bytes);

// Throws lrlab::Error ("cannot write 'PATH': <reason>") unless write_file_atomic could write `path`
// now (its folder exists and is writable): checked before hours of work that end in that write.
void require_writable(const std::string& path);
// Creates the folder `dir` (one level) if it is missing; throws lrlab::Error unless it is then a
// writable folder.
void make_writable_dir(const std::string& dir);


// dir + "/" + name, without doubling a slash the user typed ("--out sweep/").
std::string path_join(const std::string& dir, const std::string& name);

// Throws lrlab::Error ("--save and --log both name 'PATH'") when two of the (option, path) pairs
// name one file (also through a link, or spelled differently); empty paths and streams are left
// out. Two outputs on one file would keep only the last written, and a log written over the
// checkpoint a run resumes from would destroy it.
void require_distinct_files(const std::vector<std::pair<std::string, std::string>>& named_paths);

// A number for a CSV file: %.9g, and non-finite values as nan, inf or -inf (glibc writes a NaN
// with its sign bit set as -nan), so that a file reads the same from every build.
std::string csv_number(double v);

}  // namespace lrlab
