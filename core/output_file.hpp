// A file written at any offsets, past the page cache (O_DIRECT) where it can: buffered writes
// of a large output cost the kernel many times the CPU of direct ones copying into the page
// cache (README: Benchmarks), and a conversion needs those cores for merging.
//
// O_DIRECT needs buffers, offsets and lengths aligned to pages. Whole pages of a write go to the
// device as they are; the partial pages at its ends are assembled from the writes that share them
// and written once full. flush() writes the pages still partial (padded with zeros) and cuts the
// file to the last byte written. Writes must not overlap. Where the file system refuses O_DIRECT
// (at open or at the first write), everything goes through the page cache instead.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>

namespace upcycle {

// All of bytes at byte `at` of the file; InputError naming `path` on failure.
void write_all_at(int fd, std::span<const std::byte> bytes, uint64_t at, const std::filesystem::path& path);

// Bytes in memory aligned to OutputFile::kPage, grown on demand (contents not kept).
class AlignedBytes {
 public:
  std::byte* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }
  void reserve(size_t n);  // at least n bytes; a fresh allocation when larger than the last

 private:
  struct Free {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t capacity_ = 0;
};

class OutputFile {
 public:
  static constexpr uint64_t kPage = 4096;  // a multiple of every device's logical block

  // `buffered_fd` is the caller's descriptor of `path` (created, empty). With `direct`, the file is
  // opened again with O_DIRECT for the writes; else, or where that is refused, they go through
  // buffered_fd and the page cache.
  OutputFile(const std::filesystem::path& path, int buffered_fd, bool direct);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Bytes [at, at + n) of the file, at `data`, an address that lies at `at` modulo kPage.
  void write(const std::byte* data, uint64_t n, uint64_t at);
  // The partial pages written, padded; the file cut to the end of the last byte written.
  void flush();
  bool direct() const { return direct_fd_ >= 0; }

 private:
  struct Partial {
    AlignedBytes page;
    uint64_t filled = 0;  // bytes written into it so far
  };
  void write_pages(const std::byte* data, uint64_t n, uint64_t at);  // whole pages, aligned
  void add_partial(const std::byte* data, uint64_t n, uint64_t at);   // within one page
  void fall_back();  // O_DIRECT refused: the page cache from now on

  std::filesystem::path path_;
  int buffered_fd_;
  int direct_fd_ = -1;
  std::map<uint64_t, Partial> partial_;  // by page index
  uint64_t end_ = 0;                     // the end of the last byte written
  uint64_t padded_end_ = 0;              // the end of the last page written padded
};

}  // namespace upcycle
