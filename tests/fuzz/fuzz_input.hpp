// What the fuzz targets share: the parsers take paths, so each input goes to one file per
// process (in /dev/shm when it exists, so the disk is not worn), rewritten for every input.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace upcycle::fuzz {

// A path of our own for this process, with the given extension; removed at a normal exit.
inline const std::filesystem::path& input_path(const char* extension) {
  static const std::filesystem::path path = [&] {
    std::filesystem::path dir = std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                                            : std::filesystem::temp_directory_path();
    return dir / ("upcycle-fuzz-" + std::to_string(::getpid()) + extension);
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    });
    return true;
  }();
  (void)cleanup;
  return path;
}

// Writes the input to input_path(extension); aborts when that fails (a broken harness is not a
// finding in the parser, but silence would hide it).
inline const std::filesystem::path& write_input(const uint8_t* data, size_t size, const char* extension) {
  const auto& path = input_path(extension);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// Tensors above this many elements are skipped: the input is small, so a claim of more is
// already rejected by the parser's checks against the file size, or is a quantized tensor that
// would only cost time.
constexpr uint64_t kMaxElements = 1u << 20;

}  // namespace upcycle::fuzz
