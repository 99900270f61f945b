// The project's one error type for bad input, and the one for bad usage.
#pragma once
#include <filesystem>
#include <stdexcept>
#include <string>

namespace upcycle {

// Bad input: names the file, optionally where in it (a tensor, a line, a key), and what was
// wrong. Commands print what() as one line and exit with code 2.
class InputError : public std::runtime_error {
 public:
  InputError(const std::filesystem::path& file, const std::string& detail);
  InputError(const std::filesystem::path& file, const std::string& where, const std::string& detail);

  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }
  const std::string& detail() const { return detail_; }

 private:
  std::string file_, where_, detail_;
};

// A command used wrongly (unknown option, missing argument). Exit code 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Shorthands that read as checks at the call site: require(cond, file, "what was wrong").
inline void require(bool ok, const std::filesystem::path& file, const std::string& detail) {
  if (!ok) throw InputError(file, detail);
}
inline void require(bool ok, const std::filesystem::path& file, const std::string& where,
                    const std::string& detail) {
  if (!ok) throw InputError(file, where, detail);
}

}  // namespace upcycle
