#include "formats/hf_folder.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "core/tensor_names.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/safetensors.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kConfig = "config.json";
constexpr const char* kSingle = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";
constexpr uint64_t kMaxIndexBytes = 100'000'000;  // a 10k-tensor index is about 1 MB

constexpr std::array<const char*, 9> kSideFiles = {
    "tokenizer.json",          "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "generation_config.json", "chat_template.jinja",
    "vocab.json",              "merges.txt",      "added_tokens.json"};

// The ec overloads throughout: the throwing ones raise filesystem_error for names too long or
// unreadable folders, which must come out as InputError.
bool is_file(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// ---- reading ----

// A weight_map entry must name a file in the folder: a plain name, so that no '/' or '..' can
// lead elsewhere.
void check_plain_name(const std::string& name, const fs::path& index, const std::string& where) {
  bool plain = !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
               name.find('\0') == std::string::npos;
  require(plain, index, where, "shard '" + name + "' is not a plain file name inside the folder");
}

bool lies_within(const fs::path& inner, const fs::path& outer) {
  fs::path rel = inner.lexically_relative(outer);
  return !rel.empty() && *rel.begin() != "..";
}

// A file of the folder may be a symlink into the folder, or, in a Hugging Face hub cache
// snapshot (REPO/snapshots/REV/), into the repo's blob store (REPO/blobs/), where the hub keeps
// every snapshot's files. Anything else leaves the folder.
bool stays_inside(const fs::path& dir, const fs::path& file) {
  std::error_code dir_ec, file_ec;
  const fs::path real_dir = fs::canonical(dir, dir_ec), real = fs::canonical(file, file_ec);
  if (dir_ec || file_ec) return false;
  if (lies_within(real, real_dir)) return true;
  bool hub_snapshot = real_dir.parent_path().filename() == "snapshots";
  return hub_snapshot && real.parent_path() == real_dir.parent_path().parent_path() / "blobs";
}

SafetensorsFile open_weights(const fs::path& dir, const std::string& name, const fs::path& named_in,
                             const std::string& where) {
  const fs::path path = dir / name;
  require(is_file(path), named_in, where, "shard '" + name + "' does not exist");
  require(stays_inside(dir, path), path, "is a symlink that leads outside the model folder");
  return SafetensorsFile::open(path);
}

// tensor name -> shard file name, validated.
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  const json j = read_json_file(index, kMaxIndexBytes);
  require(j.is_object(), index, "not a JSON object");
  auto metadata = j.find("metadata");
  require(metadata == j.end() || metadata->is_object(), index, "metadata", "must be an object");
  auto map = j.find("weight_map");
  require(map != j.end(), index, "'weight_map' is missing");
  require(map->is_object(), index, "weight_map", "must be an object of tensor name -> shard file");
  require(!map->empty(), index, "weight_map", "lists no tensors");
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : map->items()) {
    const std::string where = "weight_map '" + tensor + "'";
    require(shard.is_string(), index, where, "shard must be a string");
    check_plain_name(shard.get<std::string>(), index, where);
    weight_map.emplace(tensor, shard.get<std::string>());
  }
  return weight_map;
}

// Each tensor in exactly the shard the index names, and every tensor of the shards in the index.
void check_index_matches_shards(const std::map<std::string, std::string>& weight_map,
                                const std::map<std::string, SafetensorsFile>& shards, const fs::path& index) {
  std::unordered_map<std::string, const std::string*> located;  // tensor -> its shard's name
  for (const auto& [shard_name, shard] : shards) {
    for (const SafetensorsEntry& e : shard.entries()) {
      const std::string where = "tensor '" + e.info.name + "'";
      auto [it, fresh] = located.emplace(e.info.name, &shard_name);
      require(fresh, shard.path(), where, "is also in shard '" + *it->second + "'");
      auto listed = weight_map.find(e.info.name);
      require(listed != weight_map.end(), shard.path(), where, "is in the shard but not in " + std::string(kIndex));
      require(listed->second == shard_name, shard.path(), where,
              "is in this shard but the index places it in '" + listed->second + "'");
    }
  }
  for (const auto& [tensor, shard_name] : weight_map)
    require(located.count(tensor) > 0, index.parent_path() / shard_name, "tensor '" + tensor + "'",
            "listed in the index but absent from the shard");
}

