// The lock that processes sharing a folder take before making a stage (core/file_lock.hpp).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <optional>
#include <thread>

#include "core/error.hpp"
#include "core/file_lock.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {

// Whether another open file description of `file` could take the lock now (flock's locks belong
// to open file descriptions, so this stands in for another process).
bool free_to_lock(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  const int error = errno;
  ::close(fd);
  if (!free) CHECK(error == EWOULDBLOCK);
  return free;
}

}  // namespace

TEST_CASE("file lock: held while it lives, a try fails meanwhile, and a second holder waits for it") {
  test::ScratchDir dir;
  const fs::path file = lock_file_of(dir / "stage");
  CHECK(file == dir / "stage.lock");
  std::optional<FileLock> first;
  first.emplace(file, "stage");
  CHECK(fs::exists(file));
  CHECK_FALSE(free_to_lock(file));

  std::atomic<bool> second_held = false;
  std::thread second([&] {
    const FileLock lock(file, "stage");
    second_held = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK_FALSE(second_held);  // blocked behind the first
  first.reset();
  second.join();
  CHECK(second_held);
  CHECK(free_to_lock(file));  // the second released it when it went
  CHECK(fs::exists(file));    // the file stays: a waiter may hold it open
}

TEST_CASE("file lock: a folder's lock sits beside it, and a lock that cannot be made names its file") {
  test::ScratchDir dir;
  CHECK(lock_file_of(dir / "run/") == dir / "run.lock");
  CHECK(lock_file_of(dir / "n40-r0" / "train.jsonl") == dir / "n40-r0" / "train.jsonl.lock");
  const fs::path missing = dir / "missing" / "stage.lock";
  try {
    FileLock lock(missing, "stage");
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(e.file() == missing.string());
    CHECK(std::string(e.what()).find("cannot create the lock file") != std::string::npos);
  }
}
