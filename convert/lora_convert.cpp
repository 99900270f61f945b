#include "convert/lora_convert.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "convert/router_stage.hpp"
#include "core/error.hpp"
#include "core/staged_path.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/peft_adapter.hpp"
#include "genetic/lora_expand.hpp"
#include "router/preopt.hpp"
#include "trainer/batches.hpp"
#include "trainer/engine.hpp"
#include "trainer/lora_init.hpp"

namespace upcycle {

namespace {

using merge::LowRankFactors;
using O = ConvertOptions;

constexpr const char* kFfnModules[genetic::kLoraFfnModules] = {"gate_proj", "up_proj", "down_proj"};

// The adapters read against the base, each term as factors with its scale folded into B (scale 1).
struct AdapterPool {
  std::vector<LoraConfig> configs;
  // [adapter][(layer, module)]: the adapter's term there
  std::vector<std::map<std::pair<int64_t, std::string>, LowRankFactors>> terms;
  int64_t rank = 0;                  // the largest
  std::vector<std::string> targets;  // every module any adapter adapts, in the modules' order
};

AdapterPool read_pool(const std::vector<std::filesystem::path>& dirs, const ModelConfig& base) {
  AdapterPool p;
  for (const auto& dir : dirs) {
    LoraAdapter a = read_peft_adapter(dir, base);
    require(!a.config.is_moe(), dir / "adapter_config.json",
            "is a MixLoRA folder (a LoRA-MoE already): --adapters takes the plain LoRA adapters of a dense run");
    auto& terms = p.terms.emplace_back();
    const double scale = a.config.scaling();
    for (const LoraModule& m : a.modules) {
      LowRankFactors f{m.a.to_f32_vector(), m.b.to_f32_vector(), m.a.shape()[0], 1.0};
      for (float& x : f.b) x = float(x * scale);
      terms.emplace(std::make_pair(m.layer, m.module), std::move(f));
    }
    p.rank = std::max(p.rank, a.config.rank);
    p.configs.push_back(a.config);
  }
  for (const std::string& m : lora_module_names())
    for (const LoraConfig& c : p.configs)
      if (std::find(c.target_modules.begin(), c.target_modules.end(), m) != c.target_modules.end()) {
        p.targets.push_back(m);
        break;
      }
  return p;
}

// [out, in] of a module of the base.
std::array<int64_t, 2> module_shape(const ModelConfig& base, const std::string& module) {
  const Shape s = *lora_module_shape(base, module);
  return {s[0], s[1]};
}

// A zero term of rank 1 on a module of the base: what an adapter without the module adds.
LowRankFactors zero_term(const std::string& module, const ModelConfig& base) {
  const auto [out, in] = module_shape(base, module);
  return {std::vector<float>(size_t(in), 0.0f), std::vector<float>(size_t(out), 0.0f), 1, 1.0};
}

// Adapter k's term on (layer, module), or a zero term where it has none.
LowRankFactors term_or_zero(const AdapterPool& p, size_t k, int64_t layer, const std::string& module,
                            const ModelConfig& base) {
  const auto it = p.terms[k].find({layer, module});
  return it != p.terms[k].end() ? it->second : zero_term(module, base);
}

// The FFN terms of every adapter, moved out of p (the experts' terms are the pool's from here on;
// p keeps the shared ones): the expert search's pool.
genetic::LoraFfnPool ffn_pool(AdapterPool& p, const ModelConfig& base) {
  genetic::LoraFfnPool pool;
  pool.layers = int(base.num_hidden_layers);
  pool.rank = p.rank;
  for (int m = 0; m < genetic::kLoraFfnModules; ++m) pool.shapes[size_t(m)] = module_shape(base, kFfnModules[m]);
  for (auto& terms : p.terms) {
    genetic::LoraTerms& e = pool.experts.emplace_back();
    for (int64_t l = 0; l < base.num_hidden_layers; ++l)
      for (const char* m : kFfnModules) {
        auto node = terms.extract({l, m});
        e.push_back(node ? std::move(node.mapped()) : zero_term(m, base));
      }
  }
  return pool;
}

// The shared (attention) term of (layer, module): adapter `from`'s, or the adapters' mean brought
// back to the rank; `discarded` gets the largest share of energy a mean dropped.
LowRankFactors shared_term(const AdapterPool& p, std::optional<int> from, int64_t layer, const std::string& module,
                           const ModelConfig& base, double& discarded) {
  if (from) return term_or_zero(p, size_t(*from), layer, module, base);
  std::vector<merge::LowRankView> views;  // the adapters that have the module
  for (const auto& terms : p.terms)
    if (const auto it = terms.find({layer, module}); it != terms.end()) views.push_back(it->second.view());
  const std::vector<double> weights(views.size(), 1.0 / double(p.terms.size()));  // absent: a zero term
  const auto [out, in] = module_shape(base, module);
  LowRankFactors mean = merge::truncate_sum(views, weights, out, in, std::min({p.rank, out, in}), 1.0);
  discarded = std::max(discarded, mean.discarded);
  return mean;
}

// A term as an adapter's A [rank, in] and B [out, rank] (f32, or `dtype`), zero-padded to `rank`
// (exact: the padding adds nothing), its scale folded into B.
std::pair<Tensor, Tensor> padded(const LowRankFactors& f, int64_t rank, int64_t out, int64_t in, DType dtype) {
  std::vector<float> a(size_t(rank * in), 0.0f), b(size_t(out * rank), 0.0f);
  std::copy(f.a.begin(), f.a.end(), a.begin());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < f.rank; ++j) b[size_t(o * rank + j)] = float(f.scale * f.b[size_t(o * f.rank + j)]);
  return {Tensor::from_f32({rank, in}, std::move(a)).to(dtype), Tensor::from_f32({out, rank}, std::move(b)).to(dtype)};
}

// The experts' FFN terms by method (none for scratch, whose experts are fresh), in the report.
std::vector<genetic::LoraTerms> choose_experts(const O& o, const genetic::LoraFfnPool& pool, nlohmann::ordered_json& report) {
  const int K = int(pool.experts.size()), E = o.experts.value_or(K);
  std::vector<genetic::LoraTerms> experts;
  pool::Pool recipes;
  std::vector<double> discarded;
  if (o.method == "upit") {
    const genetic::ExpansionOptions x = expansion_options(o, K);
    genetic::LoraExpansion found = genetic::expand_lora_pool(pool, x, *genetic::parse_lora_child(o.lora_child));
    report["distance"] = genetic::distance_name(x.distance);
    report["distances_before"] = found.before;
    report["distances_after"] = found.after;
    experts = std::move(found.experts);
    recipes = std::move(found.pool);
    discarded = std::move(found.discarded);
  } else if (o.method == "sparse") {
    for (int e = 0; e < E; ++e) recipes.push_back({o.from}), experts.push_back(pool.experts[size_t(o.from)]);
  } else if (o.method == "btx") {
    for (int k = 0; k < K; ++k) recipes.push_back({k}), experts.push_back(pool.experts[size_t(k)]);
  }
  discarded.resize(recipes.size(), 0.0);
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (size_t e = 0; e < recipes.size(); ++e) {
    nlohmann::ordered_json j = recipe_json(recipes[e]);
    if (recipes[e].is_child()) j["discarded"] = discarded[e];
    list.push_back(std::move(j));
  }
  if (o.method == "scratch")
    for (int e = 0; e < E; ++e) list.push_back({{"describe", "new (A drawn, B = 0)"}});
  report["pool"] = list;
  return experts;
}

// The LoRA-MoE: `fresh` (init_lora_adapter's: scratch experts, random routers) with its shared
// terms and, unless scratch, its experts' terms in place.
void fill(LoraAdapter& fresh, const AdapterPool& p, const std::vector<genetic::LoraTerms>& experts, const O& o,
          const ModelConfig& base, DType dtype, nlohmann::ordered_json& report) {
  const std::optional<int> from = o.method == "sparse" ? std::optional<int>(o.from) : o.shared_from;
  double shared_discarded = 0;
  for (LoraModule& m : fresh.modules) {
    const auto [out, in] = module_shape(base, m.module);
    const LowRankFactors* term = nullptr;
    LowRankFactors shared;
    if (m.expert < 0) {
      shared = shared_term(p, from, m.layer, m.module, base, shared_discarded);
      term = &shared;
    } else if (!experts.empty()) {
      const int module = int(std::find(std::begin(kFfnModules), std::end(kFfnModules), m.module) - std::begin(kFfnModules));
      term = &experts[size_t(m.expert)][size_t(m.layer * genetic::kLoraFfnModules + module)];
    }
    if (term) std::tie(m.a, m.b) = padded(*term, fresh.config.rank, out, in, dtype);
  }
  report["shared"] = from ? "adapter " + std::to_string(*from) : std::string("mean");
  report["shared_discarded"] = shared_discarded;
  if (!from && p.terms.size() > 1)
    spdlog::info("shared terms: the adapters' mean at rank {} ({:.2f}% of a term's energy dropped at most)",
                 fresh.config.rank, 100 * shared_discarded);
}

// Expert e's dense LoRA: the shared terms and expert e's FFN terms, as a plain adapter.
LoraAdapter expert_adapter(const LoraAdapter& moe, int64_t e) {
  LoraAdapter a{moe.config, {}, {}};
  a.config.experts = a.config.top_k = 0;
  for (const LoraModule& m : moe.modules)
    if (m.expert < 0 || m.expert == e) a.modules.push_back({m.layer, m.module, m.a, m.b, -1});
  return a;
}

// The routers fitted on the seed data (upit, hidden) in place of moe's random ones.
void fit_lora_routers(const Checkpoint& base, LoraAdapter& moe, const ModelConfig& moe_config,
                      const RouterStageOptions& ro, nlohmann::ordered_json& report) {
  const TokenizedData seed = read_seed_data(ro, base.config());
  // The base as stored (mapped), held by the experts' engines alone: fit_routers drops them before
  // the LoRA-MoE's engine maps it again.
  RouterStageEngines engines{
      [&, stored = std::make_shared<StoredWeights>(load_stored_weights(base, ro.precision))](int e) {
        StoredWeights w = *stored;  // views: the base is not copied
        apply_adapter(w, expert_adapter(moe, e));
        return make_cpu_stored_engine(base.config(), std::move(w), "<expert " + std::to_string(e) + "'s dense LoRA model>");
      },
      [&] { return make_cpu_lora_engine(base, moe, router::router_training().adam, ro.precision, true); }};
  RouterStageParts parts;
  std::vector<std::vector<float>> routers = fit_routers(moe_config, std::move(engines), seed, ro, report, parts);
  for (size_t l = 0; l < routers.size(); ++l)
    moe.routers[l] = Tensor::from_f32(moe.routers[l].shape(), std::move(routers[l]));
}

// The LoRA-MoE of the pool's adapters, its routers random: the search's experts (or the
// method's), the shared terms, the config `c` completed with the rank. The pool, the search's
// terms and the experts chosen go when it returns, before the router stage holds the LoRA-MoE
// twice (its tensors and its engine's f32 terms): at 7B they are gigabytes.
LoraAdapter assemble(AdapterPool p, LoraConfig& c, const O& o, const ModelConfig& config,
                     nlohmann::ordered_json& report) {
  const genetic::LoraFfnPool pool = ffn_pool(p, config);
  const std::vector<genetic::LoraTerms> experts = choose_experts(o, pool, report);
  c.rank = p.rank;
  for (const auto& e : experts)
    for (const LowRankFactors& t : e) c.rank = std::max(c.rank, t.rank);  // concatenated children's
  c.alpha = double(c.rank);  // a scaling of 1: every scale is folded into B
  report["rank"] = c.rank;
  LoraAdapter moe = init_lora_adapter(config, c, o.seed);  // scratch experts and random routers
  fill(moe, p, experts, o, config, o.dtype.value_or(DType::F32), report);
  return moe;
}

}  // namespace

