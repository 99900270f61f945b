#include "convert/assemble.hpp"

#include <algorithm>
#include <array>
#include <map>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/random.hpp"

namespace upcycle {

using pool::FfnSource;
using pool::PoolBlock;
using pool::PoolTensor;

ModelConfig moe_config(const FfnSource& source, int experts, const AssemblyOptions& opts) {
  const Checkpoint& first = source.checkpoint(0);
  return upcycled_config(first.config(), {experts, opts.top_k, opts.aux_loss_coef, opts.norm_topk_prob}, first.path());
}

std::optional<SharedExpertSource> parse_shared_expert(const std::string& text) {
  using From = SharedExpertSource::From;
  if (text == "zero") return SharedExpertSource{From::Zero};
  if (text == "mean") return SharedExpertSource{From::Mean};
  if (text == "base") return SharedExpertSource{From::Base};
  const std::string prefix = "checkpoint:";
  if (!text.starts_with(prefix) || text.size() == prefix.size() || text.size() > prefix.size() + 3) return std::nullopt;
  const std::string digits = text.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  return SharedExpertSource{From::Checkpoint, std::stoi(digits)};
}

namespace {

// A fill for any range from one that takes ranges within aligned blocks of `block` elements:
// the blocks a range touches are made in parallel, each thread with its own `State` (buffers
// reused from block to block), and a block the range covers only in part is made whole first.
// make(state, first, out) writes elements [first, first + out.size()) of one aligned block.
template <class State, class MakeState, class Make>
Tensor::RangeFill by_blocks(uint64_t numel, uint64_t block, MakeState make_state, Make make) {
  return [=](uint64_t first, std::span<float> out) {
    if (out.empty()) return;
    const uint64_t b0 = first / block, b1 = (first + out.size() - 1) / block;
#pragma omp parallel if (b1 > b0)
    {
      State state = make_state();
      std::vector<float> part;
#pragma omp for schedule(static)
      for (int64_t b = int64_t(b0); b <= int64_t(b1); ++b) {
        const uint64_t lo = uint64_t(b) * block, hi = std::min(numel, lo + block);
        const uint64_t from = std::max(lo, first), to = std::min(hi, first + out.size());
        const std::span<float> dst = out.subspan(size_t(from - first), size_t(to - from));
        if (from == lo && to == hi) {
          make(state, lo, dst);
        } else {
          part.resize(size_t(hi - lo));
          make(state, lo, std::span(part));
          std::copy_n(part.begin() + ptrdiff_t(from - lo), dst.size(), dst.begin());
        }
      }
    }
  };
}

// One layer's experts, every role, made a block at a time for all of them: a writer that asks for
// a range of each expert tensor in turn (Tensor::group, SafetensorsWriter::write_group) gets each
// block of the pool made once, where apart each child would be made again for each expert made
// from it. The blocks of the latest range asked for are kept, per role, at most kWindow at a time.
// One fill at a time (writers ask in turn); each fill makes its blocks in parallel.
class LayerExperts {
 public:
  LayerExperts(const FfnSource& source, const pool::Pool& pool, int layer, const merge::Options& child_merge,
               uint64_t block_elements) {
    for (Role role : {Role::Gate, Role::Up, Role::Down})
      roles_[index(role)].tensor =
          std::make_shared<const PoolTensor>(source, pool, layer, role, child_merge, block_elements);
  }

  const PoolTensor& tensor(Role role) const { return *roles_[index(role)].tensor; }

  // Expert e's values of `role` over [first, first + out.size()).
  void fill(Role role, size_t e, uint64_t first, std::span<float> out) {
    Blocks& r = roles_[index(role)];
    const uint64_t block = r.tensor->block_elements(), end = first + out.size();
    for (uint64_t w0 = first / block; w0 * block < end; w0 += kWindow) {
      const uint64_t w1 = std::min((end - 1) / block + 1, w0 + kWindow);
      for (auto it = r.made.begin(); it != r.made.end() && it->first < w0; it = r.made.erase(it))
        r.spare.push_back(std::move(it->second));  // behind the writer: its buffers serve again
      std::vector<PoolBlock*> blocks;
      for (uint64_t b = w0; b < w1; ++b) {
        auto& p = r.made[b];
        if (!p) {
          if (r.spare.empty()) {
            p = std::make_unique<PoolBlock>(*r.tensor);
          } else {
            p = std::move(r.spare.back());
            r.spare.pop_back();
          }
          p->seek(b * block, std::min(block, r.tensor->numel() - b * block));
        }
        blocks.push_back(p.get());
      }
#pragma omp parallel for schedule(static) if (blocks.size() > 1)
      for (size_t i = 0; i < blocks.size(); ++i) {
        PoolBlock& p = *blocks[i];
        const std::span<const float> x = p.expert(e);
        const uint64_t from = std::max(first, p.first()), to = std::min(end, p.first() + p.size());
        std::copy_n(x.begin() + ptrdiff_t(from - p.first()), to - from, out.begin() + ptrdiff_t(from - first));
      }
    }
  }

