// The conversion as a library: dense checkpoints into an MoE (Mixtral, Qwen2-MoE or Qwen3-MoE). ConvertOptions -> a plan
// (the pool's recipes, or the search still to run) -> the expert search -> the router stage ->
// the MoE assembled and written, streaming.
//   upit    the checkpoints' FFNs as experts, grown by the genetic search when E > K, or the E
//           checkpoints farthest apart when E <= K; routers pre-optimised on seed data
//   sparse  every expert a copy of checkpoint `from` (sparse upcycling)
//   drop    copies with drop_ratio of each expert's neurons re-drawn (drop-upcycling)
//   btx     one expert per checkpoint (Branch-Train-MiX)
// With --adapters in place of --checkpoints, the same over LoRA adapters of one base, into a
// LoRA-MoE (convert/lora_convert.hpp), where `scratch` (LoRAMoE's new experts) replaces `drop`.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.hpp"
#include "core/option_table.hpp"
#include "genetic/expand.hpp"

namespace upcycle {

struct ConvertOptions {
  std::vector<std::filesystem::path> checkpoints;  // K dense checkpoints (folders, .h5 or .gguf)
  std::vector<std::filesystem::path> adapters;     // or K LoRA adapter folders of `base`
  std::optional<std::filesystem::path> base;       // deltas are taken from it (default: the checkpoints' mean)
  std::optional<int> experts;                      // E (default: K)
  int top_k = 2;
  std::filesystem::path out;                       // a folder, or .h5
  std::string method = "upit";                     // upit, sparse, drop or btx
  int from = 0;                                    // sparse, drop: the checkpoint copied
  double drop_ratio = 0.5;                         // drop: share of neurons re-drawn
  bool no_expand = false;                          // upit ablation: no children
  std::string parents = "distant";                 // distant or random
  int distant_pairs = 3, candidates = 8;
  std::string distance = "cosine";                 // cosine or l2
  std::string fitness = "weights";                 // the search's: weights (the deltas') or function (seed losses)
  uint64_t search_sample = genetic::ExpansionOptions{}.sample_elements;  // per FFN tensor measured (0: all)
  std::string merge = "dare";                      // the children's merge
  std::string lora_child = "svd";                  // adapters: a child refactored to the rank, or concat (exact, linear)
  double drop_rate = 0.5, density = 0.5;           // DARE's p, TIES' kept fraction
  std::string shared_merge = "linear";
  std::optional<int> shared_from;
  std::optional<std::string> router;               // upit, hidden or random (default: upit for upit)
  std::optional<std::filesystem::path> seed_data;  // the router's seed data, all of it, or
  std::optional<std::filesystem::path> data;       // training data it is drawn from
  double seed_fraction = 0.01;
  std::string seed_assign = "loss";                // loss (each seed sample to its best expert) or random (ablation)
  int64_t seed_min = 100;
  int64_t router_epochs = 4;
  double router_lr = 1e-3;
  std::optional<std::filesystem::path> tokenizer;  // for text seed data (default: checkpoint 0's)
  std::string chat_template = "auto";
  std::optional<int64_t> seq_len;                 // the router stage's (model_seq_len)
  int64_t batch_tokens = 4096;                    // the router stage's
  bool skip_bad = false;
  std::string device = "cpu";                      // where the router stage runs
  std::string precision = "f32";                   // what it computes in on the CPU
  double aux_loss_coef = 0.01;                     // router_aux_loss_coef in the config
  std::optional<DType> dtype;                      // output dtype (default: checkpoint 0's)
  bool fused = false;                              // transformers v5's fused expert tensors
  std::string arch = "auto";                       // the MoE's model_type: auto (the checkpoints'), mixtral, qwen2_moe, qwen3_moe
  std::optional<std::string> shared_expert;        // qwen2_moe: zero (default), mean, base or checkpoint:N
  bool unnormalised_topk = false;                  // the qwen MoEs: norm_topk_prob false
  uint64_t seed = 0;
  bool overwrite = false;
};

const OptionTable<ConvertOptions>& convert_option_table();
// OptionError for anything out of range or not going together, before any file is read.
void check_convert_options(const ConvertOptions& o);

// The expert search's options of o over K checkpoints or adapters (upit).
genetic::ExpansionOptions expansion_options(const ConvertOptions& o, int K);
// --router, else upit for UpIT and random for the baselines.
std::string router_init(const ConvertOptions& o);
// A pool member's recipe in upcycle_convert.json: its description, and its checkpoint (or
// adapter) or its parents, weights and seed.
nlohmann::ordered_json recipe_json(const pool::ExpertRecipe& r);

// The MoE the checkpoints (or adapters' base) make, `made`, is the one --arch names, unless it
// says auto (InputError naming `checkpoint`); the options of another family's MoE are refused
// (OptionError).
void check_arch(const ConvertOptions& o, const ModelConfig& made, const std::filesystem::path& checkpoint);

struct RouterStageOptions;
// The router stage's options of o (convert/router_stage.hpp).
RouterStageOptions router_stage_options(const ConvertOptions& o);

// Writes the MoE to o.out (and upcycle_convert.json beside its weights: the pool's recipes,
// distances and the router stage's figures). A fixed seed gives byte-identical files.
void convert(const ConvertOptions& o);

}  // namespace upcycle
