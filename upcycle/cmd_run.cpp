// `upcycle run CONFIG.json`: the whole UpIT pipeline from one file (dense instruction tuning with
// intermediate checkpoints, conversion, MoE tuning, evaluation), each stage the subcommand of
// the same name run in-process, resumable stage by stage.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/pipeline.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

int cmd_run(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle run CONFIG.json";
  spec.summary =
      "Runs the UpIT pipeline a JSON config describes, stage by stage, into its \"out\" folder:\n"
      "  dense    `tune` of the dense model, saving intermediate checkpoints (save_every)\n"
      "  convert  `convert` of those checkpoints (every step-N/ and final/) into an MoE\n"
      "  moe      `tune` of the MoE\n"
      "  eval     `eval` of the dense and the MoE model on each entry of a list\n"
      "Each stage's object holds its command's options, underscores for dashes ({\"save_every\": 25}\n"
      "is --save-every 25; true is a flag). The top level gives \"out\", and \"seed\" and\n"
      "\"template\" for every stage that does not set its own; \"data\" flows from dense to the\n"
      "later stages. Paths are relative to the current folder. Finished stages are skipped when run\n"
      "again and an interrupted tuning resumes from its latest checkpoint, so an interrupted run\n"
      "continues where it stopped. out/run.json gathers the evaluation results.";
  spec.options.add_options()("config", cli::po::value<std::string>()->required(), "the pipeline's JSON");
  spec.positional.add("config", 1);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const fs::path config = (*vm)["config"].as<std::string>();
  json c = read_json_file(config);
  require(c.is_object() && c.contains("out") && c["out"].is_string(), config, "must be an object with \"out\"");
  for (const auto& [key, value] : c.items())
    require(key == "out" || key == "seed" || key == "template" || key == "dense" || key == "convert" || key == "moe" ||
                key == "eval",
            config, key, "is not a key of the pipeline (out, seed, template, dense, convert, moe, eval)");
  require(c.contains("dense") && c.contains("convert") && c.contains("moe"), config,
          "needs the stages dense, convert and moe (eval is optional)");
  const fs::path out = c["out"].get<std::string>();
  fs::create_directories(out);
  json dense = c["dense"], convert = c["convert"], moe = c["moe"];
  inherit(dense, c, {"seed", "template"});
  inherit(convert, c, {"seed", "template"});
  inherit(moe, c, {"seed", "template"});
  if (!convert.contains("seed_data")) inherit(convert, dense, {"data"});
  inherit(moe, dense, {"data"});

  spdlog::info("stage 1/4 dense: tuning into {}", (out / "dense").string());
  if (!tune_stage(dense, out / "dense", config, "dense")) return 0;

  const fs::path init = out / "moe-init";
  if (fs::exists(init)) {
    spdlog::info("stage 2/4 convert: {} is done, skipped", init.string());
  } else {
    spdlog::info("stage 2/4 convert: into {}", init.string());
    if (!convert.contains("checkpoints")) convert["checkpoints"] = dense_checkpoints(out / "dense");
    convert["out"] = init.string();
    run_stage("convert", cmd_convert, to_args(convert, config, "convert"));
  }

  spdlog::info("stage 3/4 moe: tuning into {}", (out / "moe").string());
  moe["model"] = init.string();
  if (!tune_stage(moe, out / "moe", config, "moe")) return 0;

  json results = json::object();
  const json evals = c.value("eval", json::array());
  require(evals.is_array(), config, "eval", "must be a list of eval options ({\"data\": ..., \"metric\": ...})");
  fs::create_directories(out / "eval");
  for (size_t i = 0; i < evals.size(); ++i)
    for (const char* model : {"dense", "moe"}) {
      json e = evals[i];
      inherit(e, c, {"template"});
      const std::string name = std::string(model) + "-" + std::to_string(i) + "-" + e.value("metric", "loss");
      const fs::path file = out / "eval" / (name + ".json");
      if (!fs::exists(file)) {
        spdlog::info("stage 4/4 eval: {}", name);
        e["model"] = (out / model / "final").string();
        e["out"] = file.string();
        run_stage("eval " + name, cmd_eval, to_args(e, config, "eval[" + std::to_string(i) + "]"));
      }
      results[name] = read_json_file(file);
    }
  replace_text_file(out / "run.json", json{{"config", c}, {"eval", results}}.dump(2) + "\n");
  spdlog::info("pipeline done: {}", (out / "run.json").string());
  return 0;
}

}  // namespace upcycle
