// The CPU's Engine over weights in their stored dtype (trainer/stored_backend.hpp): forward,
// eval and generate; training with frozen parts or in bf16 (the router stage, which trains the
// routers alone, and tune --freeze or --precision bf16): the trained tensors are f32 masters that
// AdamW updates and the model reads through views, every frozen one stays as stored; and training
// a LoRA adapter's A and B (f32) on a base frozen as stored (tune --lora-rank), or a MixLoRA's
// LoRA-MoE, its routers as masters beside them (tune --lora-experts).
#include <spdlog/spdlog.h>

#include <vector>

#include "trainer/cpu_model_engine.hpp"
#include "trainer/lora_terms.hpp"
#include "trainer/stored_model.hpp"

namespace upcycle {

namespace {

// An adapter's terms as the model reads them, with their gradients, trained by AdamW (a
// MixLoRA's routers are the model's own trained tensors).
struct TrainedAdapter {
  LoraConfig config;
  std::vector<LoraPlace> modules;  // where each term sits (its values are the term's)
  std::vector<std::shared_ptr<LowRank>> terms;
  std::vector<std::vector<float>> d_a, d_b;
};

// `adapter` applied to `weights`: its modules' places and the terms that now hold their values
// (the adapter's own tensors are dropped, so that a large adapter is not held twice while the
// optimizer's state is made).
TrainedAdapter apply_trained(StoredWeights& weights, LoraAdapter&& adapter) {
  TrainedAdapter out{adapter.config, lora_places(adapter), apply_adapter(weights, adapter), {}, {}};
  adapter = {};
  return out;
}

class StoredEngine final : public CpuModelEngine<StoredModel, StoredDecoder> {
 public:
  StoredEngine(ModelConfig config, StoredWeights weights, const std::filesystem::path& source,
               const std::optional<TrainSetup>& training, Precision products,
               std::optional<TrainedAdapter> adapter = std::nullopt, bool train_terms = true)
      : CpuModelEngine(std::move(config), std::move(weights), source) {
    const ModelConfig& c = model_.config();
    auto masters = parameters(masters_, c);  // laid out, every tensor empty
    auto copies = parameters(bf16_copies_, c);
    auto stored = parameters(model_.weights(), c);
    for (size_t i = 0; i < stored.size(); ++i) {
      StoredWeight& w = *stored[i].values;
      const bool trained = training && !training->frozen[size_t(role_info(stored[i].tensor.id.role).part)];
      if (trained) {
        *masters[i].values = w.widened();
        w.tensor().release(0, w.size());  // a mapped file's pages: never read again
        w = StoredWeight::master(*masters[i].values, stored[i].tensor.shape);
      }
      if (products != Precision::BF16 || stored[i].tensor.shape.size() != 2) continue;
      if (trained) {  // rounded once per update, by AdamW, not at every product
        std::vector<uint16_t>& copy = *copies[i].values;
        copy.resize(w.size());
        convert(DType::F32, w.data(), DType::BF16, copy.data(), copy.size());
        w = w.in_bf16(copy);
      } else {
        w = w.in_bf16();
      }
    }
    if (!training) return;
    train(masters_, *training,
          adapter ? trained_adapter_tensors(std::move(*adapter), train_terms) : std::vector<TrainedTensor>{},
          &bf16_copies_);
  }

  // The trained tensors' masters (every frozen tensor empty).
  Weights<float>& host_weights() override {
    training();
    return masters_;
  }

  // The model's tensors as it reads them: the masters (f32) and the frozen tensors as stored.
  std::unique_ptr<Checkpoint> checkpoint(const Checkpoint* like) override {
    return as_checkpoint(model_.weights(), model_.config(), like);
  }

  std::optional<LoraAdapter> trained_adapter() override {
    if (!adapter_) return std::nullopt;
    LoraAdapter out{adapter_->config, {}, {}};
    for (size_t i = 0; i < adapter_->modules.size(); ++i) {
      const LoraPlace& m = adapter_->modules[i];
      const LowRank& t = *adapter_->terms[i];
      out.modules.push_back({m.layer, m.module, view(m.a, t.a), view(m.b, t.b), m.expert});
    }
    if (out.config.is_moe())
      for (const auto& layer : model_.weights().layers) out.routers.push_back(layer.router.tensor());
    return out;
  }

