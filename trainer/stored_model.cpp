// The stored-dtype model and decoder: the backend-generic definitions instantiated over
// CpuStoredBackend.
#include "trainer/stored_model.hpp"

#include "trainer/decoder_impl.hpp"
#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

namespace upcycle {

template class BasicTransformer<CpuStoredBackend>;
template class BasicDecoder<CpuStoredBackend>;

}  // namespace upcycle
