#include "core/staged_path.hpp"

#include <unistd.h>

#include <fstream>
#include <system_error>

#include "core/error.hpp"

namespace upcycle {

namespace fs = std::filesystem;

StagedPath::StagedPath(fs::path final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.filename().empty()) final_ = final_.parent_path();  // "out/" names the folder "out"
  fs::path parent = final_.parent_path().empty() ? fs::path(".") : final_.parent_path();
  require(fs::is_directory(parent), final_, "the folder it goes in does not exist");
  require(overwrite || !fs::exists(final_), final_, "already exists (pass --overwrite to replace it)");
  temp_ = parent / ("." + final_.filename().string() + ".partial-" + std::to_string(::getpid()));
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
