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

class AdamW;  // trainer/optimizer.hpp

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
  // The AdamW whose clip() and step() the engine's are, when it runs on the host (the CPU's
  // engines): a data-parallel run spreads it over its processes (AdamW::spread). Null elsewhere.
  virtual AdamW* host_optimizer() { return nullptr; }

  // The fp32 weights (the optimizer's masters when training), on the host, to read: valid until
  // the next step, and writes to them may not reach the device's copy. An engine that keeps
  // frozen parts as stored (make_cpu_stored_engine) holds the trained tensors alone here.
  virtual Weights<float>& host_weights() = 0;
  // Every weight as a checkpoint of Hugging Face names, read when written (valid until the next
  // step), with `like`'s side and generated files: by default host_weights() in f32; the frozen
  // parts of an engine that keeps them as stored, in their stored dtype.
  virtual std::unique_ptr<Checkpoint> checkpoint(const Checkpoint* like);
  // The LoRA adapter an engine trains (make_cpu_lora_engine, a LoraEngineFactory's with training),
  // its A, B (and a MixLoRA's routers) as they stand, f32 (on the CPU, views of the engine's own
  // values): valid until its next step or its end (copy them to keep them); none for an engine
  // that trains the model's own weights.
  virtual std::optional<LoraAdapter> trained_adapter() { return std::nullopt; }
  // AdamW's moments and step count in one safetensors file (trainer/optimizer.hpp's format), and
  // back (InputError naming the file when a tensor is missing or of another shape).
  virtual void save_optimizer(const std::filesystem::path& file) = 0;
  virtual void load_optimizer(const std::filesystem::path& file) = 0;
};

// A function pointer, so that the CUDA plugin's table can hold one.
using EngineFactory = std::unique_ptr<Engine> (*)(EngineSpec&& spec);
// An engine over `base` (which must outlive it) with a LoRA adapter (taken) applied unmerged:
// with `training`, one that trains the adapter's A and B (and a MixLoRA's routers) by AdamW, as
// make_cpu_lora_engine's; without, one for inference, as make_cpu_inference_engine's with an
// adapter. A function pointer, so that the CUDA plugin's table can hold one.
using LoraEngineFactory = std::unique_ptr<Engine> (*)(const Checkpoint& base, LoraAdapter adapter,
                                                      const std::optional<ops::AdamWConfig>& training);

std::unique_ptr<Engine> make_cpu_engine(EngineSpec&& spec);
// The CPU's engine for inference: the checkpoint's weights as stored (bf16, f16 and GGUF's
// quantized matrices read in place, trainer/stored_weights.hpp), never widened whole, computed in `precision`; the
// training calls throw std::logic_error. InputError naming the file when the weights do not load.
// With `adapter` (a PEFT LoRA adapter folder; empty: none), its modules are added unmerged
// (apply_adapter), after InputError checks of the folder against the model.
std::unique_ptr<Engine> make_cpu_inference_engine(const Checkpoint& ckpt, Precision precision = Precision::F32,
                                                  const std::filesystem::path& adapter = {});
// The same over weights already loaded (load_stored_weights, or views of them such as an MoE
// expert's dense model). With `training`, the parts it does not freeze train on f32 masters
// (widened copies, which the model reads through views: StoredWeight::master) and every frozen
// tensor stays as stored; host_weights() holds the masters alone, every frozen tensor empty. The
// router stage's engine, and tune's on the CPU with --freeze or in bf16. Under `products` BF16
// every matrix, the masters included, multiplies in bf16 (StoredWeight::in_bf16).
std::unique_ptr<Engine> make_cpu_stored_engine(ModelConfig config, StoredWeights weights,
                                               const std::filesystem::path& source,
                                               std::optional<TrainSetup> training = {},
                                               Precision products = Precision::F32);
