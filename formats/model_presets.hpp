// Named model shapes for `init` and the benchmarks, as Hugging Face config.json objects.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upcycle {

// nullopt for an unknown name.
std::optional<nlohmann::ordered_json> preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace upcycle
