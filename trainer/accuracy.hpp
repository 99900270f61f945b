// Accuracy on instruction and multiple-choice data: exact match of greedy replies against the
// references, and multiple choice by log-likelihood (acc and acc_norm as lm-evaluation-harness
// defines them), overall and per task.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/choice_data.hpp"
#include "data/instruction_data.hpp"
#include "text/chat_encoder.hpp"
#include "trainer/engine.hpp"

namespace upcycle {

struct Tally {
  int64_t correct = 0, total = 0;
  double rate() const { return total ? double(correct) / double(total) : 0.0; }
};

struct Accuracy {
  Tally all;
  std::map<std::string, Tally> tasks;  // by the samples' `task`; "" when they have none
  void add(const std::string& task, bool correct);
};

struct ExactPrediction {
  const InstructionRecord* record;
  std::string prediction, reference;
  bool correct;
};

// Each record's conversation up to its last assistant reply is the prompt; the model's greedy
// reply (up to max_new_tokens, ended by the template's stop tokens) is correct when it equals that
// reply, both with white space trimmed at the ends. `each` (may be empty) sees every prediction.
// InputError naming the line for a pre-tokenized record, one not ending with an assistant reply,
// or a prompt with no room under max_position_embeddings.
Accuracy exact_match(Engine& model, const ChatEncoder& encoder, const std::vector<InstructionRecord>& records,
                     int64_t max_new_tokens, const std::filesystem::path& source,
                     const std::function<void(const ExactPrediction&)>& each = {});

struct ChoiceAccuracy {
  Accuracy acc, acc_norm;
};

// The question is the context and " " + choice each continuation (lm-evaluation-harness's
// default delimiter), tokenized as the whole minus the context's tokens. acc takes the choice of
// highest log-likelihood, acc_norm of highest log-likelihood per character of the choice; ties
// go to the first. `done` (may be empty) is told the items done so far.
ChoiceAccuracy multiple_choice(Engine& model, const Tokenizer& tokenizer, bool add_bos,
                               const std::vector<ChoiceItem>& items, const std::function<void(int64_t)>& done = {});

}  // namespace upcycle
