// Instruction data: JSONL in three forms, told apart line by line by their keys:
//   Alpaca         {"instruction": ..., "input": ... (optional), "output": ...}
//   chat           {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
//   pre-tokenized  {"input_ids": [...], "labels": [...] (optional, -100 = not counted)}
// Any form may carry a string "task" (for per-task evaluation).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "core/config.hpp"

#include <nlohmann/json.hpp>

#include "text/chat_encoder.hpp"
#include "text/chat_template.hpp"
#include "text/tokenized_data.hpp"

namespace upcycle {

struct InstructionRecord {
  std::vector<Message> messages;  // Alpaca and chat forms (Alpaca: a user turn, then the output)
  TokenizedSample tokens;         // the pre-tokenized form; ids empty for text
  std::string task;
  int64_t line = 0;
  bool is_text() const { return !messages.empty(); }
};

// One line's record; std::invalid_argument saying what is wrong (no known form, a key of the
// wrong type, an empty `input_ids`, `labels` of another length, an id out of range, ...).
InstructionRecord parse_instruction_record(const nlohmann::json& object);

struct InstructionRecords {
  std::vector<InstructionRecord> records;
  int64_t skipped = 0;
};
// Every record of the file; a malformed line is an InputError naming the file and line unless
// skip_bad (then counted).
InstructionRecords read_instruction_records(const std::filesystem::path& path, bool skip_bad);

// The file as token ids and labels, text records through the encoder, which `encoder` gives on
// the first text record (so pre-tokenized data needs no tokenizer; it may throw InputError). A
// conversation the template rejects is a malformed line.
using EncoderSource = std::function<const ChatEncoder&()>;
TokenizedData read_instruction_data(const std::filesystem::path& path, const EncoderSource& encoder, bool skip_bad);

// The same, for a model of this config: every sample within its context (longer ones refused
// naming the line, or with skip_bad skipped) and its vocabulary; what was skipped is logged.
TokenizedData read_instruction_data(const std::filesystem::path& path, const EncoderSource& encoder, bool skip_bad,
                                    const ModelConfig& model);

}  // namespace upcycle
