#include "convert/convert.hpp"

#include <algorithm>
#include <future>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "convert/assemble.hpp"
#include "convert/lora_convert.hpp"
#include "genetic/lora_expand.hpp"
#include "convert/router_stage.hpp"
#include "convert/seed_scoring.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "text/chat_template.hpp"
#include "trainer/batches.hpp"

namespace upcycle {

namespace {

using O = ConvertOptions;
using pool::Pool;

std::string matrix_text(const std::vector<std::vector<double>>& m) {
  std::string out;
  for (const auto& row : m) {
    out += "\n   ";
    for (double v : row) out += fmt::format(" {:7.4f}", v);
  }
  return out;
}

struct Plan {
  std::string router;
  Pool pool;                                      // complete, or the checkpoints before a search
  std::optional<genetic::ExpansionOptions> search;  // upit: still to run
  AssemblyOptions assembly;
  nlohmann::ordered_json report;  // upcycle_convert.json, written beside the weights
};

nlohmann::ordered_json pool_json(const Pool& pool) {
  nlohmann::ordered_json experts = nlohmann::ordered_json::array();
  for (const auto& r : pool) experts.push_back(recipe_json(r));
  return experts;
}

// The genetic search of p.search: the pool, with its distances logged and in the report.
Pool search(const Plan& p, const pool::FfnSource& source, nlohmann::ordered_json& report) {
  const genetic::ExpansionOptions& o = *p.search;
  const genetic::Expansion x = genetic::expand_pool(source, o);
  spdlog::info("{} distances between the checkpoints:{}", genetic::distance_name(o.distance), matrix_text(x.before));
  spdlog::info("between the {} experts:{}", x.pool.size(), matrix_text(x.after));
  report["distance"] = genetic::distance_name(o.distance);
  report["search_sample"] = o.sample_elements;
  report["distances_before"] = x.before;
  report["distances_after"] = x.after;
  report["fitness"] = genetic::fitness_name(o.fitness);
  if (o.fitness == genetic::Fitness::Function) {
    spdlog::info("seed-loss distances between the checkpoints:{}", matrix_text(x.function_before));
    spdlog::info("between the {} experts:{}", x.pool.size(), matrix_text(x.function_after));
    report["function_distances_before"] = x.function_before;
    report["function_distances_after"] = x.function_after;
  }
  report["pool"] = pool_json(x.pool);
  return x.pool;
}

// The router stage's fit and the search in function read seed data.
bool uses_seed_data(const O& o) { return router_init(o) != "random" || (o.method == "upit" && o.fitness == "function"); }

// The plan of checked options over K checkpoints.
Plan plan(const O& o, int K) {
  Plan p;
  const int E = o.experts.value_or(K);
  AssemblyOptions& a = p.assembly;
  a.top_k = o.top_k;
  a.norm_topk_prob = !o.unnormalised_topk;
  if (o.shared_expert) a.shared_expert = *parse_shared_expert(*o.shared_expert);
  a.fused = o.fused;
  a.aux_loss_coef = o.aux_loss_coef;
  a.seed = o.seed;
  a.child_merge.method = *merge::parse_method(o.merge);
  a.child_merge.drop_rate = o.drop_rate;
  a.child_merge.density = o.density;
  a.shared_merge.method = *merge::parse_method(o.shared_merge);
  a.shared_from = o.shared_from;
  p.router = router_init(o);
  p.report = {{"method", o.method}, {"experts", E}, {"top_k", a.top_k}, {"seed", o.seed}, {"router", p.router}};

  if (o.method == "upit") {
    const genetic::ExpansionOptions x = expansion_options(o, K);
    p.search = x;
    if (x.experts > K)
      for (int k = 0; k < K; ++k) p.pool.push_back({k});  // the search keeps them, in order, and adds children
  } else if (o.method == "sparse" || o.method == "drop") {
    a.shared_from = o.from;
    for (int e = 0; e < E; ++e) {
      pool::ExpertRecipe r{o.from};
      if (o.method == "drop")
        r.redraw = o.drop_ratio, r.seed = Rng::stream(o.seed, "drop-upcycling expert " + std::to_string(e)).next();
      p.pool.push_back(r);
    }
  } else {  // btx
    for (int k = 0; k < K; ++k) p.pool.push_back({k});
  }
  if (!p.search) p.report["pool"] = pool_json(p.pool);
  return p;
}

}  // namespace

nlohmann::ordered_json recipe_json(const pool::ExpertRecipe& r) {
  nlohmann::ordered_json j = {{"describe", pool::describe(r)}};
  if (r.is_child()) {
    j["parents"] = {r.parent_a, r.parent_b};
    j["weights"] = {r.weight_a, r.weight_b};
    j["seed"] = r.seed;
  } else {
    j["checkpoint"] = r.checkpoint;
    if (r.redraw > 0) j["redraw"] = r.redraw, j["seed"] = r.seed;
  }
  return j;
}

std::string router_init(const O& o) { return o.router.value_or(o.method == "upit" ? "upit" : "random"); }

genetic::ExpansionOptions expansion_options(const O& o, int K) {
  const int E = o.experts.value_or(K);
  genetic::ExpansionOptions x;
  x.experts = o.no_expand ? std::min(E, K) : E;
  x.candidates = o.candidates;
  x.distant_pairs = o.distant_pairs;
  x.parents = *genetic::parse_parent_choice(o.parents);
  x.distance = *genetic::parse_distance(o.distance);
  x.fitness = *genetic::parse_fitness(o.fitness);
  x.merge.method = *merge::parse_method(o.merge);
  x.merge.drop_rate = o.drop_rate;
  x.merge.density = o.density;
  x.seed = o.seed;
  x.sample_elements = o.search_sample;
  return x;
}

RouterStageOptions router_stage_options(const O& o) {
  RouterStageOptions r;
  r.data_is_seed = o.seed_data.has_value();
  r.data = o.seed_data ? *o.seed_data : o.data.value_or("");
  r.fraction = o.seed_fraction;
  r.min_samples = o.seed_min;
  r.random_assignment = o.seed_assign == "random";
  r.text_source = o.tokenizer.value_or(o.adapters.empty() ? o.checkpoints.at(0) : *o.base);
  r.chat_template = o.chat_template;
  r.skip_bad = o.skip_bad;
  r.engine = engine_for_device(o.device);
  r.precision = parse_precision(o.precision);
  r.preopt.epochs = o.router_epochs;
  r.preopt.lr = o.router_lr;
  r.seq_len = o.seq_len;
  r.preopt.batch_tokens = o.batch_tokens;
  r.preopt.seed = o.seed;
  return r;
}

namespace {

// A choice among names, for the table and the checks.
template <class Parse>
void check_choice(const std::string& key, const std::string& value, Parse parse, const std::string& choices) {
  if (!parse(value)) throw OptionError(key, option_name(key) + ": '" + value + "' is not " + choices);
}

// A checkpoint index option within [0, K).
void check_index(const char* key, int i, size_t K) {
  if (i < 0 || size_t(i) >= K)
    throw OptionError(key, option_name(key) + " " + std::to_string(i) + " is not a checkpoint index (0.." + std::to_string(K - 1) + ")");
}

OptionTable<O> make_table() {
  return {
      option<O>("checkpoints", "dense checkpoints (folders, .h5 or .gguf)", [](O& o) -> auto& { return o.checkpoints; }),
      option<O>("adapters",
                "or LoRA adapter folders (PEFT) of --base, for a LoRA-MoE written as a MixLoRA folder (methods upit, "
                "sparse, btx, scratch)",
                [](O& o) -> auto& { return o.adapters; }),
      option<O>("base",
                "the model before tuning: deltas are taken from it (default: the checkpoints' mean); with --adapters, "
                "the model they adapt (required)",
                [](O& o) -> auto& { return o.base; }),
      option<O>("experts", "experts per layer (default: one per checkpoint)", [](O& o) -> auto& { return o.experts; }),
      option<O>("top_k", "experts per token", [](O& o) -> auto& { return o.top_k; }),
      option<O>("out", "output folder (or .h5 file)", [](O& o) -> auto& { return o.out; }),
      option<O>("arch",
                "the MoE made: auto (from the checkpoints: llama and mistral give mixtral, qwen2 gives qwen2_moe, qwen3 "
                "gives qwen3_moe), mixtral, qwen2_moe or qwen3_moe; refused when the checkpoints cannot make it",
                [](O& o) -> auto& { return o.arch; }),
      option<O>("shared_expert",
                "qwen2_moe: where its shared expert's FFN comes from: zero (default: the checkpoints' mean gate and up, "
                "a zero down, so it adds nothing until tuned and the MoE computes what its routed experts do), mean "
                "(the checkpoints' mean FFN), base (--base's) or checkpoint:N; its sigmoid gate's row is drawn from "
                "--seed",
                [](O& o) -> auto& { return o.shared_expert; }),
      option<O>("unnormalised_topk",
                "qwen2_moe, qwen3_moe: norm_topk_prob false, the chosen experts' softmax probabilities used as they are "
                "(Qwen2-MoE's own routing, and what llama.cpp computes for qwen2moe); by default they are renormalised "
                "to sum to 1, as Mixtral's, so that copies of one FFN compute exactly that FFN",
                [](O& o) -> auto& { return o.unnormalised_topk; }),
      option<O>("method", "upit, sparse, drop or btx; with --adapters upit, sparse, btx or scratch (LoRAMoE: new "
                          "experts with B = 0)",
                [](O& o) -> auto& { return o.method; }),
      option<O>("from", "sparse, drop: the checkpoint copied", [](O& o) -> auto& { return o.from; }),
      option<O>("drop_ratio", "drop: share of neurons re-drawn", [](O& o) -> auto& { return o.drop_ratio; }),
      option<O>("no_expand", "upit ablation: no children; E <= K checkpoints", [](O& o) -> auto& { return o.no_expand; }),
      option<O>("parents", "distant, or random (ablation)", [](O& o) -> auto& { return o.parents; }),
      option<O>("distant_pairs", "parents drawn among this many most distant pairs", [](O& o) -> auto& { return o.distant_pairs; }),
      option<O>("candidates", "children drawn and scored per round", [](O& o) -> auto& { return o.candidates; }),
      option<O>("distance", "cosine or l2, of the FFN deltas", [](O& o) -> auto& { return o.distance; }),
      option<O>("fitness",
                "what the search maximises the diversity of: weights (the FFN deltas', the paper's) or function (the "
                "experts' losses on the seed data: a dense forward pass over it per checkpoint and candidate)",
                [](O& o) -> auto& { return o.fitness; }),
      option<O>("search_sample",
                "distances measured on at most N elements of each FFN tensor (seeded 4096-element blocks, scaled up); 0: all",
                [](O& o) -> auto& { return o.search_sample; }),
      option<O>("merge", "child merge: " + merge::method_names(), [](O& o) -> auto& { return o.merge; }),
      option<O>("lora_child",
                "adapters: svd (a child merged on the dense deltas, refactored to the rank by a sketched truncated SVD) "
                "or concat (a linear merge kept exact at the parents' summed rank; --merge linear)",
                [](O& o) -> auto& { return o.lora_child; }),
      option<O>("drop_rate", "DARE's drop rate p", [](O& o) -> auto& { return o.drop_rate; }),
      option<O>("density", "TIES' kept fraction", [](O& o) -> auto& { return o.density; }),
      option<O>("shared_merge", "how shared weights merge: " + merge::method_names() + " (linear: the mean)",
                [](O& o) -> auto& { return o.shared_merge; }),
      option<O>("shared_from", "take the shared weights from this checkpoint instead", [](O& o) -> auto& { return o.shared_from; }),
      option<O>("router", "router init: upit (default for upit), hidden, or random (the others')",
                [](O& o) -> auto& { return o.router; }),
      option<O>("seed_data", "upit router: the seed data (instruction JSONL), all of it", [](O& o) -> auto& { return o.seed_data; }),
      option<O>("data", "upit router: draw the seed data from this training data", [](O& o) -> auto& { return o.data; }),
      option<O>("seed_fraction", "share of --data drawn as seed data", [](O& o) -> auto& { return o.seed_fraction; }),
      option<O>("seed_min", "at least this many seed samples", [](O& o) -> auto& { return o.seed_min; }),
      option<O>("seed_assign", "loss (each seed sample to the expert scoring it best), or random (ablation)",
                [](O& o) -> auto& { return o.seed_assign; }),
      option<O>("router_epochs", "passes of router pre-optimisation", [](O& o) -> auto& { return o.router_epochs; }),
      option<O>("router_lr", "its learning rate (AdamW, constant)", [](O& o) -> auto& { return o.router_lr; }),
      option<O>("tokenizer", "for text seed data (default: checkpoint 0's)", [](O& o) -> auto& { return o.tokenizer; }),
      option<O>("template", "chat template: auto (the model's), " + chat_format_choices(), [](O& o) -> auto& { return o.chat_template; }),
      option<O>("seq_len", std::string(kSeqLenHelp) + " (seed samples)", [](O& o) -> auto& { return o.seq_len; }),
      option<O>("batch_tokens", "tokens per pass of the router stage (the seed's scoring and the routers' pre-optimisation)",
                [](O& o) -> auto& { return o.batch_tokens; }),
      option<O>("skip_bad", "skip malformed seed data lines instead of failing", [](O& o) -> auto& { return o.skip_bad; }),
      option<O>("device", std::string("where the router stage runs: ") + kDeviceHelp, [](O& o) -> auto& { return o.device; }),
      option<O>("precision",
                "what the router stage computes in on the CPU: f32, or bf16 (bf16 weights and activations, f32 sums, on "
                "oneDNN; bf16 weights read in place, others rounded a panel at a time)",
                [](O& o) -> auto& { return o.precision; }),
      option<O>("aux_loss_coef", "router_aux_loss_coef in the config", [](O& o) -> auto& { return o.aux_loss_coef; }),
      text_option<O>(
          "dtype", "output dtype f32, bf16 or f16 (default: checkpoint 0's)", [](O& o) -> auto& { return o.dtype; },
          as_option("dtype", [](const std::string& t) { return std::optional<DType>(parse_storage_dtype(t)); }),
          [](const std::optional<DType>& t) { return t ? nlohmann::json(std::string(dtype_name(*t))) : nlohmann::json(); }),
      option<O>("fused", "write transformers v5's fused expert tensors (gate_up_proj, down_proj) instead of per-expert ones",
                [](O& o) -> auto& { return o.fused; }),
      option<O>("seed", "seed of every random choice", [](O& o) -> auto& { return o.seed; }),
      option<O>("overwrite", "replace DIR if it exists", [](O& o) -> auto& { return o.overwrite; }),
  };
}

}  // namespace

const OptionTable<ConvertOptions>& convert_option_table() {
  static const OptionTable<ConvertOptions> table = make_table();
  return table;
}

// The checks of --adapters' conversion beyond the common ones: what a LoRA-MoE can be made by.
void check_adapter_options(const O& o) {
  if (o.method == "drop")
    throw OptionError("method", option_name("method") + " drop re-draws FFN neurons, which adapters do not have: use "
                                  "scratch (new experts) or sparse");
  if (o.method == "scratch" && o.router && *o.router != "random")
    throw OptionError("router", option_name("method") + " scratch starts LoRAMoE's way, with random routers: " +
                                  option_name("router") + " must be random");
  if (o.fitness != "weights")
    throw OptionError("fitness", option_name("fitness") + " function is for checkpoints: over adapters the search "
                                   "measures the deltas' factors");
  if (o.shared_merge != "linear")
    throw OptionError("shared_merge", option_name("shared_merge") + " over adapters is linear (the terms' mean, "
                                        "brought back to the rank) or one adapter's (" + option_name("shared_from") + ")");
  check_choice("lora_child", o.lora_child, genetic::parse_lora_child, "svd or concat");
  if (o.lora_child == "concat" && o.merge != "linear")
    throw OptionError("lora_child", option_name("lora_child") + " concat keeps linear merges exact: give " +
                                      option_name("merge") + " linear");
  if (o.device != "cpu")
    throw OptionError("device", option_name("device") + ": the LoRA-MoE's router stage runs on the CPU");
  if (o.fused) throw OptionError("fused", option_name("fused") + " is a Mixtral's layout; --adapters writes a MixLoRA folder");
  if (o.dtype && *o.dtype == DType::F16)
    throw OptionError("dtype", option_name("dtype") + " for adapters is f32 or bf16");
}

void check_arch(const O& o, const ModelConfig& made, const std::filesystem::path& checkpoint) {
  if (o.arch != "auto" && o.arch != made.model_type) {
    const std::string family = made.model_type == "mixtral" ? "llama or mistral"
                                                            : made.model_type.substr(0, made.model_type.find('_'));
    throw InputError(checkpoint, "is a " + family + " checkpoint, which makes a " + made.model_type + ", not the " +
                                     o.arch + " that --arch asks for (mixtral from llama or mistral, qwen2_moe from "
                                     "qwen2, qwen3_moe from qwen3)");
  }
  if (o.shared_expert && !made.has_shared_expert())
    throw OptionError("shared_expert", option_name("shared_expert") + " is for a qwen2_moe (the MoE with a shared "
                                       "expert); these checkpoints make a " + made.model_type);
  if (o.unnormalised_topk && made.model_type == "mixtral")
    throw OptionError("unnormalised_topk", option_name("unnormalised_topk") + " is for the qwen MoEs: a mixtral always "
                                           "renormalises its top-k weights");
}

void check_convert_options(const O& o) {
  if (!o.checkpoints.empty() && !o.adapters.empty())
    throw OptionError("adapters", "give " + option_name("checkpoints") + " or " + option_name("adapters") + ", not both");
  require_option(!o.checkpoints.empty() || !o.adapters.empty(), "checkpoints");
  require_option(!o.out.empty(), "out");
  const bool adapters = !o.adapters.empty();
  if (o.arch != "auto" && o.arch != "mixtral" && o.arch != "qwen2_moe" && o.arch != "qwen3_moe")
    throw OptionError("arch", option_name("arch") + ": '" + o.arch + "' is not auto, mixtral, qwen2_moe or qwen3_moe");
  if (adapters && (o.arch == "qwen2_moe" || o.shared_expert || o.unnormalised_topk))
    throw OptionError(o.shared_expert ? "shared_expert" : o.unnormalised_topk ? "unnormalised_topk" : "arch",
                      "--adapters make a LoRA-MoE (a MixLoRA folder), which has no shared expert and renormalises "
                      "its top-k weights: a Mixtral or a Qwen3-MoE");
  if (adapters && !o.base)
    throw OptionError("base", option_name("adapters") + " adapt a model: give it as " + option_name("base"));
  const size_t K = adapters ? o.adapters.size() : o.checkpoints.size();
  const int E = o.experts.value_or(int(K));
  if (E < 1 || E > 256) throw OptionError("experts", option_name("experts") + " must lie in [1, 256]");
  if (o.top_k < 1 || o.top_k > E)
    throw OptionError("top_k", option_name("top_k") + " must lie in [1, " + option_name("experts") + "] (" + std::to_string(E) + ")");
  check_choice("merge", o.merge, merge::parse_method, "one of " + merge::method_names());
  check_choice("shared_merge", o.shared_merge, merge::parse_method, "one of " + merge::method_names());
  if (!(o.drop_rate >= 0 && o.drop_rate < 1)) throw OptionError("drop_rate", option_name("drop_rate") + " must lie in [0, 1)");
  if (!(o.density > 0 && o.density <= 1)) throw OptionError("density", option_name("density") + " must lie in (0, 1]");
  if (o.shared_from) check_index("shared_from", *o.shared_from, K);
  if (o.shared_expert) {
    const auto shared = parse_shared_expert(*o.shared_expert);
    if (!shared)
      throw OptionError("shared_expert", option_name("shared_expert") + ": '" + *o.shared_expert +
                                             "' is not zero, mean, base or checkpoint:N");
    if (shared->from == SharedExpertSource::From::Checkpoint) check_index("shared_expert", shared->checkpoint, K);
    if (shared->from == SharedExpertSource::From::Base && !o.base)
      throw OptionError("shared_expert", option_name("shared_expert") + " base takes the FFN of " +
                                             option_name("base") + ": give it");
  }
  const std::string router = router_init(o);
  if (router != "random" && router != "upit" && router != "hidden")
    throw OptionError("router", option_name("router") + " must be upit, hidden or random");
  if (o.precision != "f32" && o.precision != "bf16")
    throw OptionError("precision", option_name("precision") + " must be f32 or bf16");
  if (o.device != "cpu" && o.precision != "f32")
    throw OptionError("precision", option_name("precision") + " is the CPU's: " + option_name("device") + " " + o.device +
                                       " computes in its own (bf16)");
  if (uses_seed_data(o)) {
    if (!o.seed_data && !o.data) {
      const std::string what = router != "random" ? "the " + router + " router is fitted"
                                                  : option_name("fitness") + " function scores the experts";
      throw OptionError(router != "random" ? "seed_data" : "fitness", what + " on seed data: give " + option_name("seed_data") +
                                                                          " or " + option_name("data"));
    }
    if (o.seed_assign != "loss" && o.seed_assign != "random")
      throw OptionError("seed_assign", option_name("seed_assign") + " must be loss or random");
    if (!(o.seed_fraction > 0 && o.seed_fraction <= 1) || o.seed_min < 1)
      throw OptionError("seed_fraction", option_name("seed_fraction") + " must lie in (0, 1] and " + option_name("seed_min") + " be positive");
    if (o.router_epochs < 1 || !(o.router_lr > 0) || (o.seq_len && *o.seq_len < 2) || o.batch_tokens < 1)
      throw OptionError("router_epochs", option_name("router_epochs") + ", " + option_name("router_lr") + ", " + option_name("seq_len") +
                                             " (>= 2) and " + option_name("batch_tokens") + " must be positive");
  }
  if (adapters) check_adapter_options(o);
  if (o.method == "upit") {
    if (o.no_expand && E > int(K))
      throw OptionError("no_expand", option_name("no_expand") + " keeps the checkpoints as they are: " + option_name("experts") +
                                         " must be at most " + std::to_string(K));
    if (K < 2 && E > int(K))
      throw OptionError("checkpoints", option_name("method") + " upit makes " + std::to_string(E) + " experts (" +
                                           option_name("experts") + ") by merging pairs of checkpoints: give two or more " +
                                           option_name("checkpoints") + ", or use " + option_name("method") +
                                           " sparse or drop");
    if (o.candidates < 1 || o.distant_pairs < 1)
      throw OptionError("candidates", option_name("candidates") + " and " + option_name("distant_pairs") + " must be positive");
    check_choice("parents", o.parents, genetic::parse_parent_choice, "distant or random");
    check_choice("distance", o.distance, genetic::parse_distance, "cosine or l2");
    check_choice("fitness", o.fitness, genetic::parse_fitness, "weights or function");
  } else if (o.method == "sparse" || o.method == "drop") {
    check_index("from", o.from, K);
    if (o.method == "drop" && !(o.drop_ratio > 0 && o.drop_ratio <= 1))
      throw OptionError("drop_ratio", option_name("drop_ratio") + " must lie in (0, 1]");
  } else if (o.method == "scratch" && adapters) {  // nothing beyond the common checks
  } else if (o.method == "btx") {
    if (E != int(K))
      throw OptionError("experts", option_name("method") + " btx makes one expert per checkpoint: " + option_name("experts") +
                                       " must be " + std::to_string(K));
  } else {
    throw OptionError("method", option_name("method") + (adapters ? " must be upit, sparse, btx or scratch"
                                                                   : " must be upit, sparse, drop or btx"));
  }
}

void convert(const O& o) {
  if (!o.adapters.empty()) return convert_adapters(o);
  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::vector<const Checkpoint*> ckpts;
  for (const auto& path : o.checkpoints) {
    owned.push_back(open_checkpoint(path));
    ckpts.push_back(owned.back().get());
  }
  std::unique_ptr<Checkpoint> base;
  if (o.base) base = open_checkpoint(*o.base);
  if (!o.base && o.method == "upit" && ckpts.size() > 1)
    spdlog::warn("no --base: the experts' deltas are taken from the checkpoints' mean, which they sum to zero around, so "
                 "every pair looks far apart; give the model the dense run started from");
  const pool::FfnSource source(ckpts, base.get());
  Plan p = plan(o, int(source.size()));
  check_arch(o, moe_config(source, p.search ? p.search->experts : int(p.pool.size()), p.assembly), ckpts[0]->path());
  require(o.overwrite || !std::filesystem::exists(o.out), o.out, "already exists (pass --overwrite to replace it)");
  // A search that grows the pool runs while the rest of the MoE is written, unless a router stage
  // needs the whole pool first.
  const bool overlap = p.search && p.search->experts > int(source.size()) && p.router == "random";
  const int experts = p.search ? p.search->experts : int(p.pool.size());
  RouterStageOptions ro = router_stage_options(o);
  const std::filesystem::path out = o.out.has_filename() ? o.out : o.out.parent_path();  // "dir/" is dir
  ro.scratch = out.string() + ".router-stage";
  if (const auto available = available_memory(); available && p.router != "random" && ro.engine != make_cpu_engine)
    check_router_memory(moe_config(source, experts, p.assembly), ckpts[0]->config(), *available, ckpts[0]->path());
  ro.hidden = p.router == "hidden";
  std::optional<TokenizedData> seed;
  if (uses_seed_data(o)) seed = read_seed_data(ro, source.checkpoint(0).config());
  if (p.search && p.search->fitness == genetic::Fitness::Function) {  // the scorer lives as long as the search needs it
    auto scorer = std::make_shared<const SeedScorer>(source, p.assembly, ro.engine, *seed,
                                                     model_seq_len(o.seq_len, source.checkpoint(0).config()), o.batch_tokens);
    p.search->seed_losses = [scorer](const Pool& pool, size_t e) { return (*scorer)(pool, e); };
  }
  if (p.search && !overlap) {
    p.pool = search(p, source, p.report);
    p.search->seed_losses = {};  // its weights go before the router stage loads the MoE
  }

  WriteOptions w;
  w.overwrite = o.overwrite;
  w.dtype = o.dtype ? *o.dtype : output_dtype(ckpts[0]->tensors()[0].stored_dtype(), {});
  ro.scratch_dtype = w.dtype;
  std::shared_future<Pool> searched;
  // Written after the weights; the search's part of it once the search is done.
  GeneratedFile report{"upcycle_convert.json", [&]() -> std::optional<std::string> {
                         if (searched.valid()) searched.wait();
                         return p.report.dump(2) + "\n";
                       }};
  std::unique_ptr<Checkpoint> moe;
  if (p.router != "random") {  // the MoE the routers were fitted on is the one written
    moe = moe_with_fitted_routers(source, p.pool, p.assembly, ro, *seed, p.report, {report});
  } else if (overlap) {
    p.search->progress = false;  // the writer's progress line is the one shown
    searched = std::async(std::launch::async, [&] { return search(p, source, p.report); }).share();
    moe = assemble_moe(source, PendingPool{size_t(p.search->experts), p.pool, searched}, p.assembly, {report});
  } else {
    moe = assemble_moe(source, p.pool, p.assembly, {report});
  }
  write_checkpoint(*moe, o.out, w);
  if (overlap) p.pool = searched.get();
  spdlog::info("wrote a {} of {} experts, top-{}, to {}", moe->config().model_type, p.pool.size(), p.assembly.top_k,
               o.out.string());
}

}  // namespace upcycle
