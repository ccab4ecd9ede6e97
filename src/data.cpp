// load_data: picks the reader for a source, splits train / validation / test with a seeded
// shuffle, and standardises all three splits with the training set's statistics.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "data_internal.hpp"
#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/serialize.hpp"

namespace lrlab {
namespace {

constexpr uint64_t kSplitStream = 0x73706c6974ull;       // "split"
constexpr uint64_t kEpochStream = 0x65706f6368ull << 24;  // "epoch", the epoch in the low bits
constexpr int64_t kFashionMnistClasses = 10;
const char* const kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";
const char* const kIdxFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                  "t10k-labels-idx1-ubyte"};

void check_options(const DataOptions& o) {
  LRLAB_REQUIRE(std::isfinite(o.val_fraction) && o.val_fraction >= 0 && o.val_fraction < 1,
                "validation fraction ", o.val_fraction, " is outside [0, 1)");
  LRLAB_REQUIRE(std::isfinite(o.test_fraction) && o.test_fraction >= 0 && o.test_fraction < 1, "test fraction ",
                o.test_fraction, " is outside [0, 1)");
  LRLAB_REQUIRE(o.synthetic_samples >= 1 && o.synthetic_samples <= kMaxSyntheticSamples, "synthetic sample count ",
                o.synthetic_samples, " is outside [1, ", kMaxSyntheticSamples, "]");
  LRLAB_REQUIRE(o.limit_train >= 0, "training sample limit ", o.limit_train, " is negative");
  LRLAB_REQUIRE(o.num_classes >= 0 && o.num_classes <= kMaxClasses, "number of classes ", o.num_classes,
                " is outside [0, ", kMaxClasses, "]");
}

// The rows idx[0..count) of d, in that order.
Dataset take(const Dataset& d, const int32_t* idx, int64_t count) {
  Dataset out;
  out.n = count;
  out.dim = d.dim;
  out.num_classes = d.num_classes;
  out.targets_dim = d.targets_dim;
  const size_t dim = static_cast<size_t>(d.dim), tdim = static_cast<size_t>(d.targets_dim);
  out.x.resize(static_cast<size_t>(count) * dim);
  if (!d.labels.empty()) out.labels.resize(static_cast<size_t>(count));
  if (!d.y.empty()) out.y.resize(static_cast<size_t>(count) * tdim);
  for (int64_t i = 0; i < count; ++i) {
    const size_t src = static_cast<size_t>(idx[i]), dst = static_cast<size_t>(i);
    std::memcpy(&out.x[dst * dim], &d.x[src * dim], dim * sizeof(float));
    if (!d.labels.empty()) out.labels[dst] = d.labels[src];
    if (!d.y.empty()) std::memcpy(&out.y[dst * tdim], &d.y[src * tdim], tdim * sizeof(float));
  }
  return out;
}

void truncate(Dataset& d, int64_t n) {
  d.n = n;
  d.x.resize(static_cast<size_t>(n * d.dim));
  if (!d.labels.empty()) d.labels.resize(static_cast<size_t>(n));
  if (!d.y.empty()) d.y.resize(static_cast<size_t>(n * d.targets_dim));
}

std::vector<int32_t> shuffled_indices(int64_t n, uint64_t seed) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  Rng rng(seed, kSplitStream);
  shuffle(idx.data(), n, rng);
  return idx;
}

int64_t fraction_of(int64_t n, double fraction) { return static_cast<int64_t>(std::llround(n * fraction)); }

