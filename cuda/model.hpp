// The transformer on the GPU: trainer/model.hpp's one definition over cuda::Backend<T>, and over
// cuda::LoraBackend<T> (a frozen base with a LoRA adapter's terms, cuda/lora_backend.hpp).
// cuda::Transformer<bf16> trains (bf16 weights and activations, fp32 gradients);
// cuda::Transformer<float> is the one the tests hold against the CPU at fp32 tolerances; the
// same for cuda::LoraModel against the CPU's LoRA model. Instantiated in cuda/model.cpp and
// cuda/lora_model.cpp.
#pragma once
#include "cuda/backend.hpp"
#include "cuda/lora_backend.hpp"
#include "trainer/decoder.hpp"
#include "trainer/model.hpp"

namespace upcycle {

extern template class BasicTransformer<cuda::Backend<float>>;
extern template class BasicTransformer<cuda::Backend<cuda::bf16>>;
extern template class BasicDecoder<cuda::Backend<float>>;
extern template class BasicDecoder<cuda::Backend<cuda::bf16>>;
extern template class BasicTransformer<cuda::LoraBackend<float>>;
extern template class BasicTransformer<cuda::LoraBackend<cuda::bf16>>;
extern template class BasicDecoder<cuda::LoraBackend<float>>;
extern template class BasicDecoder<cuda::LoraBackend<cuda::bf16>>;

namespace cuda {
template <class T>
using Transformer = BasicTransformer<Backend<T>>;
template <class T>
using Decoder = BasicDecoder<Backend<T>>;
template <class T>
using LoraModel = BasicTransformer<LoraBackend<T>>;
}  // namespace cuda

}  // namespace upcycle
