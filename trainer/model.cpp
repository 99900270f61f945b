// The CPU model: the backend-generic definitions (model_forward.hpp, model_backward.hpp)
// instantiated over trainer/ops, in float for real work and double for the gradient checks.
#include "trainer/model.hpp"

#include "core/error.hpp"
#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

namespace upcycle {

AuxLoss parse_aux_loss(const std::string& name) {
  if (name == "per-layer") return AuxLoss::PerLayer;
  if (name == "global") return AuxLoss::Global;
  if (name == "global-batch") return AuxLoss::GlobalBatch;
  throw UsageError("'" + name + "' is not per-layer, global or global-batch");
}

std::string aux_loss_name(AuxLoss a) {
  return a == AuxLoss::PerLayer ? "per-layer" : a == AuxLoss::Global ? "global" : "global-batch";
}

Balance parse_balance(const std::string& name) {
  if (name == "loss") return Balance::Loss;
  if (name == "bias") return Balance::Bias;
  throw UsageError("'" + name + "' is not loss or bias");
}

std::string balance_name(Balance b) { return b == Balance::Loss ? "loss" : "bias"; }

template class BasicTransformer<CpuBackend<float>>;
template class BasicTransformer<CpuBackend<double>>;

}  // namespace upcycle
