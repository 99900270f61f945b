// The engines by --device name (trainer/engine.hpp).
#include <map>
#include <mutex>
#include <vector>

#include "core/error.hpp"
#include "trainer/engine.hpp"

namespace upcycle {

namespace {

EngineFactory cpu() { return make_cpu_engine; }

struct Devices {
  std::mutex mutex;
  std::map<std::string, DeviceLoader> loaders{{"cpu", cpu}};
};

Devices& devices() {
  static Devices d;
  return d;
}

}  // namespace

void register_device(const std::string& name, DeviceLoader load) {
  std::lock_guard lock(devices().mutex);
  devices().loaders[name] = load;
}

EngineFactory engine_for_device(const std::string& name) {
  DeviceLoader load = nullptr;
  std::vector<std::string> known;
  {
    std::lock_guard lock(devices().mutex);
    for (const auto& [n, l] : devices().loaders) {
      known.push_back(n);
      if (n == name) load = l;
    }
  }
  if (!load) {
    std::string list;
    for (size_t i = 0; i < known.size(); ++i) list += (i == 0 ? "" : i + 1 == known.size() ? " or " : ", ") + known[i];
    throw UsageError("--device: '" + name + "' is not " + list);
  }
  return load();
}

}  // namespace upcycle
