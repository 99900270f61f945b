#include "convert/router_stage.hpp"

#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "core/stopwatch.hpp"
#include "core/tensor_names.hpp"
#include "data/instruction_data.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "genetic/distance.hpp"
#include "router/assign.hpp"
#include "router/hidden_init.hpp"
#include "router/preopt.hpp"
#include "router/seed_data.hpp"
#include "trainer/batches.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

TokenizedData read_seed_data(const RouterStageOptions& o, const ModelConfig& config) {
  std::unique_ptr<ChatEncoder> encoder;
  auto source = [&]() -> const ChatEncoder& {
    if (!encoder) encoder = load_chat_encoder(o.text_source, o.chat_template);
    return *encoder;
  };
  TokenizedData data = read_instruction_data(o.data, source, o.skip_bad, config);
  if (o.data_is_seed) return data;
  return router::draw_seed_data(data, o.fraction, o.min_samples, o.preopt.seed);
}

namespace {

std::string gigabytes(uint64_t bytes) { return fmt::format("{:.1f} GB", double(bytes) / 1e9); }

}  // namespace

uint64_t router_stage_bytes(const ModelConfig& moe, const ModelConfig& dense) {
  uint64_t floats = 0;
  for (const ModelConfig* c : {&moe, &dense})
    for (const ExpectedTensor& t : expected_tensors(*c)) floats += *shape_elements(t.shape);
  return floats * sizeof(float);
}

void check_router_memory(const ModelConfig& moe, const ModelConfig& dense, uint64_t available,
                         const std::filesystem::path& source) {
  const uint64_t need = router_stage_bytes(moe, dense);
  require(need <= available, source,
          "the router stage holds the MoE's weights in fp32 and one expert's dense model on the host: " +
              gigabytes(need) + ", more than the " + gigabytes(available) +
              " of memory available here (a machine with more memory runs it; --router random writes the MoE "
              "streaming, in well under 1 GB)");
}

namespace {

// On the CPU: the MoE as stored in the scratch file, its layers streamed (resident a layer at a
// time), the experts' dense models views of it.
RouterStageEngines stored_engines(const Checkpoint& moe_file, Precision precision) {
  auto moe = std::make_shared<StoredWeights>(load_streamed_weights(moe_file, precision));
  const ModelConfig config = moe_file.config();
  const std::filesystem::path path = moe_file.path();
  return {[=](int e) {
            const std::string name = "<expert " + std::to_string(e) + "'s dense model>";
            return make_cpu_stored_engine(router::dense_config(config, name), router::expert_dense_weights(*moe, e), name);
          },
          [=] { return make_cpu_stored_engine(config, *moe, path, router::router_training()); }};
}

// On another device: the MoE loaded in f32 on the host (check_router_memory), moved into the
// MoE's engine when that is made, last.
RouterStageEngines f32_engines(const Checkpoint& moe_file, EngineFactory make) {
  auto moe = std::make_shared<Weights<float>>(load_weights<float>(moe_file));
  const ModelConfig config = moe_file.config();
  const std::filesystem::path path = moe_file.path();
  return {[=](int e) { return make(router::expert_dense_model(config, *moe, e)); },
          [=] { return make({config, std::move(*moe), path, router::router_training()}); }};
}

// `moe` with the routers ([L][E·H]) in place of its own, written in their dtype; the rest of the
// config, files and generated files are `like`'s, plus `extra`.
std::unique_ptr<Checkpoint> with_routers(std::shared_ptr<const Checkpoint> moe, const Checkpoint& like,
                                         std::vector<std::vector<float>> routers, std::vector<GeneratedFile> extra) {
  const Scheme scheme = detect_scheme(moe->config(), moe->tensors());
  auto load = [moe, scheme, routers = std::move(routers)](const TensorInfo& info) {
    const std::optional<TensorId> id = parse_tensor_name(info.name, scheme);
    if (!id || id->role != Role::Router) return moe->load(info.name);
    return Tensor::from_f32(info.shape, routers.at(size_t(id->layer))).to(info.dtype);
  };
  std::vector<GeneratedFile> generated = like.generated_files();
  generated.insert(generated.end(), extra.begin(), extra.end());
  return std::make_unique<ComputedCheckpoint>(like.config(), moe->tensors(), load, like.side_files(), std::move(generated));
}

// Writes `moe` to a folder staged in o.scratch's folder (removed when done or abandoned, and
// left by a killed run for the next writer there to remove) and opens it.
std::shared_ptr<const Checkpoint> write_scratch(const Checkpoint& moe, const RouterStageOptions& o) {
  const std::filesystem::path dir = std::filesystem::absolute(o.scratch).parent_path();
  std::error_code ec;
  const auto space = std::filesystem::space(dir, ec);
  uint64_t bytes = 0;
  WriteOptions w;
  w.dtype = o.scratch_dtype;
  w.shard_bytes = std::numeric_limits<uint64_t>::max();
  w.progress = o.preopt.progress;
  for (const TensorInfo& t : moe.tensors()) bytes += *shape_elements(t.shape) * dtype_info(output_dtype(t.dtype, w)).block_bytes;
  // It and the output written from it are on the disk at once.
  require(ec || space.available >= 2 * bytes, dir,
          "the router stage writes the assembled MoE here (" + gigabytes(bytes) + ") and then the output beside it: " +
              gigabytes(2 * bytes) + " of disk, more than the " + gigabytes(ec ? 0 : space.available) + " free");
  StagedPath staged(o.scratch, true);
  spdlog::info("router stage: the assembled MoE ({}) to {}", gigabytes(bytes), staged.temp().string());
  write_checkpoint(moe, staged.temp(), w);
  return open_checkpoint(staged.temp());  // its files stay mapped once `staged` removes them
}

}  // namespace

