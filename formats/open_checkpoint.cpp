// open_checkpoint(): picks the reader by what the path is, then checks tensors against config.
#include <array>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/mapped_file.hpp"
#include "formats/gguf_model.hpp"
#include "formats/h5.hpp"
#include "formats/hf_folder.hpp"
#include "formats/open_checkpoint.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {
enum class Format { HfFolder, H5, Gguf, Unknown };

Format sniff(const fs::path& path) {
  if (fs::is_directory(path)) return Format::HfFolder;
  auto file = ReadOnlyFile::open(path);
  std::array<std::byte, 8> magic{};
  if (file->size() >= magic.size()) {
    file->read(0, magic);
    const auto* m = reinterpret_cast<const unsigned char*>(magic.data());
    if (m[0] == 'G' && m[1] == 'G' && m[2] == 'U' && m[3] == 'F') return Format::Gguf;
    static const unsigned char hdf5[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (std::equal(m, m + 8, hdf5)) return Format::H5;
  }
  // Otherwise trust the extension (HDF5 allows a user block before its signature) and let the
  // reader say what is wrong.
  if (path.extension() == ".h5" || path.extension() == ".hdf5") return Format::H5;
  if (path.extension() == ".gguf") return Format::Gguf;
  return Format::Unknown;
}
}  // namespace

std::unique_ptr<Checkpoint> open_checkpoint(const fs::path& path) {
  require(fs::exists(path), path, "no such file or folder");
  std::unique_ptr<Checkpoint> ckpt;
  switch (sniff(path)) {
    case Format::HfFolder: ckpt = open_hf_folder(path); break;
    case Format::H5: ckpt = open_h5(path); break;
    case Format::Gguf: ckpt = open_gguf(path); break;
    case Format::Unknown:
      throw InputError(path, path.extension() == ".safetensors"
                                 ? "a single .safetensors file: give the model folder holding it and config.json"
                                 : "not a checkpoint this tool reads (a Hugging Face folder, .h5 or .gguf)");
  }
  check_tensors_match_config(*ckpt);
  return ckpt;
}

}  // namespace upcycle
