#include "cuda/engine.hpp"

#include "cuda/model.hpp"
#include "cuda/model_engine.hpp"

namespace upcycle::cuda {

namespace {

// The model's own weights on the device as T; training, their fp32 masters beside them.
template <class T>
class CudaEngine final : public ModelEngine<Backend<T>> {
 public:
  explicit CudaEngine(EngineSpec&& spec)
      : ModelEngine<Backend<T>>(spec.config, spec.source, [&] { return upload<T>(spec.weights, spec.config); }) {
    if (!spec.training) return;
    const ModelConfig& c = this->config();
    master_ = upload<float>(spec.weights, c);
    this->grads_ = zeros_like(spec.weights, c, spec.training->frozen);
    this->train(trained_tensors<T>(master_, this->model_.weights(), this->grads_, c), spec.training->adam);
  }

 private:
  Weights<float> host_values() override {
    return this->trains() ? download(master_, this->config()) : download(this->model_.weights(), this->config());
  }

  DeviceWeights<float> master_;  // training: every tensor's fp32 master (AdamW writes the model's copies)
};

}  // namespace

template <class T>
std::unique_ptr<Engine> make_engine(EngineSpec&& spec) {
  return std::make_unique<CudaEngine<T>>(std::move(spec));
}

template std::unique_ptr<Engine> make_engine<float>(EngineSpec&&);
template std::unique_ptr<Engine> make_engine<bf16>(EngineSpec&&);

}  // namespace upcycle::cuda
