// Crash-safe writes and bounded reads.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "lrlab/error.hpp"
#include "test_util.hpp"
#include "lrlab/io.hpp"

namespace lrlab {
namespace {

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
  template <typename Fn>
  static std::string error_of(Fn fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
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

TEST_F(AtomicIo, NewFilesFollowTheUmask) {
  std::string path = dir_ + "/perm.txt";
  mode_t old = umask(022);
  write_file_atomic(path, "x");
  umask(old);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
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
