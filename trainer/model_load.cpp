// Loading a checkpoint's weights into f32 buffers by role (and an engine over them), and reading
// rope_scaling.
#include <string>

#include <spdlog/spdlog.h>

#include "core/error.hpp"

#include "trainer/engine.hpp"
#include "trainer/load_by_role.hpp"
#include "trainer/lora_terms.hpp"
#include "trainer/model.hpp"

namespace upcycle {

template <class T>
Weights<T> load_weights(const Checkpoint& ckpt) {
  auto load = [&](const std::string& name) { return ckpt.load(name); };
  auto values = [](const Tensor& t, Role) {
    const Tensor f = t.to(DType::F32);
    const auto s = f.span<float>();
    return std::vector<T>(s.begin(), s.end());
  };
  // Matrix e of a stacked [E, R, C] tensor, rows [first, first + rows): [rows, C].
  auto slice = [](const std::vector<T>& all, const Shape& shape, int64_t e, int64_t first, int64_t rows) {
    const auto begin = all.begin() + (e * shape[1] + first) * shape[2];
    return std::vector<T>(begin, begin + rows * shape[2]);
  };
  return load_by_role<std::vector<T>>(ckpt, load, values, slice);
}

template Weights<float> load_weights(const Checkpoint&);
template Weights<double> load_weights(const Checkpoint&);

ops::RopeScaling rope_scaling(const ModelConfig& config, const std::filesystem::path& source) {
  return parse_rope_scaling(config.rope_scaling, source);
}

std::unique_ptr<Engine> load_engine(const Checkpoint& ckpt, EngineFactory make, std::optional<TrainSetup> training,
                                    std::optional<Precision> precision, const std::filesystem::path& adapter) {
  if (!adapter.empty() && training)
    throw UsageError("--adapter: adapters are applied for forward, eval and generate (tune --adapter trains one)");
  if (training) return load_training_engine(ckpt, ckpt.config(), make, *training, precision);
  if (make == make_cpu_engine) return make_cpu_inference_engine(ckpt, precision.value_or(Precision::F32), adapter);
  if (precision == Precision::F32) throw UsageError("--precision f32: the GPU computes in bf16");
  if (adapter.empty()) return make({ckpt.config(), load_weights<float>(ckpt), ckpt.path(), std::nullopt});
  const LoraEngineFactory make_lora = lora_engine_for(make);
  if (!make_lora) throw UsageError("--adapter: this device has no LoRA engine");
  LoraAdapter a = read_peft_adapter(adapter, ckpt.config());
  spdlog::info("{}: {}", adapter.string(), lora_adapter_summary(a));
  return make_lora(ckpt, std::move(a), std::nullopt);
}

std::unique_ptr<Engine> load_training_engine(const Checkpoint& ckpt, const ModelConfig& config, EngineFactory make,
                                             const TrainSetup& setup, std::optional<Precision> precision) {
  if (make != make_cpu_engine) {
    if (precision == Precision::F32) throw UsageError("--precision f32: the GPU computes in bf16");
    return make({config, load_weights<float>(ckpt), ckpt.path(), setup});
  }
  const Precision p = precision.value_or(Precision::F32);
  if (setup.frozen.none() && p == Precision::F32) return make({config, load_weights<float>(ckpt), ckpt.path(), setup});
  return make_cpu_stored_engine(config, load_stored_weights(ckpt), ckpt.path(), setup, p);
}

std::unique_ptr<Checkpoint> Engine::checkpoint(const Checkpoint* like) {
  return as_checkpoint(host_weights(), config(), like);
}

}  // namespace upcycle
