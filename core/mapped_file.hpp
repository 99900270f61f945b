// Read-only files: bounded reads for headers, and memory maps of byte ranges for tensor data.
// Each loaded tensor maps only its own range, so dropping the tensor gives its pages back and a
// stage that streams tensor by tensor keeps its resident memory near one tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

namespace upcycle {

class ReadOnlyFile {
 public:
  // Throws InputError naming the file when it cannot be opened or is not a regular file.
  static std::shared_ptr<const ReadOnlyFile> open(const std::filesystem::path& path);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }

  // Exactly dst.size() bytes at offset; InputError ("truncated") when the file ends first.
  void read(uint64_t offset, std::span<std::byte> dst) const;

  // Maps [offset, offset + length) read-only. The returned pointer is to the first byte of the
  // range and keeps the mapping alive. Checks the range against the file size.
  std::shared_ptr<const std::byte> map(uint64_t offset, uint64_t length) const;

  // Copies [offset, offset + length) into the open file `out_fd` at `out_offset` inside the
  // kernel (copy_file_range), without passing the bytes through this process. Returns false,
  // having copied nothing, where the kernel cannot (another file system, an old kernel); throws
  // InputError naming `out_path` on a write error.
  bool copy_to(int out_fd, const std::filesystem::path& out_path, uint64_t offset, uint64_t length,
               uint64_t out_offset) const;

 private:
  ReadOnlyFile(std::filesystem::path path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  std::filesystem::path path_;
  int fd_;
  uint64_t size_;
};

}  // namespace upcycle
