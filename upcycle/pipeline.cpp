#include "upcycle/pipeline.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "trainer/run_state.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

Args to_args(const json& options, const fs::path& config, const std::string& stage) {
  require(options.is_object(), config, stage, "must be an object of the stage's options");
  Args args;
  for (const auto& [key, value] : options.items()) {
    std::string flag = "--" + key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (value.is_null() || (value.is_boolean() && !value.get<bool>())) continue;
    args.push_back(flag);
    if (value.is_boolean()) continue;
    for (const json& v : value.is_array() ? value : json::array({value})) {
      require(v.is_string() || v.is_number(), config, stage + "." + key, "must be a string, a number or a list of them");
      args.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    }
  }
  return args;
}

void inherit(json& stage, const json& from, std::initializer_list<const char*> keys) {
  for (const char* key : keys)
    if (!stage.contains(key) && from.contains(key)) stage[key] = from[key];
}

void run_stage(const std::string& name, int (*command)(const Args&), const Args& args) {
  try {
    command(args);
  } catch (const UsageError& e) {
    throw UsageError("stage " + name + ": " + e.what());
  }
}

bool tune_stage(json options, const fs::path& dir, const fs::path& config, const std::string& name) {
  if (fs::exists(dir / "final")) {
    spdlog::info("{}: {} is done, skipped", name, (dir / "final").string());
    return true;
  }
  options["out"] = dir.string();
  std::vector<fs::path> resumable;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("step-", 0) == 0 && fs::exists(e.path() / kOptimizerFile)) resumable.push_back(e.path());
  if (!resumable.empty()) {
    const fs::path latest = *std::max_element(resumable.begin(), resumable.end());
    spdlog::info("{}: resuming from {}", name, latest.string());
    options["resume"] = latest.string();
  } else if (fs::is_directory(dir) && !fs::is_empty(dir)) {
    options["overwrite"] = true;  // checkpoints without optimizer state cannot resume: start over
  }
  run_stage(name, cmd_tune, to_args(options, config, name));
  if (fs::exists(dir / "final")) return true;
  spdlog::info("{} stopped before its last step (stop_at): run again without it to continue", name);
  return false;
}

std::vector<std::string> dense_checkpoints(const fs::path& dir) {
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("step-", 0) == 0) steps.push_back(e.path().string());
  std::sort(steps.begin(), steps.end());
  steps.push_back((dir / "final").string());
  return steps;
}

void synth_data(const fs::path& file, const std::string& split, int64_t n, uint64_t seed) {
  if (fs::exists(file)) return;
  fs::create_directories(file.parent_path());
  run_stage("data " + split, cmd_data,
            {"synth", "--n", std::to_string(n), "--split", split, "--seed", std::to_string(seed), "--out", file.string()});
}

void init_demo_model(const fs::path& dir, uint64_t seed) {
  if (fs::exists(dir)) return;
  run_stage("init", cmd_init,
            {"--preset", "demo", "--tokenizer", "bytes", "--seed", std::to_string(seed), "--out", dir.string(), "-q"});
}

}  // namespace upcycle
