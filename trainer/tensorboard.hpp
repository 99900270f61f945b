// Scalars as TensorBoard event files (`tune --tensorboard DIR`): what `tensorboard --logdir DIR`
// and its EventAccumulator read. A file is TFRecords (length, masked CRC-32C of it, the bytes,
// their masked CRC-32C), each an Event protocol buffer: a file_version record first, then one
// record per step holding a Summary of (tag, simple_value) pairs. Wall times are the clock's, so
// event files are telemetry and not byte-identical between runs (metrics.jsonl is the record).
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace upcycle {

class TensorBoardWriter {
 public:
  // Creates dir and a new events.out.tfevents.<seconds>.upcycle file in it; InputError naming
  // dir when it cannot be written.
  explicit TensorBoardWriter(const std::filesystem::path& dir);

  // One step's scalars; flushed, so a crashed run keeps what it logged.
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);

  const std::filesystem::path& file() const { return file_; }

 private:
  void record(const std::string& event);
  std::filesystem::path file_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli) of bytes, masked as TFRecord stores it.
uint32_t tfrecord_masked_crc(const void* data, size_t size);

}  // namespace upcycle