  // With LoRA dropout, each term draws its masks for this micro-batch from opts.dropout_seed.
  LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) override {
    if (!adapter_ || adapter_->config.dropout == 0) return CpuModelEngine::accumulate(batch, targets, opts);
    const LoraDropoutSeeds<LowRank> seeds(adapter_->terms, opts.dropout_seed);
    return CpuModelEngine::accumulate(batch, targets, opts);
  }

 private:
  // A tensor that reads `values` in place (no copy: a 7B model's adapter is gigabytes).
  static Tensor view(const Shape& shape, const std::vector<float>& values) {
    const auto* bytes = reinterpret_cast<const std::byte*>(values.data());
    return Tensor::borrowed(DType::F32, shape, std::shared_ptr<const std::byte>(bytes, [](const std::byte*) {}));
  }

  // The applied adapter's A and B as AdamW's tensors (PEFT's names, or MixLoRA's), with their
  // gradients and dropout; none when its terms stay frozen.
  std::vector<TrainedTensor> trained_adapter_tensors(TrainedAdapter&& applied, bool train_terms) {
    adapter_.emplace(std::move(applied));
    const LoraConfig& c = adapter_->config;
    std::vector<TrainedTensor> tensors;
    if (!train_terms) return tensors;
    for (size_t i = 0; i < adapter_->modules.size(); ++i) {
      const LoraPlace& m = adapter_->modules[i];
      LowRank& t = *adapter_->terms[i];
      std::vector<float>& d_a = adapter_->d_a.emplace_back(t.a.size(), 0.0f);
      std::vector<float>& d_b = adapter_->d_b.emplace_back(t.b.size(), 0.0f);
      t.d_a = d_a.data();
      t.d_b = d_b.data();
      t.dropout.p = float(c.dropout);
      for (const bool is_b : {false, true})
        tensors.push_back({lora_factor_name(c, m, is_b), is_b ? m.b : m.a, is_b ? t.b : t.a, is_b ? d_b : d_a, true});
    }
    return tensors;
  }

  Weights<float> masters_;  // the trained tensors' masters, which the model's weights view
  Weights<uint16_t> bf16_copies_;  // under bf16 products, the trained matrices' masters rounded to bf16
  std::optional<TrainedAdapter> adapter_;  // the LoRA adapter it trains
};

}  // namespace

std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision,
                                                  const std::filesystem::path& adapter) {
  StoredWeights weights = load_stored_weights(ckpt, precision);
  ModelConfig config = ckpt.config();
  if (!adapter.empty()) {
    const LoraAdapter a = read_peft_adapter(adapter, ckpt.config());
    config = adapted_config(config, a, adapter / "adapter_config.json");
    apply_adapter(weights, a);
    spdlog::info("{}: {}", adapter.string(), lora_adapter_summary(a));
  }
  auto engine = std::make_unique<StoredEngine>(std::move(config), std::move(weights), ckpt.path(), std::nullopt,
                                               Precision::F32);  // converted as loaded
  spdlog::debug("{}: weights used as stored ({:.1f} MB), computed in {}", ckpt.path().string(),
                double(ckpt.stored_bytes()) / 1e6, precision_name(precision));
  return engine;
}

std::unique_ptr<Engine> make_cpu_stored_engine(ModelConfig config, StoredWeights weights,
                                               const std::filesystem::path& source, std::optional<TrainSetup> training,
                                               Precision products) {
  return std::make_unique<StoredEngine>(std::move(config), std::move(weights), source, training, products);
}

std::unique_ptr<Engine> make_cpu_lora_engine(const Checkpoint& base, LoraAdapter adapter,
                                             const ops::AdamWConfig& adam, Precision precision, bool routers_only) {
  PartSet frozen;
  frozen.set();
  if (adapter.config.is_moe()) frozen.reset(size_t(Part::Router));  // a MixLoRA's routers train
  ModelConfig config = adapted_config(base.config(), adapter, base.path());
  StoredWeights weights = load_stored_weights(base, precision);  // converted as loaded
  TrainedAdapter applied = apply_trained(weights, std::move(adapter));
  return std::make_unique<StoredEngine>(std::move(config), std::move(weights), base.path(), TrainSetup{adam, frozen},
                                        Precision::F32, std::move(applied), !routers_only);
}

}  // namespace upcycle
