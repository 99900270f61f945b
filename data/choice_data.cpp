#include "data/choice_data.hpp"

#include <algorithm>
#include <stdexcept>

#include "data/jsonl.hpp"

namespace upcycle {

namespace {

ChoiceItem parse_item(const nlohmann::json& j) {
  ChoiceItem item;
  const auto q = j.find("question");
  if (q == j.end() || !q->is_string()) throw std::invalid_argument("'question' must be a string");
  item.question = q->get<std::string>();
  const auto c = j.find("choices");
  if (c == j.end() || !c->is_array() || c->size() < 2) throw std::invalid_argument("'choices' must be an array of 2 or more strings");
  for (const auto& choice : *c) {
    if (!choice.is_string()) throw std::invalid_argument("'choices' holds " + choice.dump() + ", not a string");
    item.choices.push_back(choice.get<std::string>());
  }
  const auto a = j.find("answer");
  if (a == j.end()) throw std::invalid_argument("no 'answer'");
  if (a->is_number_integer()) {
    item.answer = a->get<int64_t>();
  } else if (a->is_string()) {
    const auto it = std::find(item.choices.begin(), item.choices.end(), a->get<std::string>());
    if (it == item.choices.end()) throw std::invalid_argument("'answer' " + a->dump() + " is none of the choices");
    item.answer = it - item.choices.begin();
  } else {
    throw std::invalid_argument("'answer' must be a choice's index or its text");
  }
  if (item.answer < 0 || item.answer >= int64_t(item.choices.size()))
    throw std::invalid_argument("'answer' " + std::to_string(item.answer) + " is not an index of 'choices'");
  if (const auto t = j.find("task"); t != j.end() && t->is_string()) item.task = t->get<std::string>();
  return item;
}

}  // namespace

ChoiceData read_choice_jsonl(const std::filesystem::path& path, bool skip_bad) {
  ChoiceData data;
  data.skipped = read_jsonl(path, skip_bad, [&](const nlohmann::json& j, int64_t line) {
    data.items.push_back(parse_item(j));
    data.items.back().line = line;
  });
  return data;
}

}  // namespace upcycle
