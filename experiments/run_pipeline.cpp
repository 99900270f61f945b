#include "experiments/run_pipeline.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "convert/convert.hpp"
#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "experiments/stages.hpp"
#include "formats/open_checkpoint.hpp"
#include "trainer/batches.hpp"
#include "trainer/evaluation.hpp"
#include "trainer/train.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Copies the keys `stage` does not set from `from`.
void inherit(json& stage, const json& from, std::initializer_list<const char*> keys) {
  for (const char* key : keys)
    if (!stage.contains(key) && from.contains(key)) stage[key] = from[key];
}

// UsageError naming `where` for any of `keys` the stage sets: the pipeline sets them.
void refuse_keys(const json& stage, std::initializer_list<const char*> keys, const std::string& where) {
  for (const char* key : keys)
    if (stage.contains(key)) throw_config_error(where, std::string(key) + " is the pipeline's to set");
}

// The checkpoints a dense run of these options saves, where the options say (0: not known before
// it runs, as for save_every over epochs).
size_t saved_checkpoints(const TrainOptions& t) {
  if (t.save_count > 0) return size_t(t.save_count);
  if (t.steps > 0 && t.save_every > 0) return size_t(t.steps / t.save_every + (t.steps % t.save_every != 0));
  return t.steps > 0 || t.save_every == 0 ? 1 : 0;
}

struct Pipeline {
  fs::path out;
  bool lora = false;  // experts_kind lora: the dense run trains adapters, the MoE is their LoRA-MoE
  TrainOptions dense, moe;
  ConvertOptions convert;
  bool convert_has_checkpoints = false;
  std::vector<EvalOptions> evals;
  std::vector<std::string> eval_names;  // the config's where for each: "eval[0]"
};

// Every stage's seq_len against the dense model's context, which the MoE keeps: a stage's
// mistake is found before the first stage runs, not after the ones before it.
void check_sequence_lengths(const Pipeline& p, const std::string& where) {
  if (!fs::exists(p.dense.model)) return;  // its stage says so
  const ModelConfig model = open_checkpoint(p.dense.model)->config();
  auto check = [&](std::optional<int64_t> seq_len) { model_seq_len(seq_len, model); };
  check_options(p.dense, [&](const TrainOptions& t) { check(t.seq_len); }, where + "dense");
  check_options(p.convert, [&](const ConvertOptions& o) { check(o.seq_len); }, where + "convert");
  check_options(p.moe, [&](const TrainOptions& t) { check(t.seq_len); }, where + "moe");
  for (size_t i = 0; i < p.evals.size(); ++i)
    check_options(p.evals[i], [&](const EvalOptions& e) { check(e.seq_len); }, where + p.eval_names[i]);
}

// The checkpoints convert takes: the dense run's models, or with LoRA experts its adapters.
std::vector<fs::path>& convert_pool(ConvertOptions& c, bool lora) { return lora ? c.adapters : c.checkpoints; }

// A stage's model folder `dir` as eval and tune take it: the model, or with LoRA experts the
// adapter there on the dense run's model.
void set_model(const Pipeline& p, const fs::path& dir, fs::path& model, std::optional<fs::path>& adapter) {
  model = p.lora ? p.dense.model : dir;
  adapter = p.lora ? std::optional(dir) : std::nullopt;
}