 private:
  static constexpr uint64_t kWindow = 32;  // blocks
  struct Blocks {
    std::shared_ptr<const PoolTensor> tensor;
    std::map<uint64_t, std::unique_ptr<PoolBlock>> made;  // by block index
    std::vector<std::unique_ptr<PoolBlock>> spare;
  };
  static size_t index(Role role) { return role == Role::Gate ? 0 : role == Role::Up ? 1 : 2; }
  std::array<Blocks, 3> roles_;  // gate, up, down
};

// The concatenation of parts (each with its element count) as one fill.
Tensor::RangeFill concatenated(std::vector<std::pair<uint64_t, Tensor::RangeFill>> parts) {
  return [parts = std::move(parts)](uint64_t first, std::span<float> out) {
    uint64_t at = 0;
    for (const auto& [n, fill] : parts) {
      const uint64_t lo = std::max(at, first), hi = std::min(at + n, first + out.size());
      if (lo < hi) fill(lo - at, out.subspan(size_t(lo - first), size_t(hi - lo)));
      at += n;
    }
  };
}

// The tensors' maker. Every computed tensor (a child or re-drawn expert, a merged shared tensor)
// is a Tensor::computed whose values are made a block at a time when a writer asks for them, so
// nothing of the size of a tensor is ever held. Experts that are checkpoint FFNs unchanged, and
// --shared-from tensors, are views of the checkpoints' files.
class Assembler {
 public:
  // scheme: the output's names (HFFused with opts.fused, else its family's).
  Assembler(const FfnSource& source, PendingPool pool, AssemblyOptions opts, Scheme scheme)
      : source_(source), pending_(std::move(pool)), opts_(std::move(opts)), scheme_(scheme) {}

  // Whether the tensor needs the pool's experts past the known ones.
  bool waits(const std::string& name) const {
    if (pending_.known.size() == pending_.size) return false;
    const auto id = parse_tensor_name(name, scheme_);
    if (!id) return false;
    if (id->role == Role::ExpertsGateUp || id->role == Role::ExpertsDown) return true;
    return role_info(id->role).scope == Scope::Expert && size_t(id->expert) >= pending_.known.size();
  }

  // The checkpoint a tensor is passed through from unchanged, with its name there; nullopt when
  // it is computed.
  std::optional<std::pair<const Checkpoint*, std::string>> passthrough(const std::string& name) const {
    const auto id = parse_tensor_name(name, scheme_);
    if (!id) return std::nullopt;
    const RoleInfo& role = role_info(id->role);
    if (role.scope == Scope::Expert) {
      if (size_t(id->expert) >= pending_.known.size()) return std::nullopt;  // computed, by contract
      const pool::ExpertRecipe& r = pending_.known[size_t(id->expert)];
      if (r.is_child() || r.redraw != 0) return std::nullopt;
      return std::pair{&source_.checkpoint(size_t(r.checkpoint)), FfnSource::key(id->layer, *role.dense)};
    }
    if (is_shared_expert(id->role)) {
      const SharedExpertSource& s = opts_.shared_expert;
      const std::string key = FfnSource::key(id->layer, *role.dense);
      if (s.from == SharedExpertSource::From::Checkpoint) return std::pair{&source_.checkpoint(size_t(s.checkpoint)), key};
      if (s.from == SharedExpertSource::From::Base) return std::pair{source_.base_checkpoint(), key};
      return std::nullopt;
    }
    const bool shared = role.dense == id->role;  // a tensor of the dense model itself
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
    const auto id = parse_tensor_name(info.name, scheme_);
    if (!id) throw std::logic_error("assemble: unexpected tensor " + info.name);
    if (is_shared_expert(id->role)) return shared_expert(id->layer, id->role, info);
    switch (id->role) {
      case Role::Router:  // small
        return Tensor::from_f32(info.shape, opts_.routers.empty() ? drawn_rows(id->layer, info, "router")
                                                                  : opts_.routers.at(size_t(id->layer)));
      case Role::SharedRouter: return Tensor::from_f32(info.shape, drawn_rows(id->layer, info, "shared expert gate"));
      case Role::ExpertGate:
      case Role::ExpertUp:
      case Role::ExpertDown: return expert(id->layer, *role_info(id->role).dense, size_t(id->expert), info);
      case Role::ExpertsGateUp: return fused(id->layer, {Role::Gate, Role::Up}, info);
      case Role::ExpertsDown: return fused(id->layer, {Role::Down}, info);
      default: return merged(info, info.name, opts_.shared_merge);
    }
  }

