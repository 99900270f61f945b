// The GPU's Engines (trainer/engine.hpp), T being bf16 for real work (the plugin's engines) and
// float for the checks against the CPU's: make_engine's over cuda::Transformer<T> with, for
// training, cuda::AdamW (fp32 masters, moments and gradients on the device); make_lora_engine's
// over cuda::LoraModel<T> (a base with a LoRA adapter applied), training the adapter.
#pragma once
#include <memory>
#include <optional>

#include "cuda/runtime.hpp"
#include "trainer/engine.hpp"

namespace upcycle::cuda {

// std::runtime_error with the reason when no usable GPU is there.
template <class T>
std::unique_ptr<Engine> make_engine(EngineSpec&& spec);

// A LoraEngineFactory (trainer/engine.hpp): `base` uploaded as T and frozen, the adapter's terms
// applied unmerged with A and B in fp32 on the device (a MixLoRA adapter making it the base's
// LoRA-MoE, adapted_config). With `training`: A and B (and a MixLoRA's routers, fp32 masters
// beside their T copies) trained by the GPU's AdamW under the CPU's names, with the CPU's dropout
// masks for each micro-batch's seed; trained_adapter() gives host copies, host_weights() the
// routers' masters alone, save_optimizer and load_optimizer the CPU's file, so that a run resumes
// on either device; checkpoint() the base with the adapter merged, as make_cpu_lora_engine's.
// `base` must outlive the engine. std::runtime_error with the reason when no usable GPU is there.
template <class T>
std::unique_ptr<Engine> make_lora_engine(const Checkpoint& base, LoraAdapter adapter,
                                         const std::optional<ops::AdamWConfig>& training);

}  // namespace upcycle::cuda
