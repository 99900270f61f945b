// A model on one device, as the training loop, the evaluations and the router stage drive it:
// batches in; logits, losses and AdamW steps out; the fp32 weights and the optimizer's moments
// back on the host for checkpoints. make_cpu_engine runs Transformer<float> and AdamW; the CUDA
// plugin makes one over cuda::Transformer<bf16> and cuda::AdamW (cuda/engine.hpp). Callers hold
// an EngineFactory and so run on either device through the same code.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trainer/decoder.hpp"
#include "trainer/model.hpp"
#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle {

// What training needs beyond the model: the optimizer's settings and the parts left as they are.
struct TrainSetup {
  ops::AdamWConfig adam;  // lr is given to each step
  PartSet frozen;
};

struct EngineSpec {
  ModelConfig config;
  Weights<float> weights;              // fp32; the engine takes them
  std::filesystem::path source;        // named in errors
  std::optional<TrainSetup> training;  // none: forward and losses only (no gradients or moments kept)
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string device() const = 0;  // "cpu", or the GPU's name

  // logits [N, V], on the host
  virtual std::vector<float> forward(const Batch& batch) = 0;
  // As BasicTransformer::loss.
  virtual LossReport loss(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts = {}) = 0;
  // Each layer's router input [L][N, H] (BasicTransformer::ffn_inputs), on the host.
  virtual std::vector<std::vector<float>> ffn_inputs(const Batch& batch) = 0;
  // A decoder with a cache of `capacity` positions (trainer/decoder.hpp), over this engine's
  // model, which must outlive it.
  virtual std::unique_ptr<TokenDecoder> decoder(int64_t capacity) const = 0;

  // Training; std::logic_error on an engine made without `training`.
  virtual void zero_grads() = 0;
  // The batch's loss, its gradients added into the engine's own.
  virtual LossReport accumulate(const Batch& batch, const std::vector<int32_t>& targets, const LossOptions& opts) = 0;
  // Clips the gradients to max_norm (<= 0: no clipping); their global norm before it.
  virtual double clip(double max_norm) = 0;
  virtual void step(double lr) = 0;
  virtual int64_t steps() const = 0;  // AdamW steps taken (restored by load_optimizer)

  // The fp32 weights (the optimizer's masters when training), on the host, to read: valid until
  // the next step, and writes to them may not reach the device's copy.
  virtual Weights<float>& host_weights() = 0;
  // AdamW's moments and step count in one safetensors file (trainer/optimizer.hpp's format), and
  // back (InputError naming the file when a tensor is missing or of another shape).
  virtual void save_optimizer(const std::filesystem::path& file) = 0;
  virtual void load_optimizer(const std::filesystem::path& file) = 0;
};

// A function pointer, so that the CUDA plugin's table can hold one.
using EngineFactory = std::unique_ptr<Engine> (*)(EngineSpec&& spec);

std::unique_ptr<Engine> make_cpu_engine(EngineSpec&& spec);
// The CPU's engine for inference: the checkpoint's weights as stored (bf16, f16 and GGUF's
// quantized matrices read in place, trainer/stored_weights.hpp), never widened whole, computed in `precision`; the
// training calls throw std::logic_error. InputError naming the file when the weights do not load.
std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision = Precision::F32);
// The same over weights already loaded (load_stored_weights, or views of them such as an MoE
// expert's dense model). With `training`, only an MoE's routers train (every other part frozen;
// std::invalid_argument otherwise), on f32 masters: host_weights() holds those alone, every other
// tensor empty. The router stage's engine.
std::unique_ptr<Engine> make_cpu_stored_engine(ModelConfig config, StoredWeights weights,
                                               const std::filesystem::path& source,
                                               std::optional<TrainSetup> training = {});
inline constexpr const char* kPrecisionHelp =
    "f32 or bf16 (default: the device's, f32 on the CPU, bf16 on the GPU). On the CPU, bf16 multiplies bf16 "
    "weights (f32 and f16 matrices converted when loaded; quantized ones kept) by activations rounded to bf16, "
    "with f32 sums, on oneDNN (AMX or AVX512-BF16 where the CPU has them): forward, eval and generate";

// Engines by --device name: "cpu" always; others registered by the program at start (the CUDA
// plugin's, upcycle/cuda_plugin.hpp), each loaded on first use. UsageError for an unknown name.
using DeviceLoader = EngineFactory (*)();
void register_device(const std::string& name, DeviceLoader load);
EngineFactory engine_for_device(const std::string& name);
inline constexpr const char* kDeviceHelp =
    "cpu, or cuda: bf16 weights and activations with fp32 accumulation (and fp32 master weights and "
    "AdamW when training) on the GPU, through libupcycle_cuda.so beside upcycle";

// An engine over a checkpoint's weights (InputError naming the file when they do not load), in
// `precision` (none: the device's). On the CPU without training: make_cpu_inference_engine's.
// UsageError for a precision the device cannot give there: bf16 training on the CPU, f32 on the
// GPU.
std::unique_ptr<Engine> load_engine(const Checkpoint& ckpt, EngineFactory make = make_cpu_engine,
                                    std::optional<TrainSetup> training = {},
                                    std::optional<Precision> precision = {});

}  // namespace upcycle
