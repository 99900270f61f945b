#include "upcycle/assemble.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/layout.hpp"
#include "core/random.hpp"

namespace upcycle {

using genetic::FfnSource;
using genetic::PoolTensors;

ModelConfig moe_config(const FfnSource& source, int experts, const AssemblyOptions& opts) {
  const Checkpoint& first = source.checkpoint(0);
  const ModelConfig& dense = first.config();
  require(dense.model_type == "llama" || dense.model_type == "mistral", first.path(),
          "is a " + dense.model_type + " model: MoE assembly takes llama or mistral checkpoints (Mixtral has no "
          "attention biases)");
  require(opts.top_k >= 1 && opts.top_k <= experts, first.path(),
          "top-k " + std::to_string(opts.top_k) + " must lie in [1, " + std::to_string(experts) + " experts]");
  nlohmann::ordered_json j = dense.to_json();
  j["model_type"] = "mixtral";
  j["architectures"] = {"MixtralForCausalLM"};
  j["num_local_experts"] = experts;
  j["num_experts_per_tok"] = opts.top_k;
  j["router_aux_loss_coef"] = opts.aux_loss_coef;
  j.erase("mlp_bias");
  return ModelConfig::from_json(j, first.path());
}

namespace {

// The tensors' maker: a cache of the current (layer, role)'s pool tensors, since writers ask
// for every expert of one role in a row (core's canonical order). Computed tensors are views of
// the assembler's own buffers, valid until its next make(): writers and load_weights take
// tensors one at a time, and reusing the buffers spares the kernel a fresh zeroed mapping (page
// faults) for every tensor.
class Assembler {
 public:
  Assembler(const FfnSource& source, genetic::Pool pool, AssemblyOptions opts)
      : source_(source), pool_(std::move(pool)), opts_(std::move(opts)) {}

  // The checkpoint a tensor is passed through from unchanged, with its name there; nullopt when
  // it is computed.
  std::optional<std::pair<const Checkpoint*, std::string>> passthrough(const std::string& name) const {
    const auto id = parse_tensor_name(name, opts_.fused ? Scheme::HFFused : Scheme::HF);
    if (!id) return std::nullopt;
    const bool per_expert = id->role == Role::ExpertGate || id->role == Role::ExpertUp || id->role == Role::ExpertDown;
    if (per_expert) {
      const genetic::ExpertRecipe& r = pool_.at(size_t(id->expert));
      if (r.is_child() || r.redraw != 0) return std::nullopt;
      const Role dense = id->role == Role::ExpertGate ? Role::Gate : id->role == Role::ExpertUp ? Role::Up : Role::Down;
      return std::pair{&source_.checkpoint(size_t(r.checkpoint)), FfnSource::key(id->layer, dense)};
    }
    const bool shared = id->role != Role::Router && id->role != Role::ExpertsGateUp && id->role != Role::ExpertsDown;
    if (shared && opts_.shared_from) return std::pair{&source_.checkpoint(size_t(*opts_.shared_from)), name};
    return std::nullopt;
  }

  // What make() returns for the tensor: a passed-through tensor's own dtype, else f32.
  DType dtype(const std::string& name) const {
    const auto from = passthrough(name);
    return from ? from->first->find(from->second)->dtype : DType::F32;
  }

  Tensor make(const TensorInfo& info) {
    if (const auto from = passthrough(info.name)) return from->first->load(from->second);
    const auto id = parse_tensor_name(info.name, opts_.fused ? Scheme::HFFused : Scheme::HF);
    if (!id) throw std::logic_error("assemble: unexpected tensor " + info.name);
    switch (id->role) {
      case Role::Router: return Tensor::from_f32(info.shape, router(id->layer, info));  // small
      case Role::ExpertGate: return expert(*id, Role::Gate, info);
      case Role::ExpertUp: return expert(*id, Role::Up, info);
      case Role::ExpertDown: return expert(*id, Role::Down, info);
      case Role::ExpertsGateUp: return fused(id->layer, {Role::Gate, Role::Up}, info);
      case Role::ExpertsDown: return fused(id->layer, {Role::Down}, info);
      default: return merged(info);
    }
  }

 private:
  Tensor expert(const TensorId& id, Role dense_role, const TensorInfo& info) {
    if (!tensors_ || layer_ != id.layer || role_ != dense_role) {
      tensors_ = std::make_unique<PoolTensors>(source_, pool_, id.layer, dense_role, opts_.child_merge);
      layer_ = id.layer;
      role_ = dense_role;
    }
    return view(info, tensors_->expert(size_t(id.expert)));
  }

  // Every expert's tensors of the roles, stacked: [E, rows of each role in turn, cols].
  Tensor fused(int layer, std::initializer_list<Role> roles, const TensorInfo& info) {
    merged_.clear();
    std::vector<std::unique_ptr<PoolTensors>> tensors;
    for (Role r : roles) tensors.push_back(std::make_unique<PoolTensors>(source_, pool_, layer, r, opts_.child_merge));
    for (size_t e = 0; e < pool_.size(); ++e)
      for (auto& t : tensors) {
        const std::vector<float>& x = t->expert(e);
        merged_.insert(merged_.end(), x.begin(), x.end());
      }
    return view(info, merged_);
  }

