#include <doctest/doctest.h>

#include <stdexcept>

#include "cuda_check.hpp"

namespace upcycle::test {

TEST_CASE("runtime: a device buffer round-trips its values, in float and bf16") {
  const std::vector<float> x = uniform(1000, 1);
  check_close(to_host(to_device<float>(x)), x, 0, "float");
  check_close(to_host(to_device<cuda::bf16>(x)), round_bf16(x), 0, "bf16");
}

TEST_CASE("runtime: a failed call throws naming the call") {
  cuda::DeviceBuffer<float> d(4);
  float host[4];
  // Copying more than the allocation holds is refused by the runtime.
  CHECK_THROWS_WITH_AS(UPCYCLE_CUDA(cudaMemcpy(host, d.data(), size_t(1) << 40, cudaMemcpyDeviceToHost)),
                       doctest::Contains("cudaMemcpy"), std::runtime_error);
}

}  // namespace upcycle::test
