// The router stage of `convert`: the MoE assembled with random routers is written to a scratch
// folder and read from there, the seed data assigned to experts by their own loss, and the
// routers pre-optimised (UpIT's stage 3) or set from the experts' mean hidden states (the
// `hidden` ablation); the MoE written is the scratch one with those routers. On the CPU the
// weights are used as stored (trainer/stored_weights.hpp) and streamed a layer at a time, so the
// stage's memory is the shared weights, one layer and the activations, whatever the experts' size.
#pragma once
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "convert/assemble.hpp"
#include "core/memory_info.hpp"
#include "router/assign.hpp"
#include "router/preopt.hpp"

namespace upcycle {

struct RouterStageOptions {
  std::filesystem::path data;              // instruction JSONL: the seed data, or what it is drawn from
  bool data_is_seed = false;               // --seed-data: use all of it
  double fraction = 0.01;                  // else this share of it,
  int64_t min_samples = 100;               // at least this many
  std::filesystem::path text_source;       // tokenizer and chat template
  std::string chat_template = "auto";
  bool skip_bad = false;
  bool hidden = false;                     // the `hidden` init in place of the pre-optimisation
  bool random_assignment = false;          // ablation: each seed sample to a random expert, not the best-scoring
  EngineFactory engine = make_cpu_engine;  // where the models run (--device)
  Precision precision = Precision::F32;    // on the CPU (another device computes in its own)
  // The assembled MoE is written under a staged name beside this path (a folder that must exist),
  // in this dtype (nullopt: each tensor's own): the output's, so that its tensors are copied.
  std::filesystem::path scratch = std::filesystem::temp_directory_path() / "upcycle-router-stage";
  std::optional<DType> scratch_dtype;
  std::optional<int64_t> seq_len;          // seed samples longer than this are cut (model_seq_len)
  router::PreoptOptions preopt;            // its seq_len is set from seq_len
};

// The host memory the router stage holds on a device other than the CPU: the MoE's weights in
// fp32, and one expert's dense model (of the checkpoints' config) beside them while the seed
// data is scored (activations are left out: they depend on --batch-tokens and are small beside
// a model worth checking).
uint64_t router_stage_bytes(const ModelConfig& moe, const ModelConfig& dense);

// InputError, naming `source`, when router_stage_bytes exceeds `available` bytes: on a machine
// that cannot hold the MoE the stage would otherwise be killed for memory part way.
void check_router_memory(const ModelConfig& moe, const ModelConfig& dense, uint64_t available,
                         const std::filesystem::path& source);

// The seed data of the options: all of o.data (data_is_seed), or a share drawn from it; read for
// `config`'s vocabulary and context (read_instruction_data).
TokenizedData read_seed_data(const RouterStageOptions& o, const ModelConfig& config);

// What each part of the stage took: seconds, and the process's peak RSS (MB) at its end.
struct RouterStagePart {
  double seconds = 0, peak_rss_mb = 0;
};
struct RouterStageParts {
  RouterStagePart scratch, scoring, fit;  // the scratch copy, the experts' scores, the routers' fit
};

// The engines the stage runs: each expert's dense model, and the MoE whose routers train
// (router::router_training(), or a LoRA-MoE's make_cpu_lora_engine with its routers alone).
struct RouterStageEngines {
  router::ExpertEngines expert;
  std::function<std::unique_ptr<Engine>()> moe;
};

// The routers ([L][E·H]) of the MoE of `config`: the seed samples scored by every expert's dense
// model and assigned (by loss, or at random under o.random_assignment), then the `hidden` init, or
// the pre-optimisation on the engine engines.moe() makes. `report` gets the seed size, the
// experts' sample counts, their mean seed loss and distances in function
// (genetic::function_distances), and the loss terms before and after; `part` the scoring's and the
// fit's time.
std::vector<std::vector<float>> fit_routers(const ModelConfig& config, RouterStageEngines engines, const TokenizedData& seed,
                                            const RouterStageOptions& o, nlohmann::ordered_json& report,
                                            RouterStageParts& part);

// The MoE of `pool` with its routers fitted, assembled once: assemble_moe(source, pool,
// assembly) (random routers to start from) is written to the scratch folder, the routers are
// fitted on those weights (only the routers change), and the scratch MoE is returned with the
// fitted routers in place of the random ones (its tensors' names, order and dtypes; the
// assembly's config, files and generated files, then `extra`), fitted on `seed`
// (read_seed_data). InputError naming the scratch folder when its disk lacks room for the MoE
// twice (the scratch copy and the output). `parts`, when given, gets the time of each part. `report` gets the seed size, the
// experts' sample counts, their mean seed loss and distances in function
// (genetic::function_distances), and the loss terms before and after.
std::unique_ptr<Checkpoint> moe_with_fitted_routers(const pool::FfnSource& source, const pool::Pool& pool,
                                                    const AssemblyOptions& assembly, const RouterStageOptions& opts,
                                                    const TokenizedData& seed, nlohmann::ordered_json& report,
                                                    std::vector<GeneratedFile> extra = {},
                                                    RouterStageParts* parts = nullptr);

}  // namespace upcycle
