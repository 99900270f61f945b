// The GPU's LoRA model (cuda/model.hpp): the backend-generic definitions instantiated over
// cuda::LoraBackend, in a file of their own so that the two models compile side by side.
#include "cuda/model.hpp"
#include "trainer/decoder_impl.hpp"
#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

namespace upcycle {

template class BasicTransformer<cuda::LoraBackend<float>>;
template class BasicTransformer<cuda::LoraBackend<cuda::bf16>>;
template class BasicDecoder<cuda::LoraBackend<float>>;
template class BasicDecoder<cuda::LoraBackend<cuda::bf16>>;

}  // namespace upcycle
