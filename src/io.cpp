#include "lrlab/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "lrlab/error.hpp"

namespace lrlab {
namespace {

[[noreturn]] void fail_write(const std::string& path, int err) {
  LRLAB_FAIL("cannot write '", path, "': ", std::strerror(err));
}

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// Opens a fresh temporary next to `path`. O_EXCL with a per-process counter avoids clashing with
// concurrent writers; mode 0666 lets the umask decide the final permissions, as for a plain open.
int open_temporary(const std::string& path, std::string& tmp) {
  static std::atomic<unsigned> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

// The descriptor a path names, if it names one of this process's (/dev/stdout, /dev/stderr,
// /dev/fd/N, /proc/self/fd/N, /proc/PID/fd/N), else -1. What it leads to (a terminal, a pipe, the
// file a shell sent stdout to) is written through the descriptor itself, so that the write lands
// where the process's own output stands, never replacing that file.
int descriptor_of(const std::string& p) {
  if (p == "/dev/stdout") return 1;
  if (p == "/dev/stderr") return 2;
  std::string rest;
  const std::string self = "/proc/" + std::to_string(::getpid()) + "/fd/";
  for (const std::string& dir : {std::string("/dev/fd/"), std::string("/proc/self/fd/"), self})
    if (p.rfind(dir, 0) == 0) rest = p.substr(dir.size());
  if (rest.empty() || rest.size() > 9 || rest.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(rest);
}

// The file a write to `path` lands in: links are followed, so that writing through a link replaces
// the file it points to instead of the link itself (as `>` in a shell does). A dangling link names
// the file the write creates. Where the path or a link on the way names one of this process's
// descriptors, *descriptor is set to it (else -1).
std::string write_target(const std::string& path, int* descriptor = nullptr) {
  std::string at = path;
  for (int depth = 0; depth < 40; ++depth) {
    if (descriptor && (*descriptor = descriptor_of(at)) >= 0) return at;
    struct stat st;
    if (::lstat(at.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return at;
    std::string link(PATH_MAX, '\0');
    ssize_t n = ::readlink(at.c_str(), link.data(), link.size());
    if (n < 0) fail_write(path, errno);
    link.resize(static_cast<size_t>(n));
    at = !link.empty() && link.front() == '/' ? link : path_join(directory_of(at), link);
  }
  fail_write(path, ELOOP);
}

// Devices and pipes (/dev/null, a FIFO) cannot be replaced by a rename and must not be: they are
// written in place, opened for appending.
void write_in_place(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) fail_write(path, errno);
  if (!write_all(fd, bytes)) {
    int err = errno;
    ::close(fd);
    fail_write(path, err);
  }
  if (::close(fd) != 0) fail_write(path, errno);
}

}  // namespace

bool is_stream(const std::string& path) {
  int own = -1;
  write_target(path, &own);
  if (own >= 0) return true;
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  if (path.empty()) fail_write(path, ENOENT);
  int own = -1;
  const std::string target = write_target(path, &own);
  if (own >= 0) {
    // One of this process's descriptors, written through itself after what stdio holds for it.
    std::fflush(nullptr);
    if (!write_all(own, bytes)) fail_write(path, errno);
    return;
  }
  struct stat st;
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) fail_write(path, EISDIR);
  if (exists && !S_ISREG(st.st_mode)) return write_in_place(path, bytes);
  std::string tmp;
  int fd = open_temporary(target, tmp);
  if (fd < 0) fail_write(path, errno);
  // A file replaced keeps its permissions, as it would if it were rewritten in place.
  bool ok = write_all(fd, bytes) && (!exists || ::fchmod(fd, st.st_mode & 07777) == 0) && ::fsync(fd) == 0;
  if (!ok) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_write(path, err);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail_write(path, err);
  }
  // The rename is only durable once the directory entry itself reaches the disk.
  int dir = ::open(directory_of(target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) fail_write(path, errno);
  int rc = ::fsync(dir);
  int err = errno;
  ::close(dir);
  if (rc != 0 && err != EINVAL) fail_write(path, err);  // EINVAL: the filesystem cannot sync directories
}

void require_writable(const std::string& path) {
  if (path.empty()) fail_write(path, ENOENT);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail_write(path, EISDIR);
    if (is_stream(path)) {
      if (::access(path.c_str(), W_OK) != 0) fail_write(path, errno);
      return;
    }
  }
  if (::access(directory_of(write_target(path)).c_str(), W_OK | X_OK) != 0) fail_write(path, errno);
}

void make_writable_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    LRLAB_FAIL("cannot create directory '", dir, "': ", std::strerror(errno));
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) LRLAB_FAIL("'", dir, "' is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    LRLAB_FAIL("cannot write in directory '", dir, "': ", std::strerror(errno));
}

std::string path_join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

void require_distinct_files(const std::vector<std::pair<std::string, std::string>>& named_paths) {
  namespace fs = std::filesystem;
  auto same = [](const std::string& a, const std::string& b) {
    std::error_code ec;
    if (fs::equivalent(a, b, ec)) return true;  // both exist: hard and symbolic links too
    const fs::path ca = fs::weakly_canonical(a, ec);
    if (ec) return a == b;
    const fs::path cb = fs::weakly_canonical(b, ec);
    return ec ? a == b : ca == cb;
  };
  for (size_t i = 0; i < named_paths.size(); ++i)
    for (size_t j = i + 1; j < named_paths.size(); ++j) {
      const auto& [opt_a, a] = named_paths[i];
      const auto& [opt_b, b] = named_paths[j];
      if (a.empty() || b.empty() || is_stream(a) || is_stream(b)) continue;
      LRLAB_REQUIRE(!same(a, b), opt_a, " and ", opt_b, " both name '", b, "'", a == b ? "" : " ('" + a + "')",
                    ": give each its own file");
    }
}

std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string read_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) LRLAB_FAIL("cannot read '", path, "': ", std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      LRLAB_FAIL("cannot read '", path, "': ", std::strerror(err));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      ::close(fd);
      LRLAB_FAIL("cannot read '", path, "': larger than ", max_bytes, " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace lrlab