std::vector<SafetensorsFile> open_sharded(const fs::path& dir) {
  const fs::path index = dir / kIndex;
  const auto weight_map = read_weight_map(index);
  std::map<std::string, SafetensorsFile> shards;  // by file name: the shards' numbering order
  for (const auto& [tensor, shard] : weight_map)
    if (!shards.count(shard)) shards.emplace(shard, open_weights(dir, shard, index, "weight_map '" + tensor + "'"));
  check_index_matches_shards(weight_map, shards, index);
  std::vector<SafetensorsFile> files;
  for (auto& [name, shard] : shards) files.push_back(std::move(shard));
  return files;
}

// transformers' other weight formats, named when a folder has no safetensors.
[[noreturn]] void refuse_folder_without_safetensors(const fs::path& dir) {
  static const std::array<std::string_view, 7> kOtherWeights = {".bin", ".pt",      ".pth", ".ckpt",
                                                                 ".h5",  ".msgpack", ".gguf"};
  std::string found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string ext = entry.path().extension().string();
    if (std::find(kOtherWeights.begin(), kOtherWeights.end(), ext) != kOtherWeights.end())
      found += (found.empty() ? "" : ", ") + entry.path().filename().string();
  }
  if (!found.empty())
    throw InputError(dir, "holds " + found + " but no safetensors weights: a folder is read only from " +
                              "safetensors (transformers: save_pretrained(safe_serialization=True)); give an " +
                              ".h5 or .gguf file by its own path");
  throw InputError(dir, std::string("holds neither ") + kSingle + " nor " + kIndex);
}

std::vector<TensorInfo> tensor_infos(const std::vector<SafetensorsFile>& shards) {
  std::vector<TensorInfo> infos;
  for (const SafetensorsFile& shard : shards)
    for (const SafetensorsEntry& e : shard.entries()) infos.push_back(e.info);
  return infos;
}

class HfFolderCheckpoint final : public Checkpoint {
 public:
  HfFolderCheckpoint(const fs::path& dir, ModelConfig config, std::vector<SafetensorsFile> shards)
      : Checkpoint(dir, std::move(config), tensor_infos(shards), find_side_files(dir)), shards_(std::move(shards)) {
    for (size_t s = 0; s < shards_.size(); ++s)
      for (size_t e = 0; e < shards_[s].entries().size(); ++e)
        where_.emplace(shards_[s].entries()[e].info.name, Location{s, e});
  }

  Tensor load(const std::string& name) const override {
    auto it = where_.find(name);
    require(it != where_.end(), path(), "tensor '" + name + "'", "not in this checkpoint");
    const SafetensorsFile& shard = shards_[it->second.shard];
    return shard.load(shard.entries()[it->second.entry]);
  }

  std::string_view format() const override { return "safetensors"; }

 private:
  struct Location {
    size_t shard, entry;
  };
  std::vector<SafetensorsFile> shards_;  // opened once; each load maps its own range
  std::unordered_map<std::string, Location> where_;
};

// ---- writing ----

struct Shard {
  std::vector<TensorInfo> tensors;  // as written: output dtypes, canonical order
  uint64_t data_bytes = 0;
};

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

// Every tensor as it will be written: canonical order, output dtype.
std::vector<TensorInfo> output_tensors(const Checkpoint& in, const WriteOptions& opts) {
  std::vector<std::string> names;
  for (const TensorInfo& t : in.tensors()) names.push_back(t.name);
  std::vector<TensorInfo> out;
  for (size_t i : canonical_order(names)) {
    const TensorInfo& t = in.tensors()[i];
    const std::string where = "tensor '" + t.name + "'";
    require(valid_utf8(t.name), in.path(), where, "name is not valid UTF-8, which safetensors requires");
    require(t.name != "__metadata__", in.path(), where, "name is reserved by safetensors");
    out.push_back({t.name, output_dtype(t.dtype, opts), t.shape});
  }
  return out;
}

