#include "core/memory_info.hpp"

#include <sys/resource.h>

#include <fstream>
#include <sstream>
#include <string>

namespace upcycle {

std::optional<uint64_t> available_memory() {
  std::ifstream in("/proc/meminfo");
  std::optional<uint64_t> kb;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string key;
    uint64_t value = 0;
    if (!(fields >> key >> value)) continue;
    if (key == "MemAvailable:" || key == "SwapFree:") kb = kb.value_or(0) + value;
  }
  if (!kb) return std::nullopt;
  return *kb * 1024;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

}  // namespace upcycle
