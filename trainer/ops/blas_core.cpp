#include "trainer/ops/blas_core.hpp"

// Weak: with another BLAS the symbol is absent and the pointer null.
extern "C" char* openblas_get_corename(void) __attribute__((weak));

namespace upcycle::ops {

std::string blas_core() {
  if (!openblas_get_corename) return "";
  const char* name = openblas_get_corename();
  return name ? name : "";
}

}  // namespace upcycle::ops
