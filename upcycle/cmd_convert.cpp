// `upcycle convert`: dense checkpoints into a Mixtral MoE, by UpIT (expert expansion through
// merging and a genetic search) or by a baseline (sparse upcycling, drop-upcycling, BTX).
#include <filesystem>
#include <future>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "convert/assemble.hpp"
#include "convert/router_stage.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "genetic/expand.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

using pool::Pool;

merge::Method merge_method(const std::string& name, const char* option) {
  const auto m = merge::parse_method(name);
  if (!m) throw UsageError(std::string(option) + ": '" + name + "' is not one of " + merge::method_names());
  return *m;
}

std::string matrix_text(const std::vector<std::vector<double>>& m) {
  std::string out;
  for (const auto& row : m) {
    out += "\n   ";
    for (double v : row) out += fmt::format(" {:7.4f}", v);
  }
  return out;
}

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
  report["pool"] = pool_json(x.pool);
  return x.pool;
}

int checkpoint_index(const cli::po::variables_map& vm, const char* name, size_t count) {
  const int i = vm[name].as<int>();
  if (i < 0 || size_t(i) >= count) throw UsageError(std::string("--") + name + " " + std::to_string(i) + " is not a checkpoint index (0.." + std::to_string(count - 1) + ")");
  return i;
}

Plan plan(const cli::po::variables_map& vm, const pool::FfnSource& source) {
  Plan p;
  const std::string method = vm["method"].as<std::string>();
  const int K = int(source.size());
  const int E = vm.count("experts") ? vm["experts"].as<int>() : K;
  if (E < 1 || E > 256) throw UsageError("--experts must lie in [1, 256]");
  const uint64_t seed = vm["seed"].as<uint64_t>();
  AssemblyOptions& a = p.assembly;
  a.top_k = vm["top-k"].as<int>();
  a.fused = vm.count("fused") > 0;
  a.aux_loss_coef = vm["aux-loss-coef"].as<double>();
  a.seed = seed;
  a.child_merge.method = merge_method(vm["merge"].as<std::string>(), "--merge");
  a.child_merge.drop_rate = vm["drop-rate"].as<double>();
  a.child_merge.density = vm["density"].as<double>();
  if (!(a.child_merge.drop_rate >= 0 && a.child_merge.drop_rate < 1)) throw UsageError("--drop-rate must lie in [0, 1)");
  if (!(a.child_merge.density > 0 && a.child_merge.density <= 1)) throw UsageError("--density must lie in (0, 1]");
  a.shared_merge.method = merge_method(vm["shared-merge"].as<std::string>(), "--shared-merge");
  if (vm.count("shared-from")) a.shared_from = checkpoint_index(vm, "shared-from", source.size());
  const std::string router = vm.count("router") ? vm["router"].as<std::string>() : method == "upit" ? "upit" : "random";
  if (router != "random" && router != "upit" && router != "hidden")
    throw UsageError("--router must be upit, hidden or random");
  if (router != "random" && !vm.count("seed-data") && !vm.count("data"))
    throw UsageError("the " + router + " router is fitted on seed data: give --seed-data or --data (or --router random)");
  p.router = router;
  p.report = {{"method", method}, {"experts", E}, {"top_k", a.top_k}, {"seed", seed}, {"router", router}};

  if (method == "upit") {
    genetic::ExpansionOptions o;
    o.experts = vm.count("no-expand") ? std::min(E, K) : E;
    if (vm.count("no-expand") && E > K) throw UsageError("--no-expand keeps the checkpoints as they are: --experts must be at most " + std::to_string(K));
    o.candidates = vm["candidates"].as<int>();
    o.distant_pairs = vm["distant-pairs"].as<int>();
    if (o.candidates < 1 || o.distant_pairs < 1) throw UsageError("--candidates and --distant-pairs must be positive");
    const auto parents = genetic::parse_parent_choice(vm["parents"].as<std::string>());
    if (!parents) throw UsageError("--parents must be distant or random");
    o.parents = *parents;
    const auto distance = genetic::parse_distance(vm["distance"].as<std::string>());
    if (!distance) throw UsageError("--distance must be cosine or l2");
    o.distance = *distance;
    o.merge = a.child_merge;
    o.seed = seed;
    o.sample_elements = vm["search-sample"].as<uint64_t>();
    p.search = o;
    if (o.experts > K)
      for (int k = 0; k < K; ++k) p.pool.push_back({k});  // the search keeps them, in order, and adds children
  } else if (method == "sparse" || method == "drop") {
    const int from = checkpoint_index(vm, "from", source.size());
    a.shared_from = from;
    const double ratio = vm["drop-ratio"].as<double>();
    if (method == "drop" && !(ratio > 0 && ratio <= 1)) throw UsageError("--drop-ratio must lie in (0, 1]");
    for (int e = 0; e < E; ++e) {
      pool::ExpertRecipe r{from};
      if (method == "drop") r.redraw = ratio, r.seed = Rng::stream(seed, "drop-upcycling expert " + std::to_string(e)).next();
      p.pool.push_back(r);
    }
  } else if (method == "btx") {
    if (E != K) throw UsageError("--method btx makes one expert per checkpoint: --experts must be " + std::to_string(K));
    for (int k = 0; k < K; ++k) p.pool.push_back({k});
  } else {
    throw UsageError("--method must be upit, sparse, drop or btx");
  }
  if (!p.search) p.report["pool"] = pool_json(p.pool);
  return p;
}

