// One safetensors file (an 8-byte header length, a JSON header of dtypes, shapes and offsets, the
// data): a validated header and tensors mapped
// on demand; and a writer that lays out the header first and streams each tensor to its place.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/background_writer.hpp"
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
  // Reads and validates the header: length against the file size (and a 100 MB cap), JSON
  // types, repeated keys, known dtypes, shape products against byte ranges (overflow checked),
  // ranges inside the data area and not overlapping. Throws InputError naming the file (and
  // tensor). Tensors need not be contiguous; an unaligned one loads as a copy.
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

// What transformers writes into every file's __metadata__.
inline const std::map<std::string, std::string> kSafetensorsPtMetadata = {{"format", "pt"}};

// Writes one file: construct with every tensor's info (the header keeps their order and packs
// the data back to back in it), then write each tensor once, in any order (each goes to its own
// place), then finish(). Writes to `path` directly: callers put it under a StagedPath. Empty
// metadata leaves __metadata__ out. The bytes go out on a background thread (BackgroundWriter),
// while the caller makes the next ones; I/O failures throw InputError naming `path`, from a later
// write or from finish(); misuse (a tensor unlike its info, one written twice, one missing)
// throws std::logic_error.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorInfo> tensors,
                    const std::map<std::string, std::string>& metadata = kSafetensorsPtMetadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Tensor i of the header; its shape must match its info. Other plain float dtypes are
  // converted to the info's dtype piece by piece (formats/checkpoint_writer.hpp write_converted), so memory
  // stays small.
  void write(size_t i, const Tensor& t);
  // Tensors first, first + 1, ...: computed ones of one Tensor::group with the same element
  // count, written range by range across them, each range at its place in the file, so that
  // their maker is asked for each range of the whole group in turn.
  void write_group(size_t first, std::span<const Tensor> tensors);
  // The same, after the tensors written so far in header order.
  void write(const Tensor& t) { write(next_, t); }
  void write_group(std::span<const Tensor> tensors) { write_group(next_, tensors); }
  void finish();  // all written; flushes and closes
  uint64_t file_size() const { return total_; }

 private:
  const TensorInfo& check(size_t i, const Tensor& t) const;  // tensors_[i], t matching it, not written before
  void claim(size_t i);                                       // tensor i written
  // Parts of `count` elements each (a computed tensor, from its element `first`, into the file at
  // byte `at`), written a range of each in turn.
  struct Part {
    const Tensor* tensor;
    uint64_t first, at;
    DType dtype;
  };
  void write_interleaved(const std::vector<Part>& parts, uint64_t count);

  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  std::vector<uint64_t> at_;     // per tensor: where its bytes go
  std::vector<char> written_;    // per tensor
  size_t next_ = 0;              // one past the last tensor written
  size_t count_ = 0;             // tensors written
  uint64_t total_ = 0;
  int fd_ = -1;
  std::unique_ptr<BackgroundWriter> out_;  // the writes, on a thread of their own
};

// The size of a safetensors file planned tensor by tensor, counted from the same text the writer
// emits, so shards can be filled to a byte limit without writing them.
class SafetensorsSizer {
 public:
  explicit SafetensorsSizer(const std::map<std::string, std::string>& metadata = kSafetensorsPtMetadata);
  void add(const TensorInfo& t);                       // packed after the tensors added so far
  uint64_t file_size_with(const TensorInfo& t) const;  // the file size if t were added next
  uint64_t header_bytes() const;                       // length field, JSON and padding
  uint64_t file_size() const { return header_bytes() + data_bytes_; }

 private:
  uint64_t json_bytes_;  // the JSON text so far, without its closing brace or padding
  uint64_t data_bytes_ = 0;
  bool has_members_;  // whether the next member needs a comma before it
};

// The bytes before the tensor data (8-byte length, JSON, padding) a writer would emit for these
// tensors in this order.
uint64_t safetensors_header_bytes(const std::vector<TensorInfo>& tensors,
                                  const std::map<std::string, std::string>& metadata = kSafetensorsPtMetadata);

}  // namespace upcycle