void convert_adapters(const O& o) {
  const std::unique_ptr<Checkpoint> base = open_checkpoint(*o.base);
  const ModelConfig& config = base->config();
  AdapterPool p = read_pool(o.adapters, config);
  const int K = int(o.adapters.size()), E = o.experts.value_or(K);
  LoraConfig c;
  c.target_modules = p.targets;
  c.experts = E;
  c.top_k = o.top_k;
  c.aux_loss_coef = o.aux_loss_coef;
  c.dropout = p.configs[0].dropout;
  c.base_model = p.configs[0].base_model.empty() ? o.base->string() : p.configs[0].base_model;
  require(std::any_of(c.target_modules.begin(), c.target_modules.end(), lora_module_per_expert),
          o.adapters[0] / "adapter_config.json",
          "no adapter of --adapters adapts an FFN module (gate_proj, up_proj, down_proj): the experts would not differ");
  require(o.overwrite || !std::filesystem::exists(o.out), o.out, "already exists (pass --overwrite to replace it)");
  // InputError for a base that cannot be a LoRA-MoE.
  const ModelConfig moe_config = lora_moe_config(config, E, o.top_k, c.aux_loss_coef, *o.base);
  check_arch(o, moe_config, *o.base);

  const std::string router = router_init(o);
  nlohmann::ordered_json report = {{"method", o.method}, {"experts", E}, {"top_k", o.top_k}, {"seed", o.seed},
                                   {"router", router}};
  nlohmann::ordered_json adapters = nlohmann::ordered_json::array();
  for (size_t k = 0; k < o.adapters.size(); ++k)
    adapters.push_back({{"path", o.adapters[k].string()}, {"rank", p.configs[k].rank}, {"scaling", p.configs[k].scaling()}});
  report["adapters"] = adapters;
  LoraAdapter moe = assemble(std::move(p), c, o, config, report);
  if (router != "random") {
    RouterStageOptions ro = router_stage_options(o);
    ro.hidden = router == "hidden";
    fit_lora_routers(*base, moe, moe_config, ro, report);
  }

  StagedPath staged(o.out, o.overwrite);
  staged.run([&] {
    std::filesystem::create_directory(staged.temp());
    write_peft_adapter_files(moe, staged.temp());
    write_text_file(staged.temp() / "upcycle_convert.json", report.dump(2) + "\n");
  });
  staged.commit();
  spdlog::info("wrote a LoRA-MoE (MixLoRA folder) of {} experts, top-{}, rank {}, to {}", E, o.top_k, c.rank, o.out.string());
}

}  // namespace upcycle