RouterStageOptions router_options(const cli::po::variables_map& vm) {
  RouterStageOptions o;
  o.data_is_seed = vm.count("seed-data") > 0;
  o.data = vm[o.data_is_seed ? "seed-data" : "data"].as<std::string>();
  o.fraction = vm["seed-fraction"].as<double>();
  o.min_samples = vm["seed-min"].as<int64_t>();
  if (!(o.fraction > 0 && o.fraction <= 1) || o.min_samples < 1)
    throw UsageError("--seed-fraction must lie in (0, 1] and --seed-min be positive");
  o.text_source = vm.count("tokenizer") ? vm["tokenizer"].as<std::string>()
                                        : vm["checkpoints"].as<std::vector<std::string>>()[0];
  o.chat_template = vm["template"].as<std::string>();
  o.skip_bad = vm.count("skip-bad") > 0;
  o.engine = engine_for_device(vm["device"].as<std::string>());
  o.preopt.epochs = vm["router-epochs"].as<int64_t>();
  o.preopt.lr = vm["router-lr"].as<double>();
  o.preopt.seq_len = vm["seq-len"].as<int64_t>();
  o.preopt.batch_tokens = vm["batch-tokens"].as<int64_t>();
  o.preopt.seed = vm["seed"].as<uint64_t>();
  if (o.preopt.epochs < 1 || !(o.preopt.lr > 0) || o.preopt.seq_len < 2 || o.preopt.batch_tokens < 1)
    throw UsageError("--router-epochs, --router-lr, --seq-len (>= 2) and --batch-tokens must be positive");
  return o;
}

}  // namespace

