// The CPU's Engine over weights in their stored dtype (trainer/stored_backend.hpp): forward,
// eval and generate, and the router stage, which trains the routers alone (held in f32, AdamW
// on a copy the model reads through views) with every other weight frozen as stored.
#include <spdlog/spdlog.h>

#include <stdexcept>

#include "trainer/cpu_model_engine.hpp"
#include "trainer/stored_model.hpp"

namespace upcycle {

namespace {

class StoredEngine final : public CpuModelEngine<StoredModel, StoredDecoder> {
 public:
  StoredEngine(ModelConfig config, StoredWeights weights, const std::filesystem::path& source,
               const std::optional<TrainSetup>& training)
      : CpuModelEngine(std::move(config), std::move(weights), source) {
    if (!training) return;
    PartSet routers_only;
    routers_only.set();
    routers_only.reset(size_t(Part::Router));
    if (training->frozen != routers_only || !model_.config().is_moe())
      throw std::invalid_argument("Engine: over weights as stored, the CPU trains an MoE's routers alone");
    const int64_t E = model_.config().num_local_experts, H = model_.config().hidden_size;
    parameters(trained_, model_.config());  // laid out, every tensor empty
    for (size_t l = 0; l < trained_.layers.size(); ++l) {  // the model reads the routers from the masters
      std::vector<float>& master = trained_.layers[l].router;
      StoredWeight& router = model_.weights().layers[l].router;
      master.assign(router.data(), router.data() + E * H);
      router = StoredWeight(Tensor::borrowed(DType::F32, {E, H},
                                             std::shared_ptr<const std::byte>(reinterpret_cast<const std::byte*>(master.data()),
                                                                              [](const std::byte*) {})));
    }
    train(trained_, *training);
  }

  // The routers (every other tensor empty).
  Weights<float>& host_weights() override {
    training();
    return trained_;
  }

 private:
  Weights<float> trained_;  // the routers' masters, which the model's routers view
};

}  // namespace

std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision) {
  auto engine = std::make_unique<StoredEngine>(ckpt.config(), load_stored_weights(ckpt, precision), ckpt.path(), std::nullopt);
  spdlog::debug("{}: weights used as stored ({:.1f} MB), computed in {}", ckpt.path().string(),
                double(ckpt.stored_bytes()) / 1e6, precision_name(precision));
  return engine;
}

std::unique_ptr<Engine> make_cpu_stored_engine(ModelConfig config, StoredWeights weights,
                                               const std::filesystem::path& source, std::optional<TrainSetup> training) {
  return std::make_unique<StoredEngine>(std::move(config), std::move(weights), source, training);
}

}  // namespace upcycle