  std::vector<float> router(int layer, const TensorInfo& info) {
    if (!opts_.routers.empty()) return opts_.routers.at(size_t(layer));
    Rng rng = Rng::stream(opts_.seed, "router, layer " + std::to_string(layer));  // the same in either layout
    std::vector<float> w(size_t(info.shape[0] * info.shape[1]));
    for (float& x : w) x = float(0.02 * rng.normal());
    return w;
  }

  static Tensor view(const TensorInfo& info, const std::vector<float>& values) {
    // Aliasing constructor with no owner: the bytes stay the assembler's.
    const std::shared_ptr<const std::byte> bytes(std::shared_ptr<void>(), reinterpret_cast<const std::byte*>(values.data()));
    return Tensor::borrowed(DType::F32, info.shape, bytes);
  }

  Tensor merged(const TensorInfo& info) {
    std::vector<Tensor> in;
    for (size_t k = 0; k < source_.size(); ++k) in.push_back(source_.checkpoint(k).load(info.name));
    const merge::Options& o = opts_.shared_merge;
    const bool with_base = merge::needs_base(o.method);
    if (with_base && source_.has_base()) in.push_back(source_.base_checkpoint()->load(info.name));  // last
    const bool quantized = std::any_of(in.begin(), in.end(), [](const Tensor& t) { return is_quantized(t.dtype()); });
    const uint64_t n = in[0].numel();
    // Element-wise methods go a block at a time, so an embedding of hundreds of MB is never held
    // K times in f32; TIES and SLERP need the whole tensor, and quantized inputs convert whole.
    const uint64_t block = merge::merges_by_element(o.method) && !quantized ? opts_.block_elements : n;
    const size_t k_inputs = source_.size();
    merged_.resize(n);
    inputs_.resize(in.size());
    for (uint64_t lo = 0; lo < n; lo += block) {
      const uint64_t len = std::min(block, n - lo);
      for (size_t k = 0; k < in.size(); ++k) {
        if (len == n) {
          in[k].to_f32_into(inputs_[k]);
        } else {
          inputs_[k].resize(len);
          in[k].to_f32_range(lo, inputs_[k]);
        }
      }
      const std::vector<std::span<const float>> spans(inputs_.begin(), inputs_.begin() + ptrdiff_t(k_inputs));
      std::vector<float> mean;
      if (with_base && !source_.has_base()) {
        std::vector<const std::vector<float>*> all;
        for (size_t k = 0; k < k_inputs; ++k) all.push_back(&inputs_[k]);
        mean = FfnSource::mean(all);
      }
      const std::span<const float> base = !with_base ? std::span<const float>()
                                          : source_.has_base() ? std::span<const float>(inputs_.back())
                                                               : std::span<const float>(mean);
      merge::merge_tensor(std::span(merged_).subspan(lo, len), spans, base, o, info.name, lo);
    }
    return view(info, merged_);
  }

  const FfnSource& source_;
  genetic::Pool pool_;
  AssemblyOptions opts_;
  std::unique_ptr<PoolTensors> tensors_;
  std::vector<std::vector<float>> inputs_;  // the checkpoints' tensor being merged
  std::vector<float> merged_;  // a merged shared tensor, or the fused experts
  int layer_ = -1;
  Role role_ = Role::Gate;
};

}  // namespace

std::unique_ptr<Checkpoint> assemble_moe(const FfnSource& source, const genetic::Pool& pool,
                                         const AssemblyOptions& opts, std::vector<GeneratedFile> extra) {
  const ModelConfig config = moe_config(source, int(pool.size()), opts);
  if (opts.shared_from && (*opts.shared_from < 0 || size_t(*opts.shared_from) >= source.size()))
    throw std::invalid_argument("assemble_moe: shared_from is not a checkpoint index");
  auto assembler = std::make_shared<Assembler>(source, pool, opts);
  // Checkpoint tensors that go out unchanged (their FFNs as experts, --shared-from) are passed
  // through as the files hold them, with no f32 copy.
  std::vector<TensorInfo> infos;
  for (const ExpectedTensor& e : expected_tensors(config, opts.fused ? Scheme::HFFused : Scheme::HF))
    infos.push_back({e.name, assembler->dtype(e.name), e.shape});
  const Checkpoint& first = source.checkpoint(0);
  std::vector<GeneratedFile> generated = first.generated_files();
  generated.insert(generated.end(), extra.begin(), extra.end());
  return std::make_unique<ComputedCheckpoint>(
      config, std::move(infos), [assembler](const TensorInfo& info) { return assembler->make(info); },
      first.side_files(), std::move(generated));
}

}  // namespace upcycle
