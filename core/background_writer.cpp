#include "core/background_writer.hpp"

#include <algorithm>
#include <cstring>

namespace upcycle {

namespace {
constexpr uint64_t kPage = OutputFile::kPage;
constexpr uint64_t kCopyPiece = uint64_t(16) << 20;  // a copy read and written this much at a time
}  // namespace

BackgroundWriter::BackgroundWriter(int fd, std::filesystem::path path, bool direct, size_t depth)
    : file_(path, fd, direct), path_(std::move(path)), fd_(fd), depth_(std::max<size_t>(1, depth)),
      thread_([this] { run(); }) {}

BackgroundWriter::~BackgroundWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

AlignedBytes BackgroundWriter::wait_for_room() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return failure_ || writes_.size() + (busy_ ? 1 : 0) < depth_; });
  if (failure_) std::rethrow_exception(failure_);
  if (spare_.empty()) return {};
  AlignedBytes buffer = std::move(spare_.back());
  spare_.pop_back();
  return buffer;
}

void BackgroundWriter::submit(Job&& job) {
  {
    std::lock_guard lock(mutex_);
    (job.from ? copies_ : writes_).push_back(std::move(job));
  }
  changed_.notify_all();
}

void BackgroundWriter::write(std::span<const std::byte> bytes, uint64_t at) {
  if (bytes.empty()) return;
  Job job;
  job.buffer = wait_for_room();
  job.buffer.reserve(size_t(at % kPage) + bytes.size());
  std::memcpy(job.buffer.data() + at % kPage, bytes.data(), bytes.size());  // outside the lock
  job.length = bytes.size();
  job.at = at;
  submit(std::move(job));
}

void BackgroundWriter::copy(std::shared_ptr<const ReadOnlyFile> from, uint64_t offset, uint64_t length, uint64_t at) {
  if (length == 0) return;
  {
    std::lock_guard lock(mutex_);
    if (failure_) std::rethrow_exception(failure_);
  }
  Job job;
  job.from = std::move(from);
  job.offset = offset;
  job.length = length;
  job.at = at;
  submit(std::move(job));
}

void BackgroundWriter::drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return failure_ || (writes_.empty() && copies_.empty() && !busy_); });
  if (failure_) std::rethrow_exception(failure_);
  file_.flush();  // the writing thread is idle
}

BackgroundWriter::Job BackgroundWriter::take() {
  if (!writes_.empty()) {
    Job job = std::move(writes_.front());
    writes_.pop_front();
    return job;
  }
  Job& first = copies_.front();
  // Through the page cache the kernel copies file to file, whole; else a piece at a time.
  if (!file_.direct() || first.length <= kCopyPiece) {
    Job job = std::move(first);
    copies_.pop_front();
    return job;
  }
  Job piece{{}, first.from, first.offset, kCopyPiece, first.at};
  first.offset += kCopyPiece, first.at += kCopyPiece, first.length -= kCopyPiece;
  return piece;
}

void BackgroundWriter::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !writes_.empty() || !copies_.empty(); });
    if (writes_.empty() && copies_.empty()) return;  // stopping, and all written
    Job job = take();
    if (!failure_) {
      busy_ = true;
      lock.unlock();
      std::exception_ptr failed;
      try {
        perform(job);
      } catch (...) {
        failed = std::current_exception();
      }
      lock.lock();
      busy_ = false;
      if (failed) failure_ = failed;
    }
    if (job.buffer.capacity() > 0) spare_.push_back(std::move(job.buffer));
    changed_.notify_all();
  }
}

void BackgroundWriter::perform(const Job& job) {
  if (!job.from) return file_.write(job.buffer.data() + job.at % kPage, job.length, job.at);
  if (!file_.direct() && job.from->copy_to(fd_, path_, job.offset, job.length, job.at)) return;
  // Past the page cache (or where the kernel cannot copy), the bytes pass through here.
  scratch_.reserve(size_t(kCopyPiece + kPage));
  for (uint64_t done = 0; done < job.length;) {
    const uint64_t n = std::min(kCopyPiece, job.length - done), at = job.at + done;
    std::byte* const bytes = scratch_.data() + at % kPage;
    job.from->read(job.offset + done, {bytes, size_t(n)});
    file_.write(bytes, n, at);
    done += n;
  }
}

}  // namespace upcycle
