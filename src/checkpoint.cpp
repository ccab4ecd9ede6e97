#include "lrlab/checkpoint.hpp"

#include <cmath>

#include "lrlab/error.hpp"
#include "lrlab/io.hpp"
#include "lrlab/serialize.hpp"

namespace lrlab {

namespace {
constexpr char kMagic[8] = {'L', 'R', 'L', 'A', 'B', 'C', 'K', 'P'};
constexpr size_t kHeader = 8 + 4 + 8 + 4;  // magic, version, payload length, crc32
constexpr size_t kMaxCheckpointBytes = size_t(8) << 30;

// The guard's record in version 2 files, before it remembered the run's first loss.
struct GuardStateV2 {
  double scale;
  int64_t events;
  SmoothedLoss loss;
};
}  // namespace

std::string encode_checkpoint(const Checkpoint& c) {
  ByteWriter body;
  body.put_string(c.model);
  body.put(c.epochs_done);
  body.put(c.step);
  body.put(c.data_seed);
  body.put_vector(c.params);
  body.put_string(c.optimizer);
  body.put(c.guard);
  body.put<uint8_t>(c.has_plateau);
  body.put(c.plateau);
  for (int64_t v : {c.batch, c.train_samples, c.val_samples, c.test_samples}) body.put(v);
  const std::string& payload = body.bytes();
  ByteWriter w;
  w.put_bytes(kMagic, sizeof kMagic);
  w.put(kCheckpointVersion);
  w.put<uint64_t>(payload.size());
  w.put(crc32_of(payload.data(), payload.size()));
  w.put_bytes(payload.data(), payload.size());
  return w.take();
}

Checkpoint decode_checkpoint(const std::string& bytes, const std::string& name) {
  const std::string what = "checkpoint '" + name + "'";
  LRLAB_REQUIRE(bytes.size() >= kHeader, what, ": truncated (", bytes.size(), " bytes, header needs ", kHeader, ")");
  LRLAB_REQUIRE(bytes.compare(0, 8, kMagic, 8) == 0, what, ": not an lrlab checkpoint (bad magic)");
  ByteReader head(bytes, what, 8);
  uint32_t version = head.get<uint32_t>();
  LRLAB_REQUIRE(version >= 2 && version <= kCheckpointVersion, what, ": version ", version,
                " is not supported (this lrlab reads versions 2 to ", kCheckpointVersion, ")");
  uint64_t len = head.get<uint64_t>();
  uint32_t crc = head.get<uint32_t>();
  LRLAB_REQUIRE(len == bytes.size() - kHeader, what, ": truncated or padded (header promises ", len,
                " payload bytes, file holds ", bytes.size() - kHeader, ")");
  LRLAB_REQUIRE(crc32_of(bytes.data() + kHeader, len) == crc, what, ": checksum mismatch (corrupt file)");
  ByteReader r(bytes, what, kHeader);
  Checkpoint c;
  c.model = r.get_string();
  c.epochs_done = r.get<int64_t>();
  c.step = r.get<int64_t>();
  c.data_seed = r.get<uint64_t>();
  c.params = r.get_vector<float>();
  c.optimizer = r.get_string(size_t(1) << 36);
  if (version == 2) {
    const GuardStateV2 g = r.get<GuardStateV2>();
    c.guard.scale = g.scale;
    c.guard.events = g.events;
    c.guard.loss = g.loss;
  } else {
    c.guard = r.get<GuardState>();
  }
  c.has_plateau = r.get<uint8_t>() != 0;
  c.plateau = r.get<PlateauState>();
  if (version >= 4)
    for (int64_t* v : {&c.batch, &c.train_samples, &c.val_samples, &c.test_samples}) *v = r.get<int64_t>();
  r.expect_end();
  LRLAB_REQUIRE(c.epochs_done >= 0 && c.step >= 0 && c.guard.events >= 0 && c.guard.loss.count >= 0 &&
                    c.batch >= 0 && c.train_samples >= 0 && c.val_samples >= 0 && c.test_samples >= 0,
                what, ": negative counters");
  // The guard only ever lowers the rate; anything else did not come from a run.
  LRLAB_REQUIRE(c.guard.scale > 0 && c.guard.scale <= 1, what, ": the guard's rate factor ", c.guard.scale,
                " is outside (0, 1]");
  LRLAB_REQUIRE(std::isfinite(c.guard.start) && c.guard.start >= 0 && !std::isnan(c.guard.loss.best) &&
                    !std::isnan(c.guard.loss.average),
                what, ": the guard's loss record is not a number");
  LRLAB_REQUIRE(c.guard.loss.beta >= 0 && c.guard.loss.beta < 1, what, ": the guard's smoothing factor ",
                c.guard.loss.beta, " is outside [0, 1)");
  for (float v : c.params) LRLAB_REQUIRE(std::isfinite(v), what, ": holds non-finite weights");
  return c;
}

void save_checkpoint(const std::string& path, const Checkpoint& c) { write_file_atomic(path, encode_checkpoint(c)); }

Checkpoint load_checkpoint(const std::string& path) {
  return decode_checkpoint(read_file(path, kMaxCheckpointBytes), path);
}

}  // namespace lrlab
