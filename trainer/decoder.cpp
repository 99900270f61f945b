// The CPU's decoder: the backend-generic definitions instantiated over CpuBackend<float>.
#include "trainer/decoder_impl.hpp"

namespace upcycle {

template class BasicDecoder<CpuBackend<float>>;

}  // namespace upcycle
