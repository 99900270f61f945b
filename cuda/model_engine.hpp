// What the GPU's engines share (cuda/engine.cpp's over the model's own weights, cuda/lora_engine.cpp's
// over a base with a LoRA adapter): an Engine's calls over a BasicTransformer on backend B and its
// decoder, and training by cuda::AdamW over the tensors the engine gives it, the gradients of the
// model's own trained tensors in grads_ (every other one empty). Internal to cuda/.
#pragma once
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cuda/model.hpp"
#include "cuda/optimizer.hpp"
#include "trainer/engine.hpp"

namespace upcycle::cuda {

template <class B>
class ModelEngine : public Engine {
 public:
  using T = typename B::Act;

  const ModelConfig& config() const override { return model_.config(); }
  std::string device() const override { return device_; }
  std::vector<float> forward(const Batch& batch) override { return to_floats(model_.forward(batch)); }
  LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    return model_.loss(batch, targets, opts);
  }
  std::vector<std::vector<float>> ffn_inputs(const Batch& batch) override {
    std::vector<std::vector<float>> out;
    for (const auto& layer : model_.ffn_inputs(batch)) out.push_back(to_floats(layer));
    return out;
  }
  std::unique_ptr<TokenDecoder> decoder(int64_t capacity) const override {
    return std::make_unique<BasicDecoder<B>>(model_, capacity);
  }

  void zero_grads() override { training().zero_grads(); }
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    training();
    return model_.loss_and_grad(batch, targets, grads_, opts);
  }
  double clip(double max_norm) override { return training().clip(max_norm); }
  void step(double lr) override {
    training().step(lr);
    host_.reset();
  }
  int64_t steps() const override { return optimizer_ ? optimizer_->steps() : 0; }
  Weights<float>& host_weights() override {
    if (!host_) host_ = host_values();
    return *host_;
  }
  void save_optimizer(const std::filesystem::path& file) override { training().save(file); }
  void load_optimizer(const std::filesystem::path& file) override { training().load(file); }

 protected:
  // The model over the weights `load()` gives, called once a usable GPU is known to be there
  // (std::runtime_error naming the reason otherwise: no upload is tried without one).
  template <class Load>
  ModelEngine(ModelConfig config, const std::filesystem::path& source, Load&& load)
      : device_(device_name()), model_(std::move(config), load(), source) {}

  // AdamW over `tensors` (which must outlive the engine).
  void train(std::vector<TrainedTensor<T>> tensors, const ops::AdamWConfig& adam) {
    optimizer_.emplace(std::move(tensors), adam);
  }
  bool trains() const { return optimizer_.has_value(); }
  // std::logic_error on an engine made without a training setup.
  AdamW<T>& training() {
    if (!optimizer_) throw std::logic_error("Engine: this engine was made without a training setup");
    return *optimizer_;
  }
  // What host_weights() holds until the next step.
  virtual Weights<float> host_values() = 0;

 private:
  std::string device_;  // first: checked before the model is made

 protected:
  BasicTransformer<B> model_;
  DeviceWeights<float> grads_;  // the model's own trained tensors' gradients

 private:
  // The host's float copies of device values [n].
  template <class U>
  static std::vector<float> to_floats(const DeviceBuffer<U>& values) {
    const std::vector<U> host = values.download();
    return {host.begin(), host.end()};
  }

  std::optional<AdamW<T>> optimizer_;
  std::optional<Weights<float>> host_;  // host_weights(), until the next step
};

}  // namespace upcycle::cuda
