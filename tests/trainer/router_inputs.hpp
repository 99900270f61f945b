// Router logits for gradient checks: within each token the logits are spaced at least 0.17 apart,
// so no ±1e-5 finite-difference step can change which experts are in the top k.
#pragma once
#include <cstdint>
#include <vector>

#include "tests/trainer/gradcheck.hpp"

namespace upcycle::test {

Vec separated_logits(int64_t N, int64_t E, uint64_t seed);

}  // namespace upcycle::test
