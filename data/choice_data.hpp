// Multiple-choice evaluation data: JSONL with `question`, `choices` (two or more strings) and
// `answer` (the index of the right choice, or its text), and an optional `task`.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

struct ChoiceItem {
  std::string question;
  std::vector<std::string> choices;
  int64_t answer = 0;  // index into choices
  std::string task;
  int64_t line = 0;
};

struct ChoiceData {
  std::vector<ChoiceItem> items;
  int64_t skipped = 0;
};

// A malformed line is an InputError naming the file and line unless skip_bad (then counted).
ChoiceData read_choice_jsonl(const std::filesystem::path& path, bool skip_bad);

}  // namespace upcycle
