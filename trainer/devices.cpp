// The engines by --device name (trainer/engine.hpp).
#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "core/error.hpp"
#include "trainer/engine.hpp"

namespace upcycle {

namespace {

DeviceEngines cpu() { return {make_cpu_engine, nullptr}; }

struct Devices {
  std::mutex mutex;
  std::map<std::string, DeviceLoader> loaders{{"cpu", cpu}};
  std::vector<DeviceEngines> loaded;  // what the loaders have given so far
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
  const DeviceEngines engines = load();
  std::lock_guard lock(devices().mutex);
  auto& loaded = devices().loaded;
  if (std::none_of(loaded.begin(), loaded.end(), [&](const DeviceEngines& d) { return d.make == engines.make; }))
    loaded.push_back(engines);
  return engines.make;
}

LoraEngineFactory lora_engine_for(EngineFactory make) {
  std::lock_guard lock(devices().mutex);
  for (const DeviceEngines& d : devices().loaded)
    if (d.make == make && d.make_lora) return d.make_lora;
  return nullptr;
}

}  // namespace upcycle
