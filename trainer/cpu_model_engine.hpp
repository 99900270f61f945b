// What the CPU's engines share: an Engine's inference calls over a CPU model M (Transformer<float>
// for training, StoredModel for inference) and its decoder D. Internal to trainer/.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/engine.hpp"

namespace upcycle {

template <class M, class D>
class CpuModelEngine : public Engine {
 public:
  const ModelConfig& config() const override { return model_.config(); }
  std::string device() const override { return "cpu"; }
  std::vector<float> forward(const Batch& batch) override { return model_.forward(batch); }
  LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    return model_.loss(batch, targets, opts);
  }
  std::vector<std::vector<float>> ffn_inputs(const Batch& batch) override { return model_.ffn_inputs(batch); }
  std::unique_ptr<TokenDecoder> decoder(int64_t capacity) const override {
    return std::make_unique<D>(model_, capacity);
  }

 protected:
  template <class... Args>
  explicit CpuModelEngine(Args&&... args) : model_(std::forward<Args>(args)...) {}

  M model_;
};

}  // namespace upcycle
