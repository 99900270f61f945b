// The CPU's inference Engine: the model over weights in their stored dtype
// (trainer/stored_backend.hpp), for forward, eval and generate. It trains nothing.
#include <spdlog/spdlog.h>

#include <stdexcept>

#include "trainer/cpu_model_engine.hpp"
#include "trainer/stored_model.hpp"

namespace upcycle {

namespace {

class StoredEngine final : public CpuModelEngine<StoredModel, StoredDecoder> {
 public:
  StoredEngine(const Checkpoint& ckpt, Precision precision)
      : CpuModelEngine(ckpt.config(), load_stored_weights(ckpt, precision), ckpt.path()) {}

  void zero_grads() override { inference_only(); }
  LossReport accumulate(const Batch&, const std::vector<int32_t>&, const LossOptions&) override { inference_only(); }
  double clip(double) override { inference_only(); }
  void step(double) override { inference_only(); }
  int64_t steps() const override { return 0; }
  Weights<float>& host_weights() override { inference_only(); }
  void save_optimizer(const std::filesystem::path&) override { inference_only(); }
  void load_optimizer(const std::filesystem::path&) override { inference_only(); }

 private:
  [[noreturn]] static void inference_only() {
    throw std::logic_error("Engine: the CPU's inference engine keeps the weights as stored and trains nothing");
  }
};

}  // namespace

std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision) {
  auto engine = std::make_unique<StoredEngine>(ckpt, precision);
  spdlog::debug("{}: weights used as stored ({:.1f} MB), computed in {}", ckpt.path().string(),
                double(ckpt.stored_bytes()) / 1e6, precision_name(precision));
  return engine;
}

}  // namespace upcycle
