#include "core/tokenized_data.hpp"

#include <fstream>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace upcycle {

namespace {

constexpr size_t kMaxLineBytes = 64u << 20;

std::vector<int32_t> int_array(const nlohmann::json& j, const char* key, bool allow_ignore) {
  if (!j.is_array()) throw std::invalid_argument(std::string("'") + key + "' must be an array of integers");
  std::vector<int32_t> out;
  out.reserve(j.size());
  for (const auto& v : j) {
    if (!v.is_number_integer())
      throw std::invalid_argument(std::string("'") + key + "' holds " + v.dump() + ", not an integer");
    const int64_t x = v.get<int64_t>();
    const bool ok = (x >= 0 && x <= std::numeric_limits<int32_t>::max()) || (allow_ignore && x == kIgnoreLabel);
    if (!ok) throw std::invalid_argument(std::string("'") + key + "' holds " + std::to_string(x) + ", out of range");
    out.push_back(int32_t(x));
  }
  return out;
}

// One line's sample; std::invalid_argument with the problem.
TokenizedSample parse_line(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::invalid_argument(std::string("bad JSON: ") + e.what());
  }
  if (!j.is_object()) throw std::invalid_argument("not a JSON object");
  if (!j.contains("input_ids")) throw std::invalid_argument("no 'input_ids' (pre-tokenized data needs them)");
  TokenizedSample s;
  s.ids = int_array(j["input_ids"], "input_ids", false);
  if (s.ids.empty()) throw std::invalid_argument("'input_ids' is empty");
  if (j.contains("labels")) {
    s.labels = int_array(j["labels"], "labels", true);
    if (s.labels.size() != s.ids.size())
      throw std::invalid_argument("'labels' has " + std::to_string(s.labels.size()) + " entries, 'input_ids' " +
                                  std::to_string(s.ids.size()));
  } else {
    s.labels = s.ids;
  }
  return s;
}

}  // namespace

TokenizedData read_tokenized_jsonl(const std::filesystem::path& path, bool skip_bad) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path, "cannot open the data file");
  TokenizedData data;
  data.path = path;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    const std::string where = "line " + std::to_string(line);
    require(text.size() <= kMaxLineBytes, path, where, "longer than 64 MB");
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      data.samples.push_back(parse_line(text));
      data.samples.back().line = line;
    } catch (const std::invalid_argument& e) {
      if (!skip_bad) throw InputError(path, where, std::string(e.what()) + " (--skip-bad passes over such lines)");
      ++data.skipped;
    }
  }
  require(!in.bad(), path, "read error");
  require(!data.samples.empty(), path, data.skipped ? "every line is malformed" : "holds no samples");
  return data;
}

void check_vocabulary(const TokenizedData& data, int64_t vocab) {
  for (const auto& s : data.samples)
    for (size_t i = 0; i < s.ids.size(); ++i)
      require(s.ids[i] < vocab && s.labels[i] < vocab, data.path, "line " + std::to_string(s.line),
              "token " + std::to_string(std::max(s.ids[i], s.labels[i])) + " is outside the model's vocabulary of " +
                  std::to_string(vocab));
}

}  // namespace upcycle
