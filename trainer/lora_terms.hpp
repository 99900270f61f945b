// What the CPU's and the GPU's LoRA engines share (trainer/stored_engine.cpp, cuda/lora_engine.cpp):
// where each of an adapter's terms sits, the names its A and B train under (and their AdamW
// moments are saved under, so that a run resumes on either device), each term's dropout seed
// for a micro-batch (so that the same seed drops the same elements on either), how an adapter is
// attached to a model's weights, and the line that describes an adapter in the log.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/peft_adapter.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

// Where one of an adapter's modules adds its term, and the shapes of its factors.
struct LoraPlace {
  int64_t layer;
  std::string module;
  int64_t expert;  // MixLoRA: the expert whose FFN term it is; -1: shared
  Shape a, b;      // A [r, I], B [O, r]
};

// Each module's place, in the adapter's order (the order of apply_adapter's terms).
std::vector<LoraPlace> lora_places(const LoraAdapter& adapter);

// The name a term's A (or B) trains under: its tensor's name in the adapter's folder, PEFT's or
// MixLoRA's.
std::string lora_factor_name(const LoraConfig& config, const LoraPlace& place, bool is_b);

// Term `term`'s dropout seed in the micro-batch of seed `micro_batch` (LossOptions::dropout_seed):
// 0 (no dropout) for 0, otherwise odd, each term drawing from its own stream.
uint64_t lora_dropout_seed(uint64_t micro_batch, size_t term);

// Each term's dropout seeded for one micro-batch for the life of this object, and none again
// after it (evaluation never drops). Term is anything with an ops::LoraDropout `dropout`
// (LowRank, cuda::DeviceLowRank); `terms` must outlive this.
template <class Term>
class LoraDropoutSeeds {
 public:
  LoraDropoutSeeds(const std::vector<std::shared_ptr<Term>>& terms, uint64_t micro_batch) : terms_(terms) {
    for (size_t i = 0; i < terms_.size(); ++i) terms_[i]->dropout.seed = lora_dropout_seed(micro_batch, i);
  }
  ~LoraDropoutSeeds() {
    for (const auto& t : terms_) t->dropout.seed = 0;
  }
  LoraDropoutSeeds(const LoraDropoutSeeds&) = delete;
  LoraDropoutSeeds& operator=(const LoraDropoutSeeds&) = delete;

 private:
  const std::vector<std::shared_ptr<Term>>& terms_;
};

// `adapter` (read against this model) added to `weights` as unmerged terms: each module's Term
// (LowRank, cuda::DeviceLowRank) given its A and B by `set_factors(term, module)`, its rank and
// scale by the adapter, and attached by W::with_low_rank. A MixLoRA adapter first makes each
// layer's dense FFN E experts that share it, the layer's router `make_router(adapter's router)`.
// The terms, in the adapter's module order. What both devices' apply_adapter do.
template <class Term, class W, class SetFactors, class MakeRouter>
std::vector<std::shared_ptr<Term>> attach_lora(WeightsOf<W>& weights, const LoraAdapter& adapter,
                                               SetFactors set_factors, MakeRouter make_router) {
  const LoraConfig& c = adapter.config;
  if (c.is_moe())
    for (size_t l = 0; l < weights.layers.size(); ++l) {
      LayerWeightsOf<W>& layer = weights.layers[l];
      layer.expert_gate.assign(size_t(c.experts), layer.gate);
      layer.expert_up.assign(size_t(c.experts), layer.up);
      layer.expert_down.assign(size_t(c.experts), layer.down);
      layer.gate = layer.up = layer.down = W();
      layer.router = make_router(adapter.routers.at(l));
    }
  std::vector<std::shared_ptr<Term>> terms;
  for (const LoraModule& m : adapter.modules) {
    auto term = std::make_shared<Term>();
    set_factors(*term, m);
    term->rank = c.rank;
    term->scale = float(c.scaling());
    W& w = tensor_slot(weights, lora_module_tensor(m));
    w = w.with_low_rank(term);
    terms.push_back(std::move(term));
  }
  return terms;
}

// "LoRA adapter of rank R, scale S, on M matrices" (and ", E experts, top-k" for a MixLoRA one).
std::string lora_adapter_summary(const LoraAdapter& adapter);

}  // namespace upcycle
