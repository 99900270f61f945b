// One safetensors file (format in ../shared/DESIGN.md): a validated header and tensors mapped
// on demand; and a writer that lays out the header first and streams each tensor to its place.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/mapped_file.hpp"

namespace upcycle {

struct SafetensorsEntry {
  TensorInfo info;
  uint64_t offset;  // absolute, in the file
  uint64_t nbytes;
};

class SafetensorsFile {
 public:
  // Reads and validates the header: length against the file size, JSON types, known dtypes,
  // shape products against byte ranges (overflow checked), ranges inside the data area and not
  // overlapping. Throws InputError naming the file (and tensor).
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  Tensor load(const SafetensorsEntry& entry) const;  // a memory-mapped view

 private:
  std::shared_ptr<const ReadOnlyFile> file_;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes one file: construct with every tensor's info (in the order they will come), then
// write() each tensor in that order, then finish(). Writes to `path` directly: callers put it
// under a StagedPath.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorInfo> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void write(const Tensor& t);  // the next tensor; its dtype and shape must match its info
  void finish();                // all written; flushes and closes
  uint64_t file_size() const { return total_; }

 private:
  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  size_t next_ = 0;
  uint64_t total_ = 0;
  int fd_ = -1;
};

// The size of the header a writer would emit for these tensors (for planning shards).
uint64_t safetensors_header_bytes(const std::vector<TensorInfo>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace upcycle
