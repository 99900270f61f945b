// The GPU's LoRA engine (cuda/engine.hpp's make_lora_engine): cuda::LoraModel<T> over the frozen
// base, the adapter's terms (and a MixLoRA's routers) trained by cuda::AdamW.
#include "cuda/engine.hpp"
#include "cuda/model.hpp"
#include "cuda/model_engine.hpp"
#include "trainer/lora_terms.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle::cuda {

namespace {

template <class T>
class LoraEngine final : public ModelEngine<LoraBackend<T>> {
 public:
  LoraEngine(const Checkpoint& base, LoraAdapter&& adapter, const std::optional<ops::AdamWConfig>& adam)
      : ModelEngine<LoraBackend<T>>(adapted_config(base.config(), adapter, base.path()), base.path(),
                                    [&] { return load_lora_weights<T>(base); }),
        base_(base),
        lora_(adapter.config),
        places_(lora_places(adapter)),
        terms_(apply_adapter<T>(this->model_.weights(), adapter)) {
    if (!adam) return;
    const ModelConfig& c = this->config();
    auto masters = parameters(masters_, c);  // laid out, every tensor empty
    auto grads = parameters(this->grads_, c);
    for (size_t i = 0; i < masters.size() && lora_.is_moe(); ++i) {  // a MixLoRA's routers train
      const TensorId& id = masters[i].tensor.id;
      if (id.role != Role::Router) continue;
      *masters[i].values = to_device<float>(adapter.routers.at(size_t(id.layer)).to_f32_vector());
      grads[i].values->resize(masters[i].values->size());
      grads[i].values->zero();
    }
    std::vector<TrainedTensor<T>> tensors = trained_tensors<T>(masters_, this->model_.weights(), this->grads_, c);
    for (size_t i = 0; i < terms_.size(); ++i) {
      DeviceLowRank& t = *terms_[i];
      t.dropout.p = float(lora_.dropout);
      for (const bool is_b : {false, true}) {
        DeviceBuffer<float>& values = is_b ? t.b : t.a;
        DeviceBuffer<float>& grad = is_b ? t.d_b : t.d_a;
        grad.resize(values.size());
        grad.zero();
        tensors.push_back({lora_factor_name(lora_, places_[i], is_b), is_b ? places_[i].b : places_[i].a,
                           values.data(), nullptr, grad.data(), int64_t(values.size()), true});
      }
    }
    this->train(std::move(tensors), *adam);
  }

  std::optional<LoraAdapter> trained_adapter() override {
    if (!this->trains()) return std::nullopt;
    return adapter();
  }

  // The base with the adapter merged (W + scale·B·A in f32), read when written.
  std::unique_ptr<Checkpoint> checkpoint(const Checkpoint* like) override {
    StoredWeights weights = load_stored_weights(base_);
    upcycle::apply_adapter(weights, adapter());
    return as_checkpoint(weights, this->config(), like);
  }

  // With LoRA dropout, each term draws its masks for this micro-batch from opts.dropout_seed, as
  // the CPU's terms do.
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    const LoraDropoutSeeds<DeviceLowRank> seeds(terms_, opts.dropout_seed);
    return ModelEngine<LoraBackend<T>>::accumulate(batch, targets, opts);
  }

 private:
  // The trained routers' masters (every frozen tensor empty).
  Weights<float> host_values() override {
    this->training();
    return download(masters_, this->config());
  }

  // The adapter as it stands, copied to the host: A and B, and a MixLoRA's routers (their fp32
  // masters when training, else the model's own).
  LoraAdapter adapter() {
    LoraAdapter out{lora_, {}, {}};
    for (size_t i = 0; i < terms_.size(); ++i) {
      const LoraPlace& p = places_[i];
      out.modules.push_back({p.layer, p.module, Tensor::from_f32(p.a, terms_[i]->a.download()),
                             Tensor::from_f32(p.b, terms_[i]->b.download()), p.expert});
    }
    if (!lora_.is_moe()) return out;
    const ModelConfig& c = this->config();
    auto model = parameters(this->model_.weights(), c);
    auto masters = parameters(masters_, c);
    for (size_t i = 0; i < model.size(); ++i) {
      if (model[i].tensor.id.role != Role::Router) continue;
      std::vector<float> values = masters[i].values->download();
      if (values.empty()) {
        const auto copy = model[i].values->download();
        values.assign(copy.begin(), copy.end());
      }
      out.routers.push_back(Tensor::from_f32(model[i].tensor.shape, std::move(values)));
    }
    return out;
  }

  const Checkpoint& base_;
  LoraConfig lora_;
  std::vector<LoraPlace> places_;                      // where each term sits
  std::vector<std::shared_ptr<DeviceLowRank>> terms_;  // in the adapter's order
  DeviceWeights<float> masters_;  // training a MixLoRA: its routers' fp32 masters (every other tensor empty)
};

}  // namespace

template <class T>
std::unique_ptr<Engine> make_lora_engine(const Checkpoint& base, LoraAdapter adapter,
                                         const std::optional<ops::AdamWConfig>& training) {
  return std::make_unique<LoraEngine<T>>(base, std::move(adapter), training);
}

template std::unique_ptr<Engine> make_lora_engine<float>(const Checkpoint&, LoraAdapter,
                                                         const std::optional<ops::AdamWConfig>&);
template std::unique_ptr<Engine> make_lora_engine<bf16>(const Checkpoint&, LoraAdapter,
                                                        const std::optional<ops::AdamWConfig>&);

}  // namespace upcycle::cuda
