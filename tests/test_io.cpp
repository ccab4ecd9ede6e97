// Crash-safe writes and bounded reads.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "lrlab/device.hpp"
#include "lrlab/error.hpp"
#include "test_util.hpp"
#include "lrlab/io.hpp"

namespace lrlab {
namespace {

using testing::error_of;

class AtomicIo : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lrlab_io_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& name : entries()) unlink((dir_ + "/" + name).c_str());
    rmdir(dir_.c_str());
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    DIR* d = opendir(dir_.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
    closedir(d);
    return out;
  }
  std::string dir_;
};

TEST_F(AtomicIo, WritesReadsAndReplacesLeavingNoTemporaries) {
  std::string path = dir_ + "/out.csv";
  write_file_atomic(path, "old contents\n");
  EXPECT_EQ(read_file(path, 1 << 20), "old contents\n");
  std::string binary("a\0b\xff", 4);
  write_file_atomic(path, binary);
  EXPECT_EQ(read_file(path, 1 << 20), binary);
  EXPECT_EQ(entries(), std::vector<std::string>{"out.csv"});
  write_file_atomic(path, "");
  EXPECT_EQ(read_file(path, 0), "");
}

TEST_F(AtomicIo, LargeFilesRoundTrip) {
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = static_cast<char>('a' + i % 26);
  std::string path = dir_ + "/big.bin";
  write_file_atomic(path, big);
  EXPECT_EQ(read_file(path, big.size()), big);
}

// The permission bits of `path` after writing it under umask 022.
mode_t mode_after_write(const std::string& path, const std::string& bytes) {
  mode_t old = umask(022);
  write_file_atomic(path, bytes);
  umask(old);
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_mode & 0777 : 0;
}

TEST_F(AtomicIo, NewFilesFollowTheUmask) { EXPECT_EQ(mode_after_write(dir_ + "/perm.txt", "x"), 0644u); }

TEST_F(AtomicIo, ReplacedFilesKeepTheirPermissions) {
  std::string path = dir_ + "/private.txt";
  write_file_atomic(path, "old");
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(mode_after_write(path, "new"), 0600u);
  EXPECT_EQ(read_file(path, 10), "new");
}

