#include "core/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace upcycle {

std::shared_ptr<const ReadOnlyFile> ReadOnlyFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path, "not a regular file");
  }
  return std::shared_ptr<const ReadOnlyFile>(new ReadOnlyFile(path, fd, uint64_t(st.st_size)));
}

ReadOnlyFile::~ReadOnlyFile() { ::close(fd_); }

void ReadOnlyFile::read(uint64_t offset, std::span<std::byte> dst) const {
  if (offset > size_ || dst.size() > size_ - offset)
    throw InputError(path_, "truncated: needs " + std::to_string(dst.size()) + " bytes at offset " +
                                std::to_string(offset) + ", file has " + std::to_string(size_));
  size_t done = 0;
  while (done < dst.size()) {
    ssize_t n = ::pread(fd_, dst.data() + done, dst.size() - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw InputError(path_, std::string("read failed: ") + std::strerror(errno));
    done += size_t(n);
  }
}

std::shared_ptr<const std::byte> ReadOnlyFile::map(uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset)
    throw InputError(path_, "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                ") lies outside the file (" + std::to_string(size_) + " bytes)");
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  if (length == 0) {  // nothing to map; a valid pointer that owns nothing
    static const std::byte none{};
    return std::shared_ptr<const std::byte>(std::shared_ptr<void>(), &none);
  }
  uint64_t start = offset / page * page, span = offset - start + length;
  void* base = ::mmap(nullptr, span, PROT_READ, MAP_PRIVATE, fd_, off_t(start));
  if (base == MAP_FAILED) throw InputError(path_, std::string("mmap failed: ") + std::strerror(errno));
  ::madvise(base, span, MADV_SEQUENTIAL);
  std::shared_ptr<void> owner(base, [span](void* p) { ::munmap(p, span); });
  return std::shared_ptr<const std::byte>(owner, static_cast<const std::byte*>(base) + (offset - start));
}

bool ReadOnlyFile::copy_to(int out_fd, const std::filesystem::path& out_path, uint64_t offset, uint64_t length,
                           uint64_t out_offset) const {
  loff_t in = loff_t(offset), out = loff_t(out_offset);
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = ::copy_file_range(fd_, &in, out_fd, &out, size_t(length - done), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && done == 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
      return false;
    if (n <= 0) throw InputError(out_path, std::string("write failed: ") + (n < 0 ? std::strerror(errno) : "source ended"));
    done += uint64_t(n);
  }
  return true;
}

}  // namespace upcycle
