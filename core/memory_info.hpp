// What the machine's memory holds: what is free for a stage to take, and what this process has
// held at most (the benchmarks' figure).
#pragma once
#include <cstdint>
#include <optional>

namespace upcycle {

// MemAvailable + SwapFree of /proc/meminfo, in bytes; nullopt where it cannot be read.
std::optional<uint64_t> available_memory();

// This process's peak resident memory (getrusage's ru_maxrss), in MiB: the figure every benchmark
// here quotes as "MB".
double peak_rss_mb();

}  // namespace upcycle