// For sources with their own test set: a random val_fraction of the training samples becomes
// the validation set; both keep the file's order. The training rows are compacted in place
// rather than copied (Fashion-MNIST's are 170 MB).
void carve_validation(Dataset all_train, const DataOptions& opt, DataSplits* s) {
  const int64_t n = all_train.n;
  const int64_t n_val = fraction_of(n, opt.val_fraction);
  LRLAB_REQUIRE(n - n_val >= 1, "validation fraction ", opt.val_fraction, " leaves no training samples of ", n);
  std::vector<int32_t> perm = shuffled_indices(n, opt.seed);
  std::vector<char> is_val(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n_val; ++i) is_val[static_cast<size_t>(perm[i])] = 1;
  std::vector<int32_t> val_idx;
  val_idx.reserve(static_cast<size_t>(n_val));
  for (int32_t i = 0; i < static_cast<int32_t>(n); ++i)
    if (is_val[i]) val_idx.push_back(i);
  s->val = take(all_train, val_idx.data(), n_val);

  Dataset& t = all_train;
  const size_t dim = static_cast<size_t>(t.dim), tdim = static_cast<size_t>(t.targets_dim);
  size_t kept = 0;
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    if (is_val[i]) continue;
    if (kept != i) {
      std::memcpy(&t.x[kept * dim], &t.x[i * dim], dim * sizeof(float));
      if (!t.labels.empty()) t.labels[kept] = t.labels[i];
      if (!t.y.empty()) std::memcpy(&t.y[kept * tdim], &t.y[i * tdim], tdim * sizeof(float));
    }
    ++kept;
  }
  truncate(t, static_cast<int64_t>(kept));
  s->train = std::move(t);
}

// For sources without a test set: one seeded shuffle, then test, validation and training sets
// in that order (the training set keeps the shuffled order, so its first N samples are random).
void split_three(const Dataset& all, const DataOptions& opt, DataSplits* s) {
  const int64_t n_test = fraction_of(all.n, opt.test_fraction);
  const int64_t n_val = fraction_of(all.n - n_test, opt.val_fraction);
  const int64_t n_train = all.n - n_test - n_val;
  LRLAB_REQUIRE(n_train >= 1, "test fraction ", opt.test_fraction, " and validation fraction ", opt.val_fraction,
                " leave no training samples of ", all.n);
  std::vector<int32_t> perm = shuffled_indices(all.n, opt.seed);
  s->test = take(all, perm.data(), n_test);
  s->val = take(all, perm.data() + n_test, n_val);
  s->train = take(all, perm.data() + n_test + n_val, n_train);
}

// x' = (x - mean) / std with the training set's statistics: one pair for all values
// (per_feature false) or one per feature. A constant feature keeps std 1 rather than dividing by 0.
void standardise(DataSplits* s, bool per_feature) {
  const Dataset& t = s->train;
  const size_t dim = static_cast<size_t>(t.dim);
  const size_t groups = per_feature ? dim : 1;
  std::vector<double> sum(groups, 0.0), sq(groups, 0.0);
  const float* x = t.x.data();
  const size_t n = static_cast<size_t>(t.n);
  if (per_feature) {
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < dim; ++j) sum[j] += x[i * dim + j];
  } else {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (size_t i = 0; i < t.x.size(); ++i) acc += x[i];
    sum[0] = acc;
  }
  const double count = per_feature ? static_cast<double>(n) : static_cast<double>(t.x.size());
  std::vector<double> mean(groups);
  for (size_t g = 0; g < groups; ++g) mean[g] = sum[g] / count;
  // Second pass around the mean: the one-pass formula loses precision for large means.
  if (per_feature) {
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < dim; ++j) {
        const double d = x[i * dim + j] - mean[j];
        sq[j] += d * d;
      }
  } else {
    double acc = 0.0;
    const double m = mean[0];
#pragma omp simd reduction(+ : acc)
    for (size_t i = 0; i < t.x.size(); ++i) acc += (x[i] - m) * (x[i] - m);
    sq[0] = acc;
  }
  s->feature_mean.resize(groups);
  s->feature_std.resize(groups);
  std::vector<float> shift(dim), scale(dim);
  for (size_t g = 0; g < groups; ++g) {
    double sd = std::sqrt(sq[g] / count);
    if (!(sd > 1e-12 * std::max(1.0, std::fabs(mean[g])))) sd = 1.0;
    s->feature_mean[g] = static_cast<float>(mean[g]);
    s->feature_std[g] = static_cast<float>(sd);
  }
  for (size_t j = 0; j < dim; ++j) {
    const size_t g = per_feature ? j : 0;
    shift[j] = static_cast<float>(mean[g]);
    scale[j] = static_cast<float>(1.0 / s->feature_std[g]);
  }
  for (Dataset* d : {&s->train, &s->val, &s->test}) {
    float* v = d->x.data();
    for (size_t i = 0; i < static_cast<size_t>(d->n); ++i)
      for (size_t j = 0; j < dim; ++j) v[i * dim + j] = (v[i * dim + j] - shift[j]) * scale[j];
  }
}