 private:
  static bool is_shared_expert(Role role) {
    return role == Role::SharedGate || role == Role::SharedUp || role == Role::SharedDown;
  }

  // The shared expert's tensor of `role` that passthrough() does not give: zeros (Zero's down) or
  // the checkpoints' mean of the dense FFN's tensor.
  Tensor shared_expert(int layer, Role role, const TensorInfo& info) {
    if (opts_.shared_expert.from == SharedExpertSource::From::Zero && role == Role::SharedDown)
      return Tensor::from_f32(info.shape, std::vector<float>(*shape_elements(info.shape), 0.0f));
    return merged(info, FfnSource::key(layer, *role_info(role).dense), merge::Options{merge::Method::Linear});
  }

  // The whole pool: waits for the search.
  const pool::Pool& pool() {
    if (!pool_) {
      pool_ = pending_.whole.get();
      const auto same = [](const pool::ExpertRecipe& a, const pool::ExpertRecipe& b) { return describe(a) == describe(b); };
      if (pool_->size() != pending_.size || !std::equal(pending_.known.begin(), pending_.known.end(), pool_->begin(), same))
        throw std::logic_error("assemble: the searched pool is not the one announced");
    }
    return *pool_;
  }

  // The layer's experts, kept while a writer asks for them one after another.
  std::shared_ptr<LayerExperts> layer_experts(int layer) {
    if (!experts_ || layer_ != layer) {
      experts_ = std::make_shared<LayerExperts>(source_, pool(), layer, opts_.child_merge, opts_.block_elements);
      layer_ = layer;
    }
    return experts_;
  }

  // Expert e's values of one (layer, role).
  static Tensor::RangeFill expert_values(std::shared_ptr<LayerExperts> x, Role role, size_t e) {
    return [x, role, e](uint64_t first, std::span<float> out) { x->fill(role, e, first, out); };
  }

  // One group per layer: its expert tensors are best made together.
  Tensor expert(int layer, Role role, size_t e, const TensorInfo& info) {
    const auto x = layer_experts(layer);
    if (x->tensor(role).block_elements() == x->tensor(role).numel())
      return tensor(info.shape, true, expert_values(x, role, e));
    return Tensor::computed(info.shape, expert_values(x, role, e), x);
  }

  // Every expert's tensors of the roles, stacked: [E, rows of each role in turn, cols]; one
  // segment per expert, so that a writer asks for the experts' ranges in turn.
  Tensor fused(int layer, std::initializer_list<Role> roles, const TensorInfo& info) {
    const auto x = layer_experts(layer);
    std::vector<std::pair<uint64_t, Tensor::RangeFill>> parts;
    for (size_t e = 0; e < pool().size(); ++e)
      for (Role r : roles) parts.emplace_back(x->tensor(r).numel(), expert_values(x, r, e));
    const PoolTensor& first = x->tensor(*roles.begin());
    if (first.block_elements() == first.numel()) return tensor(info.shape, true, concatenated(std::move(parts)));
    return Tensor::computed(info.shape, concatenated(std::move(parts)), x, pool().size());
  }

  // A computed tensor; or, when its values can only be made whole (ties, slerp, or a tensor of
  // one block), the values made now, once, rather than again for every piece a writer asks for.
  static Tensor tensor(const Shape& shape, bool whole, Tensor::RangeFill fill) {
    if (!whole) return Tensor::computed(shape, std::move(fill));
    std::vector<float> values(*shape_elements(shape));
    fill(0, values);
    return Tensor::from_f32(shape, std::move(values));
  }

