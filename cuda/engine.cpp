#include "cuda/engine.hpp"

#include <optional>
#include <stdexcept>

#include "cuda/model.hpp"
#include "cuda/optimizer.hpp"

namespace upcycle::cuda {

namespace {

// The host's float copies of device values [n].
template <class T>
std::vector<float> to_floats(const DeviceBuffer<T>& values) {
  const std::vector<T> host = values.download();
  return {host.begin(), host.end()};
}

template <class T>
class CudaEngine final : public Engine {
 public:
  explicit CudaEngine(EngineSpec&& spec)
      : device_(device_name()), model_(spec.config, upload<T>(spec.weights, spec.config), spec.source) {
    if (spec.training) {
      optimizer_.emplace(spec.weights, model_.weights(), model_.config(), spec.training->adam, spec.training->frozen);
      grads_ = zeros_like(spec.weights, model_.config(), spec.training->frozen);
    }
  }

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
    return std::make_unique<Decoder<T>>(model_, capacity);
  }

  void zero_grads() override {
    training();
    for (auto& p : parameters(grads_, model_.config())) p.values->zero();
  }
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    training();
    return model_.loss_and_grad(batch, targets, grads_, opts);
  }
  double clip(double max_norm) override { return training().clip(grads_, max_norm); }
  void step(double lr) override {
    training().step(grads_, lr);
    host_.reset();
  }
  int64_t steps() const override { return optimizer_ ? optimizer_->steps() : 0; }

  Weights<float>& host_weights() override {
    if (!host_) host_ = optimizer_ ? optimizer_->master() : download(model_.weights(), model_.config());
    return *host_;
  }
  void save_optimizer(const std::filesystem::path& file) override { training().save(file); }
  void load_optimizer(const std::filesystem::path& file) override { training().load(file); }

 private:
  static std::string device_name() {
    std::string reason;
    if (!available(&reason)) throw std::runtime_error("--device cuda: " + reason);
    cudaDeviceProp prop{};
    UPCYCLE_CUDA(cudaGetDeviceProperties(&prop, 0));
    return prop.name;
  }
  AdamW<T>& training() {
    if (!optimizer_) throw std::logic_error("Engine: this engine was made without a training setup");
    return *optimizer_;
  }

  std::string device_;  // first: no upload is tried without a GPU
  Transformer<T> model_;
  std::optional<AdamW<T>> optimizer_;  // writes model_'s weights at every step
  DeviceWeights<float> grads_;
  std::optional<Weights<float>> host_;  // host_weights(), until the next step
};

}  // namespace

template <class T>
std::unique_ptr<Engine> make_engine(EngineSpec&& spec) {
  return std::make_unique<CudaEngine<T>>(std::move(spec));
}

template std::unique_ptr<Engine> make_engine<float>(EngineSpec&&);
template std::unique_ptr<Engine> make_engine<bf16>(EngineSpec&&);

}  // namespace upcycle::cuda
