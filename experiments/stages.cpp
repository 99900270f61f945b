#include "experiments/stages.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/file_lock.hpp"
#include "data/synthetic_tasks.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/model_presets.hpp"
#include "formats/random_init.hpp"
#include "text/byte_tokenizer.hpp"
#include "trainer/run_state.hpp"

namespace upcycle {

namespace fs = std::filesystem;

bool tune_stage(TrainOptions options, const fs::path& dir, const std::string& name) {
  if (fs::exists(dir / "final")) {
    spdlog::info("{}: {} is done, skipped", name, (dir / "final").string());
    return true;
  }
  options.out = dir;
  std::vector<fs::path> resumable;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("step-", 0) == 0 && fs::exists(e.path() / kOptimizerFile)) resumable.push_back(e.path());
  if (!resumable.empty()) {
    const fs::path latest = *std::max_element(resumable.begin(), resumable.end());
    spdlog::info("{}: resuming from {}", name, latest.string());
    options.resume = latest;
  } else if (fs::is_directory(dir) && !fs::is_empty(dir)) {
    options.overwrite = true;  // checkpoints without optimizer state cannot resume: start over
  }
  try {
    check_train_options(options);
  } catch (const OptionError& e) {
    throw UsageError("stage " + name + ": " + render_option_names(e.what(), false));
  }
  train(options);
  if (fs::exists(dir / "final")) return true;
  spdlog::info("{} stopped before its last step (stop_at): run again without it to continue", name);
  return false;
}

std::vector<fs::path> dense_checkpoints(const fs::path& dir) {
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("step-", 0) == 0) steps.push_back(e.path());
  std::sort(steps.begin(), steps.end());
  steps.push_back(dir / "final");
  return steps;
}

void synth_data(const fs::path& file, const std::string& split, int64_t n, uint64_t seed) {
  if (fs::exists(file)) return;
  fs::create_directories(file.parent_path());
  const FileLock lock(lock_file_of(file), file.string());
  if (fs::exists(file)) return;  // another process made it while this one waited
  SynthOptions o;
  o.n = n;
  o.seed = seed;
  o.split = *parse_synth_split(split);
  write_synthetic_data(o, file, false);
}

void init_demo_model(const fs::path& dir, uint64_t seed) {
  if (fs::exists(dir)) return;
  fs::create_directories(dir.parent_path());
  const FileLock lock(lock_file_of(dir), dir.string());
  if (fs::exists(dir)) return;  // another process made it while this one waited
  const ModelConfig config = ModelConfig::from_json(*preset_config("demo"), "preset demo");
  const auto model = random_init(config, seed, DType::F32, 0, byte_tokenizer_files());
  WriteOptions w;
  w.progress = false;
  write_checkpoint(*model, dir, w);
  spdlog::info("wrote a random {} model ({} parameters) to {}", config.model_type, model->parameter_count(), dir.string());
}

}  // namespace upcycle
