#include "trainer/schedule.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace upcycle {

double LrSchedule::at(int64_t step) const {
  if (step <= warmup) return peak * double(step) / double(std::max<int64_t>(1, warmup));
  if (kind == Kind::Constant) return peak;
  // progress runs from 0 just after warmup to 1 at the last step
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  const double p = std::clamp(progress, 0.0, 1.0);
  const double shape = kind == Kind::Cosine ? 0.5 * (1.0 + std::cos(M_PI * p)) : 1.0 - p;
  return peak * (min_ratio + (1.0 - min_ratio) * shape);
}

LrSchedule::Kind parse_schedule(const std::string& name) {
  if (name == "cosine") return LrSchedule::Kind::Cosine;
  if (name == "linear") return LrSchedule::Kind::Linear;
  if (name == "constant") return LrSchedule::Kind::Constant;
  throw UsageError("--schedule: '" + name + "' is not cosine, linear or constant");
}

std::string schedule_name(LrSchedule::Kind kind) {
  switch (kind) {
    case LrSchedule::Kind::Cosine: return "cosine";
    case LrSchedule::Kind::Linear: return "linear";
    case LrSchedule::Kind::Constant: return "constant";
  }
  return "";
}

}  // namespace upcycle
