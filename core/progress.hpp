// Progress with rate and ETA for long work, on stderr: redrawn in place on a terminal, a line
// every few seconds otherwise (logs, CI). Silent when disabled.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace upcycle {

class Progress {
 public:
  // `unit` names what total counts ("B" formats as bytes, anything else as a plain count).
  Progress(std::string label, uint64_t total, std::string unit, bool enabled = true);
  ~Progress();
  void advance(uint64_t amount);
  void finish();  // the final line, with the total time

 private:
  void draw(bool final_line);
  std::string label_, unit_;
  uint64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_bytes(double bytes);       // "1.23 GB"
std::string format_duration(double seconds);  // "1m05s"

}  // namespace upcycle