std::string find_idx_file(const std::string& dir, const std::string& base) {
  const std::string plain = dir + "/" + base;
  if (data_detail::file_exists(plain)) return plain;
  if (data_detail::file_exists(plain + ".gz")) return plain + ".gz";
  return std::string();
}

Dataset read_idx_pair(const std::string& dir, const char* images, const char* labels, int64_t num_classes) {
  const std::string ip = find_idx_file(dir, images), lp = find_idx_file(dir, labels);
  LRLAB_REQUIRE(!ip.empty(), "IDX data in '", dir, "': neither ", images, " nor ", images, ".gz exists");
  LRLAB_REQUIRE(!lp.empty(), "IDX data in '", dir, "': neither ", labels, " nor ", labels, ".gz exists");
  return parse_idx(data_detail::read_file(ip, kMaxDataBytes), ip, data_detail::read_file(lp, kMaxDataBytes), lp,
                   num_classes);
}

void load_idx_dir(const std::string& dir, int64_t num_classes, const DataOptions& opt, DataSplits* s) {
  Dataset train = read_idx_pair(dir, kIdxFiles[0], kIdxFiles[1], num_classes);
  s->test = read_idx_pair(dir, kIdxFiles[2], kIdxFiles[3], num_classes);
  LRLAB_REQUIRE(s->test.dim == train.dim, "IDX data in '", dir, "': test images have ", s->test.dim,
                " pixels but training images have ", train.dim);
  carve_validation(std::move(train), opt, s);
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string describe(const std::string& label, const DataSplits& s) {
  std::string out = label + ": " + std::to_string(s.train.n) + " train, " + std::to_string(s.val.n) + " val, " +
                    std::to_string(s.test.n) + " test samples; " + std::to_string(s.train.dim) + " features; ";
  if (s.train.is_regression()) return out + std::to_string(s.train.targets_dim) + " regression target(s)";
  return out + std::to_string(s.train.num_classes) + " classes";
}

}  // namespace

std::string fashion_mnist_dir() {
  const char* env = std::getenv("LRLAB_FASHION_MNIST_DIR");
  return env && *env ? std::string(env) : std::string(kFashionMnistDefaultDir);
}

bool fashion_mnist_available(std::string* why) {
  const std::string dir = fashion_mnist_dir();
  for (const char* base : kIdxFiles) {
    if (find_idx_file(dir, base).empty()) {
      if (why)
        *why = "Fashion-MNIST not found: no " + dir + "/" + base +
               "[.gz] (install dataset-fashion-mnist or set LRLAB_FASHION_MNIST_DIR)";
      return false;
    }
  }
  return true;
}

void validate_dataset(const Dataset& d, const std::string& name) {
  LRLAB_REQUIRE(d.n >= 0 && d.dim >= 0 && d.num_classes >= 0 && d.targets_dim >= 0, name, ": negative sizes (n ",
                d.n, ", dim ", d.dim, ", classes ", d.num_classes, ", targets ", d.targets_dim, ")");
  LRLAB_REQUIRE(d.dim == 0 || d.n <= static_cast<int64_t>(d.x.max_size()) / d.dim, name, ": ", d.n, " x ", d.dim,
                " features overflow");
  LRLAB_REQUIRE(d.x.size() == static_cast<size_t>(d.n * d.dim), name, ": x holds ", d.x.size(),
                " values, not n x dim = ", d.n, " x ", d.dim);
  if (d.is_regression()) {
    LRLAB_REQUIRE(d.num_classes == 0 && d.labels.empty(), name, ": regression data (targets_dim ", d.targets_dim,
                  ") must have num_classes 0 and no labels");
    LRLAB_REQUIRE(d.n <= static_cast<int64_t>(d.y.max_size()) / d.targets_dim &&
                      d.y.size() == static_cast<size_t>(d.n * d.targets_dim),
                  name, ": y holds ", d.y.size(), " values, not n x targets_dim = ", d.n, " x ", d.targets_dim);
  } else {
    LRLAB_REQUIRE(d.labels.size() == static_cast<size_t>(d.n), name, ": ", d.labels.size(), " labels for ", d.n,
                  " samples");
    LRLAB_REQUIRE(d.n == 0 || d.num_classes >= 1, name, ": classification data needs num_classes >= 1");
    LRLAB_REQUIRE(d.y.empty(), name, ": classification data with regression targets (set targets_dim)");
    for (int64_t i = 0; i < d.n; ++i)
      LRLAB_REQUIRE(d.labels[i] >= 0 && d.labels[i] < d.num_classes, name, ": label ", d.labels[i], " of sample ", i,
                    " is outside [0, ", d.num_classes, ")");
  }
}