// Greedy in canonical order: a new shard when the next tensor would take the file (header
// included) past the limit; a tensor larger than the limit gets a shard of its own. One shard
// when the whole model fits.
std::vector<Shard> plan_shards(const std::vector<TensorInfo>& tensors, uint64_t limit) {
  std::vector<Shard> shards(1);
  SafetensorsSizer sizer;
  for (const TensorInfo& t : tensors) {
    if (!shards.back().tensors.empty() && sizer.file_size_with(t) > limit) {
      shards.emplace_back();
      sizer = SafetensorsSizer();
    }
    sizer.add(t);
    shards.back().tensors.push_back(t);
    shards.back().data_bytes = sizer.file_size() - sizer.header_bytes();
  }
  return shards;
}

std::string shard_name(size_t i, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, count);
  return buf;
}

std::string torch_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F64: return "float64";
    default: throw std::logic_error("no torch dtype for " + std::string(dtype_name(t)));
  }
}

// config.json states one dtype: the one holding most parameters (ties go to the wider type).
nlohmann::ordered_json output_config(const Checkpoint& in, const std::vector<TensorInfo>& tensors) {
  nlohmann::ordered_json config = in.config().to_json();
  std::map<DType, uint64_t> params;
  for (const TensorInfo& t : tensors) params[t.dtype] += *shape_elements(t.shape);  // checked by the plan
  auto most = std::max_element(params.begin(), params.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  if (most != params.end()) {
    config["torch_dtype"] = torch_dtype_name(most->first);
    if (config.contains("dtype")) config["dtype"] = torch_dtype_name(most->first);  // transformers >= 4.56
  }
  return config;
}

// Tensors are converted to the shard's dtype on the way; computed ones of one group that come one
// after another are written together (SafetensorsWriter::write_group). Tensors that wait (on an
// expert search still running) go last, each to its place, so the others are written meanwhile.
// Returns the writer with every tensor handed over, for the caller to finish() once its writing
// thread is done.
std::unique_ptr<SafetensorsWriter> write_shard(const Checkpoint& in, const Shard& shard, const fs::path& path,
                                               Progress& progress) {
  auto writer = std::make_unique<SafetensorsWriter>(path, shard.tensors);
  for (bool waiting : {false, true}) {
    std::vector<Tensor> group;
    size_t group_first = 0;
    uint64_t group_bytes = 0;
    auto write_group = [&] {
      if (group.size() == 1) writer->write(group_first, group[0]);
      else if (!group.empty()) writer->write_group(group_first, group);
      progress.advance(group_bytes);
      group.clear();
      group_bytes = 0;
    };
    for (size_t i = 0; i < shard.tensors.size(); ++i) {
      const TensorInfo& t = shard.tensors[i];
      if (in.waits(t.name) != waiting) {  // not in this pass: a group ends here
        write_group();
        continue;
      }
      const TensorInfo& listed = *in.find(t.name);
      Tensor loaded = in.load(t.name);
      require(loaded.dtype() == listed.dtype && loaded.shape() == listed.shape, in.path(), "tensor '" + t.name + "'",
              "loads as " + std::string(dtype_name(loaded.dtype())) + " " + shape_string(loaded.shape()) +
                  " but is listed as " + std::string(dtype_name(listed.dtype)) + " " + shape_string(listed.shape));
      const uint64_t bytes = *dtype_bytes(t.dtype, loaded.numel());
      if (!group.empty() && (loaded.group() != group[0].group() || loaded.numel() != group[0].numel())) write_group();
      if (loaded.group()) {
        if (group.empty()) group_first = i;
        group.push_back(std::move(loaded));
        group_bytes += bytes;
        continue;
      }
      writer->write(i, loaded);
      progress.advance(bytes);
    }
    write_group();
  }
  return writer;
}

json index_json(const std::vector<Shard>& shards) {
  json weight_map = json::object();  // std::map: sorted by name, as transformers writes it
  uint64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    for (const TensorInfo& t : shards[i].tensors) weight_map[t.name] = shard_name(i, shards.size());
    total += shards[i].data_bytes;
  }
  return {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
}

// Copied last and never over a file the writer made.
void copy_side_files(const std::vector<fs::path>& files, const fs::path& dir) {
  for (const fs::path& src : files) {
    std::error_code ec;
    fs::copy_file(src, dir / src.filename(), fs::copy_options::none, ec);
    if (ec) throw InputError(src, "cannot copy into the output folder: " + ec.message());
  }
}

// After the copies: a file already there (made by the writer, or copied) is kept.
void write_generated_files(const std::vector<GeneratedFile>& files, const fs::path& dir) {
  for (const GeneratedFile& file : files) {
    std::error_code ec;
    if (fs::exists(dir / file.name, ec)) continue;
    if (auto text = file.contents()) write_text_file(dir / file.name, *text);
  }
}

}  // namespace

