// The CPU model: the backend-generic definitions (model_forward.hpp, model_backward.hpp)
// instantiated over trainer/ops, in float for real work and double for the gradient checks.
#include "trainer/model.hpp"

#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

namespace upcycle {

template class BasicTransformer<CpuBackend<float>>;
template class BasicTransformer<CpuBackend<double>>;

}  // namespace upcycle
