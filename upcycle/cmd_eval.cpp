// `upcycle eval`: a model on a data set: loss and perplexity over the reply tokens, exact-match
// accuracy of greedy replies, or multiple-choice accuracy by log-likelihood.
#include <cstdio>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "formats/open_checkpoint.hpp"
#include "text/model_text.hpp"
#include "trainer/accuracy.hpp"
#include "trainer/evaluate.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

using ojson = nlohmann::ordered_json;

struct EvalContext {
  const cli::po::variables_map& vm;
  std::filesystem::path data, text_source;
  bool skip_bad;
  std::unique_ptr<Checkpoint> ckpt;
  EngineFactory device;
  std::unique_ptr<ChatEncoder> encoder;  // loaded when text needs it

  const ChatEncoder& chat() {
    if (!encoder) encoder = load_chat_encoder(text_source, vm["template"].as<std::string>());
    return *encoder;
  }
  void warn_skipped(int64_t skipped) const {
    if (skipped) spdlog::warn("{}: skipped {} malformed lines", data.string(), skipped);
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
  const TokenizedData data = read_instruction_data(c.data, [&]() -> const ChatEncoder& { return c.chat(); }, c.skip_bad);
  c.warn_skipped(data.skipped);
  check_vocabulary(data, c.ckpt->config().vocab_size);
  Progress progress("eval", data.samples.size(), "samples");
  int64_t shown = 0;
  const auto engine = load_engine(*c.ckpt, c.device);
  const EvalLoss e = evaluate_loss(*engine, data, c.vm["seq-len"].as<int64_t>(), c.vm["batch-tokens"].as<int64_t>(),
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
  const Accuracy a = exact_match(*load_engine(*c.ckpt, c.device), c.chat(), data.records, c.vm["max-new-tokens"].as<int64_t>(), c.data,
                                 [&](const ExactPrediction& p) {
                                   progress.advance(1);
                                   predictions += ojson{{"line", p.record->line}, {"task", p.record->task},
                                                        {"prediction", p.prediction}, {"reference", p.reference},
                                                        {"correct", p.correct}}
                                                      .dump(-1, ' ', false, ojson::error_handler_t::replace) +
                                                  "\n";
                                 });
  progress.finish();
  if (c.vm.count("predictions")) {
    StagedPath out(c.vm["predictions"].as<std::string>(), /*overwrite=*/true);
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
  const ChoiceAccuracy a = multiple_choice(*load_engine(*c.ckpt, c.device), *tokenizer, read_model_text_info(c.text_source).add_bos, data.items,
                                           [&](int64_t done) { progress.advance(uint64_t(done - shown)); shown = done; });
  progress.finish();
  ojson j = {{"metric", "choice"}, {"acc", a.acc.all.rate()}, {"acc_norm", a.acc_norm.all.rate()}, {"total", a.acc.all.total}};
  ojson tasks = ojson::object();
  for (const auto& [task, t] : a.acc.tasks)
    if (!task.empty()) tasks[task] = {{"acc", t.rate()}, {"acc_norm", a.acc_norm.tasks.at(task).rate()}, {"total", t.total}};
  if (!tasks.empty()) j["tasks"] = tasks;
  return j;
}

void print_text(const ojson& j) {
  if (j["metric"] == "loss") {
    std::printf("loss %.6f  ppl %.4f  (%lld tokens, %lld samples)\n", j["loss"].get<double>(), j["ppl"].get<double>(),
                (long long)j["tokens"].get<int64_t>(), (long long)j["samples"].get<int64_t>());
    return;
  }
  const bool choice = j["metric"] == "choice";
  std::printf("acc %.4f", j["acc"].get<double>());
  if (choice) std::printf("  acc_norm %.4f", j["acc_norm"].get<double>());
  std::printf("  (%lld samples)\n", (long long)j["total"].get<int64_t>());
  if (!j.contains("tasks")) return;
  for (const auto& [task, t] : j["tasks"].items()) {
    std::printf("  %-24s acc %.4f", task.c_str(), t["acc"].get<double>());
    if (choice) std::printf("  acc_norm %.4f", t["acc_norm"].get<double>());
    std::printf("  (%lld)\n", (long long)t["total"].get<int64_t>());
  }
}

}  // namespace

int cmd_eval(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle eval --model PATH --data FILE [--metric loss|exact|choice] [--json] [options]";
  spec.summary =
      "Evaluates a dense or MoE model, on the CPU or the GPU (--device).\n"
      "  loss    (default) token-weighted mean cross-entropy over the counted tokens (the replies of\n"
      "          Alpaca and chat data, the labels of pre-tokenized data) and its perplexity;\n"
      "          JSON keys loss, ppl, tokens, samples.\n"
      "  exact   greedy replies to each sample's prompt against its reference reply (white space\n"
      "          trimmed), accuracy overall and per `task`; JSON keys acc, correct, total, tasks.\n"
      "  choice  data {question, choices, answer}: the choice of highest log-likelihood after the\n"
      "          question (acc) and per character (acc_norm), as lm-evaluation-harness defines them.\n"
      "Text goes through the model's tokenizer and chat template (or --tokenizer and --template).";
  spec.options.add_options()
      ("model", cli::po::value<std::string>()->required(), "checkpoint (folder, .h5 or .gguf)")
      ("data", cli::po::value<std::string>()->required(), "JSONL data set")
      ("metric", cli::po::value<std::string>()->default_value("loss"), "loss, exact or choice")
      ("json", "print the results as one JSON object")
      ("out", cli::po::value<std::string>(), "also write the JSON object to this file")
      ("template", cli::po::value<std::string>()->default_value("auto"), "auto (the model's), chatml, llama2 or alpaca")
      ("tokenizer", cli::po::value<std::string>(), "tokenizer (default: the model's)")
      ("batch-tokens", cli::po::value<int64_t>()->default_value(4096), "tokens per forward pass (loss)")
      ("seq-len", cli::po::value<int64_t>()->default_value(2048), "samples longer than this are cut (loss)")
      ("max-new-tokens", cli::po::value<int64_t>()->default_value(128), "longest reply (exact)")
      ("predictions", cli::po::value<std::string>(), "write each prediction to this JSONL (exact)")
      ("skip-bad", "skip malformed data lines (counted in the log) instead of failing")
      ("device", cli::po::value<std::string>()->default_value("cpu"), kDeviceHelp);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const std::string metric = (*vm)["metric"].as<std::string>();
  if (metric != "loss" && metric != "exact" && metric != "choice")
    throw UsageError("--metric: '" + metric + "' is not loss, exact or choice");
  for (const char* name : {"batch-tokens", "seq-len", "max-new-tokens"})
    if ((*vm)[name].as<int64_t>() < 1) throw UsageError(std::string("--") + name + " must be positive");

  const std::string model_path = (*vm)["model"].as<std::string>();
  EvalContext c{*vm, (*vm)["data"].as<std::string>(),
                vm->count("tokenizer") ? (*vm)["tokenizer"].as<std::string>() : model_path, vm->count("skip-bad") > 0,
                open_checkpoint(model_path), engine_for_device((*vm)["device"].as<std::string>()), nullptr};
  const ojson j = metric == "loss" ? eval_loss(c) : metric == "exact" ? eval_exact(c) : eval_choice(c);
  if (vm->count("json")) std::printf("%s\n", j.dump(2).c_str());
  else print_text(j);
  if (vm->count("out")) {
    StagedPath out((*vm)["out"].as<std::string>(), /*overwrite=*/true);
    write_text_file(out.temp(), j.dump(2) + "\n");
    out.commit();
  }
  return 0;
}

}  // namespace upcycle
