// An exclusive lock that processes sharing a folder take before making something there, so that
// one of them makes it and the others wait (`sweep --cell` run many at once).
#pragma once
#include <filesystem>
#include <string>

namespace upcycle {

// flock(2) on a lock file of its own, held while the object lives. The file is created empty and
// left in place: removing it would let a waiter and a newcomer lock two different files of one
// name. The kernel releases the lock when the process ends, however it ends, so no lock outlives
// its holder. On NFS, Linux maps flock onto the server's byte-range locks, so processes on
// different machines exclude each other too.
class FileLock {
 public:
  // Blocks until the lock on `file` is this process's, logging "waiting for <what> (locked by
  // another process)" once when it has to wait. InputError naming the file when it cannot be
  // created or locked.
  FileLock(std::filesystem::path file, const std::string& what);
  ~FileLock();  // closing the descriptor releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// The lock file of an output (a file or folder): "NAME.lock" beside it.
std::filesystem::path lock_file_of(const std::filesystem::path& output);

}  // namespace upcycle
