// Small synthetic problems for quick runs and tests: interleaved spirals and Gaussian blobs
// (classification) and a noisy sine (regression). Sample i of a classification set belongs to
// class i % classes, so the classes are balanced whatever the sample count.
#include <cmath>
#include <string>
#include <vector>

#include "lrlab/data.hpp"
#include "lrlab/error.hpp"
#include "lrlab/rng.hpp"
#include "lrlab/spec.hpp"

namespace lrlab {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr uint64_t kSyntheticStream = 0x73796e7468657469ull;  // "synthetic"

int64_t whole(spec::ArgReader& args, const std::string& key, double fallback, double lo, double hi) {
  double v = args.number(key, fallback);
  if (v != std::floor(v) || v < lo || v > hi)
    args.fail_value(key, "expected a whole number in [" + std::to_string(static_cast<int64_t>(lo)) + ", " +
                             std::to_string(static_cast<int64_t>(hi)) + "]");
  return static_cast<int64_t>(v);
}

Dataset classification(int64_t n, int64_t dim, int64_t classes) {
  Dataset d;
  d.n = n;
  d.dim = dim;
  d.num_classes = classes;
  d.x.resize(static_cast<size_t>(n * dim));
  d.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) d.labels[static_cast<size_t>(i)] = static_cast<int32_t>(i % classes);
  return d;
}

// A spread of the generated values: far beyond any use at 1e6, and far from fp32's overflow (a
// spread of 1e39 made every feature inf and the standardisation NaN).
double spread_arg(spec::ArgReader& args, const char* key, double fallback) {
  const double v = args.number(key, fallback);
  if (v > 1e6) args.fail_value(key, "must be at most 1e6");
  return v;
}

// Each class is an arm winding out from the centre, the arms rotated evenly around it.
Dataset spirals(spec::ArgReader& args, int64_t n, Rng& rng) {
  const int64_t classes = whole(args, "classes", 3, 2, 1000);
  const double noise = args.number("noise", 0.2);
  const double turns = args.number("turns", 0.65);
  args.finish();
  Dataset d = classification(n, 2, classes);
  for (int64_t i = 0; i < n; ++i) {
    const double t = rng.uniform();
    const double angle = 2 * kPi * (static_cast<double>(d.labels[i]) / classes + turns * t) + noise * rng.normal();
    d.x[2 * i] = static_cast<float>(t * std::cos(angle));
    d.x[2 * i + 1] = static_cast<float>(t * std::sin(angle));
  }
  return d;
}

// Isotropic Gaussian clusters around centres drawn uniformly from [-5, 5]^dim.
Dataset blobs(spec::ArgReader& args, int64_t n, Rng& rng) {
  const int64_t classes = whole(args, "classes", 4, 2, 1000);
  const int64_t dim = whole(args, "dim", 2, 1, 4096);
  const double spread = spread_arg(args, "spread", 1.0);
  args.finish();
  LRLAB_REQUIRE(n * dim <= kMaxSyntheticValues, "data set 'blobs': ", n, " samples of ", dim,
                " features exceed the limit of ", kMaxSyntheticValues, " values");
  Dataset d = classification(n, dim, classes);
  std::vector<double> centres(static_cast<size_t>(classes * dim));
  for (double& c : centres) c = rng.uniform(-5.0, 5.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* c = &centres[static_cast<size_t>(d.labels[i] * dim)];
    for (int64_t j = 0; j < dim; ++j) d.x[i * dim + j] = static_cast<float>(c[j] + spread * rng.normal());
  }
  return d;
}

Dataset sine(spec::ArgReader& args, int64_t n, Rng& rng) {
  const double noise = spread_arg(args, "noise", 0.1);
  args.finish();
  Dataset d;
  d.n = n;
  d.dim = 1;
  d.targets_dim = 1;
  d.x.resize(static_cast<size_t>(n));
  d.y.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double x = rng.uniform(-kPi, kPi);
    d.x[i] = static_cast<float>(x);
    d.y[i] = static_cast<float>(std::sin(x) + noise * rng.normal());
  }
  return d;
}

}  // namespace

Dataset make_synthetic(const std::string& text, int64_t n, uint64_t seed) {
  std::vector<spec::Segment> segs = spec::parse(text, "data set");
  LRLAB_REQUIRE(segs.size() == 1, "data set '", text, "': expected one synthetic data set, found ", segs.size());
  LRLAB_REQUIRE(n >= 1 && n <= kMaxSyntheticSamples, "data set '", text, "': sample count ", n, " is outside [1, ",
                kMaxSyntheticSamples, "]");
  const spec::Segment& seg = segs[0];
  spec::ArgReader args(seg, "data set");
  Rng rng(seed, kSyntheticStream);
  if (seg.name == "spirals") return spirals(args, n, rng);
  if (seg.name == "blobs") return blobs(args, n, rng);
  if (seg.name == "sine") return sine(args, n, rng);
  LRLAB_FAIL("unknown data set '", seg.name, "' at position ", seg.pos, " in '", text,
             "' (expected fashion-mnist, idx:DIR, csv:FILE, csv:FILE:regression, spirals, blobs or sine)");
}

}  // namespace lrlab
