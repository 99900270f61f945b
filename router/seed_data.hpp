// UpIT's seed data: the small set the routers are fitted on, given as its own file or drawn from
// the training data.
#pragma once
#include <cstdint>

#include "text/tokenized_data.hpp"

namespace upcycle::router {

// A seeded random `fraction` of data's samples, at least min_samples (all of them when data has
// no more), in file order. std::invalid_argument unless 0 < fraction <= 1 and min_samples >= 1.
TokenizedData draw_seed_data(const TokenizedData& data, double fraction, int64_t min_samples, uint64_t seed);

}  // namespace upcycle::router