// A write through a link replaces the file it points to, not the link (as `>` in a shell does).
TEST_F(AtomicIo, LinksAreFollowed) {
  std::string real = dir_ + "/real.txt", link = dir_ + "/link.txt", chain = dir_ + "/chain.txt";
  write_file_atomic(real, "old");
  ASSERT_EQ(symlink("real.txt", link.c_str()), 0);       // relative to the link's folder
  ASSERT_EQ(symlink(link.c_str(), chain.c_str()), 0);    // absolute, to another link
  write_file_atomic(chain, "new");
  struct stat st {};
  ASSERT_EQ(lstat(chain.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(read_file(real, 10), "new");

  // A dangling link names the file the write creates.
  std::string dangling = dir_ + "/dangling.txt";
  ASSERT_EQ(symlink("created.txt", dangling.c_str()), 0);
  write_file_atomic(dangling, "made");
  ASSERT_EQ(lstat(dangling.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(read_file(dir_ + "/created.txt", 10), "made");

  std::string loop = dir_ + "/loop.txt";
  ASSERT_EQ(symlink("loop.txt", loop.c_str()), 0);
  EXPECT_EQ(error_of([&] { write_file_atomic(loop, "x"); }),
            "cannot write '" + loop + "': Too many levels of symbolic links");
  EXPECT_EQ(entries().size(), 6u);  // no temporaries left
}

// A pipe (or a device such as /dev/null) cannot be replaced by a rename and must not be.
TEST_F(AtomicIo, PipesAreWrittenInPlace) {
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Opened for reading first, without blocking, so that the write finds a reader and the test cannot
  // hang; the few bytes fit in the pipe's buffer.
  int rd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  EXPECT_NO_THROW(require_writable(fifo));
  write_file_atomic(fifo, "through the pipe\n");
  char buf[64] = {};
  ssize_t n = read(rd, buf, sizeof buf);
  close(rd);
  std::string got(buf, n > 0 ? static_cast<size_t>(n) : 0);
  EXPECT_EQ(got, "through the pipe\n");
  struct stat st {};
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(entries(), std::vector<std::string>{"fifo"});
}

TEST_F(AtomicIo, WriteFailuresNameThePathAndLeaveTheOldFile) {
  std::string missing = dir_ + "/no/such/dir/x.txt";
  EXPECT_EQ(error_of([&] { write_file_atomic(missing, "x"); }),
            "cannot write '" + missing + "': No such file or directory");
  // Renaming a file over a directory fails; the temporary must not be left behind.
  std::string sub = dir_ + "/sub";
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  EXPECT_NE(error_of([&] { write_file_atomic(sub, "x"); }).find("cannot write '" + sub + "'"), std::string::npos);
  EXPECT_EQ(entries(), std::vector<std::string>{"sub"});
  rmdir(sub.c_str());
  EXPECT_NE(error_of([&] { write_file_atomic("", "x"); }).find("cannot write ''"), std::string::npos);
}

// A run checks its output paths before any work: a folder that does not exist is refused up front.
TEST_F(AtomicIo, RequireWritableRefusesAMissingFolder) {
  const std::string missing = dir_ + "/no/such/x.txt";
  EXPECT_EQ(error_of([&] { require_writable(missing); }), "cannot write '" + missing + "': No such file or directory");
  EXPECT_EQ(error_of([&] { require_writable(dir_ + "/new.txt"); }), "");
  EXPECT_TRUE(entries().empty());
}

TEST_F(AtomicIo, ReadFailures) {
  std::string missing = dir_ + "/missing.txt";
  EXPECT_EQ(error_of([&] { read_file(missing, 10); }),
            "cannot read '" + missing + "': No such file or directory");
  std::string path = dir_ + "/ten.txt";
  write_file_atomic(path, "0123456789");
  EXPECT_EQ(read_file(path, 10), "0123456789");
  EXPECT_NE(error_of([&] { read_file(path, 9); }).find("larger than 9 bytes"), std::string::npos);
  EXPECT_NE(error_of([&] { read_file(dir_, 10); }).find("cannot read '" + dir_ + "'"), std::string::npos);
}

// The host's room for a job: MemAvailable, lowered to what a cgroup's limit leaves, where the idle
// file cache counts as room (the kernel gives it back before killing anything).
TEST_F(AtomicIo, HostMemoryIsMemAvailableWithinTheCgroupsLimit) {
  const std::string meminfo = dir_ + "/meminfo", cgroup = dir_ + "/missing-cgroup";
  write_file_atomic(meminfo, "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n");
  EXPECT_EQ(detail::host_memory_available(meminfo, cgroup), 8000000.0 * 1024);
  write_file_atomic(dir_ + "/memory.max", "max\n");
  write_file_atomic(dir_ + "/memory.current", "3000000000\n");
  EXPECT_EQ(detail::host_memory_available(meminfo, dir_), 8000000.0 * 1024) << "no limit";
  write_file_atomic(dir_ + "/memory.max", "4000000000\n");
  EXPECT_EQ(detail::host_memory_available(meminfo, dir_), 1e9);
  write_file_atomic(dir_ + "/memory.stat", "active_file 500\ninactive_file 2000000000\nanon 1\n");
  EXPECT_EQ(detail::host_memory_available(meminfo, dir_), 3e9);
  write_file_atomic(dir_ + "/memory.current", "9000000000\n");
  EXPECT_EQ(detail::host_memory_available(meminfo, dir_), 0.0) << "over its limit: no room, not unknown";
  write_file_atomic(meminfo, "MemTotal:       16000000 kB\nMemFree:    8000000 kB\n");
  EXPECT_FALSE(detail::host_memory_available(meminfo, dir_).has_value()) << "no MemAvailable: unknown";
  EXPECT_FALSE(detail::host_memory_available(dir_ + "/nothing", dir_).has_value());
}

}  // namespace
}  // namespace lrlab

namespace {
TEST(PathJoin, OneSlashBetween) {
  EXPECT_EQ(lrlab::path_join("sweep", "report.html"), "sweep/report.html");
  EXPECT_EQ(lrlab::path_join("sweep/", "report.html"), "sweep/report.html");
  EXPECT_EQ(lrlab::path_join("/", "x"), "/x");
  EXPECT_EQ(lrlab::path_join("", "x"), "x");
}
}  // namespace
