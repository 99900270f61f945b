// The learning rate over the run: linear warmup, then cosine or linear decay to a floor, or
// constant.
#pragma once
#include <cstdint>
#include <string>

namespace upcycle {

struct LrSchedule {
  enum class Kind { Cosine, Linear, Constant };
  Kind kind = Kind::Cosine;
  double peak = 1e-5;
  int64_t warmup = 0;       // steps of linear warmup: step s (1-based) of them uses peak·s/warmup
  int64_t total = 1;        // the run's steps; decay ends at the last one
  double min_ratio = 0.0;   // the floor as a fraction of peak
  // The rate of step s, 1 <= s <= total.
  double at(int64_t step) const;
};

// "cosine", "linear" or "constant"; UsageError otherwise.
LrSchedule::Kind parse_schedule(const std::string& name);
std::string schedule_name(LrSchedule::Kind kind);

}  // namespace upcycle
