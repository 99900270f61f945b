// Positioned writes to one file, done in order on a thread of their own, so that making the next
// bytes (merging, converting: the producer's threads) and writing the last ones overlap. With
// `direct`, they go past the page cache (core/output_file.hpp), which saves the kernel's copy.
//
// Memory stays bounded: at most `depth` writes are queued, each in a buffer of its own that is
// reused. Copies hold no buffer and wait without bound; the writing thread takes writes first
// and copies a piece at a time between them, so it copies while the producer makes the next
// bytes, and the producer never waits behind a copy. The first failure is kept and thrown
// (InputError naming the file) by the producer's next call or by drain(); after it nothing more
// is written. One producer thread calls it, and its writes do not overlap.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "core/mapped_file.hpp"
#include "core/output_file.hpp"

namespace upcycle {

class BackgroundWriter {
 public:
  // fd: the file, created and empty, open for writing (the caller closes it after this object).
  BackgroundWriter(int fd, std::filesystem::path path, bool direct, size_t depth = 4);
  ~BackgroundWriter();  // waits for what is queued; a failure then is dropped (the output is abandoned)
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  // bytes (copied: the caller may reuse them at once) at byte `at` of the file.
  void write(std::span<const std::byte> bytes, uint64_t at);
  // [offset, offset + length) of `from` at byte `at`: file to file in the kernel (copy_file_range)
  // through the page cache, else read and written. `from` stays open until done.
  void copy(std::shared_ptr<const ReadOnlyFile> from, uint64_t offset, uint64_t length, uint64_t at);
  // Returns when everything queued is written, and the file has its final size; throws the first
  // failure.
  void drain();

 private:
  struct Job {
    AlignedBytes buffer;  // a write's bytes, from buffer.data() + at % OutputFile::kPage
    std::shared_ptr<const ReadOnlyFile> from;  // a copy's source
    uint64_t offset = 0, length = 0, at = 0;
  };
  // Waits for room among the queued writes (throwing a failure); then a spare buffer.
  AlignedBytes wait_for_room();
  void submit(Job&& job);
  // The next piece of work, taken off the queues: a write, else the first piece of the first copy.
  // Under the lock.
  Job take();
  void run();
  void perform(const Job& job);

  OutputFile file_;
  std::filesystem::path path_;
  int fd_;
  size_t depth_;
  AlignedBytes scratch_;  // the writing thread's
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> writes_, copies_;
  std::vector<AlignedBytes> spare_;  // buffers of finished writes
  bool busy_ = false;                // a job taken but not finished
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::thread thread_;
};

}  // namespace upcycle
