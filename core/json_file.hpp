// A whole JSON file read and parsed, with a size limit so a huge or hostile file is refused before
// it is read; errors name the file.
#pragma once
#include <cstdint>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace upcycle {

inline constexpr uint64_t kMaxJsonFileBytes = 1ull << 30;

nlohmann::json read_json_file(const std::filesystem::path& path, uint64_t max_bytes = kMaxJsonFileBytes);

}  // namespace upcycle
