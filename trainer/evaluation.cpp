#include "trainer/evaluation.hpp"

#include <map>
#include <span>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "formats/open_checkpoint.hpp"
#include "text/chat_template.hpp"
#include "text/model_text.hpp"
#include "trainer/accuracy.hpp"
#include "trainer/batches.hpp"
#include "trainer/engine.hpp"
#include "trainer/eval_loss.hpp"

namespace upcycle {

namespace {

using ojson = nlohmann::ordered_json;
using O = EvalOptions;

struct EvalContext {
  const EvalOptions& o;
  std::filesystem::path data, text_source;
  bool skip_bad;
  std::unique_ptr<Checkpoint> ckpt;
  EngineFactory device;
  std::unique_ptr<ChatEncoder> encoder;  // loaded when text needs it

  std::unique_ptr<Engine> engine() const {
    return load_engine(*ckpt, device, {}, o.precision.empty() ? std::nullopt : std::optional(parse_precision(o.precision)),
                       o.adapter.value_or(std::filesystem::path()));
  }

  const ChatEncoder& chat() {
    if (!encoder) encoder = load_chat_encoder(text_source, o.chat_template, o.adapter);
    return *encoder;
  }
  void warn_skipped(int64_t skipped) const {
    if (skipped) spdlog::warn("{}: skipped {} malformed lines", data.string(), skipped);
  }
  int64_t seq_len() const { return model_seq_len(o.seq_len, ckpt->config()); }
  // The data as tokens, each sample within the model's context and vocabulary.
  TokenizedData tokenized() {
    return read_instruction_data(data, [&]() -> const ChatEncoder& { return chat(); }, skip_bad, ckpt->config());
  }
};

ojson tally_json(const Tally& t) { return {{"acc", t.rate()}, {"correct", t.correct}, {"total", t.total}}; }

ojson per_task(const Accuracy& a) {
  ojson tasks = ojson::object();
  for (const auto& [task, t] : a.tasks)
    if (!task.empty()) tasks[task] = tally_json(t);
  return tasks;
}

ojson eval_loss(EvalContext& c) {
  const int64_t seq_len = c.seq_len();
  const TokenizedData data = c.tokenized();
  Progress progress("eval", data.samples.size(), "samples");
  int64_t shown = 0;
  const auto engine = c.engine();
  const EvalLoss e = evaluate_loss(*engine, data, seq_len, c.o.batch_tokens,
                                   [&](int64_t done) { progress.advance(uint64_t(done - shown)); shown = done; });
  progress.finish();
  require(e.tokens > 0, c.data, "no sample has a token that counts (labels all -100)");
  return {{"metric", "loss"}, {"loss", e.loss()}, {"ppl", e.ppl()}, {"tokens", e.tokens}, {"samples", e.samples}};
}

ojson eval_exact(EvalContext& c) {
  const InstructionRecords data = read_instruction_records(c.data, c.skip_bad);
  c.warn_skipped(data.skipped);
  std::string predictions;  // JSONL, written whole at the end
  Progress progress("exact match", data.records.size(), "samples");
  const Accuracy a = exact_match(*c.engine(), c.chat(), data.records, c.o.max_new_tokens, c.data,
                                 [&](const ExactPrediction& p) {
                                   progress.advance(1);
                                   predictions += ojson{{"line", p.record->line}, {"task", p.record->task},
                                                        {"prediction", p.prediction}, {"reference", p.reference},
                                                        {"correct", p.correct}}
                                                      .dump(-1, ' ', false, ojson::error_handler_t::replace) +
                                                  "\n";
                                 });
  progress.finish();
  if (c.o.predictions) {
    StagedPath out(*c.o.predictions, /*overwrite=*/true);
    write_text_file(out.temp(), predictions);
    out.commit();
  }
  ojson j = {{"metric", "exact"}, {"acc", a.all.rate()}, {"correct", a.all.correct}, {"total", a.all.total}};
  if (!per_task(a).empty()) j["tasks"] = per_task(a);
  return j;
}

ojson eval_choice(EvalContext& c) {
  const ChoiceData data = read_choice_jsonl(c.data, c.skip_bad);
  c.warn_skipped(data.skipped);
  const auto tokenizer = load_tokenizer(c.text_source);
  Progress progress("multiple choice", data.items.size(), "questions");
  int64_t shown = 0;
  const ChoiceAccuracy a = multiple_choice(*c.engine(), *tokenizer, read_model_text_info(c.text_source).add_bos, data.items,
                                           [&](int64_t done) { progress.advance(uint64_t(done - shown)); shown = done; });
  progress.finish();
  ojson j = {{"metric", "choice"}, {"acc", a.acc.all.rate()}, {"acc_norm", a.acc_norm.all.rate()}, {"total", a.acc.all.total}};
  ojson tasks = ojson::object();
  for (const auto& [task, t] : a.acc.tasks)
    if (!task.empty()) tasks[task] = {{"acc", t.rate()}, {"acc_norm", a.acc_norm.tasks.at(task).rate()}, {"total", t.total}};
  if (!tasks.empty()) j["tasks"] = tasks;
  return j;
}

// Per task, which experts the reply positions go to: {task: [L][E] shares of the routed slots}.
ojson eval_routing(EvalContext& c) {
  const ModelConfig& config = c.ckpt->config();
  const bool lora_moe = c.o.adapter && read_lora_config(*c.o.adapter).is_moe();  // a MixLoRA folder's
  require(config.is_moe() || lora_moe, c.o.model,
          "routing is measured on an MoE (or with a MixLoRA --adapter); this is a dense " + config.model_type + " model");
  const int64_t seq_len = c.seq_len();
  const TokenizedData data = c.tokenized();
  std::map<std::string, std::vector<size_t>> by_task;
  for (size_t i = 0; i < data.samples.size(); ++i) by_task[data.samples[i].task].push_back(i);
  const auto engine = c.engine();
  Progress progress("routing", data.samples.size(), "samples");
  ojson tasks = ojson::object();
  for (const auto& [task, indices] : by_task) {
    std::vector<std::vector<int64_t>> counts;  // [L][E]
    for_each_micro_batch(data, indices, seq_len, c.o.batch_tokens, [&](const MicroBatch& mb) {
      const LossReport r = engine->loss(mb.batch, mb.targets);
      if (counts.empty()) counts = r.counted_expert_tokens;
      else
        for (size_t l = 0; l < counts.size(); ++l)
          for (size_t e = 0; e < counts[l].size(); ++e) counts[l][e] += r.counted_expert_tokens[l][e];
      progress.advance(mb.samples.size());
    });
    ojson layers = ojson::array();
    for (const auto& row : counts) {
      int64_t total = 0;
      for (int64_t x : row) total += x;
      ojson shares = ojson::array();
      for (int64_t x : row) shares.push_back(total ? double(x) / double(total) : 0.0);
      layers.push_back(std::move(shares));
    }
    tasks[task.empty() ? "(no task)" : task] = std::move(layers);
  }
  progress.finish();
  return {{"metric", "routing"}, {"samples", data.samples.size()}, {"tasks", std::move(tasks)}};
}

OptionTable<O> make_table() {
  return {
      option<O>("model", "checkpoint (folder, .h5 or .gguf)", [](O& o) -> auto& { return o.model; }),
      option<O>("data", "JSONL data set", [](O& o) -> auto& { return o.data; }),
      option<O>("metric", "loss, exact, choice, or routing (MoE: each task's reply tokens' share per expert and layer)",
                [](O& o) -> auto& { return o.metric; }),
      option<O>("out", "also write the JSON object to this file", [](O& o) -> auto& { return o.out; }),
      option<O>("template", "auto (the model's), " + chat_format_choices(), [](O& o) -> auto& { return o.chat_template; }),
      option<O>("tokenizer", "tokenizer (default: the model's)", [](O& o) -> auto& { return o.tokenizer; }),
      option<O>("batch_tokens", "tokens per forward pass (loss, routing)", [](O& o) -> auto& { return o.batch_tokens; }),
      option<O>("seq_len", std::string(kSeqLenHelp) + " (loss, routing)", [](O& o) -> auto& { return o.seq_len; }),
      option<O>("max_new_tokens", "longest reply (exact)", [](O& o) -> auto& { return o.max_new_tokens; }),
      option<O>("predictions", "write each prediction to this JSONL (exact)", [](O& o) -> auto& { return o.predictions; }),
      option<O>("skip_bad", "skip malformed data lines (counted in the log) instead of failing",
                [](O& o) -> auto& { return o.skip_bad; }),
      option<O>("device", kDeviceHelp, [](O& o) -> auto& { return o.device; }),
      option<O>("precision", kPrecisionHelp, [](O& o) -> auto& { return o.precision; }),
      option<O>("adapter", kAdapterHelp, [](O& o) -> auto& { return o.adapter; }),
  };
}

}  // namespace

const OptionTable<EvalOptions>& eval_option_table() {
  static const OptionTable<EvalOptions> table = make_table();
  return table;
}

void check_eval_options(const EvalOptions& o) {
  require_option(!o.model.empty(), "model");
  require_option(!o.data.empty(), "data");
  if (o.metric != "loss" && o.metric != "exact" && o.metric != "choice" && o.metric != "routing")
    throw OptionError("metric", option_name("metric") + ": '" + o.metric + "' is not loss, exact, choice or routing");
  for (const auto& [key, value] : {std::pair{"batch_tokens", o.batch_tokens}, {"max_new_tokens", o.max_new_tokens}})
    require_positive(double(value), key);
  if (o.seq_len && *o.seq_len < 2) throw OptionError("seq_len", option_name("seq_len") + " must be at least 2");
  if (!o.precision.empty() && o.precision != "f32" && o.precision != "bf16")
    throw OptionError("precision", option_name("precision") + ": '" + o.precision + "' is not f32 or bf16");
}

ojson evaluate(const EvalOptions& o) {
  EvalContext c{o, o.data, o.tokenizer.value_or(o.model), o.skip_bad, open_checkpoint(o.model), engine_for_device(o.device), nullptr};
  const ojson j = o.metric == "loss"    ? eval_loss(c)
                  : o.metric == "exact"   ? eval_exact(c)
                  : o.metric == "routing" ? eval_routing(c)
                                          : eval_choice(c);
  if (o.out) {
    StagedPath out(*o.out, /*overwrite=*/true);
    write_text_file(out.temp(), j.dump(2) + "\n");
    out.commit();
  }
  return j;
}

}  // namespace upcycle
