// The GPU's Engine (trainer/engine.hpp): cuda::Transformer<T> with, for training, cuda::AdamW
// (fp32 masters, moments and gradients on the device). T is bf16 for real work (the plugin's
// engine) and float for the checks against the CPU's engine.
#pragma once
#include <memory>

#include "cuda/runtime.hpp"
#include "trainer/engine.hpp"

namespace upcycle::cuda {

// std::runtime_error with the reason when no usable GPU is there.
template <class T>
std::unique_ptr<Engine> make_engine(EngineSpec&& spec);

}  // namespace upcycle::cuda
