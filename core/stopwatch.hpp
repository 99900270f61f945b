// Wall-clock seconds of a stage's parts, as the benchmarks report them.
#pragma once
#include <chrono>
#include <utility>

namespace upcycle {

class Stopwatch {
 public:
  // Seconds since it was made or last asked.
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    return std::chrono::duration<double>(now - std::exchange(last_, now)).count();
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace upcycle
