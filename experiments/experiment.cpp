#include "experiments/experiment.hpp"

#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/file_lock.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "data/jsonl.hpp"
#include "experiments/methods.hpp"
#include "experiments/stages.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/peft_adapter.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kTimeFile = "upcycle_seconds.json";  // a finished stage's wall time

// Runs `stage` unless `done` exists, timing it into `time_file`; the recorded seconds either way.
template <class F>
double timed_stage(const fs::path& done, const fs::path& time_file, F&& stage) {
  if (fs::exists(done)) {
    spdlog::info("{} is done, skipped", done.string());
    return fs::exists(time_file) ? read_json_file(time_file).value("seconds", 0.0) : 0.0;
  }
  const auto start = std::chrono::steady_clock::now();
  stage();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fs::create_directories(time_file.parent_path());
  replace_text_file(time_file, json{{"seconds", seconds}}.dump() + "\n");
  return seconds;
}

// timed_stage of a tuning into dir that cells running at once share (the base and dense runs):
// under the lock beside dir, so that one process runs it and the others wait, then find it done.
template <class F>
void shared_tuning(const fs::path& dir, const std::string& name, F&& stage) {
  fs::create_directories(dir.parent_path());
  const FileLock lock(lock_file_of(dir), name + " " + dir.string());
  timed_stage(dir / "final", dir / kTimeFile, stage);
}

// A model as the stages take it: a checkpoint, with an adapter folder on it under LoRA experts.
struct ModelRef {
  fs::path model;
  std::optional<fs::path> adapter;
};

// The dense run trains LoRA adapters (ExperimentSettings::experts_kind lora).
bool lora_experts(const ExperimentOptions& o) { return o.dense_tune.lora.rank > 0; }

// The model the dense run starts from: the base tuning's final model, else init.
fs::path dense_start(const ExperimentOptions& o) { return o.base_tune ? o.base_dir / "final" : o.init; }

// A stage's result `dir` as a model: the checkpoint there, or the adapter there on the model the
// dense run started from.
ModelRef model_at(const fs::path& dir, const ExperimentOptions& o) {
  if (lora_experts(o)) return {dense_start(o), dir};
  return {dir, std::nullopt};
}

void tune(TrainOptions options, const ModelRef& model, const fs::path& data, const fs::path& dir, uint64_t seed,
          const std::string& name) {
  options.model = model.model;
  options.adapter = model.adapter;
  options.data = data;
  options.seed = seed;
  if (!tune_stage(std::move(options), dir, name))
    throw InputError(dir, "stopped before its last step: remove stop_at from the tune options");
}

// The dense run a method converts: the shared one, or for a method with a checkpoint per expert
// one saving E checkpoints (the same steps and seed), run here unless it exists.
fs::path dense_run_for(const ExperimentMethod& m, const ExperimentOptions& o) {
  if (!m.checkpoint_per_expert || o.experts == o.dense_tune.save_count) return o.dense_dir;
  const fs::path dir = o.dense_dir.string() + fmt::format("-k{}", o.experts);
  TrainOptions t = o.dense_tune;
  t.save_count = o.experts;
  const std::string name = fmt::format("dense run saving {}", o.experts);
  shared_tuning(dir, name, [&] { tune(t, {dense_start(o), {}}, o.train, dir, o.seed, name); });
  return dir;
}

void convert(const ExperimentMethod& m, const fs::path& into, const ExperimentOptions& o) {
  const std::vector<fs::path> checkpoints = dense_checkpoints(dense_run_for(m, o));
  ConvertOptions c = o.convert;
  c.method = m.convert;
  c.experts = o.experts;
  c.top_k = o.top_k;
  c.seed = o.seed;
  c.out = into;
  // Checkpoints, or with LoRA experts the adapters of the model they adapt.
  std::vector<fs::path>& pool = lora_experts(o) ? c.adapters : c.checkpoints;
  if (lora_experts(o)) c.base = dense_start(o);
  if (c.method == "upit") {
    pool = checkpoints;
    c.base = dense_start(o);  // the deltas' base: the model the dense run started from
    c.data = o.train;         // seed data: a share of it
  } else if (c.method == "btx" || c.method == "scratch") {  // scratch: the shared terms' mean
    pool = checkpoints;
  } else {  // sparse, drop: copies of the final model's FFN
    pool = {checkpoints.back()};
  }
  if (m.change_convert) m.change_convert(c);
  check_options(c, check_convert_options, std::string("stage convert ") + m.name);
  upcycle::convert(c);
}

// An evaluation into file (and its predictions, for exact), unless it is there.
void evaluate(const ModelRef& model, const fs::path& data, const std::string& metric, const fs::path& file,
              const ExperimentOptions& o, const std::optional<fs::path>& predictions = {}) {
  if (fs::exists(file)) return;
  EvalOptions e = o.eval;
  e.model = model.model;
  e.adapter = model.adapter;
  e.data = data;
  e.metric = metric;
  e.out = file;
  e.predictions = predictions;
  check_options(e, check_eval_options, "stage eval " + metric);
  upcycle::evaluate(e);
}

