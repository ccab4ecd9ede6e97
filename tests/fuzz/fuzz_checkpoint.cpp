// Byte 0 selects the mode:
//   even: the rest is a whole checkpoint file, passed as is;
//   odd:  the rest is a payload; the target prepends a valid header (magic, version, length,
//         CRC-32) so mutations get past the checksum and reach the field decoding.
// A checkpoint that decodes must encode again and decode to the same fields.
#include <zlib.h>

#include <cstdlib>
#include <cstring>

#include "fuzz_common.hpp"
#include "lrlab/checkpoint.hpp"

namespace {

std::string with_header(const std::string& payload) {
  std::string out = "LRLABCKP";
  auto put = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(lrlab::kCheckpointVersion);
  put(static_cast<uint64_t>(payload.size()));
  put(static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size()))));
  return out + payload;
}

bool same(const lrlab::Checkpoint& a, const lrlab::Checkpoint& b) {
  return a.model == b.model && a.epochs_done == b.epochs_done && a.step == b.step && a.data_seed == b.data_seed &&
         a.params == b.params && a.optimizer == b.optimizer && a.has_plateau == b.has_plateau &&
         a.batch == b.batch && a.train_samples == b.train_samples && a.val_samples == b.val_samples &&
         a.test_samples == b.test_samples &&
         std::memcmp(&a.guard, &b.guard, sizeof a.guard) == 0 &&
         std::memcmp(&a.plateau, &b.plateau, sizeof a.plateau) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string bytes = lrlab::fuzz::bytes_of(data + 1, size - 1);
  if (data[0] & 1) bytes = with_header(bytes);
  lrlab::fuzz::expect_only_errors([&] {
    lrlab::Checkpoint c = lrlab::decode_checkpoint(bytes, "fuzz.ckpt");
    if (!same(lrlab::decode_checkpoint(lrlab::encode_checkpoint(c), "re-encoded"), c)) std::abort();
  });
  return 0;
}
