// The CPU's Engine: Transformer<float> and, for training, AdamW on its weights in place.
#include <stdexcept>

#include "trainer/cpu_model_engine.hpp"
#include "trainer/optimizer.hpp"

namespace upcycle {

namespace {

class CpuEngine final : public CpuModelEngine<Transformer<float>, Decoder> {
 public:
  explicit CpuEngine(EngineSpec&& spec) : CpuModelEngine(spec.config, std::move(spec.weights), spec.source) {
    if (!spec.training) return;
    optimizer_.emplace(model_.weights(), model_.config(), spec.training->adam, spec.training->frozen);
    grads_ = zeros_like(model_.weights(), model_.config(), spec.training->frozen);
  }

  void zero_grads() override {
    training();
    zero_fill(grads_, model_.config());
  }
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    training();
    return model_.loss_and_grad(batch, targets, grads_, opts);
  }
  double clip(double max_norm) override { return training().clip(grads_, max_norm); }
  void step(double lr) override { training().step(grads_, lr); }
  int64_t steps() const override { return optimizer_ ? optimizer_->steps() : 0; }

  Weights<float>& host_weights() override { return model_.weights(); }
  void save_optimizer(const std::filesystem::path& file) override { training().save(file); }
  void load_optimizer(const std::filesystem::path& file) override { training().load(file); }

 private:
  AdamW& training() {
    if (!optimizer_) throw std::logic_error("Engine: this engine was made without a training setup");
    return *optimizer_;
  }

  std::optional<AdamW> optimizer_;  // refers to model_'s weights
  Weights<float> grads_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(EngineSpec&& spec) { return std::make_unique<CpuEngine>(std::move(spec)); }

}  // namespace upcycle