std::vector<std::vector<float>> fit_routers(const ModelConfig& config, RouterStageEngines engines, const TokenizedData& seed,
                                            const RouterStageOptions& o, nlohmann::ordered_json& report,
                                            RouterStageParts& part) {
  Stopwatch clock;
  router::PreoptOptions preopt = o.preopt;
  preopt.seq_len = model_seq_len(o.seq_len, config);
  spdlog::info("router stage: {} seed samples{}", seed.samples.size(), o.data.empty() ? "" : " from " + o.data.string());

  const int64_t E = config.num_local_experts;
  Progress scoring("scoring seed samples per expert", uint64_t(E) * seed.samples.size(), "samples", preopt.progress);
  router::Assignment a = router::assign_by_loss(int(E), engines.expert, seed, preopt.seq_len, preopt.batch_tokens,
                                                [&] { scoring.advance(1); });
  scoring.finish();
  part.scoring = {clock.lap(), peak_rss_mb()};
  report["seed_samples"] = seed.samples.size();
  report["seed_loss_distances"] = genetic::function_distances(router::losses_by_expert(a));
  std::vector<double> mean_loss(size_t(E), 0.0);
  for (const auto& loss : a.loss)
    for (int64_t e = 0; e < E; ++e) mean_loss[size_t(e)] += std::isfinite(loss[size_t(e)]) ? loss[size_t(e)] / double(a.loss.size()) : 0.0;
  report["seed_mean_loss"] = mean_loss;
  report["seed_per_expert_lowest_loss"] = a.counts;
  if (o.random_assignment) router::assign_at_random(a, preopt.seed);
  std::string counts;
  for (int64_t c : a.counts) counts += " " + std::to_string(c);
  spdlog::info("seed samples per expert ({}):{}", o.random_assignment ? "drawn at random" : "lowest loss", counts);
  report["seed_assignment"] = o.random_assignment ? "random" : "loss";
  report["seed_per_expert"] = a.counts;
  report["seed_experts"] = a.expert;
  if (o.hidden) {
    auto routers = router::hidden_state_routers(config, engines.expert, seed, a.expert, preopt.seq_len, preopt.batch_tokens);
    part.fit = {clock.lap(), peak_rss_mb()};
    return routers;
  }

  // Only the routers train; every other weight stays as the engines hold it. The experts' models
  // go first: what they hold of a mapped file would otherwise stay mapped (and counted in the
  // RSS) beside the MoE engine's own mapping of it; a device's f32 copy moves into the MoE's.
  const auto make_moe = std::move(engines.moe);
  engines = {};
  const std::unique_ptr<Engine> moe = make_moe();
  const router::PreoptResult r = router::preoptimise_routers(*moe, seed, a.expert, preopt);
  part.fit = {clock.lap(), peak_rss_mb()};
  spdlog::info("router pre-optimisation: {} steps, BCE {:.4f} -> {:.4f}, LM loss {:.4f} -> {:.4f}", r.steps, r.first_bce,
               r.last_bce, r.first_ce, r.last_ce);
  report["router_steps"] = r.steps;
  report["router_bce"] = {r.first_bce, r.last_bce};
  report["router_lm_loss"] = {r.first_ce, r.last_ce};
  std::vector<std::vector<float>> routers;
  for (auto& layer : moe->host_weights().layers) routers.push_back(std::move(layer.router));
  return routers;
}

std::unique_ptr<Checkpoint> moe_with_fitted_routers(const pool::FfnSource& source, const pool::Pool& pool,
                                                    const AssemblyOptions& assembly, const RouterStageOptions& o,
                                                    const TokenizedData& seed, nlohmann::ordered_json& report,
                                                    std::vector<GeneratedFile> extra, RouterStageParts* parts) {
  RouterStageParts unused;
  RouterStageParts& part = parts ? *parts : unused;
  Stopwatch clock;
  const std::unique_ptr<Checkpoint> start = assemble_moe(source, pool, assembly);  // random routers
  const ModelConfig config = start->config();
  const std::shared_ptr<const Checkpoint> moe_file = write_scratch(*start, o);  // assembled once
  part.scratch = {clock.lap(), peak_rss_mb()};
  const bool on_cpu = o.engine == make_cpu_engine;
  std::vector<std::vector<float>> routers =
      fit_routers(config, on_cpu ? stored_engines(*moe_file, o.precision) : f32_engines(*moe_file, o.engine), seed, o,
                  report, part);
  return with_routers(moe_file, *start, std::move(routers), std::move(extra));
}

}  // namespace upcycle