std::unique_ptr<Checkpoint> open_hf_folder(const fs::path& dir) {
  std::error_code ec;
  require(fs::is_directory(dir, ec), dir, "not a folder");
  require(is_file(dir / kConfig), dir, std::string("no ") + kConfig + " in the model folder");
  ModelConfig config = ModelConfig::load(dir / kConfig);
  // transformers' own order: the single file first, then the index.
  std::vector<SafetensorsFile> shards;
  if (is_file(dir / kSingle)) shards.push_back(open_weights(dir, kSingle, dir, kSingle));
  else if (is_file(dir / kIndex)) shards = open_sharded(dir);
  else refuse_folder_without_safetensors(dir);
  return std::make_unique<HfFolderCheckpoint>(dir, std::move(config), std::move(shards));
}

std::vector<fs::path> find_side_files(const fs::path& dir) {
  std::vector<fs::path> found;
  for (const char* name : kSideFiles)
    if (is_file(dir / name)) found.push_back(dir / name);
  return found;
}

void write_hf_folder(const Checkpoint& in, const fs::path& out, const WriteOptions& opts) {
  const std::vector<TensorInfo> tensors = output_tensors(in, opts);
  const std::vector<Shard> shards = plan_shards(tensors, opts.shard_bytes);
  uint64_t data_bytes = 0;
  for (const Shard& s : shards) data_bytes += s.data_bytes;

  StagedPath staged(out, opts.overwrite);
  Progress progress("writing " + staged.final_path().filename().string(), data_bytes, "B", opts.progress);
  staged.run([&] {
    std::error_code ec;
    fs::create_directory(staged.temp(), ec);
    if (ec) throw InputError(staged.temp(), "cannot create the output folder: " + ec.message());
    write_text_file(staged.temp() / kConfig, output_config(in, tensors).dump(2) + "\n");
    if (shards.size() == 1) {
      write_shard(in, shards[0], staged.temp() / kSingle, progress)->finish();
    } else {
      // A shard's writer goes on writing what it has queued while the next shard is made, and
      // is finished before the one after starts: at most two open at once.
      std::unique_ptr<SafetensorsWriter> previous;
      for (size_t i = 0; i < shards.size(); ++i) {
        auto writer = write_shard(in, shards[i], staged.temp() / shard_name(i, shards.size()), progress);
        if (previous) previous->finish();
        previous = std::move(writer);
      }
      previous->finish();
      write_text_file(staged.temp() / kIndex, index_json(shards).dump(2) + "\n");
    }
    copy_side_files(in.side_files(), staged.temp());
    write_generated_files(in.generated_files(), staged.temp());
  });
  staged.commit();
  progress.finish();
}

}  // namespace upcycle