Pipeline read_pipeline(const fs::path& config, const json& c) {
  Pipeline p;
  p.out = c["out"].get<std::string>();
  const std::string where = config.string() + ": stage ";
  const std::string kind = c.value("experts_kind", "ffn");
  require(kind == "ffn" || kind == "lora", config, "experts_kind", "must be \"ffn\" or \"lora\"");
  p.lora = kind == "lora";
  json dense = c["dense"], convert = c["convert"], moe = c["moe"];
  if (p.lora && !dense.contains("lora_rank")) dense["lora_rank"] = 8;
  require(dense.is_object() && convert.is_object() && moe.is_object(), config,
          "the stages dense, convert and moe must be objects of their command's options");
  for (json* stage : {&dense, &convert, &moe}) inherit(*stage, c, {"seed", "template"});
  if (!convert.contains("seed_data")) inherit(convert, dense, {"data"});
  inherit(moe, dense, {"data"});
  refuse_keys(dense, {"out"}, where + "dense");
  refuse_keys(convert, {"out"}, where + "convert");
  refuse_keys(moe, {"out", "model", "adapter"}, where + "moe");

  read_options(train_option_table(), dense, p.dense, where + "dense");
  p.dense.out = p.out / "dense";
  check_options(p.dense, check_train_options, where + "dense");
  if ((p.dense.lora.rank > 0) != p.lora)
    throw_config_error(where + "dense", p.lora ? "experts_kind lora makes the MoE of the dense run's adapters: lora_rank must be positive"
                                               : "lora_rank makes the dense run train adapters: set \"experts_kind\": \"lora\"");

  read_options(convert_option_table(), convert, p.convert, where + "convert");
  p.convert.out = p.out / "moe-init";
  // The deltas' base; with adapters, the model they adapt.
  if ((!p.convert.base || p.lora) && !p.dense.model.empty()) p.convert.base = p.dense.model;
  p.convert_has_checkpoints = !convert_pool(p.convert, p.lora).empty();
  if (!p.convert_has_checkpoints) {  // the dense run's, once it has run: checked now as far as their number is known
    const size_t k = saved_checkpoints(p.dense);
    if (k > 0) {
      ConvertOptions stand_in = p.convert;
      convert_pool(stand_in, p.lora).assign(k, p.dense.out / "final");
      check_options(stand_in, check_convert_options, where + "convert");
    }
  } else {
    check_options(p.convert, check_convert_options, where + "convert");
  }

  read_options(train_option_table(), moe, p.moe, where + "moe");
  set_model(p, p.convert.out, p.moe.model, p.moe.adapter);
  p.moe.out = p.out / "moe";
  check_options(p.moe, check_train_options, where + "moe");

  const json evals = c.value("eval", json::array());
  require(evals.is_array(), config, "eval", "must be a list of eval options ({\"data\": ..., \"metric\": ...})");
  for (size_t i = 0; i < evals.size(); ++i) {
    json e = evals[i];
    const std::string name = "eval[" + std::to_string(i) + "]";
    if (e.is_object()) {
      inherit(e, c, {"template"});
      refuse_keys(e, {"model", "adapter", "out"}, where + name);
    }
    EvalOptions o;
    read_options(eval_option_table(), e, o, where + name);
    set_model(p, p.dense.out / "final", o.model, o.adapter);  // each model in turn
    check_options(o, check_eval_options, where + name);
    p.evals.push_back(o);
    p.eval_names.push_back(name);
  }
  check_sequence_lengths(p, where);
  return p;
}

}  // namespace

void run_pipeline(const fs::path& config) {
  const json c = read_json_file(config);
  require(c.is_object() && c.contains("out") && c["out"].is_string(), config, "must be an object with \"out\"");
  for (const auto& [key, value] : c.items())
    require(key == "out" || key == "seed" || key == "template" || key == "experts_kind" || key == "dense" ||
                key == "convert" || key == "moe" || key == "eval",
            config, key, "is not a key of the pipeline (out, seed, template, experts_kind, dense, convert, moe, eval)");
  require(c.contains("dense") && c.contains("convert") && c.contains("moe"), config,
          "needs the stages dense, convert and moe (eval is optional)");
  Pipeline p = read_pipeline(config, c);
  fs::create_directories(p.out);

  spdlog::info("stage 1/4 dense: tuning into {}", p.dense.out.string());
  if (!tune_stage(p.dense, p.dense.out, "dense")) return;

  if (fs::exists(p.convert.out)) {
    spdlog::info("stage 2/4 convert: {} is done, skipped", p.convert.out.string());
  } else {
    spdlog::info("stage 2/4 convert: into {}", p.convert.out.string());
    if (!p.convert_has_checkpoints) convert_pool(p.convert, p.lora) = dense_checkpoints(p.dense.out);
    check_options(p.convert, check_convert_options, config.string() + ": stage convert");
    convert(p.convert);
  }

  spdlog::info("stage 3/4 moe: tuning into {}", p.moe.out.string());
  if (!tune_stage(p.moe, p.moe.out, "moe")) return;

  json results = json::object();
  fs::create_directories(p.out / "eval");
  for (size_t i = 0; i < p.evals.size(); ++i)
    for (const char* model : {"dense", "moe"}) {
      EvalOptions e = p.evals[i];
      const std::string name = std::string(model) + "-" + std::to_string(i) + "-" + e.metric;
      const fs::path file = p.out / "eval" / (name + ".json");
      if (!fs::exists(file)) {
        spdlog::info("stage 4/4 eval: {}", name);
        set_model(p, p.out / model / "final", e.model, e.adapter);
        e.out = file;
        evaluate(e);
      }
      results[name] = read_json_file(file);
    }
  replace_text_file(p.out / "run.json", json{{"config", c}, {"eval", results}}.dump(2) + "\n");
  spdlog::info("pipeline done: {}", (p.out / "run.json").string());
}

}  // namespace upcycle
