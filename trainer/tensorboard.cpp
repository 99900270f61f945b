#include "trainer/tensorboard.hpp"

#include <chrono>
#include <cstring>

#include <boost/crc.hpp>
#include <fmt/format.h>

#include "core/error.hpp"

namespace upcycle {

namespace {

// Protocol-buffer encoding of the few fields an Event needs.
void varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += char(uint8_t(v) | 0x80);
  out += char(uint8_t(v));
}
void tag(std::string& out, int field, int wire) { varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
template <class T>
void fixed(std::string& out, T v) {  // little-endian, as every supported machine is
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& bytes) {
  tag(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}

// Event {1: wall_time double, 2: step int64, then 3: file_version string or 5: summary}.
std::string event_head(int64_t step) {
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string e;
  tag(e, 1, 1);
  fixed(e, now);
  tag(e, 2, 0);
  varint(e, uint64_t(step));
  return e;
}

}  // namespace

uint32_t tfrecord_masked_crc(const void* data, size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;  // CRC-32C
  crc.process_bytes(data, size);
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  require(!ec, dir, "cannot create the TensorBoard folder: " + ec.message());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  file_ = dir / fmt::format("events.out.tfevents.{}.upcycle", seconds.count());
  out_.open(file_, std::ios::binary | std::ios::app);
  require(bool(out_), file_, "cannot write");
  std::string e = event_head(0);
  bytes_field(e, 3, "brain.Event:2");
  record(e);
}

void TensorBoardWriter::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;
  for (const auto& [name, value] : values) {
    std::string v;  // Summary.Value {1: tag, 2: simple_value float}
    bytes_field(v, 1, name);
    tag(v, 2, 5);
    fixed(v, float(value));
    bytes_field(summary, 1, v);
  }
  std::string e = event_head(step);
  bytes_field(e, 5, summary);
  record(e);
}

void TensorBoardWriter::record(const std::string& event) {
  std::string r;
  fixed(r, uint64_t(event.size()));
  fixed(r, tfrecord_masked_crc(r.data(), 8));
  r += event;
  fixed(r, tfrecord_masked_crc(event.data(), event.size()));
  out_.write(r.data(), std::streamsize(r.size()));
  out_.flush();
  require(bool(out_), file_, "cannot write (disk full?)");
}

}  // namespace upcycle
