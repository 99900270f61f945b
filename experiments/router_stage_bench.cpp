#include "experiments/router_stage_bench.hpp"

#include <spdlog/spdlog.h>

#include "convert/router_stage.hpp"
#include "core/error.hpp"
#include "core/memory_info.hpp"
#include "core/random.hpp"
#include "core/staged_path.hpp"
#include "core/stopwatch.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/model_presets.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/random_init.hpp"
#include "pool/ffn_source.hpp"

namespace upcycle {

namespace {

// Seed samples of random tokens: the first half of each a prompt (not counted), the rest counted.
TokenizedData random_seed(const RouterStageBench& o, int64_t vocab) {
  Rng rng(7);
  TokenizedData d;
  for (int64_t s = 0; s < o.samples; ++s) {
    TokenizedSample x;
    for (int64_t t = 0; t < o.sample_tokens; ++t) {
      x.ids.push_back(int32_t(rng.below(uint64_t(vocab))));
      x.labels.push_back(t < o.sample_tokens / 2 ? kIgnoreLabel : x.ids.back());
    }
    x.line = s + 1;
    d.samples.push_back(std::move(x));
  }
  return d;
}

}  // namespace

nlohmann::ordered_json bench_router_stage(const RouterStageBench& o) {
  const auto preset = preset_config(o.shape);
  if (!preset) throw UsageError("--router-shape: no preset '" + o.shape + "'");
  if (o.experts < 2 || o.experts > 64 || o.top_k < 1 || o.top_k > o.experts || o.samples < 1 || o.sample_tokens < 4 ||
      o.batch_tokens < o.sample_tokens || o.epochs < 1)
    throw UsageError("router stage bench: 2-64 experts, top-k within them, samples >= 1, 4 tokens or more each, "
                     "batch tokens at least a sample's, epochs >= 1");
  const ModelConfig dense = ModelConfig::from_json(*preset, o.shape);
  // The dense checkpoints on disk, as convert reads them (mapped, never held whole).
  StagedPath checkpoints(o.scratch.string() + "-checkpoints", true);
  std::filesystem::create_directories(checkpoints.temp());
  WriteOptions w;
  w.dtype = o.dtype;
  w.progress = o.progress;
  std::vector<std::unique_ptr<Checkpoint>> opened;
  Stopwatch clock;
  for (uint64_t seed : {1, 2}) {
    const std::filesystem::path path = checkpoints.temp() / ("dense-" + std::to_string(seed));
    write_checkpoint(*random_init(dense, seed), path, w);
    opened.push_back(open_checkpoint(path));
  }
  const double checkpoints_s = clock.lap();
  const pool::FfnSource source({opened[0].get(), opened[1].get()}, nullptr);
  pool::Pool pool = {{0}, {1}};
  for (int e = 2; e < o.experts; ++e) pool.push_back({-1, e % 2, 1 - e % 2, 0.7, 0.3, uint64_t(e)});
  AssemblyOptions assembly;
  assembly.top_k = o.top_k;
  RouterStageOptions ro;
  ro.precision = o.precision;
  ro.scratch = o.scratch;
  ro.scratch_dtype = o.dtype;
  ro.seq_len = o.sample_tokens;
  ro.preopt.epochs = o.epochs;
  ro.preopt.batch_tokens = o.batch_tokens;
  ro.preopt.progress = o.progress;
  const TokenizedData seed = random_seed(o, dense.vocab_size);

  spdlog::info("router stage bench: {} ({} layers, hidden {}, FFN {}), {} experts top-{}, stored as {}, computed in {}",
               o.shape, dense.num_hidden_layers, dense.hidden_size, dense.intermediate_size, o.experts, o.top_k,
               dtype_name(o.dtype), precision_name(o.precision));
  nlohmann::ordered_json report;
  RouterStageParts parts;
  const auto moe = moe_with_fitted_routers(source, pool, assembly, ro, seed, report, {}, &parts);
  const double tokens = double(o.samples * o.sample_tokens);
  nlohmann::ordered_json j;
  j["shape"] = o.shape;
  j["experts"] = o.experts;
  j["top_k"] = o.top_k;
  j["moe_params"] = moe->parameter_count();
  j["moe_gb"] = double(moe->parameter_count()) * double(dtype_info(o.dtype).block_bytes) / 1e9;
  j["dtype"] = dtype_name(o.dtype);
  j["precision"] = precision_name(o.precision);
  j["seed_tokens"] = tokens;
  j["batch_tokens"] = o.batch_tokens;
  j["epochs"] = o.epochs;
  j["checkpoints_s"] = checkpoints_s;
  j["scratch_s"] = parts.scratch.seconds;
  j["scoring_s"] = parts.scoring.seconds;
  j["fit_s"] = parts.fit.seconds;
  j["scoring_tokens_per_s"] = tokens * o.experts / parts.scoring.seconds;
  j["fit_tokens_per_s"] = tokens * double(o.epochs) / parts.fit.seconds;
  j["router_bce"] = report["router_bce"];
  j["peak_rss_mb_by_part"] = {{"scratch", parts.scratch.peak_rss_mb},
                              {"scoring", parts.scoring.peak_rss_mb},
                              {"fit", parts.fit.peak_rss_mb}};
  j["peak_rss_mb"] = peak_rss_mb();
  spdlog::info("router stage: scratch {:.1f} s, scoring {:.1f} s ({:.1f} tokens/s), fit {:.1f} s ({:.1f} tokens/s), "
               "peak RSS {:.0f} MiB",
               j["scratch_s"].get<double>(), j["scoring_s"].get<double>(), j["scoring_tokens_per_s"].get<double>(),
               j["fit_s"].get<double>(), j["fit_tokens_per_s"].get<double>(), j["peak_rss_mb"].get<double>());
  return j;
}

}  // namespace upcycle
