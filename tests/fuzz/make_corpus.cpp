// Writes the binary seed inputs of the IDX and checkpoint fuzzers into tests/fuzz/corpus/ (the
// text seeds are written by hand). Rerun after a change to either file format:
//   scripts/fuzz.sh --make-corpus
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "lrlab/checkpoint.hpp"

namespace {

std::string dir;

void write(const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string idx_labels(const std::vector<uint8_t>& labels) {
  return be32(0x801) + be32(static_cast<uint32_t>(labels.size())) + std::string(labels.begin(), labels.end());
}

std::string idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  std::string b = be32(0x803) + be32(n) + be32(rows) + be32(cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) b += char(i * 37);
  return b;
}

std::string gzip(const std::string& in) {
  uLongf len = compressBound(static_cast<uLong>(in.size())) + 32;
  std::string out(len, '\0');
  z_stream zs{};
  deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// The fuzz_idx input layout: labels length, flags, class count, labels, images.
std::string idx_input(const std::string& labels, const std::string& images, uint8_t flags, uint8_t classes) {
  std::string b{char(labels.size() & 0xff), char(labels.size() >> 8), char(flags), char(classes)};
  return b + labels + images;
}

void write_idx() {
  const std::string labels = idx_labels({0, 1, 2, 1});
  const std::string images = idx_images(4, 3, 2);
  write("plain", idx_input(labels, images, 0, 0));
  write("plain_classes", idx_input(labels, images, 0, 3));
  write("gzip_here", idx_input(labels, images, 3, 0));
  write("gzip_images_given", idx_input(labels, gzip(images), 0, 0));
  write("gzip_both_given", idx_input(gzip(labels), gzip(images), 0, 0));
  write("gzip_two_members", idx_input(labels, gzip(images.substr(0, 10)) + gzip(images.substr(10)), 0, 0));
  write("count_mismatch", idx_input(idx_labels({1, 2, 3}), images, 0, 0));
  write("truncated_images", idx_input(labels, images.substr(0, images.size() - 5), 0, 0));
  write("huge_dims", idx_input(labels, be32(0x803) + be32(4) + be32(0xffffffff) + be32(0xffffffff), 0, 0));
  write("wrong_magic", idx_input(labels, be32(0x0d03) + images.substr(4), 0, 0));
}

void write_checkpoint() {
  lrlab::Checkpoint c;
  c.model = R"({"layers":[2,3,2],"data":"spirals"})";
  c.epochs_done = 3;
  c.step = 120;
  c.data_seed = 42;
  c.params = {0.5f, -1.25f, 3.0f, 0.0f, 1e-3f, -7.0f};
  c.optimizer = std::string("adam\0state", 10);
  c.guard = {0.5, 1, 0.25, 0.2, 40};
  std::string plain = lrlab::encode_checkpoint(c);
  c.has_plateau = true;
  c.plateau = {0.1, 0.2, 2, 1, 9};
  std::string plateau = lrlab::encode_checkpoint(c);
  lrlab::Checkpoint empty;
  std::string minimal = lrlab::encode_checkpoint(empty);
  constexpr size_t kHeader = 24;  // magic, version, payload length, CRC-32
  // Mode byte 0: the whole file; mode byte 1: the payload, the fuzzer adds the header.
  for (const auto& [name, bytes] : {std::pair{"basic", plain}, {"plateau", plateau}, {"empty", minimal}}) {
    write(std::string("file_") + name, std::string(1, '\0') + bytes);
    write(std::string("payload_") + name, std::string(1, '\1') + bytes.substr(kHeader));
  }
  write("file_truncated", std::string(1, '\0') + plain.substr(0, plain.size() - 3));
  std::string bad_crc = plain;
  bad_crc.back() ^= 1;
  write("file_bad_crc", std::string(1, '\0') + bad_crc);
  c.params = {std::numeric_limits<float>::quiet_NaN()};
  write("payload_nan_weight", std::string(1, '\1') + lrlab::encode_checkpoint(c).substr(kHeader));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  dir = std::string(argv[1]) + "/idx";
  write_idx();
  dir = std::string(argv[1]) + "/checkpoint";
  write_checkpoint();
  return 0;
}
