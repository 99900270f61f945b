#include "data/instruction_data.hpp"

#include <limits>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "data/jsonl.hpp"

namespace upcycle {

using nlohmann::json;

namespace {

std::string quoted(const char* key) { return std::string("'") + key + "'"; }

std::string string_member(const json& j, const char* key, bool required) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw std::invalid_argument("no " + quoted(key));
    return {};
  }
  if (!it->is_string()) throw std::invalid_argument(quoted(key) + " must be a string, not " + it->dump());
  return it->get<std::string>();
}

std::vector<int32_t> int_array(const json& j, const char* key, bool allow_ignore) {
  if (!j.is_array()) throw std::invalid_argument(quoted(key) + " must be an array of integers");
  std::vector<int32_t> out;
  out.reserve(j.size());
  for (const auto& v : j) {
    if (!v.is_number_integer()) throw std::invalid_argument(quoted(key) + " holds " + v.dump() + ", not an integer");
    const int64_t x = v.get<int64_t>();
    const bool ok = (x >= 0 && x <= std::numeric_limits<int32_t>::max()) || (allow_ignore && x == kIgnoreLabel);
    if (!ok) throw std::invalid_argument(quoted(key) + " holds " + std::to_string(x) + ", out of range");
    out.push_back(int32_t(x));
  }
  return out;
}

TokenizedSample tokenized(const json& j) {
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

std::vector<Message> alpaca(const json& j) {
  Message user{"user", string_member(j, "instruction", true), string_member(j, "input", false)};
  return {std::move(user), Message{"assistant", string_member(j, "output", true), {}}};
}

std::vector<Message> chat(const json& j) {
  const json& list = j["messages"];
  if (!list.is_array() || list.empty()) throw std::invalid_argument("'messages' must be a non-empty array");
  std::vector<Message> out;
  for (const json& m : list) {
    if (!m.is_object()) throw std::invalid_argument("'messages' holds " + m.dump() + ", not an object");
    out.push_back({string_member(m, "role", true), string_member(m, "content", true), {}});
  }
  return out;
}

}  // namespace

InstructionRecord parse_instruction_record(const json& j) {
  InstructionRecord r;
  r.task = string_member(j, "task", false);
  if (j.contains("input_ids")) r.tokens = tokenized(j);
  else if (j.contains("messages")) r.messages = chat(j);
  else if (j.contains("instruction")) r.messages = alpaca(j);
  else throw std::invalid_argument("neither 'input_ids', 'messages' nor 'instruction' (pre-tokenized, chat or Alpaca)");
  r.tokens.task = r.task;
  return r;
}

InstructionRecords read_instruction_records(const std::filesystem::path& path, bool skip_bad) {
  InstructionRecords out;
  out.skipped = read_jsonl(path, skip_bad, [&](const json& j, int64_t line) {
    out.records.push_back(parse_instruction_record(j));
    out.records.back().line = line;
    out.records.back().tokens.line = line;
  });
  return out;
}

TokenizedData read_instruction_data(const std::filesystem::path& path, const EncoderSource& encoder, bool skip_bad) {
  TokenizedData data;
  data.path = path;
  data.skipped = read_jsonl(path, skip_bad, [&](const json& j, int64_t line) {
    InstructionRecord r = parse_instruction_record(j);
    if (r.is_text()) r.tokens = encoder().encode(r.messages);
    r.tokens.task = r.task;
    r.tokens.line = line;
    data.samples.push_back(std::move(r.tokens));
  });
  return data;
}

TokenizedData read_instruction_data(const std::filesystem::path& path, const EncoderSource& encoder, bool skip_bad,
                                    const ModelConfig& model) {
  TokenizedData data = read_instruction_data(path, encoder, skip_bad);
  fit_context(data, model.max_position_embeddings, skip_bad);
  check_vocabulary(data, model.vocab_size);
  if (data.skipped) spdlog::warn("{}: skipped {} malformed or over-long lines", path.string(), data.skipped);
  return data;
}

}  // namespace upcycle
