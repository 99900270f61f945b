// The GPU model: the backend-generic definitions instantiated over cuda::Backend.
#include "cuda/model.hpp"

#include "trainer/decoder_impl.hpp"
#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

namespace upcycle {

template class BasicTransformer<cuda::Backend<float>>;
template class BasicTransformer<cuda::Backend<cuda::bf16>>;
template class BasicDecoder<cuda::Backend<float>>;
template class BasicDecoder<cuda::Backend<cuda::bf16>>;

}  // namespace upcycle
