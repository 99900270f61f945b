#include "core/output_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include <spdlog/spdlog.h>

#include "core/error.hpp"

namespace upcycle {

void write_all_at(int fd, std::span<const std::byte> bytes, uint64_t at, const std::filesystem::path& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, size_t(1) << 30);
    const ssize_t n = ::pwrite(fd, bytes.data() + done, chunk, off_t(at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw InputError(path, std::string("cannot write: ") + (n < 0 ? std::strerror(errno) : "no progress"));
    done += size_t(n);
  }
}

void AlignedBytes::Free::operator()(std::byte* p) const { std::free(p); }

void AlignedBytes::reserve(size_t n) {
  if (n <= capacity_) return;
  const size_t size = (n + OutputFile::kPage - 1) / OutputFile::kPage * OutputFile::kPage;
  data_.reset(static_cast<std::byte*>(std::aligned_alloc(OutputFile::kPage, size)));
  if (!data_) throw std::bad_alloc();
  capacity_ = size;
}

OutputFile::OutputFile(const std::filesystem::path& path, int buffered_fd, bool direct)
    : path_(path), buffered_fd_(buffered_fd) {
  if (!direct) return;
  direct_fd_ = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (direct_fd_ < 0) spdlog::debug("{}: no O_DIRECT ({}): writing through the page cache", path.string(), std::strerror(errno));
}

OutputFile::~OutputFile() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
}

void OutputFile::fall_back() {
  spdlog::debug("{}: O_DIRECT writes refused: writing through the page cache", path_.string());
  ::close(direct_fd_);
  direct_fd_ = -1;
  // Pages so far partial go out whole: bytes not yet written are zeros until their writes come.
  // (They are dropped by the next write or flush: one of them may be what is being written.)
  for (const auto& [index, p] : partial_) {
    write_all_at(buffered_fd_, {p.page.data(), kPage}, index * kPage, path_);
    padded_end_ = std::max(padded_end_, (index + 1) * kPage);
  }
}

void OutputFile::write_pages(const std::byte* data, uint64_t n, uint64_t at) {
  while (direct()) {
    const ssize_t done = ::pwrite(direct_fd_, data, size_t(std::min<uint64_t>(n, uint64_t(1) << 30)), off_t(at));
    if (done < 0 && errno == EINTR) continue;
    if (done < 0 && errno == EINVAL) {  // alignment this device or file system does not take
      fall_back();
      break;
    }
    if (done <= 0) throw InputError(path_, std::string("cannot write: ") + (done < 0 ? std::strerror(errno) : "no progress"));
    // A short write ends on a page boundary only by chance: the rest goes through the page cache.
    if (uint64_t(done) % kPage) return write_all_at(buffered_fd_, {data + done, size_t(n - uint64_t(done))}, at + uint64_t(done), path_);
    data += done, at += uint64_t(done), n -= uint64_t(done);
    if (n == 0) return;
  }
  write_all_at(buffered_fd_, {data, size_t(n)}, at, path_);
}

void OutputFile::add_partial(const std::byte* data, uint64_t n, uint64_t at) {
  Partial& p = partial_[at / kPage];
  if (p.page.capacity() == 0) {
    p.page.reserve(kPage);
    std::memset(p.page.data(), 0, kPage);
  }
  std::memcpy(p.page.data() + at % kPage, data, n);
  p.filled += n;
  if (p.filled == kPage) {
    write_pages(p.page.data(), kPage, at / kPage * kPage);
    partial_.erase(at / kPage);
  }
}

void OutputFile::write(const std::byte* data, uint64_t n, uint64_t at) {
  if (n == 0) return;
  end_ = std::max(end_, at + n);
  if (!direct()) {
    partial_.clear();
    return write_all_at(buffered_fd_, {data, size_t(n)}, at, path_);
  }
  const uint64_t end = at + n;
  if (at % kPage) {  // the head, within its page
    const uint64_t head = std::min(end, (at / kPage + 1) * kPage) - at;
    add_partial(data, head, at);
    data += head, at += head;
  }
  const uint64_t whole_end = std::max(at, end / kPage * kPage);
  if (whole_end > at) write_pages(data, whole_end - at, at);
  if (end > whole_end) add_partial(data + (whole_end - at), end - whole_end, whole_end);
}

void OutputFile::flush() {
  for (const auto& [index, p] : partial_) {
    if (!direct()) break;  // the fall back wrote them all
    write_pages(p.page.data(), kPage, index * kPage);
    padded_end_ = std::max(padded_end_, (index + 1) * kPage);
  }
  if (!direct()) partial_.clear();
  if (padded_end_ > end_ && ::ftruncate(buffered_fd_, off_t(end_)) != 0)
    throw InputError(path_, std::string("cannot set the size: ") + std::strerror(errno));
}

}  // namespace upcycle
