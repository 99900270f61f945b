// The CPU model and decoder over weights in their stored dtype (trainer/stored_backend.hpp):
// what the CPU's inference engine runs.
#pragma once
#include "trainer/decoder.hpp"
#include "trainer/model.hpp"
#include "trainer/stored_backend.hpp"

namespace upcycle {

using StoredModel = BasicTransformer<CpuStoredBackend>;
using StoredDecoder = BasicDecoder<CpuStoredBackend>;
extern template class BasicTransformer<CpuStoredBackend>;
extern template class BasicDecoder<CpuStoredBackend>;

}  // namespace upcycle
