// The CPU's Engine over weights in their stored dtype (trainer/stored_backend.hpp): forward,
// eval and generate; and training with frozen parts or in bf16 (the router stage, which trains
// the routers alone, and tune --freeze or --precision bf16): the trained tensors are f32 masters
// that AdamW updates and the model reads through views, every frozen one stays as stored.
#include <spdlog/spdlog.h>

#include <vector>

#include "trainer/cpu_model_engine.hpp"
#include "trainer/stored_model.hpp"

namespace upcycle {

namespace {

class StoredEngine final : public CpuModelEngine<StoredModel, StoredDecoder> {
 public:
  StoredEngine(ModelConfig config, StoredWeights weights, const std::filesystem::path& source,
               const std::optional<TrainSetup>& training, Precision products)
      : CpuModelEngine(std::move(config), std::move(weights), source) {
    const ModelConfig& c = model_.config();
    auto masters = parameters(masters_, c);  // laid out, every tensor empty
    auto stored = parameters(model_.weights(), c);
    for (size_t i = 0; i < stored.size(); ++i) {
      StoredWeight& w = *stored[i].values;
      if (training && !training->frozen[size_t(role_info(stored[i].tensor.id.role).part)]) {
        *masters[i].values = w.widened();
        w.tensor().release(0, w.size());  // a mapped file's pages: never read again
        w = StoredWeight::master(*masters[i].values, stored[i].tensor.shape);
      }
      if (products == Precision::BF16 && stored[i].tensor.shape.size() == 2) w = w.in_bf16();
    }
    if (training) train(masters_, *training);
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

 private:
  Weights<float> masters_;  // the trained tensors' masters, which the model's weights view
};

}  // namespace

std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision,
                                                  const std::filesystem::path& adapter) {
  StoredWeights weights = load_stored_weights(ckpt, precision);
  if (!adapter.empty()) {
    const LoraAdapter a = read_peft_adapter(adapter, ckpt.config());
    apply_adapter(weights, a);
    spdlog::info("{}: LoRA adapter of rank {}, scale {:.4g}, on {} matrices", adapter.string(), a.config.rank,
                 a.config.scaling(), a.modules.size());
  }
  auto engine = std::make_unique<StoredEngine>(ckpt.config(), std::move(weights), ckpt.path(), std::nullopt,
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

}  // namespace upcycle
