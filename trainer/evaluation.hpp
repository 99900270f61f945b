// `eval` as a function: a model on a data set, by loss and perplexity over the reply tokens,
// exact match of greedy replies, multiple-choice accuracy by log-likelihood, or (an MoE) which
// experts each task's reply tokens go to; the results as
// the JSON object `eval --json` prints.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/option_table.hpp"

namespace upcycle {

struct EvalOptions {
  std::filesystem::path model;  // checkpoint (folder, .h5 or .gguf)
  std::filesystem::path data;   // JSONL data set
  std::string metric = "loss";  // loss, exact, choice or routing
  std::optional<std::filesystem::path> out;          // also written here (complete or not at all)
  std::string chat_template = "auto";                // auto (the model's), or a chat_format_name
  std::optional<std::filesystem::path> tokenizer;    // default: the model's
  int64_t batch_tokens = 4096;                       // loss: tokens per forward pass
  std::optional<int64_t> seq_len;                    // loss, routing: longer samples are cut (model_seq_len)
  int64_t max_new_tokens = 128;                      // exact: longest reply
  std::optional<std::filesystem::path> predictions;  // exact: each prediction, as JSONL
  bool skip_bad = false;                             // skip malformed lines (counted in the log)
  std::string device = "cpu";
  std::string precision;  // f32 or bf16 (kPrecisionHelp); empty: the device's
  std::optional<std::filesystem::path> adapter;  // a PEFT LoRA adapter folder (kAdapterHelp)
};

const OptionTable<EvalOptions>& eval_option_table();
// OptionError for a missing model or data, an unknown metric or precision, sizes below 1.
void check_eval_options(const EvalOptions& o);

// loss: {metric, loss, ppl, tokens, samples}; exact: {metric, acc, correct, total, tasks};
// choice: {metric, acc, acc_norm, total, tasks} (tasks only when the data names them);
// routing (MoE): {metric, samples, tasks: {task: [L][E] shares of the reply positions' slots}}.
// InputError for bad data or checkpoints.
nlohmann::ordered_json evaluate(const EvalOptions& o);

}  // namespace upcycle
