#include "core/staged_path.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <optional>
#include <string_view>
#include <system_error>

#include <spdlog/spdlog.h>

#include "core/error.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kPartial = ".partial-";

// This machine's name, which staging entries carry: a process id means nothing on another
// machine sharing the folder (NFS), so only this machine's entries are checked for liveness.
const std::string& host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string();
  }();
  return name;
}

// The process on this machine that staged `name` (".NAME.partial-PID@HOST", or its ".old"
// during a replace; an entry without "@HOST" is taken as this machine's), if any.
std::optional<pid_t> staging_process(const std::string& name) {
  if (name.empty() || name[0] != '.') return std::nullopt;
  const size_t at = name.rfind(kPartial);
  if (at == std::string::npos) return std::nullopt;
  std::string_view rest = std::string_view(name).substr(at + kPartial.size());
  if (rest.ends_with(".old")) rest.remove_suffix(4);
  const size_t host_at = rest.find('@');
  if (host_at != std::string_view::npos && rest.substr(host_at + 1) != host_name()) return std::nullopt;
  const std::string_view digits = rest.substr(0, host_at);
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (ec != std::errc() || end != digits.data() + digits.size() || pid <= 0) return std::nullopt;
  return pid;
}

bool process_runs(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

void remove_stale_staging(const fs::path& folder) {
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::optional<pid_t> pid = staging_process(it->path().filename().string());
    if (!pid || *pid == ::getpid() || process_runs(*pid)) continue;
    std::error_code removed;
    fs::remove_all(it->path(), removed);
    if (!removed)
      spdlog::info("removed {}: a staging entry left by process {}, which no longer runs", it->path().string(), *pid);
  }
}

StagedPath::StagedPath(fs::path final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.filename().empty()) final_ = final_.parent_path();  // "out/" names the folder "out"
  fs::path parent = final_.parent_path().empty() ? fs::path(".") : final_.parent_path();
  require(fs::is_directory(parent), final_, "the folder it goes in does not exist");
  require(overwrite || !fs::exists(final_), final_, "already exists (pass --overwrite to replace it)");
  remove_stale_staging(parent);
  temp_ = parent / ("." + final_.filename().string() + std::string(kPartial) + std::to_string(::getpid()) + "@" + host_name());
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

StagedPath::~StagedPath() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

void StagedPath::commit() {
  std::error_code ec;
  if (overwrite_ && fs::exists(final_)) {
    // rename() cannot replace a non-empty folder: move the old one aside first.
    fs::path old = temp_.string() + ".old";
    fs::rename(final_, old, ec);
    if (ec) throw InputError(final_, "cannot replace: " + ec.message());
    fs::rename(temp_, final_, ec);
    if (ec) {
      fs::rename(old, final_);
      throw InputError(final_, "cannot rename the finished output into place: " + ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(temp_, final_, ec);
    if (ec) throw InputError(final_, "cannot rename the finished output into place: " + ec.message());
  }
  committed_ = true;
}

void StagedPath::run(const std::function<void()>& write) const {
  try {
    write();
  } catch (const InputError& e) {
    const std::string temp = temp_.string();
    if (e.file().compare(0, temp.size(), temp) != 0) throw;
    throw InputError(final_.string() + e.file().substr(temp.size()), e.where(), e.detail());
  }
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  require(!out.fail(), path, "cannot write");
}

void replace_text_file(const std::filesystem::path& path, const std::string& text) {
  StagedPath staged(path, /*overwrite=*/true);
  write_text_file(staged.temp(), text);
  staged.commit();
}

}  // namespace upcycle
