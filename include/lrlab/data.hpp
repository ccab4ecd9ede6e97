// The data sets lrlab trains on: Fashion-MNIST and other IDX image files, CSV tables and small
// synthetic problems, split into train / validation / test and standardised with the training
// set's statistics. Every random choice (splits, synthetic points, epoch order) comes from
// lrlab::Rng, so a seed names the same data everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lrlab {

struct Dataset {
  int64_t n = 0, dim = 0;       // samples, features per sample
  int64_t num_classes = 0;      // 0 for regression
  int64_t targets_dim = 0;      // regression: values per sample (y), else 0
  std::vector<float> x;         // n*dim, row-major
  std::vector<int32_t> labels;  // n (classification)
  std::vector<float> y;         // n*targets_dim (regression)

  bool is_regression() const { return targets_dim > 0; }
};

struct DataOptions {
  double val_fraction = 0.1;         // carved from the training set, seeded
  double test_fraction = 0.2;        // only for sources without their own test set (csv, synthetic)
  uint64_t seed = 0;
  int64_t synthetic_samples = 6000;  // for spirals, blobs, sine
  // 0 = all; else keep the first N training samples (quick runs). IDX training sets keep the
  // file's order; CSV and synthetic ones are in a seeded shuffled order.
  int64_t limit_train = 0;
  // 0 = infer (largest label + 1); else every label must be below it. The synthetic sets take their
  // class count from their spec ("spirals(classes=5)"): one above this is refused.
  int64_t num_classes = 0;
};

struct DataSplits {
  Dataset train, val, test;
  std::string description;
  // The standardisation applied to all three splits, x' = (x - mean) / std, taken from the
  // training set: one value for images (all pixels share it), else one per feature.
  std::vector<float> feature_mean, feature_std;
  // CRC-32 of the three splits as loaded, before the standardisation (whose sums a build may
  // vectorise differently): the same data gives the same value wherever it was read from.
  uint32_t fingerprint = 0;
};

// Resource limits: input beyond them is refused before it is allocated.
constexpr size_t kMaxDataBytes = size_t{2} << 30;          // a file, or its decompressed contents
constexpr int64_t kMaxClasses = 65536;
constexpr size_t kMaxCsvLineBytes = size_t{16} << 20;
constexpr int64_t kMaxSyntheticSamples = 100000000;
constexpr int64_t kMaxSyntheticValues = int64_t{1} << 28;  // samples x features

// source:
//   "fashion-mnist"        gzip IDX files under /usr/share/datasets/fashion-mnist or $LRLAB_FASHION_MNIST_DIR
//   "idx:DIR"              train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...
//   "csv:FILE"             label in the first column, then the features; header row optional
//   "csv:FILE:regression"  target in the first column, then the features
//   "spirals", "spirals(classes=3,noise=0.2)"         2-D interleaved spirals
//   "blobs", "blobs(classes=4,dim=2,spread=1)"        Gaussian clusters
//   "sine", "sine(noise=0.1)"                         regression: y = sin(x) + noise
// Features are standardised with the training set's statistics (see DataSplits); regression
// targets keep their units. Throws lrlab::Error naming the file and byte offset or line for bad input.
DataSplits load_data(const std::string& source, const DataOptions& opt);

// Throws lrlab::Error when a data set built by hand is not what its fields say: x of n*dim values,
// n labels in [0, num_classes) for classification, n*targets_dim targets for regression. `name`
// names it in messages. Features are not scanned for NaN here (load_data refuses them).
void validate_dataset(const Dataset& d, const std::string& name);

// Whether the Fashion-MNIST files are present; `why` receives the reason when they are not.
bool fashion_mnist_available(std::string* why = nullptr);
// The directory load_data("fashion-mnist") reads.
std::string fashion_mnist_dir();

// The data order of one epoch: a permutation of [0,n) that depends only on (seed, epoch), so a
// resumed run sees the same order.
std::vector<int32_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// One synthetic data set of n samples before any split ("spirals(classes=3)", "blobs", "sine").
// Classification sets give sample i the class i % classes, so classes are balanced.
Dataset make_synthetic(const std::string& spec, int64_t n, uint64_t seed);

// Lower-level readers, exposed so fuzzers and tests can drive them on memory buffers.
// num_classes: 0 = infer (largest label + 1); else every label must be below it.
// parse_idx accepts gzip or plain IDX (unsigned-byte images with 3 dimensions, unsigned-byte
// labels with 1) and scales pixels to [0,1]. The 3-argument form names the two buffers
// "<name> images" and "<name> labels" in messages.
Dataset parse_idx(const std::string& images_bytes, const std::string& labels_bytes, const std::string& name,
                  int64_t num_classes = 0);
Dataset parse_idx(const std::string& images_bytes, const std::string& images_name,
                  const std::string& labels_bytes, const std::string& labels_name, int64_t num_classes = 0);
// Comma-separated; the first column is the label (or the regression target); a first row that
// is not all numbers is a header. Blank lines are skipped.
Dataset parse_csv(const std::string& text, const std::string& name, bool regression, int64_t num_classes = 0);
// Returns `bytes` unchanged unless they start with the gzip magic; then inflates them (all
// members), refusing output beyond min(max_out, kMaxDataBytes) and truncated or corrupt streams.
std::string gunzip_if_needed(const std::string& bytes, const std::string& name, size_t max_out);

}  // namespace lrlab
