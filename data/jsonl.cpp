#include "data/jsonl.hpp"

#include <fstream>
#include <stdexcept>
#include <string>

#include "core/error.hpp"

namespace upcycle {

namespace {

constexpr size_t kMaxLineBytes = 64u << 20;

nlohmann::json parse_object(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
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
  for (int64_t line = 1; std::getline(in, text); ++line) {
    const std::string where = "line " + std::to_string(line);
    require(text.size() <= kMaxLineBytes, path, where, "longer than 64 MB");
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      parse(parse_object(text), line);
      ++good;
    } catch (const std::invalid_argument& e) {
      if (!skip_bad) throw InputError(path, where, std::string(e.what()) + " (--skip-bad passes over such lines)");
      ++skipped;
    }
  }
  require(!in.bad(), path, "read error");
  require(good > 0, path, skipped ? "every line is malformed" : "holds no samples");
  return skipped;
}

}  // namespace upcycle
