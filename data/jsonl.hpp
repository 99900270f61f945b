// JSON Lines, read line by line: every non-blank line one JSON object. Shared by the readers of
// instruction data and of evaluation sets so they number lines and treat bad ones alike.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

namespace upcycle {

// Calls parse(object, line) for every non-blank line (line is 1-based). A line that is not a JSON
// object, or for which parse throws std::invalid_argument, is an InputError naming the file and
// the line, unless skip_bad: then it is passed over and counted. Returns the count skipped.
// An unreadable file, a line over 64 MB, and a file with no good line are InputErrors.
int64_t read_jsonl(const std::filesystem::path& path, bool skip_bad,
                   const std::function<void(const nlohmann::json& object, int64_t line)>& parse);

}  // namespace upcycle