namespace {

template <typename T>
uint32_t crc_of(const std::vector<T>& v, uint32_t crc) {
  return crc32_of(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T), crc);
}

// Each split's shape goes in too: the same values cut into other splits are other data.
uint32_t fingerprint(const DataSplits& s) {
  uint32_t crc = 0;
  for (const Dataset* d : {&s.train, &s.val, &s.test}) {
    const int64_t shape[4] = {d->n, d->dim, d->num_classes, d->targets_dim};
    crc = crc32_of(reinterpret_cast<const char*>(shape), sizeof shape, crc);
    crc = crc_of(d->y, crc_of(d->labels, crc_of(d->x, crc)));
  }
  return crc;
}

}  // namespace

DataSplits load_data(const std::string& source, const DataOptions& opt) {
  check_options(opt);
  LRLAB_REQUIRE(!source.empty(), "empty data source");
  DataSplits s;
  bool images = false;
  std::string label = source;
  if (source == "fashion-mnist") {
    std::string why;
    LRLAB_REQUIRE(fashion_mnist_available(&why), why);
    load_idx_dir(fashion_mnist_dir(), opt.num_classes > 0 ? opt.num_classes : kFashionMnistClasses, opt, &s);
    images = true;
  } else if (starts_with(source, "idx:")) {
    const std::string dir = source.substr(4);
    LRLAB_REQUIRE(!dir.empty(), "data source 'idx:' needs a directory (idx:DIR)");
    load_idx_dir(dir, opt.num_classes, opt, &s);
    images = true;
  } else if (starts_with(source, "csv:")) {
    std::string file = source.substr(4);
    const std::string suffix = ":regression";
    const bool regression = file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (regression) file.resize(file.size() - suffix.size());
    LRLAB_REQUIRE(!file.empty(), "data source 'csv:' needs a file (csv:FILE or csv:FILE:regression)");
    split_three(parse_csv(data_detail::read_file(file, kMaxDataBytes), file, regression, opt.num_classes), opt, &s);
  } else {
    // A built-in set is a spec ("spirals(arms=3)"); a colon before any parenthesis can only be a
    // mistyped file source.
    const size_t colon = source.find(':');
    LRLAB_REQUIRE(colon == std::string::npos || colon > source.find('('), "unknown data source '",
                  source.substr(0, colon), ":' (expected fashion-mnist, idx:DIR, csv:FILE, csv:FILE:regression, "
                  "spirals, blobs or sine)");
    Dataset all = make_synthetic(source, opt.synthetic_samples, opt.seed);
    if (opt.num_classes > 0 && !all.is_regression())
      LRLAB_REQUIRE(all.num_classes <= opt.num_classes, "data set '", source, "' has ", all.num_classes,
                    " classes, more than the ", opt.num_classes, " requested");
    split_three(all, opt, &s);
  }

  if (opt.limit_train > 0 && opt.limit_train < s.train.n) truncate(s.train, opt.limit_train);
  // Splits read from separate files may each miss the highest class; all must agree.
  if (!s.train.is_regression()) {
    const int64_t classes = std::max({s.train.num_classes, s.val.num_classes, s.test.num_classes});
    s.train.num_classes = s.val.num_classes = s.test.num_classes = classes;
  }
  s.fingerprint = fingerprint(s);
  standardise(&s, !images);
  s.description = describe(label, s);
  return s;
}

std::vector<int32_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  LRLAB_REQUIRE(n >= 0 && n <= INT32_MAX, "epoch permutation of ", n, " samples is outside [0, ", INT32_MAX, "]");
  LRLAB_REQUIRE(epoch >= 0, "epoch ", epoch, " is negative");
  std::vector<int32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(seed, kEpochStream ^ static_cast<uint64_t>(epoch));
  shuffle(perm.data(), n, rng);
  return perm;
}

}  // namespace lrlab
