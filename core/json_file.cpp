#include "core/json_file.hpp"

#include <span>
#include <string>

#include "core/error.hpp"
#include "core/mapped_file.hpp"

namespace upcycle {

nlohmann::json read_json_file(const std::filesystem::path& path, uint64_t max_bytes) {
  auto file = ReadOnlyFile::open(path);
  require(file->size() <= max_bytes, path,
          "is " + std::to_string(file->size()) + " bytes, over the limit of " + std::to_string(max_bytes));
  std::string text(file->size(), '\0');
  file->read(0, std::as_writable_bytes(std::span(text)));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    throw InputError(path, "not valid JSON: " + why.substr(why.find(']') + 2));
  }
}

}  // namespace upcycle
