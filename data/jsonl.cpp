#include "data/jsonl.hpp"

#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace upcycle {

namespace {

// One sample's line at most: 16 MiB of text is millions of tokens, past any model's context,
// and memory stays within about 20 times this while a line is parsed and tokenized.
constexpr size_t kMaxLineBytes = size_t(16) << 20;

// The lines of a stream, read in blocks: a line longer than `limit` is read past without being
// held, so a file of one enormous line costs a block of memory, not the line.
class LineReader {
 public:
  LineReader(std::istream& in, size_t limit) : in_(in), limit_(limit), block_(size_t(1) << 20) {}

  // The next line (without its '\n') in text and its full length in bytes, text left empty
  // when that length is over the limit; false at the end of the stream.
  bool next(std::string& text, size_t& length) {
    text.clear();
    length = 0;
    for (bool any = false;; any = true) {
      if (at_ == end_ && !fill()) return any;
      const char* start = block_.data() + at_;
      const auto* newline = static_cast<const char*>(std::memchr(start, '\n', end_ - at_));
      const size_t n = newline ? size_t(newline - start) : end_ - at_;
      length += n;
      if (length <= limit_) text.append(start, n);
      else text.clear();
      at_ += n + (newline ? 1 : 0);
      if (newline) return true;
    }
  }
  bool failed() const { return in_.bad(); }

 private:
  bool fill() {
    in_.read(block_.data(), std::streamsize(block_.size()));
    at_ = 0;
    end_ = size_t(in_.gcount());
    return end_ > 0;
  }
  std::istream& in_;
  size_t limit_;
  std::vector<char> block_;
  size_t at_ = 0, end_ = 0;
};

nlohmann::json parse_object(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 8e01457
    throw std::invalid_argument(std::string("bad JSON: ") + e.what());
  }
  if (!j.is_object()) throw std::invalid_argument("not a JSON object");
  return j;
}

}  // namespace

int64_t read_jsonl(const std::filesystem::path& path, bool skip_bad,
                   const std::function<void(const nlohmann::json&, int64_t)>& parse) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path, "cannot open the data file");
  int64_t good = 0, skipped = 0;
  std::string text;
  LineReader lines(in, kMaxLineBytes);
  size_t length = 0;
  for (int64_t line = 1; lines.next(text, length); ++line) {
    const std::string where = "line " + std::to_string(line);
    require(length <= kMaxLineBytes, path, where,
            std::to_string(length) + " bytes, over the limit of 16 MiB for one sample");
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      parse(parse_object(text), line);
      ++good;
    } catch (const std::invalid_argument& e) {
      if (!skip_bad) throw InputError(path, where, std::string(e.what()) + " (--skip-bad passes over such lines)");
      ++skipped;
    }
  }
  require(!lines.failed(), path, "read error");
  require(good > 0, path, skipped ? "every line is malformed" : "holds no samples");
  return skipped;
}

}  // namespace upcycle
