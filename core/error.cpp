#include "core/error.hpp"

namespace upcycle {

namespace {
// Appends piece by piece: GCC 12 warns falsely (-Wrestrict) on chains of string operator+.
std::string join(const std::string& file, const std::string& where, const std::string& detail) {
  std::string s;
  s.reserve(file.size() + where.size() + detail.size() + 4);
  s.append(file).append(": ");
  if (!where.empty()) s.append(where).append(": ");
  s.append(detail);
  return s;
}
}  // namespace

InputError::InputError(const std::filesystem::path& file, const std::string& detail)
    : InputError(file, "", detail) {}

InputError::InputError(const std::filesystem::path& file, const std::string& where, const std::string& detail)
    : std::runtime_error(join(file.string(), where, detail)), file_(file.string()), where_(where), detail_(detail) {}

}  // namespace upcycle
