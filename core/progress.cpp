#include "core/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace upcycle {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) bytes /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else if (s < 1e3 * 86400) std::snprintf(buf, sizeof buf, "%lldh%02dm", (long long)(s / 3600), int(std::fmod(s, 3600) / 60));
  else return "over 1000 days";  // an int of seconds would overflow (--epochs 1e12 printed a negative ETA)
  return buf;
}

Progress::Progress(std::string label, uint64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled),
      tty_(::isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (enabled_ && tty_ && !finished_) std::fputc('\n', stderr);
}

void Progress::advance(uint64_t amount) {
  done_ += amount;
  auto now = std::chrono::steady_clock::now();
  auto interval = tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
  if (enabled_ && now - last_draw_ >= interval) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final_line) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0;
  auto amount = [&](double v) { return unit_ == "B" ? format_bytes(v) : std::to_string(uint64_t(v)) + " " + unit_; };
  std::string line = label_ + ": " + amount(double(done_)) + " / " + amount(double(total_));
  if (total_ > 0) line += " (" + std::to_string(int(100.0 * done_ / total_)) + "%)";
  // Slow units (a sweep's cells) as seconds each: "0 cells/s" says nothing.
  if (unit_ != "B" && rate > 0 && rate < 1) line += ", " + format_duration(1 / rate) + " each";
  else line += ", " + amount(rate) + "/s";
  if (final_line) line += ", done in " + format_duration(elapsed);
  else if (rate > 0 && total_ > done_) line += ", ETA " + format_duration((total_ - done_) / rate);
  std::fprintf(stderr, tty_ ? "\r\033[K%s%s" : "%s%s", line.c_str(), final_line || !tty_ ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace upcycle
