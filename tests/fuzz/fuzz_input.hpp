// What the fuzz targets share: the parsers take paths, so each input goes to one file (or folder)
// per process, rewritten for every input.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle::fuzz {

// Where the inputs go: /dev/shm when it exists, so the disk is not worn.
inline std::filesystem::path scratch_root() {
  return std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                   : std::filesystem::temp_directory_path();
}

// Removes `path` at a normal exit.
inline void remove_at_exit(const std::filesystem::path& path) {
  static std::vector<std::filesystem::path> paths;
  if (paths.empty())
    std::atexit([] {
      std::error_code ec;
      for (const auto& p : paths) std::filesystem::remove_all(p, ec);
    });
  paths.push_back(path);
}

// Writes `size` bytes to `path`; aborts when that fails (a broken harness is not a finding in
// the parser, but silence would hide it).
inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

// A path of our own for this process, with the extension of the first call; removed at exit.
inline const std::filesystem::path& input_path(const char* extension) {
  static const std::filesystem::path path = [&] {
    auto p = scratch_root() / ("upcycle-fuzz-" + std::to_string(::getpid()) + extension);
    remove_at_exit(p);
    return p;
  }();
  return path;
}

// Writes the input to input_path(extension).
inline const std::filesystem::path& write_input(const uint8_t* data, size_t size, const char* extension) {
  const auto& path = input_path(extension);
  write_file(path, data, size);
  return path;
}

// A folder of our own for this process, for parsers that read several files of a folder.
inline const std::filesystem::path& input_folder() {
  static const std::filesystem::path dir = [] {
    auto d = scratch_root() / ("upcycle-fuzz-" + std::to_string(::getpid()) + "-folder");
    std::filesystem::create_directories(d);
    remove_at_exit(d);
    return d;
  }();
  return dir;
}

// Tensors above this many elements are skipped: the input is small, so a claim of more is
// already rejected by the parser's checks against the file size, or is a quantized tensor that
// would only cost time.
constexpr uint64_t kMaxElements = 1u << 20;

}  // namespace upcycle::fuzz
