// What the CPU's engines share: an Engine's calls over a CPU model M (Transformer<float> for
// training, StoredModel for inference and the router stage) and its decoder D, and training by
// AdamW on f32 masters: the model's own weights, or copies of the trained tensors it reads
// through views. Internal to trainer/.
#pragma once
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "trainer/engine.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

template <class M, class D>
class CpuModelEngine : public Engine {
 public:
  const ModelConfig& config() const override { return model_.config(); }
  std::string device() const override { return "cpu"; }
  std::vector<float> forward(const Batch& batch) override { return host(model_.forward(batch)); }
  LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    return model_.loss(batch, targets, opts);
  }
  std::vector<std::vector<float>> ffn_inputs(const Batch& batch) override {
    std::vector<std::vector<float>> out;
    for (const auto& x : model_.ffn_inputs(batch)) out.push_back(host(x));
    return out;
  }
  std::unique_ptr<TokenDecoder> decoder(int64_t capacity) const override {
    return std::make_unique<D>(model_, capacity);
  }

  void zero_grads() override { training().zero_grads(); }
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    training();
    return model_.loss_and_grad(batch, targets, grads_, opts);
  }
  double clip(double max_norm) override { return training().clip(max_norm); }
  AdamW* host_optimizer() override { return optimizer_ ? &*optimizer_ : nullptr; }
  void step(double lr) override { training().step(lr); }
  int64_t steps() const override { return optimizer_ ? optimizer_->steps() : 0; }
  void save_optimizer(const std::filesystem::path& file) override { training().save(file); }
  void load_optimizer(const std::filesystem::path& file) override { training().load(file); }

 protected:
  template <class... Args>
  explicit CpuModelEngine(Args&&... args) : model_(std::forward<Args>(args)...) {}

  // AdamW over the unfrozen tensors of `masters` (which must outlive the engine), with gradients
  // shaped like them, and over `more` (tensors whose gradients the model adds elsewhere: LoRA's);
  // the masters' bf16 copies in `bf16_copies` (which must outlive it too) kept in step.
  void train(Weights<float>& masters, const TrainSetup& setup, std::vector<TrainedTensor> more = {},
             Weights<uint16_t>* bf16_copies = nullptr) {
    grads_ = zeros_like(masters, model_.config(), setup.frozen);
    std::vector<TrainedTensor> tensors = trained_tensors(masters, grads_, model_.config(), bf16_copies);
    std::move(more.begin(), more.end(), std::back_inserter(tensors));
    optimizer_.emplace(std::move(tensors), setup.adam);
  }
  // std::logic_error on an engine made without a training setup.
  AdamW& training() {
    if (!optimizer_) throw std::logic_error("Engine: this engine was made without a training setup");
    return *optimizer_;
  }

  M model_;

 private:
  // The model's activation buffers (trainer/buffer.hpp) as the Engine interface's vectors.
  template <class V>
  static std::vector<float> host(const V& v) {
    return std::vector<float>(v.begin(), v.end());
  }

  std::optional<AdamW> optimizer_;
  Weights<float> grads_;
};

}  // namespace upcycle