  // A router's rows (`what`: "router", or "shared expert gate", never zero: llama.cpp computes
  // its sigmoid as silu(x)/x), normal(0, 0.02) from the seed.
  std::vector<float> drawn_rows(int layer, const TensorInfo& info, const std::string& what) const {
    Rng rng = Rng::stream(opts_.seed, what + ", layer " + std::to_string(layer));  // the same in either layout
    std::vector<float> w(size_t(info.shape[0] * info.shape[1]));
    for (float& x : w) x = float(0.02 * rng.normal());
    return w;
  }

  // A shared tensor merged across the checkpoints (their tensor `name`) by `o`: a block at a time
  // for the element-wise methods, whole for TIES and SLERP (they rank or measure the whole tensor).
  Tensor merged(const TensorInfo& info, const std::string& name, const merge::Options& o) {
    std::vector<Tensor> in;
    for (size_t k = 0; k < source_.size(); ++k) in.push_back(source_.checkpoint(k).load(name));
    const merge::MethodInfo& method = merge::method_info(o.method);
    const bool with_base = method.needs_base, given_base = with_base && source_.has_base();
    if (given_base) in.push_back(source_.base_checkpoint()->load(name));  // last
    const uint64_t n = in[0].numel();
    const uint64_t block = method.by_element ? std::min(n, range_block(opts_.block_elements, in)) : n;
    const size_t k_inputs = source_.size();
    using Inputs = std::vector<std::vector<float>>;  // a thread's blocks of the inputs, then the mean
    auto make = [in, o, with_base, given_base, k_inputs, name](Inputs& x, uint64_t first, std::span<float> out) {
      x.resize(in.size() + 1);
      for (size_t k = 0; k < in.size(); ++k) {
        x[k].resize(out.size());
        in[k].to_f32_range(first, x[k]);
        in[k].release(first, out.size());
      }
      const std::vector<std::span<const float>> spans(x.begin(), x.begin() + ptrdiff_t(k_inputs));
      std::span<const float> base;
      if (given_base) {
        base = x[in.size() - 1];
      } else if (with_base) {
        x.back().resize(out.size());
        FfnSource::mean(spans, x.back());
        base = x.back();
      }
      merge::merge_tensor(out, spans, base, o, name, first);
    };
    return tensor(info.shape, block == n, by_blocks<Inputs>(n, block, [] { return Inputs(); }, make));
  }

  const FfnSource& source_;
  PendingPool pending_;
  std::optional<pool::Pool> pool_;  // the whole pool, once asked for
  AssemblyOptions opts_;
  Scheme scheme_;
  std::shared_ptr<LayerExperts> experts_;
  int layer_ = -1;
};

}  // namespace

std::unique_ptr<Checkpoint> assemble_moe(const FfnSource& source, PendingPool pool, const AssemblyOptions& opts,
                                         std::vector<GeneratedFile> extra) {
  const ModelConfig config = moe_config(source, int(pool.size), opts);
  if (opts.shared_from && (*opts.shared_from < 0 || size_t(*opts.shared_from) >= source.size()))
    throw std::invalid_argument("assemble_moe: shared_from is not a checkpoint index");
  const Scheme scheme = opts.fused ? Scheme::HFFused : default_scheme(config);
  auto assembler = std::make_shared<Assembler>(source, std::move(pool), opts, scheme);
  // Checkpoint tensors that go out unchanged (their FFNs as experts, --shared-from) are passed
  // through as the files hold them, with no f32 copy.
  std::vector<TensorInfo> infos;
  for (const ExpectedTensor& e : expected_tensors(config, scheme))
    infos.push_back({e.name, assembler->dtype(e.name), e.shape});
  const Checkpoint& first = source.checkpoint(0);
  std::vector<GeneratedFile> generated = first.generated_files();
  generated.insert(generated.end(), extra.begin(), extra.end());
  return std::make_unique<ComputedCheckpoint>(
      config, std::move(infos), [assembler](const TensorInfo& info) { return assembler->make(info); },
      first.side_files(), std::move(generated), [assembler](const std::string& name) { return assembler->waits(name); });
}

std::unique_ptr<Checkpoint> assemble_moe(const FfnSource& source, const pool::Pool& pool,
                                         const AssemblyOptions& opts, std::vector<GeneratedFile> extra) {
  std::promise<pool::Pool> whole;
  whole.set_value(pool);
  return assemble_moe(source, PendingPool{pool.size(), pool, whole.get_future().share()}, opts, std::move(extra));
}

}  // namespace upcycle