int cmd_convert(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle convert --checkpoints P1 P2 ... [--base P0] --experts E --top-k K --out DIR [options]";
  spec.summary =
      "Turns dense checkpoints of one llama or mistral model into a Mixtral MoE (a Hugging Face folder,\n"
      "or HDF5 when DIR ends in .h5), streaming one tensor at a time.\n"
      "  upit    (default) the checkpoints' FFNs as experts; when E exceeds their number K, children\n"
      "          grown by a genetic search (parents among the most distant pairs, random weights\n"
      "          a + b = 1, a DARE merge of their deltas from the base, the candidate that makes the\n"
      "          most diverse pool kept each round); when E <= K, the E checkpoints farthest apart.\n"
      "  sparse  every expert a copy of checkpoint --from (sparse upcycling).\n"
      "  drop    copies with --drop-ratio of each expert's neurons re-drawn (drop-upcycling).\n"
      "  btx     one expert per checkpoint (Branch-Train-MiX).\n"
      "Shared weights (embeddings, attention, norms, head): the mean of the checkpoints by default\n"
      "(--shared-merge, --shared-from); sparse and drop take them from --from.\n"
      "Routers: upit (the default for upit) scores seed data (--seed-data, or a share of --data)\n"
      "under every expert's own dense model, gives each sample to the expert with the lowest loss\n"
      "on its response, then trains the routers alone on 0.5 x LM loss + 0.5 x BCE toward those\n"
      "experts; hidden sets expert e's row to the unit-length mean router input of its seed samples\n"
      "under its own dense model (mergekit's hidden gate mode); random is normal(0, 0.02).\n"
      "DIR also gets upcycle_convert.json: the pool's recipes,\n"
      "distances and the router stage's figures.\n"
      "A fixed --seed gives byte-identical files.";
  spec.options.add_options()
      ("checkpoints", cli::po::value<std::vector<std::string>>()->multitoken()->required(), "dense checkpoints (folders, .h5 or .gguf)")
      ("base", cli::po::value<std::string>(), "the model before tuning: deltas are taken from it (default: the checkpoints' mean)")
      ("experts", cli::po::value<int>(), "experts per layer (default: one per checkpoint)")
      ("top-k", cli::po::value<int>()->default_value(2), "experts per token")
      ("out", cli::po::value<std::string>()->required(), "output folder (or .h5 file)")
      ("method", cli::po::value<std::string>()->default_value("upit"), "upit, sparse, drop or btx")
      ("from", cli::po::value<int>()->default_value(0), "sparse, drop: the checkpoint copied")
      ("drop-ratio", cli::po::value<double>()->default_value(0.5), "drop: share of neurons re-drawn")
      ("no-expand", "upit ablation: no children; E <= K checkpoints")
      ("parents", cli::po::value<std::string>()->default_value("distant"), "distant, or random (ablation)")
      ("distant-pairs", cli::po::value<int>()->default_value(3), "parents drawn among this many most distant pairs")
      ("candidates", cli::po::value<int>()->default_value(8), "children drawn and scored per round")
      ("distance", cli::po::value<std::string>()->default_value("cosine"), "cosine or l2, of the FFN deltas")
      ("search-sample", cli::po::value<uint64_t>()->default_value(genetic::ExpansionOptions{}.sample_elements), "distances measured on at most N elements of each FFN tensor (seeded 4096-element blocks, scaled up); 0: all")
      ("merge", cli::po::value<std::string>()->default_value("dare"), ("child merge: " + merge::method_names()).c_str())
      ("drop-rate", cli::po::value<double>()->default_value(0.5), "DARE's drop rate p")
      ("density", cli::po::value<double>()->default_value(0.5), "TIES' kept fraction")
      ("shared-merge", cli::po::value<std::string>()->default_value("linear"), ("how shared weights merge: " + merge::method_names() + " (linear: the mean)").c_str())
      ("shared-from", cli::po::value<int>(), "take the shared weights from this checkpoint instead")
      ("router", cli::po::value<std::string>(), "router init: upit (default for upit), hidden, or random (the others')")
      ("seed-data", cli::po::value<std::string>(), "upit router: the seed data (instruction JSONL), all of it")
      ("data", cli::po::value<std::string>(), "upit router: draw the seed data from this training data")
      ("seed-fraction", cli::po::value<double>()->default_value(0.01), "share of --data drawn as seed data")
      ("seed-min", cli::po::value<int64_t>()->default_value(100), "at least this many seed samples")
      ("router-epochs", cli::po::value<int64_t>()->default_value(4), "passes of router pre-optimisation")
      ("router-lr", cli::po::value<double>()->default_value(1e-3), "its learning rate (AdamW, constant)")
      ("tokenizer", cli::po::value<std::string>(), "for text seed data (default: checkpoint 0's)")
      ("template", cli::po::value<std::string>()->default_value("auto"), "chat template: auto, chatml, llama2, alpaca")
      ("seq-len", cli::po::value<int64_t>()->default_value(2048), "seed samples longer than this are cut")
      ("batch-tokens", cli::po::value<int64_t>()->default_value(4096), "tokens per micro-batch of the router stage")
      ("skip-bad", "skip malformed seed data lines instead of failing")
      ("device", cli::po::value<std::string>()->default_value("cpu"), (std::string("where the router stage runs: ") + kDeviceHelp).c_str())
      ("aux-loss-coef", cli::po::value<double>()->default_value(0.01), "router_aux_loss_coef in the config")
      ("dtype", cli::po::value<std::string>(), "output dtype f32, bf16 or f16 (default: checkpoint 0's)")
      ("fused", "write transformers v5's fused expert tensors (gate_up_proj, down_proj) instead of per-expert ones")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "seed of every random choice")
      ("overwrite", "replace DIR if it exists");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;

  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::vector<const Checkpoint*> ckpts;
  for (const std::string& p : (*vm)["checkpoints"].as<std::vector<std::string>>()) {
    owned.push_back(open_checkpoint(p));
    ckpts.push_back(owned.back().get());
  }
  std::unique_ptr<Checkpoint> base;
  if (vm->count("base")) base = open_checkpoint((*vm)["base"].as<std::string>());
  const pool::FfnSource source(ckpts, base.get());
  Plan p = plan(*vm, source);
  const std::string out = (*vm)["out"].as<std::string>();
  const bool overwrite = vm->count("overwrite") > 0;
  require(overwrite || !std::filesystem::exists(out), out, "already exists (pass --overwrite to replace it)");
  // A search that grows the pool runs while the rest of the MoE is written, unless a router stage
  // needs the whole pool first.
  const bool overlap = p.search && p.search->experts > int(source.size()) && p.router == "random";
  const int experts = p.search ? p.search->experts : int(p.pool.size());
  if (const auto available = available_memory(); available && p.router != "random")
    check_router_memory(moe_config(source, experts, p.assembly), ckpts[0]->config(), *available, ckpts[0]->path());
  if (p.search && !overlap) p.pool = search(p, source, p.report);
  if (p.router != "random") {
    RouterStageOptions ro = router_options(*vm);
    ro.hidden = p.router == "hidden";
    p.assembly.routers = fit_routers(source, p.pool, p.assembly, ro, p.report);
  }

  WriteOptions w;
  w.overwrite = overwrite;
  w.dtype = vm->count("dtype") ? cli::parse_output_dtype((*vm)["dtype"].as<std::string>(), "--dtype")
                               : output_dtype(ckpts[0]->tensors()[0].stored_dtype(), {});
  std::shared_future<Pool> searched;
  if (overlap) {
    p.search->progress = false;  // the writer's progress line is the one shown
    searched = std::async(std::launch::async, [&] { return search(p, source, p.report); }).share();
  }
  // Written after the weights; the search's part of it once the search is done.
  GeneratedFile report{"upcycle_convert.json", [&]() -> std::optional<std::string> {
                         if (searched.valid()) searched.wait();
                         return p.report.dump(2) + "\n";
                       }};
  auto moe = overlap ? assemble_moe(source, PendingPool{size_t(p.search->experts), p.pool, searched}, p.assembly, {report})
                     : assemble_moe(source, p.pool, p.assembly, {report});
  write_checkpoint(*moe, out, w);
  if (overlap) p.pool = searched.get();
  spdlog::info("wrote a mixtral of {} experts, top-{}, to {}", p.pool.size(), p.assembly.top_k, out);
  return 0;
}

}  // namespace upcycle
