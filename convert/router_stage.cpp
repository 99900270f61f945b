#include "convert/router_stage.hpp"

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "convert/weights_checkpoint.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/progress.hpp"
#include "data/instruction_data.hpp"
#include "genetic/distance.hpp"
#include "router/assign.hpp"
#include "router/hidden_init.hpp"
#include "router/seed_data.hpp"
#include "trainer/batches.hpp"

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

std::optional<uint64_t> available_memory() {
  std::ifstream in("/proc/meminfo");
  std::optional<uint64_t> kb;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string key;
    uint64_t value = 0;
    if (!(fields >> key >> value)) continue;
    if (key == "MemAvailable:" || key == "SwapFree:") kb = kb.value_or(0) + value;
  }
  if (!kb) return std::nullopt;
  return *kb * 1024;
}

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

std::unique_ptr<Checkpoint> moe_with_fitted_routers(const pool::FfnSource& source, const pool::Pool& pool,
                                                    const AssemblyOptions& assembly, const RouterStageOptions& o,
                                                    const TokenizedData& seed, nlohmann::ordered_json& report,
                                                    std::vector<GeneratedFile> extra) {
  std::unique_ptr<Checkpoint> start = assemble_moe(source, pool, assembly, std::move(extra));  // random routers
  const ModelConfig config = start->config();
  const std::filesystem::path path = start->path();
  auto moe = std::make_shared<Weights<float>>(load_weights<float>(*start));
  std::unique_ptr<Checkpoint> fitted = checkpoint_like(*start, moe);  // reads *moe when written
  start.reset();  // its blocks of made experts go: nothing is assembled again
  router::PreoptOptions preopt = o.preopt;
  preopt.seq_len = model_seq_len(o.seq_len, config);
  spdlog::info("router stage: {} seed samples from {}", seed.samples.size(), o.data.string());

  const int64_t E = config.num_local_experts;
  Progress scoring("scoring seed samples per expert", uint64_t(E) * seed.samples.size(), "samples", preopt.progress);
  router::Assignment a = router::assign_by_loss(config, *moe, o.engine, seed, preopt.seq_len, [&] { scoring.advance(1); });
  scoring.finish();
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
  if (o.hidden) {
    auto routers = router::hidden_state_routers(config, *moe, o.engine, seed, a.expert, preopt.seq_len);
    for (size_t l = 0; l < routers.size(); ++l) moe->layers.at(l).router = std::move(routers[l]);
    return fitted;
  }

  // Only the routers train (preoptimise_routers freezes every other part), and the weights come
  // back from the engine: the rest is the assembly as loaded.
  router::PreoptResult r = router::preoptimise_routers({config, std::move(*moe), path, {}}, o.engine, seed, a.expert, preopt);
  *moe = std::move(r.weights);
  spdlog::info("router pre-optimisation: {} steps, BCE {:.4f} -> {:.4f}, LM loss {:.4f} -> {:.4f}", r.steps, r.first_bce,
               r.last_bce, r.first_ce, r.last_ce);
  report["router_steps"] = r.steps;
  report["router_bce"] = {r.first_bce, r.last_bce};
  report["router_lm_loss"] = {r.first_ce, r.last_ce};
  return fitted;
}

}  // namespace upcycle
