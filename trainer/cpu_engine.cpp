// The CPU's Engine: Transformer<float> and, for training, AdamW on its weights in place.
#include "trainer/cpu_model_engine.hpp"

namespace upcycle {

namespace {

class CpuEngine final : public CpuModelEngine<Transformer<float>, Decoder> {
 public:
  explicit CpuEngine(EngineSpec&& spec) : CpuModelEngine(spec.config, std::move(spec.weights), spec.source) {
    if (spec.training) train(model_.weights(), *spec.training);
  }

  Weights<float>& host_weights() override { return model_.weights(); }
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(EngineSpec&& spec) { return std::make_unique<CpuEngine>(std::move(spec)); }

}  // namespace upcycle
