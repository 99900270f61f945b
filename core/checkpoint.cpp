#include "core/checkpoint.hpp"

#include "core/error.hpp"

namespace upcycle {

Checkpoint::Checkpoint(std::filesystem::path path, ModelConfig config, std::vector<TensorInfo> tensors,
                       std::vector<std::filesystem::path> side_files, std::vector<GeneratedFile> generated_files)
    : path_(std::move(path)), config_(std::move(config)), tensors_(std::move(tensors)),
      side_files_(std::move(side_files)), generated_files_(std::move(generated_files)) {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    bool fresh = index_.emplace(tensors_[i].name, i).second;
    require(fresh, path_, "tensor '" + tensors_[i].name + "'", "appears twice");
  }
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t Checkpoint::parameter_count() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += *shape_elements(t.shape);
  return n;
}

uint64_t Checkpoint::stored_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += *dtype_bytes(t.stored_dtype(), *shape_elements(t.shape));
  return n;
}

ComputedCheckpoint::ComputedCheckpoint(ModelConfig config, std::vector<TensorInfo> tensors, Loader loader,
                                       std::vector<std::filesystem::path> side_files,
                                       std::vector<GeneratedFile> generated_files, Waits waits)
    : Checkpoint("<computed>", std::move(config), std::move(tensors), std::move(side_files),
                 std::move(generated_files)),
      loader_(std::move(loader)),
      waits_(std::move(waits)) {}

std::unique_ptr<ComputedCheckpoint> ComputedCheckpoint::with_files_of(const Checkpoint* like, ModelConfig config,
                                                                      std::vector<TensorInfo> tensors, Loader loader) {
  std::vector<std::filesystem::path> side;
  std::vector<GeneratedFile> generated;
  if (like) side = like->side_files(), generated = like->generated_files();
  return std::make_unique<ComputedCheckpoint>(std::move(config), std::move(tensors), std::move(loader), std::move(side),
                                              std::move(generated));
}

Tensor ComputedCheckpoint::load(const std::string& name) const {
  const TensorInfo* info = find(name);
  require(info != nullptr, path(), "tensor '" + name + "'", "not in this checkpoint");
  return loader_(*info);
}

}  // namespace upcycle
