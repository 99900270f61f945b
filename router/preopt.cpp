#include "router/preopt.hpp"

#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/progress.hpp"
#include "trainer/batches.hpp"

namespace upcycle::router {

namespace {

// Micro-batches in one pass over the data.
int64_t batches_per_epoch(const TokenizedData& data, const PreoptOptions& o) {
  BatchSampler sampler(data, o.seq_len, o.batch_tokens, o.seed);
  int64_t n = 0;
  for (; sampler.cursor().epoch == 0 && size_t(sampler.cursor().index) < data.samples.size(); ++n) sampler.next();
  return n;
}

// Each token's target: its sample's expert.
std::vector<int32_t> token_targets(const MicroBatch& mb, const std::vector<int32_t>& assignment) {
  std::vector<int32_t> t;
  t.reserve(mb.batch.ids.size());
  for (size_t i = 0; i < mb.samples.size(); ++i)
    t.insert(t.end(), size_t(mb.batch.cu_seqlens[i + 1] - mb.batch.cu_seqlens[i]), assignment[mb.samples[i]]);
  return t;
}

}  // namespace

TrainSetup router_training() {
  TrainSetup setup;
  setup.frozen.set();
  setup.frozen.reset(size_t(Part::Router));
  setup.adam.weight_decay = 0;
  return setup;
}

PreoptResult preoptimise_routers(Engine& engine, const TokenizedData& seed, const std::vector<int32_t>& assignment,
                                 const PreoptOptions& o) {
  if (!engine.config().is_moe()) throw std::invalid_argument("preoptimise_routers: not an MoE model");
  if (assignment.size() != seed.samples.size()) throw std::invalid_argument("preoptimise_routers: one expert per sample");
  if (o.epochs < 1) throw std::invalid_argument("preoptimise_routers: epochs >= 1");
  BatchSampler sampler(seed, o.seq_len, o.batch_tokens, o.seed);
  PreoptResult r;
  r.steps = o.epochs * batches_per_epoch(seed, o);
  Progress progress("router pre-optimisation", uint64_t(r.steps), "steps", o.progress);
  for (int64_t step = 0; step < r.steps; ++step) {
    const MicroBatch mb = sampler.next();
    LossOptions lo;
    lo.ce_coef = o.lm_coef;
    lo.router_bce_coef = o.bce_coef;
    lo.router_targets = token_targets(mb, assignment);
    lo.load_balancing = false;  // UpIT's objective here is the LM loss and the BCE alone
    lo.recompute = o.recompute;
    engine.zero_grads();
    const LossReport rep = engine.accumulate(mb.batch, mb.targets, lo);
    engine.clip(1.0);
    engine.step(o.lr);
    if (step == 0) r.first_bce = rep.router_bce, r.first_ce = rep.ce();
    r.last_bce = rep.router_bce, r.last_ce = rep.ce();
    progress.advance(1);
  }
  progress.finish();
  return r;
}

}  // namespace upcycle::router
