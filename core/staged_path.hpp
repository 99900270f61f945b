// Outputs appear complete or not at all: a writer works under a temporary name beside the final
// one and renames when done. An abandoned stage (error, exception) removes its temporary.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace upcycle {

class StagedPath {
 public:
  // Fails (InputError) when `final_path` exists and overwrite is false, or its folder is missing.
  StagedPath(std::filesystem::path final_path, bool overwrite);
  ~StagedPath();
  StagedPath(const StagedPath&) = delete;
  StagedPath& operator=(const StagedPath&) = delete;

  const std::filesystem::path& temp() const { return temp_; }
  const std::filesystem::path& final_path() const { return final_; }
  // Renames the temporary to the final name (replacing an old output when overwrite was given).
  void commit();
  // Runs `write`, which writes under temp(). An InputError it throws naming a path under temp()
  // is rethrown naming that path under the final name: the one the user gave.
  void run(const std::function<void()>& write) const;

 private:
  std::filesystem::path final_, temp_;
  bool overwrite_, committed_ = false;
};

// Removes the staging entries (".NAME.partial-PID@HOST", and their ".old") in `folder` whose
// process no longer runs on this machine: what a killed writer left, each up to a whole
// checkpoint. Entries of other machines sharing the folder are left alone. Every StagedPath does
// this in its folder; each removal is logged.
void remove_stale_staging(const std::filesystem::path& folder);

// Writes `text` to `path` (replacing it); InputError naming the path on failure.
void write_text_file(const std::filesystem::path& path, const std::string& text);
// The same under a temporary name, renamed over `path` when complete.
void replace_text_file(const std::filesystem::path& path, const std::string& text);

}  // namespace upcycle
