#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "lrlab/data.hpp"
#include "lrlab/error.hpp"

using lrlab::DataOptions;
using lrlab::DataSplits;
using lrlab::Dataset;
namespace fs = std::filesystem;

namespace {

// ---- builders for test inputs ----

void put_be32(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>(v >> 24));
  s->push_back(static_cast<char>(v >> 16));
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v));
}

std::string idx_images(uint32_t n, uint32_t rows, uint32_t cols, const std::function<uint8_t(size_t)>& pixel) {
  std::string s;
  put_be32(&s, 0x00000803);
  put_be32(&s, n);
  put_be32(&s, rows);
  put_be32(&s, cols);
  for (size_t i = 0; i < size_t{n} * rows * cols; ++i) s.push_back(static_cast<char>(pixel(i)));
  return s;
}

std::string idx_labels(const std::vector<uint8_t>& labels) {
  std::string s;
  put_be32(&s, 0x00000801);
  put_be32(&s, static_cast<uint32_t>(labels.size()));
  for (uint8_t l : labels) s.push_back(static_cast<char>(l));
  return s;
}

// gzip in memory with zlib's deflate (windowBits 16+ selects the gzip wrapper).
std::string gzip_bytes(const std::string& plain) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, plain.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Expects fn to throw lrlab::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no lrlab::Error thrown; expected one mentioning '" << parts.front() << "'";
  } catch (const lrlab::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "lrlab_data_XXXXXX").string();
    EXPECT_NE(mkdtemp(&tmpl[0]), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream(file(name), std::ios::binary) << bytes;
    return file(name);
  }
  // Written through zlib's gzip file interface, as tools that produce .gz files do.
  std::string write_gz(const std::string& name, const std::string& bytes) const {
    gzFile f = gzopen(file(name).c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    gzclose(f);
    return file(name);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

uint8_t test_pixel(size_t i) { return static_cast<uint8_t>((i * 37 + 11) % 256); }

void write_idx_set(const TempDir& dir, bool gz, uint32_t n_train, uint32_t n_test) {
  std::vector<uint8_t> train_labels(n_train), test_labels(n_test);
  for (uint32_t i = 0; i < n_train; ++i) train_labels[i] = static_cast<uint8_t>(i % 3);
  for (uint32_t i = 0; i < n_test; ++i) test_labels[i] = static_cast<uint8_t>((i + 1) % 3);
  auto w = [&](const std::string& name, const std::string& bytes) {
    if (gz) dir.write_gz(name + ".gz", bytes);
    else dir.write(name, bytes);
  };
  w("train-images-idx3-ubyte", idx_images(n_train, 3, 2, test_pixel));
  w("train-labels-idx1-ubyte", idx_labels(train_labels));
  w("t10k-images-idx3-ubyte", idx_images(n_test, 3, 2, test_pixel));
  w("t10k-labels-idx1-ubyte", idx_labels(test_labels));
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

double std_of(const std::vector<float>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

std::vector<float> column(const Dataset& d, int64_t j) {
  std::vector<float> c(static_cast<size_t>(d.n));
  for (int64_t i = 0; i < d.n; ++i) c[static_cast<size_t>(i)] = d.x[static_cast<size_t>(i * d.dim + j)];
  return c;
}

void expect_consistent(const Dataset& d) {
  EXPECT_EQ(d.x.size(), static_cast<size_t>(d.n * d.dim));
  if (d.targets_dim > 0) {
    EXPECT_EQ(d.y.size(), static_cast<size_t>(d.n * d.targets_dim));
    EXPECT_TRUE(d.labels.empty());
  } else {
    ASSERT_EQ(d.labels.size(), static_cast<size_t>(d.n));
    for (int32_t l : d.labels) {
      EXPECT_GE(l, 0);
      EXPECT_LT(l, d.num_classes);
    }
  }
  for (float v : d.x) ASSERT_TRUE(std::isfinite(v));
}

// ---- IDX ----

TEST(DataIdx, ParsesPlainAndGzipBuffersIdentically) {
  const std::string images = idx_images(4, 3, 2, test_pixel);
  const std::string labels = idx_labels({2, 0, 1, 2});
  Dataset plain = lrlab::parse_idx(images, labels, "mem");
  Dataset gz = lrlab::parse_idx(gzip_bytes(images), gzip_bytes(labels), "mem");
  EXPECT_EQ(plain.n, 4);
  EXPECT_EQ(plain.dim, 6);
  EXPECT_EQ(plain.num_classes, 3);
  EXPECT_EQ(plain.targets_dim, 0);
  EXPECT_EQ(plain.labels, (std::vector<int32_t>{2, 0, 1, 2}));
  for (size_t i = 0; i < plain.x.size(); ++i) EXPECT_FLOAT_EQ(plain.x[i], test_pixel(i) / 255.0f);
  EXPECT_EQ(plain.x, gz.x);
  EXPECT_EQ(plain.labels, gz.labels);
}

TEST(DataIdx, LoadsDirectoriesOfPlainAndGzipFiles) {
  for (bool gz : {false, true}) {
    TempDir dir;
    write_idx_set(dir, gz, 50, 20);
    DataOptions opt;
    opt.val_fraction = 0.2;
    DataSplits s = lrlab::load_data("idx:" + dir.path(), opt);
    EXPECT_EQ(s.train.n, 40);
    EXPECT_EQ(s.val.n, 10);
    EXPECT_EQ(s.test.n, 20);
    for (const Dataset* d : {&s.train, &s.val, &s.test}) {
      EXPECT_EQ(d->dim, 6);
      EXPECT_EQ(d->num_classes, 3);
      expect_consistent(*d);
    }
    // Images share one mean and std over all pixels, taken from the training set.
    ASSERT_EQ(s.feature_mean.size(), 1u);
    EXPECT_NEAR(mean_of(s.train.x), 0.0, 1e-5);
    EXPECT_NEAR(std_of(s.train.x), 1.0, 1e-4);
    // The test set went through the same map: recover its raw pixels.
    for (size_t i = 0; i < s.test.x.size(); ++i)
      EXPECT_NEAR(s.test.x[i] * s.feature_std[0] + s.feature_mean[0], test_pixel(i) / 255.0f, 1e-5);
    // Training and validation sets together are the training file's rows, each in file order:
    // recover every row's index in the file from its first pixel (unique for 50 rows).
    std::vector<int> origin;
    for (const Dataset* d : {&s.train, &s.val}) {
      int previous = -1;
      for (int64_t i = 0; i < d->n; ++i) {
        const float raw = d->x[static_cast<size_t>(i * 6)] * s.feature_std[0] + s.feature_mean[0];
        int row = -1;
        for (int r = 0; r < 50; ++r)
          if (std::fabs(raw - test_pixel(static_cast<size_t>(r) * 6) / 255.0f) < 1e-5f) row = r;
        ASSERT_GT(row, previous);
        EXPECT_EQ(d->labels[static_cast<size_t>(i)], row % 3);
        for (int64_t j = 0; j < 6; ++j)
          EXPECT_NEAR(d->x[static_cast<size_t>(i * 6 + j)] * s.feature_std[0] + s.feature_mean[0],
                      test_pixel(static_cast<size_t>(row * 6 + j)) / 255.0f, 1e-5);
        origin.push_back(row);
        previous = row;
      }
    }
    std::sort(origin.begin(), origin.end());
    for (int r = 0; r < 50; ++r) EXPECT_EQ(origin[static_cast<size_t>(r)], r);
  }
}

TEST(DataIdx, ValidationSplitIsSeeded) {
  TempDir dir;
  write_idx_set(dir, false, 60, 10);
  DataOptions a;
  a.seed = 1;
  DataOptions b = a;
  b.seed = 2;
  const std::string src = "idx:" + dir.path();
  EXPECT_EQ(lrlab::load_data(src, a).val.x, lrlab::load_data(src, a).val.x);
  EXPECT_NE(lrlab::load_data(src, a).val.x, lrlab::load_data(src, b).val.x);
}

TEST(DataIdx, MissingFileNamesIt) {
  TempDir dir;
  write_idx_set(dir, false, 5, 5);
  fs::remove(dir.file("t10k-labels-idx1-ubyte"));
  expect_error([&] { lrlab::load_data("idx:" + dir.path(), DataOptions{}); }, {dir.path(), "t10k-labels-idx1-ubyte"});
}

TEST(DataIdx, WrongMagicNamesFileAndOffset) {
  std::string images = idx_images(2, 2, 2, test_pixel);
  images[3] = 0x02;
  expect_error([&] { lrlab::parse_idx(images, idx_labels({0, 1}), "set"); },
               {"set images", "wrong IDX magic", "0x00000802", "byte offset 0"});
  expect_error([&] { lrlab::parse_idx(idx_images(2, 2, 2, test_pixel), idx_images(2, 2, 2, test_pixel), "set"); },
               {"set labels", "wrong IDX magic", "byte offset 0"});
}

TEST(DataIdx, TruncatedFilesNameFileAndOffset) {
  const std::string images = idx_images(3, 4, 4, test_pixel);
  const std::string labels = idx_labels({0, 1, 2});
  expect_error([&] { lrlab::parse_idx(images.substr(0, 10), labels, "t"); },
               {"t images", "truncated IDX header", "byte offset 10"});
  expect_error([&] { lrlab::parse_idx(images.substr(0, images.size() - 1), labels, "t"); },
               {"t images", "truncated IDX data", "3 images of 4x4", "byte offset 63"});
  expect_error([&] { lrlab::parse_idx(images, labels.substr(0, 9), "t"); },
               {"t labels", "truncated IDX data", "byte offset 9"});
  expect_error([&] { lrlab::parse_idx(images + "x", labels, "t"); },
               {"t images", "unexpected data", "byte offset 64"});
  expect_error([&] { lrlab::parse_idx("", labels, "t"); }, {"t images", "empty file"});
}

TEST(DataIdx, ImpossibleHeaderIsRefusedBeforeAllocating) {
  // 10^9 images of 65535x65535 would be 4e18 bytes: refused from the header alone.
  std::string images;
  put_be32(&images, 0x00000803);
  put_be32(&images, 1000000000u);
  put_be32(&images, 65535);
  put_be32(&images, 65535);
  std::string labels;
  put_be32(&labels, 0x00000801);
  put_be32(&labels, 1000000000u);
  expect_error([&] { lrlab::parse_idx(images, labels, "huge"); }, {"huge labels", "truncated IDX data"});
  expect_error([&] { lrlab::parse_idx(images, idx_labels({1}), "huge"); },
               {"huge images", "1000000000 images of 65535x65535", "byte offset 16"});
  // More images than an int32 index can address, even if the data were there.
  std::string many;
  put_be32(&many, 0x00000803);
  put_be32(&many, 0xFFFFFFFFu);
  put_be32(&many, 1);
  put_be32(&many, 1);
  expect_error([&] { lrlab::parse_idx(many, idx_labels({1}), "many"); }, {"many images", "byte offset 4"});
}

TEST(DataIdx, CountMismatchAndBadLabels) {
  const std::string images = idx_images(3, 2, 2, test_pixel);
  expect_error([&] { lrlab::parse_idx(images, idx_labels({0, 1}), "c"); },
               {"c labels", "2 labels", "c images", "3 images"});
  expect_error([&] { lrlab::parse_idx(images, idx_labels({0, 7, 1}), "c", 5); },
               {"c labels", "label 7", "byte offset 9", "5 classes"});
  // Fashion-MNIST-style loading fixes the class count, so an out-of-range label in a file is caught.
  TempDir dir;
  write_idx_set(dir, false, 5, 5);
  std::vector<uint8_t> bad = {0, 1, 2, 0, 200};
  dir.write("t10k-labels-idx1-ubyte", idx_labels(bad));
  DataOptions opt;
  opt.num_classes = 3;
  expect_error([&] { lrlab::load_data("idx:" + dir.path(), opt); },
               {dir.file("t10k-labels-idx1-ubyte"), "label 200", "byte offset 12"});
}

// A label must lie below the class count: the count itself is one too many. More labels than
// images is a mismatch as much as fewer.
TEST(DataIdx, LabelAtTheClassCountAndExtraLabelsAreRefused) {
  const std::string images = idx_images(3, 2, 2, test_pixel);
  expect_error([&] { lrlab::parse_idx(images, idx_labels({0, 3, 1}), "c", 3); },
               {"c labels", "label 3", "byte offset 9", "3 classes"});
  EXPECT_EQ(lrlab::parse_idx(images, idx_labels({0, 2, 1}), "c", 3).num_classes, 3);
  expect_error([&] { lrlab::parse_idx(images, idx_labels({0, 1, 2, 0}), "c"); },
               {"c labels", "4 labels", "c images", "3 images"});
}

// Files that each miss the highest class (a small test set) still give all splits one class count.
TEST(DataIdx, SplitsAgreeOnTheClassCount) {
  TempDir dir;
  write_idx_set(dir, false, 30, 10);
  std::vector<uint8_t> two_classes(10);
  for (size_t i = 0; i < two_classes.size(); ++i) two_classes[i] = static_cast<uint8_t>(i % 2);
  dir.write("t10k-labels-idx1-ubyte", idx_labels(two_classes));
  DataSplits s = lrlab::load_data("idx:" + dir.path(), DataOptions{});
  EXPECT_EQ(s.train.num_classes, 3);
  EXPECT_EQ(s.val.num_classes, 3);
  EXPECT_EQ(s.test.num_classes, 3);
}

TEST(DataIdx, GzipProblemsInFilesNameTheFile) {
  TempDir dir;
  write_idx_set(dir, true, 20, 5);
  const std::string path = dir.file("train-images-idx3-ubyte.gz");
  std::ifstream in(path, std::ios::binary);
  std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  dir.write("train-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  expect_error([&] { lrlab::load_data("idx:" + dir.path(), DataOptions{}); }, {path, "truncated gzip", "byte offset"});
}

// ---- gzip ----

TEST(DataGzip, PassesPlainBytesThroughAndInflatesGzip) {
  const std::string plain = "not compressed at all";
  EXPECT_EQ(lrlab::gunzip_if_needed(plain, "p", 4), plain);
  std::string big(300000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * i) % 251);
  EXPECT_EQ(lrlab::gunzip_if_needed(gzip_bytes(big), "g", big.size()), big);
  // Concatenated members read as one stream, as gzip -d reads them.
  EXPECT_EQ(lrlab::gunzip_if_needed(gzip_bytes("abc") + gzip_bytes("def"), "g", 100), "abcdef");
  EXPECT_EQ(lrlab::gunzip_if_needed(gzip_bytes(""), "g", 100), "");
}

TEST(DataGzip, TruncatedStreamIsRefusedAtEveryCut) {
  const std::string gz = gzip_bytes(std::string(5000, 'q') + "tail");
  for (size_t cut = 2; cut < gz.size(); cut += 3)
    expect_error([&] { lrlab::gunzip_if_needed(gz.substr(0, cut), "cut.gz", 1 << 20); },
                 {"cut.gz", "truncated gzip", "byte offset"});
}

TEST(DataGzip, CorruptStreamIsRefused) {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += std::to_string(i * 7919) + ",";
  std::string gz = gzip_bytes(text);
  // Damage the deflate data; the CRC in the trailer catches whatever the decoder itself misses.
  gz[gz.size() / 2] = static_cast<char>(gz[gz.size() / 2] ^ 0x5a);
  expect_error([&] { lrlab::gunzip_if_needed(gz, "bad.gz", 1 << 20); }, {"bad.gz", "corrupt gzip", "byte offset"});
  std::string header_damage = gzip_bytes(text);
  header_damage[2] = 9;  // compression method other than deflate
  expect_error([&] { lrlab::gunzip_if_needed(header_damage, "hdr.gz", 1 << 20); }, {"hdr.gz", "corrupt gzip"});
  expect_error([&] { lrlab::gunzip_if_needed(gzip_bytes("abc") + "junk", "tail.gz", 100); },
               {"tail.gz", "unexpected data", "byte offset"});
}

TEST(DataGzip, BombIsRefusedAtTheCap) {
  const std::string bomb = gzip_bytes(std::string(8 << 20, '\0'));  // 8 MiB of zeros in ~8 KiB
  expect_error([&] { lrlab::gunzip_if_needed(bomb, "bomb.gz", 1 << 20); }, {"bomb.gz", "more than 1048576 bytes"});
  EXPECT_EQ(lrlab::gunzip_if_needed(bomb, "bomb.gz", 8 << 20).size(), size_t{8} << 20);
}

// ---- CSV ----

TEST(DataCsv, ReadsWithAndWithoutHeader) {
  const std::string body = "1,0.5,2\n0, -1 ,3e2\r\n\n2,4,+5\n";
  // A header may follow a byte-order mark, and may name numbered feature columns.
  for (const std::string& text : {body, "label,a,b\n" + body, "\xEF\xBB\xBF" + body, "\xEF\xBB\xBFy,1,2\n" + body}) {
    Dataset d = lrlab::parse_csv(text, "t.csv", false);
    EXPECT_EQ(d.n, 3);
    EXPECT_EQ(d.dim, 2);
    EXPECT_EQ(d.num_classes, 3);
    EXPECT_EQ(d.labels, (std::vector<int32_t>{1, 0, 2}));
    EXPECT_EQ(d.x, (std::vector<float>{0.5f, 2, -1, 300, 4, 5}));
  }
}

TEST(DataCsv, RegressionTakesTheTargetFromTheFirstColumn) {
  Dataset d = lrlab::parse_csv("y,x1,x2\n1.5,1,2\n-2.25,3,4", "r.csv", true);
  EXPECT_EQ(d.n, 2);
  EXPECT_EQ(d.dim, 2);
  EXPECT_EQ(d.num_classes, 0);
  EXPECT_EQ(d.targets_dim, 1);
  EXPECT_TRUE(d.labels.empty());
  EXPECT_EQ(d.y, (std::vector<float>{1.5f, -2.25f}));
  EXPECT_EQ(d.x, (std::vector<float>{1, 2, 3, 4}));
}

TEST(DataCsv, BadInputNamesFileAndLine) {
  auto bad = [](const std::string& text, const std::vector<std::string>& parts, bool regression = false) {
    std::vector<std::string> all = {"b.csv"};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_error([&] { lrlab::parse_csv(text, "b.csv", regression, 0); }, all);
  };
  bad("", {"empty file"});
  bad("\n\n", {"no data rows"});
  bad("a,b,c\n", {"no data rows"});
  bad("1,2,3\n0,1\n", {"line 2", "2 columns", "expected 3"});
  bad("h1,h2\n1,2\n0,1,5\n", {"line 3", "3 columns", "expected 2"});
  bad("1,2,3\n0,x,1\n", {"line 2", "column 2", "'x' is not a number"});
  bad("1,2,3\n0,,1\n", {"line 2", "column 2", "empty field"});
  bad("1,2,3\n0,nan,1\n", {"line 2", "column 2", "not a finite number"});
  bad("1,2,inf\n", {"line 1", "column 3", "not a finite number"});
  bad("1,2,1e300\n", {"line 1", "column 3", "single precision"});
  bad("1,2,3\n-1,1,1\n", {"line 2", "label -1 is negative"});
  bad("1.5,1,1\n", {"line 1", "not a whole number"});
  bad("7\n", {"line 1", "at least one feature"});
  // A first row whose label is a number is data: its typo is reported, not taken for a header.
  bad("1,0.5x,0.3\n0,1,2\n", {"line 1", "column 2", "'0.5x' is not a number"});
  bad("1,0.5,\n0,1,2\n", {"line 1", "column 3", "empty field"});
  // A NUL byte is shown, and the message goes on past it.
  bad(std::string("1,2,3\n0,\0x,1\n", 13), {"line 2", "column 2", "'\\x00x' is not a number"});
  bad("1,2\n2,nan\n", {"line 2", "not a finite number"}, true);
  expect_error([] { lrlab::parse_csv("1,2\n9,1\n", "c.csv", false, 5); }, {"c.csv", "line 2", "label 9", "5 classes"});
}

// With the class count given, a label equal to it is out of range.
TEST(DataCsv, LabelAtTheClassCountIsRefused) {
  expect_error([] { lrlab::parse_csv("1,2\n5,1\n", "c.csv", false, 5); }, {"c.csv", "line 2", "label 5", "5 classes"});
  EXPECT_EQ(lrlab::parse_csv("1,2\n4,1\n", "c.csv", false, 5).num_classes, 5);
}

TEST(DataCsv, OverlongLineIsRefused) {
  std::string text = "1,2\n0,";
  text.append(lrlab::kMaxCsvLineBytes, '1');
  text += "\n";
  expect_error([&] { lrlab::parse_csv(text, "long.csv", false); }, {"long.csv", "line 2", "longer than"});
}

TEST(DataCsv, LoadSplitsAndStandardisesPerFeature) {
  TempDir dir;
  std::string text = "label,small,large,constant\n";
  for (int i = 0; i < 100; ++i)
    text += std::to_string(i % 4) + "," + std::to_string(i * 0.01) + "," + std::to_string(1000 + 7 * i) + ",3\n";
  const std::string path = dir.write("t.csv", text);
  DataSplits s = lrlab::load_data("csv:" + path, DataOptions{});
  EXPECT_EQ(s.test.n, 20);
  EXPECT_EQ(s.val.n, 8);
  EXPECT_EQ(s.train.n, 72);
  EXPECT_EQ(s.train.num_classes, 4);
  ASSERT_EQ(s.feature_mean.size(), 3u);
  for (int64_t j = 0; j < 2; ++j) {
    EXPECT_NEAR(mean_of(column(s.train, j)), 0.0, 1e-5);
    EXPECT_NEAR(std_of(column(s.train, j)), 1.0, 1e-4);
  }
  // A constant feature is centred but not divided by a zero std.
  EXPECT_EQ(s.feature_std[2], 1.0f);
  for (float v : column(s.test, 2)) EXPECT_EQ(v, 0.0f);
  for (const Dataset* d : {&s.train, &s.val, &s.test}) expect_consistent(*d);

  DataSplits r = lrlab::load_data("csv:" + path + ":regression", DataOptions{});
  EXPECT_EQ(r.train.targets_dim, 1);
  EXPECT_EQ(r.train.num_classes, 0);
  EXPECT_EQ(r.train.y.size(), 72u);
  // Targets keep their units; only features are standardised.
  for (float y : r.test.y) EXPECT_TRUE(y == 0 || y == 1 || y == 2 || y == 3);

  expect_error([&] { lrlab::load_data("csv:" + dir.file("missing.csv"), DataOptions{}); },
               {dir.file("missing.csv"), "cannot open"});
}

// ---- synthetic ----

TEST(DataSynthetic, ShapesAndBalancedClasses) {
  struct Case {
    const char* spec;
    int64_t dim, classes;
  };
  for (const Case& c : {Case{"spirals", 2, 3}, Case{"blobs", 2, 4}, Case{"blobs(dim=5,classes=7)", 5, 7},
                        Case{"spirals(classes=5,noise=0)", 2, 5}}) {
    Dataset d = lrlab::make_synthetic(c.spec, 1000, 3);
    SCOPED_TRACE(c.spec);
    EXPECT_EQ(d.n, 1000);
    EXPECT_EQ(d.dim, c.dim);
    EXPECT_EQ(d.num_classes, c.classes);
    expect_consistent(d);
    std::map<int32_t, int64_t> counts;
    for (int32_t l : d.labels) ++counts[l];
    ASSERT_EQ(static_cast<int64_t>(counts.size()), c.classes);
    for (auto& [label, count] : counts) EXPECT_LE(std::abs(count - 1000 / c.classes), 1) << "class " << label;
  }
  Dataset s = lrlab::make_synthetic("sine(noise=0)", 500, 3);
  EXPECT_EQ(s.dim, 1);
  EXPECT_EQ(s.targets_dim, 1);
  EXPECT_EQ(s.num_classes, 0);
  expect_consistent(s);
  for (int64_t i = 0; i < s.n; ++i) EXPECT_NEAR(s.y[i], std::sin(s.x[i]), 1e-6);
}

TEST(DataSynthetic, DeterministicBySeed) {
  for (const char* spec : {"spirals", "blobs", "sine"}) {
    EXPECT_EQ(lrlab::make_synthetic(spec, 300, 9).x, lrlab::make_synthetic(spec, 300, 9).x) << spec;
    EXPECT_NE(lrlab::make_synthetic(spec, 300, 9).x, lrlab::make_synthetic(spec, 300, 10).x) << spec;
    DataOptions opt;
    opt.synthetic_samples = 300;
    opt.seed = 4;
    DataSplits a = lrlab::load_data(spec, opt), b = lrlab::load_data(spec, opt);
    EXPECT_EQ(a.train.x, b.train.x) << spec;
    EXPECT_EQ(a.test.x, b.test.x) << spec;
  }
}

TEST(DataSynthetic, BadSpecsAreRefused) {
  expect_error([] { lrlab::make_synthetic("circles", 10, 0); }, {"unknown data set 'circles'"});
  expect_error([] { lrlab::make_synthetic("blobs(dims=3)", 10, 0); }, {"unknown key 'dims'"});
  expect_error([] { lrlab::make_synthetic("blobs(classes=2.5)", 10, 0); }, {"classes=2.5", "whole number"});
  expect_error([] { lrlab::make_synthetic("spirals", 0, 0); }, {"sample count 0"});
  expect_error([] { lrlab::make_synthetic("blobs(dim=4096)", 100000000, 0); }, {"exceed the limit"});
}

// ---- splits and options ----

TEST(DataSplits, SizesLimitAndStandardisation) {
  DataOptions opt;
  opt.synthetic_samples = 1000;
  opt.val_fraction = 0.25;
  opt.test_fraction = 0.2;
  DataSplits s = lrlab::load_data("blobs(dim=3,classes=3)", opt);
  EXPECT_EQ(s.test.n, 200);
  EXPECT_EQ(s.val.n, 200);
  EXPECT_EQ(s.train.n, 600);
  EXPECT_FALSE(s.description.empty());
  for (int64_t j = 0; j < 3; ++j) {
    EXPECT_NEAR(mean_of(column(s.train, j)), 0.0, 1e-5);
    EXPECT_NEAR(std_of(column(s.train, j)), 1.0, 1e-4);
  }
  // Validation rows are raw rows mapped with the training statistics.
  Dataset raw = lrlab::make_synthetic("blobs(dim=3,classes=3)", 1000, opt.seed);
  std::set<std::vector<float>> raw_rows;
  for (int64_t i = 0; i < raw.n; ++i) raw_rows.insert({raw.x.begin() + i * 3, raw.x.begin() + i * 3 + 3});
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<float> back(3);
    for (int j = 0; j < 3; ++j) back[j] = s.val.x[i * 3 + j] * s.feature_std[j] + s.feature_mean[j];
    auto it = raw_rows.lower_bound({back[0] - 1e-3f});
    bool found = false;
    for (; it != raw_rows.end() && (*it)[0] < back[0] + 1e-3f; ++it)
      found |= std::fabs((*it)[1] - back[1]) < 1e-3f && std::fabs((*it)[2] - back[2]) < 1e-3f;
    EXPECT_TRUE(found) << "validation row " << i;
  }

  opt.limit_train = 50;
  DataSplits l = lrlab::load_data("blobs(dim=3,classes=3)", opt);
  EXPECT_EQ(l.train.n, 50);
  EXPECT_EQ(l.val.n, 200);
  expect_consistent(l.train);

  opt = DataOptions{};
  opt.val_fraction = 0;
  opt.test_fraction = 0;
  opt.synthetic_samples = 30;
  DataSplits all = lrlab::load_data("spirals", opt);
  EXPECT_EQ(all.train.n, 30);
  EXPECT_EQ(all.val.n, 0);
  EXPECT_EQ(all.test.n, 0);
  EXPECT_EQ(all.val.dim, 2);
}

TEST(DataSplits, BadOptionsAndSourcesAreRefused) {
  DataOptions opt;
  opt.val_fraction = 1.0;
  expect_error([&] { lrlab::load_data("spirals", opt); }, {"validation fraction"});
  opt = DataOptions{};
  opt.test_fraction = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { lrlab::load_data("spirals", opt); }, {"test fraction"});
  opt = DataOptions{};
  opt.synthetic_samples = 2;
  opt.test_fraction = 0.5;
  opt.val_fraction = 0.5;
  expect_error([&] { lrlab::load_data("spirals", opt); }, {"leave no training samples"});
  opt = DataOptions{};
  opt.limit_train = -1;
  expect_error([&] { lrlab::load_data("spirals", opt); }, {"limit"});
  expect_error([] { lrlab::load_data("", DataOptions{}); }, {"empty data source"});
  expect_error([] { lrlab::load_data("idx:", DataOptions{}); }, {"needs a directory"});
  expect_error([] { lrlab::load_data("mnist", DataOptions{}); }, {"unknown data set 'mnist'"});
}

// ---- epoch order ----

TEST(DataEpochPermutation, PermutationDeterministicAndDifferentPerEpoch) {
  const int64_t n = 1000;
  std::vector<int32_t> p0 = lrlab::epoch_permutation(n, 5, 0);
  std::vector<int32_t> sorted = p0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p0, lrlab::epoch_permutation(n, 5, 0));
  EXPECT_NE(p0, lrlab::epoch_permutation(n, 5, 1));
  EXPECT_NE(p0, lrlab::epoch_permutation(n, 6, 0));
  EXPECT_NE(lrlab::epoch_permutation(n, 5, 1), lrlab::epoch_permutation(n, 5, 2));
  EXPECT_TRUE(lrlab::epoch_permutation(0, 5, 3).empty());
  EXPECT_EQ(lrlab::epoch_permutation(1, 5, 3), std::vector<int32_t>{0});
  expect_error([] { lrlab::epoch_permutation(-1, 0, 0); }, {"-1"});
  expect_error([] { lrlab::epoch_permutation(10, 0, -2); }, {"epoch -2"});
}

// ---- the real data set ----

TEST(DataFashionMnist, LoadsWithTheRightShapes) {
  std::string why;
  if (!lrlab::fashion_mnist_available(&why)) GTEST_SKIP() << why;
  DataSplits s = lrlab::load_data("fashion-mnist", DataOptions{});
  EXPECT_EQ(s.train.n, 54000);
  EXPECT_EQ(s.val.n, 6000);
  EXPECT_EQ(s.test.n, 10000);
  for (const Dataset* d : {&s.train, &s.val, &s.test}) {
    EXPECT_EQ(d->dim, 784);
    EXPECT_EQ(d->num_classes, 10);
    expect_consistent(*d);
  }
  EXPECT_NEAR(mean_of(s.train.x), 0.0, 1e-4);
  EXPECT_NEAR(std_of(s.train.x), 1.0, 1e-3);
  std::vector<int64_t> counts(10, 0);
  for (int32_t l : s.test.labels) ++counts[l];
  for (int64_t c : counts) EXPECT_EQ(c, 1000);  // the published test set is balanced
  EXPECT_NE(s.description.find("fashion-mnist"), std::string::npos);
}

}  // namespace
