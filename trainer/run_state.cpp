#include "trainer/run_state.hpp"

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "text/model_text.hpp"
#include "core/staged_path.hpp"
#include "formats/checkpoint_writer.hpp"

namespace upcycle {

namespace fs = std::filesystem;

std::string step_folder_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%06lld", static_cast<long long>(step));
  return name;
}

namespace {

// `write_weights` fills the staged folder; the optimizer and the run state go beside them.
template <class WriteWeights>
void save_run(const fs::path& dir, WriteWeights write_weights, Engine& engine, const RunState& state) {
  StagedPath staged(dir, /*overwrite=*/true);
  write_weights(staged.temp());
  engine.save_optimizer(staged.temp() / kOptimizerFile);
  nlohmann::ordered_json j = {{"step", state.step},       {"epoch", state.cursor.epoch},
                              {"index", state.cursor.index}, {"seed", state.seed},
                              {"samples", state.samples}, {"steps", state.steps}};
  if (!state.selection_bias.empty()) j["selection_bias"] = state.selection_bias;
  write_text_file(staged.temp() / kTrainerStateFile, j.dump(2) + "\n");
  staged.commit();
}

}  // namespace

std::unique_ptr<Checkpoint> with_chosen_template(std::shared_ptr<const Checkpoint> weights, const std::string& format) {
  constexpr const char* kName = "tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  std::vector<fs::path> side;
  for (const fs::path& f : weights->side_files()) {
    if (f.filename() != kName) {
      side.push_back(f);
      continue;
    }
    config = read_json_file(f);
    require(config.is_object(), f, "must be a JSON object");
  }
  std::vector<GeneratedFile> generated;
  for (const GeneratedFile& g : weights->generated_files()) {
    if (g.name != kName) {
      generated.push_back(g);
    } else if (config.empty()) {
      if (auto text = g.contents()) config = nlohmann::json::parse(*text);  // one of ours: valid
    }
  }
  config[kChosenTemplateKey] = format;
  generated.push_back({kName, [text = config.dump(2) + "\n"] { return std::optional(text); }});
  auto load = [weights](const TensorInfo& info) { return weights->load(info.name); };
  return std::make_unique<ComputedCheckpoint>(weights->config(), weights->tensors(), load, std::move(side),
                                              std::move(generated));
}

void save_checkpoint(const fs::path& dir, const Checkpoint& weights, DType dtype, Engine& engine,
                     const RunState& state) {
  WriteOptions opts;
  opts.dtype = dtype;
  opts.progress = false;
  save_run(dir, [&](const fs::path& folder) { write_checkpoint(weights, folder, opts); }, engine, state);
}

void save_adapter_checkpoint(const fs::path& dir, const LoraAdapter& adapter, DType dtype, Engine& engine,
                             const RunState& state, const std::optional<std::string>& chosen_template) {
  LoraAdapter stored{adapter.config, {}, {}};
  for (const LoraModule& m : adapter.modules)
    stored.modules.push_back({m.layer, m.module, m.a.to(dtype), m.b.to(dtype), m.expert});
  for (const Tensor& r : adapter.routers) stored.routers.push_back(r.to(dtype));
  save_run(dir, [&](const fs::path& folder) {
    std::error_code ec;
    fs::create_directory(folder, ec);
    require(!ec, folder, "cannot create: " + ec.message());
    write_peft_adapter_files(stored, folder);
    if (chosen_template)
      write_text_file(folder / "tokenizer_config.json",
                      nlohmann::json{{kChosenTemplateKey, *chosen_template}}.dump(2) + "\n");
  }, engine, state);
}

RunState load_run_state(const fs::path& dir) {
  const fs::path file = dir / kTrainerStateFile;
  std::ifstream in(file);
  require(bool(in), file, "missing: not a checkpoint written by upcycle tune");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file, std::string("bad JSON: ") + e.what());
  }
  auto number = [&](const char* key) {
    require(j.is_object() && j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() >= 0, file, key,
            "missing, or not a non-negative integer");
    return j[key].get<int64_t>();
  };
  RunState s;
  s.step = number("step");
  s.cursor = {number("epoch"), number("index")};
  s.samples = number("samples");
  s.steps = number("steps");
  require(j["seed"].is_number_unsigned(), file, "seed", "not an unsigned integer");
  s.seed = j["seed"].get<uint64_t>();
  if (j.contains("selection_bias")) {
    try {
      s.selection_bias = j["selection_bias"].get<SelectionBias>();
    } catch (const nlohmann::json::exception&) {
      throw InputError(file, "selection_bias: not a list of lists of numbers");
    }
  }
  require(fs::exists(dir / kOptimizerFile), dir / kOptimizerFile,
          "missing: only the latest checkpoint of a run keeps its optimizer state (--keep-states keeps all)");
  return s;
}

void drop_optimizer_state(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / kOptimizerFile, ec);
}

}  // namespace upcycle
