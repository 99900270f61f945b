// Writing outputs: OutputFile (past the page cache, partial pages assembled) and BackgroundWriter
// (positioned writes and file-to-file copies on a thread of their own).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "core/background_writer.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using upcycle::test::read_file;
using upcycle::test::ScratchDir;
using upcycle::test::write_file;

namespace {

int open_for_writing(const std::filesystem::path& path, int flags = O_WRONLY | O_CREAT | O_TRUNC) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  return fd;
}

// Seeded text of n bytes.
std::string text(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, ' ');
  for (char& c : s) c = char('a' + rng.below(26));
  return s;
}

// [first, end) cuts of [0, n): pieces of 1 to 3 pages, some of a few bytes, in a seeded order.
std::vector<std::pair<size_t, size_t>> shuffled_pieces(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::pair<size_t, size_t>> pieces;
  for (size_t at = 0; at < n;) {
    const size_t len = std::min(n - at, size_t(rng.below(2) ? 1 + rng.below(30) : 1 + rng.below(3 * OutputFile::kPage)));
    pieces.emplace_back(at, at + len);
    at += len;
  }
  for (size_t i = pieces.size(); i > 1; --i) std::swap(pieces[i - 1], pieces[rng.below(i)]);
  return pieces;
}

}  // namespace

TEST_CASE("output file: pieces at any offsets, in any order, make the file, partial pages flushed, then completed") {
  for (bool direct : {false, true}) {
    CAPTURE(direct);
    ScratchDir dir;
    const std::string want = text(5 * OutputFile::kPage + 123, 7);  // ends inside a page
    const int fd = open_for_writing(dir / "out");
    {
      OutputFile out(dir / "out", fd, direct);
      CHECK(out.direct() == direct);  // the scratch folder's file system takes O_DIRECT
      AlignedBytes buffer;
      const auto pieces = shuffled_pieces(want.size(), 3);
      // Everything but the last piece, a flush (partial pages written padded), then the last.
      for (size_t i = 0; i < pieces.size(); ++i) {
        const auto [first, end] = pieces[i];
        buffer.reserve(first % OutputFile::kPage + (end - first));
        std::byte* at = buffer.data() + first % OutputFile::kPage;
        std::memcpy(at, want.data() + first, end - first);
        out.write(at, end - first, first);
        if (i + 2 == pieces.size()) out.flush();
      }
      out.flush();
    }
    ::close(fd);
    CHECK(read_file(dir / "out") == want);  // bytes and size: the padding cut off
  }
}

TEST_CASE("background writer: writes and copies land at their offsets, whatever the order they come in") {
  for (bool direct : {false, true}) {
    CAPTURE(direct);
    ScratchDir dir;
    const std::string source = text((16 << 20) + 3 * OutputFile::kPage + 1000, 5);  // copied in two pieces
    write_file(dir / "source", source);
    const auto from = ReadOnlyFile::open(dir / "source");
    // The file: the source's bytes [17, end) copied after 30 bytes (unaligned on both sides), and
    // 10 pieces of 3 bytes, back to front from one reused buffer of the caller's, before them.
    std::string want;
    const int fd = open_for_writing(dir / "out");
    {
      BackgroundWriter out(fd, dir / "out", direct, 2);  // a queue of 2: the producer waits for room
      out.copy(from, 17, source.size() - 17, 30);
      out.copy(from, 0, 0, 0);  // nothing
      std::string piece;
      for (int i = 9; i >= 0; --i) {
        piece.assign(3, char('A' + i));
        out.write(std::as_bytes(std::span(piece)), uint64_t(i) * 3);
      }
      for (int i = 0; i < 10; ++i) want += std::string(3, char('A' + i));
      want += source.substr(17);
      out.drain();
    }
    ::close(fd);
    CHECK(read_file(dir / "out") == want);
  }
}

TEST_CASE("background writer: a failed write surfaces from the next call and from drain, naming the file") {
  ScratchDir dir;
  write_file(dir / "out", "");
  const int fd = open_for_writing(dir / "out", O_RDONLY);  // every write fails (EBADF)
  BackgroundWriter out(fd, dir / "out", false, 1);
  const std::string bytes = "xyz";
  out.write(std::as_bytes(std::span(bytes)), 0);
  try {
    out.drain();
    FAIL("drain did not throw");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find((dir / "out").string()) != std::string::npos);
    CHECK(std::string(e.what()).find("cannot write") != std::string::npos);
  }
  CHECK_THROWS_AS(out.write(std::as_bytes(std::span(bytes)), 3), InputError);  // and nothing more is queued
  CHECK_THROWS_AS(out.drain(), InputError);
  ::close(fd);
}
