#include "core/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/error.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// flock that retries when a signal interrupts it; false when it failed (errno says why).
bool lock(int fd, int operation) {
  while (::flock(fd, operation) != 0)
    if (errno != EINTR) return false;
  return true;
}

}  // namespace

FileLock::FileLock(fs::path file, const std::string& what) {
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw InputError(file, std::string("cannot create the lock file: ") + std::strerror(errno));
  // A try first, so that the wait is logged once, before it begins.
  bool held = lock(fd_, LOCK_EX | LOCK_NB);
  if (!held && errno == EWOULDBLOCK) {
    spdlog::info("waiting for {} (locked by another process: {})", what, file.string());
    held = lock(fd_, LOCK_EX);
  }
  if (!held) {
    const int error = errno;
    ::close(fd_);
    throw InputError(file, std::string("cannot lock: ") + std::strerror(error));
  }
}

FileLock::~FileLock() { ::close(fd_); }

fs::path lock_file_of(const fs::path& output) {
  fs::path p = output.filename().empty() ? output.parent_path() : output;  // "dir/" locks "dir"
  return p.string() + ".lock";
}

}  // namespace upcycle