// The engine that trains a LoRA adapter (tune --lora-rank): `base`'s weights as stored (computed
// in `precision`; bf16 converts its f32 and f16 matrices when loaded) all frozen, the adapter
// applied unmerged with its dropout, its A and B (f32) trained by AdamW under PEFT's tensor names.
// A MixLoRA adapter makes it the base's LoRA-MoE (adapted_config), whose routers train too.
// host_weights() holds the trained routers alone; trained_adapter() the adapter; checkpoint() the
// model with it merged. The adapter is taken (pass it moved: a large one is not held twice);
// `base` must outlive the engine. With `routers_only` a MixLoRA's terms stay frozen and its routers
// alone train (convert's router pre-optimisation over adapters).
std::unique_ptr<Engine> make_cpu_lora_engine(const Checkpoint& base, LoraAdapter adapter,
                                             const ops::AdamWConfig& adam, Precision precision = Precision::F32,
                                             bool routers_only = false);
inline constexpr const char* kPrecisionHelp =
    "f32 or bf16 (default: the device's, f32 on the CPU, bf16 on the GPU). On the CPU, bf16 multiplies bf16 "
    "weights (f32 and f16 matrices converted when loaded; quantized ones kept) by activations rounded to bf16, "
    "with f32 sums, on oneDNN where the CPU has AMX or AVX512-BF16 (elsewhere as sgemm on the widened values): "
    "forward, eval and generate";

// A device's engines: over f32 weights, and over a base with a LoRA adapter (null where the device
// has none; the CPU's LoRA engines are make_cpu_lora_engine and make_cpu_inference_engine, which
// take a precision).
struct DeviceEngines {
  EngineFactory make = nullptr;
  LoraEngineFactory make_lora = nullptr;
};
// Engines by --device name: "cpu" always; others registered by the program at start (the CUDA
// plugin's, upcycle/cuda_plugin.hpp), each loaded on first use. UsageError for an unknown name.
using DeviceLoader = DeviceEngines (*)();
void register_device(const std::string& name, DeviceLoader load);
EngineFactory engine_for_device(const std::string& name);
// The LoRA engines of the device whose engines `make` makes (one engine_for_device has given);
// null for the CPU and for a factory of no device loaded.
LoraEngineFactory lora_engine_for(EngineFactory make);
inline constexpr const char* kDeviceHelp =
    "cpu, or cuda: bf16 weights and activations with fp32 accumulation (and fp32 master weights and "
    "AdamW when training) on the GPU, through libupcycle_cuda.so beside upcycle";

// An engine over a checkpoint's weights (InputError naming the file when they do not load), in
// `precision` (none: the device's), with a LoRA `adapter` folder (empty: none). On the CPU
// without training: make_cpu_inference_engine's; with it, load_training_engine's; on another
// device with an adapter, its LoRA engine (lora_engine_for). UsageError for f32 on the GPU, and
// for an adapter in training or on a device without LoRA engines.
std::unique_ptr<Engine> load_engine(const Checkpoint& ckpt, EngineFactory make = make_cpu_engine,
                                    std::optional<TrainSetup> training = {},
                                    std::optional<Precision> precision = {},
                                    const std::filesystem::path& adapter = {});
inline constexpr const char* kAdapterHelp =
    "a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) for this model, "
    "applied unmerged: each adapted matrix adds scale x B x A to its products; or a MixLoRA folder, which makes the "
    "model its LoRA-MoE (each expert the FFN with its own terms, a router per layer)";
// An engine to train `config` (the checkpoint's, its router settings possibly changed) from the
// checkpoint's weights: on the CPU with a frozen part or in bf16, make_cpu_stored_engine's (the
// frozen parts never widened); otherwise `make`'s over f32 weights. InputError naming the file
// when they do not load; UsageError for f32 on the GPU.
std::unique_ptr<Engine> load_training_engine(const Checkpoint& ckpt, const ModelConfig& config, EngineFactory make,
                                             const TrainSetup& setup, std::optional<Precision> precision = {});

}  // namespace upcycle