MethodResult run_method(const ExperimentMethod& m, const ExperimentOptions& o) {
  MethodResult r;
  r.method = m.name;
  r.dir = o.out / m.name;
  fs::create_directories(r.dir);
  fs::path start_dir = o.dense_dir / "final";
  if (m.convert) {
    start_dir = r.dir / "init";
    r.seconds += timed_stage(start_dir, r.dir / "convert_seconds.json", [&] { convert(m, start_dir, o); });
    r.experts = o.experts;
  }
  const ModelRef start = model_at(start_dir, o);
  evaluate(start, o.test, "loss", r.dir / "eval-start-loss.json", o);  // where the tuning starts from
  TrainOptions method_tune = o.tune;
  if (m.change_tune) m.change_tune(method_tune);
  const fs::path tuned = r.dir / "tuned";
  r.seconds += timed_stage(tuned / "final", r.dir / "tune_seconds.json", [&] { tune(method_tune, start, o.train, tuned, o.seed, m.name); });
  const ModelRef final_model = model_at(tuned / "final", o);
  auto heldout_file = [&](const HeldoutSet& h) { return r.dir / ("eval-heldout-" + h.name + ".json"); };
  const fs::path last_eval = o.heldout.empty() ? r.dir / "eval-exact.json" : heldout_file(o.heldout.back());
  const fs::path predictions = r.dir / "predictions-exact.jsonl";
  r.seconds += timed_stage(last_eval, r.dir / "eval_seconds.json", [&] {
    evaluate(final_model, o.test, "loss", r.dir / "eval-loss.json", o);
    evaluate(final_model, o.test, "exact", r.dir / "eval-exact.json", o, predictions);
    for (const HeldoutSet& h : o.heldout) evaluate(final_model, h.data, "exact", heldout_file(h), o);
  });
  if (m.convert) evaluate(final_model, o.test, "routing", r.dir / "eval-routing.json", o);
  const json loss = read_json_file(r.dir / "eval-loss.json"), exact = read_json_file(r.dir / "eval-exact.json");
  for (const HeldoutSet& h : o.heldout) r.heldout_exact[h.name] = read_json_file(heldout_file(h)).at("acc").get<double>();
  r.start_loss = read_json_file(r.dir / "eval-start-loss.json").at("loss");
  r.loss = loss.at("loss");
  r.ppl = loss.at("ppl");
  r.exact = exact.at("acc");
  r.exact_total = exact.at("total");
  const json tasks = exact.value("tasks", json::object());
  for (const auto& [task, t] : tasks.items()) r.exact_by_task[task] = t.at("acc");
  if (fs::exists(predictions))
    read_jsonl(predictions, false, [&](const json& line, int64_t) {
      if (!line.contains("correct") || !line["correct"].is_boolean()) throw std::invalid_argument("no \"correct\": true or false");
      r.exact_by_sample.push_back(line["correct"].get<bool>() ? 1 : 0);
    });
  const auto tuned_model = open_checkpoint(final_model.model);
  r.total_params = int64_t(tuned_model->parameter_count());
  r.active_params = active_parameters(*tuned_model);
  if (final_model.adapter) {
    const LoraAdapter adapter = read_peft_adapter(*final_model.adapter, tuned_model->config());
    r.total_params += adapter.parameter_count();
    r.active_params += active_adapter_parameters(adapter);
  }
  return r;
}

}  // namespace

std::vector<HeldoutSet> synth_heldout_sets(const fs::path& dir, int64_t n, uint64_t seed) {
  std::vector<HeldoutSet> sets;
  for (const char* name : {"phrasings", "tasks"}) {
    sets.push_back({name, dir / (std::string("heldout-") + name + ".jsonl")});
    synth_data(sets.back().data, std::string("heldout-") + name, n, seed);
  }
  return sets;
}

TrainOptions tune_options(TuneLength length, double lr, int64_t warmup, int64_t batch_tokens) {
  TrainOptions t;
  t.steps = length.steps;
  t.epochs = length.steps > 0 ? 0 : length.epochs;
  t.schedule.peak = lr;
  t.schedule.warmup = warmup;
  t.schedule.min_ratio = 0.1;
  t.batch_tokens = batch_tokens;
  t.seq_len = kExperimentSeqLen;
  return t;
}

EvalOptions experiment_eval_options() {
  EvalOptions e;
  e.max_new_tokens = 24;
  e.seq_len = kExperimentSeqLen;
  return e;
}

double recorded_seconds(const fs::path& run_dir) {
  const fs::path file = run_dir / kTimeFile;
  return fs::exists(file) ? read_json_file(file).value("seconds", 0.0) : 0.0;
}

int64_t active_adapter_parameters(const LoraAdapter& adapter) {
  const LoraConfig& c = adapter.config;
  int64_t unused = 0;  // the terms of the experts a token does not use
  for (const LoraModule& m : adapter.modules)
    if (m.expert >= c.top_k) unused += m.a.numel() + m.b.numel();
  return adapter.parameter_count() - unused;
}

int64_t active_parameters(const Checkpoint& model) {
  const ModelConfig& c = model.config();
  const auto total = int64_t(model.parameter_count());
  if (!c.is_moe()) return total;
  const int64_t per_expert = 3 * c.hidden_size * c.expert_intermediate_size();
  return total - c.num_hidden_layers * (c.num_local_experts - c.num_experts_per_tok) * per_expert;
}

std::vector<MethodResult> run_experiment(const ExperimentOptions& o) {
  const fs::path start = dense_start(o);
  if (o.base_tune) {
    shared_tuning(o.base_dir, "base", [&] {
      tune(*o.base_tune, {o.init, {}}, o.base_train.empty() ? o.train : o.base_train, o.base_dir, o.base_seed, "base");
    });
  }
  shared_tuning(o.dense_dir, "dense run", [&] { tune(o.dense_tune, {start, {}}, o.train, o.dense_dir, o.seed, "dense run"); });
  std::vector<MethodResult> results;
  for (const std::string& name : o.methods) {
    const ExperimentMethod* m = find_experiment_method(name);
    if (!m) throw UsageError("unknown method '" + name + "' (" + experiment_method_names() + ")");
    spdlog::info("method {}: {}", name, (o.out / name).string());
    results.push_back(run_method(*m, o));
  }
  return results;
}

}  // namespace upcycle
