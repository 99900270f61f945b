#include "core/tensor_names.hpp"

#include <algorithm>
#include <stdexcept>
#include <tuple>

namespace upcycle {

namespace {

struct Row {
  Role role;
  Scheme scheme;
  std::string_view pattern;  // {L}: layer, {E}: expert
};

// Rows for Scheme::HF serve the other HF schemes too unless they have a row of their own.
constexpr Row kTable[] = {
    {Role::TokenEmbedding, Scheme::HF, "model.embed_tokens.weight"},
    {Role::AttnNorm, Scheme::HF, "model.layers.{L}.input_layernorm.weight"},
    {Role::Q, Scheme::HF, "model.layers.{L}.self_attn.q_proj.weight"},
    {Role::K, Scheme::HF, "model.layers.{L}.self_attn.k_proj.weight"},
    {Role::V, Scheme::HF, "model.layers.{L}.self_attn.v_proj.weight"},
    {Role::O, Scheme::HF, "model.layers.{L}.self_attn.o_proj.weight"},
    {Role::QBias, Scheme::HF, "model.layers.{L}.self_attn.q_proj.bias"},
    {Role::KBias, Scheme::HF, "model.layers.{L}.self_attn.k_proj.bias"},
    {Role::VBias, Scheme::HF, "model.layers.{L}.self_attn.v_proj.bias"},
    {Role::QNorm, Scheme::HF, "model.layers.{L}.self_attn.q_norm.weight"},
    {Role::KNorm, Scheme::HF, "model.layers.{L}.self_attn.k_norm.weight"},
    {Role::FfnNorm, Scheme::HF, "model.layers.{L}.post_attention_layernorm.weight"},
    {Role::Gate, Scheme::HF, "model.layers.{L}.mlp.gate_proj.weight"},
    {Role::Up, Scheme::HF, "model.layers.{L}.mlp.up_proj.weight"},
    {Role::Down, Scheme::HF, "model.layers.{L}.mlp.down_proj.weight"},
    {Role::Router, Scheme::HF, "model.layers.{L}.block_sparse_moe.gate.weight"},
    {Role::ExpertGate, Scheme::HF, "model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight"},
    {Role::ExpertUp, Scheme::HF, "model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight"},
    {Role::ExpertDown, Scheme::HF, "model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight"},
    {Role::FinalNorm, Scheme::HF, "model.norm.weight"},
    {Role::LmHead, Scheme::HF, "lm_head.weight"},

    {Role::Router, Scheme::HFFused, "model.layers.{L}.mlp.gate.weight"},
    {Role::ExpertsGateUp, Scheme::HFFused, "model.layers.{L}.mlp.experts.gate_up_proj"},
    {Role::ExpertsDown, Scheme::HFFused, "model.layers.{L}.mlp.experts.down_proj"},

    {Role::Router, Scheme::Qwen2Moe, "model.layers.{L}.mlp.gate.weight"},
    {Role::ExpertGate, Scheme::Qwen2Moe, "model.layers.{L}.mlp.experts.{E}.gate_proj.weight"},
    {Role::ExpertUp, Scheme::Qwen2Moe, "model.layers.{L}.mlp.experts.{E}.up_proj.weight"},
    {Role::ExpertDown, Scheme::Qwen2Moe, "model.layers.{L}.mlp.experts.{E}.down_proj.weight"},
    {Role::SharedGate, Scheme::Qwen2Moe, "model.layers.{L}.mlp.shared_expert.gate_proj.weight"},
    {Role::SharedUp, Scheme::Qwen2Moe, "model.layers.{L}.mlp.shared_expert.up_proj.weight"},
    {Role::SharedDown, Scheme::Qwen2Moe, "model.layers.{L}.mlp.shared_expert.down_proj.weight"},
    {Role::SharedRouter, Scheme::Qwen2Moe, "model.layers.{L}.mlp.shared_expert_gate.weight"},

    {Role::TokenEmbedding, Scheme::GGUF, "token_embd.weight"},
    {Role::AttnNorm, Scheme::GGUF, "blk.{L}.attn_norm.weight"},
    {Role::Q, Scheme::GGUF, "blk.{L}.attn_q.weight"},
    {Role::K, Scheme::GGUF, "blk.{L}.attn_k.weight"},
    {Role::V, Scheme::GGUF, "blk.{L}.attn_v.weight"},
    {Role::O, Scheme::GGUF, "blk.{L}.attn_output.weight"},
    {Role::QBias, Scheme::GGUF, "blk.{L}.attn_q.bias"},
    {Role::KBias, Scheme::GGUF, "blk.{L}.attn_k.bias"},
    {Role::VBias, Scheme::GGUF, "blk.{L}.attn_v.bias"},
    {Role::QNorm, Scheme::GGUF, "blk.{L}.attn_q_norm.weight"},
    {Role::KNorm, Scheme::GGUF, "blk.{L}.attn_k_norm.weight"},
    {Role::FfnNorm, Scheme::GGUF, "blk.{L}.ffn_norm.weight"},
    {Role::Gate, Scheme::GGUF, "blk.{L}.ffn_gate.weight"},
    {Role::Up, Scheme::GGUF, "blk.{L}.ffn_up.weight"},
    {Role::Down, Scheme::GGUF, "blk.{L}.ffn_down.weight"},
    {Role::Router, Scheme::GGUF, "blk.{L}.ffn_gate_inp.weight"},
    {Role::ExpertGate, Scheme::GGUF, "blk.{L}.ffn_gate.{E}.weight"},  // old per-expert layout
    {Role::ExpertUp, Scheme::GGUF, "blk.{L}.ffn_up.{E}.weight"},
    {Role::ExpertDown, Scheme::GGUF, "blk.{L}.ffn_down.{E}.weight"},
    {Role::ExpertGate, Scheme::GGUF, "blk.{L}.ffn_gate_exps.weight"},  // today's: the experts stacked
    {Role::ExpertUp, Scheme::GGUF, "blk.{L}.ffn_up_exps.weight"},
    {Role::ExpertDown, Scheme::GGUF, "blk.{L}.ffn_down_exps.weight"},
    {Role::SharedGate, Scheme::GGUF, "blk.{L}.ffn_gate_shexp.weight"},
    {Role::SharedUp, Scheme::GGUF, "blk.{L}.ffn_up_shexp.weight"},
    {Role::SharedDown, Scheme::GGUF, "blk.{L}.ffn_down_shexp.weight"},
    {Role::SharedRouter, Scheme::GGUF, "blk.{L}.ffn_gate_inp_shexp.weight"},
    {Role::FinalNorm, Scheme::GGUF, "output_norm.weight"},
    {Role::LmHead, Scheme::GGUF, "output.weight"},
};

bool names_one_expert(const Row& r) { return r.pattern.find("{E}") != std::string_view::npos; }

// A row of an expert's role without {E} names the experts of a layer stacked (GGUF's ffn_*_exps).
const Row* find_row(Role role, Scheme scheme, bool stacked = false) {
  for (const Row& r : kTable)
    if (r.role == role && r.scheme == scheme && (role_info(role).scope != Scope::Expert || names_one_expert(r) != stacked))
      return &r;
  if (scheme == Scheme::HFFused || scheme == Scheme::Qwen2Moe) {
    // Fused and Qwen2-MoE checkpoints have no per-expert w1/w3/w2 names of Mixtral's; a fused
    // Qwen2-MoE names its shared expert as the per-expert one does.
    const bool mixtral_only = role_info(role).scope == Scope::Expert || role == Role::Router;
    if (!mixtral_only) return find_row(role, scheme == Scheme::HFFused ? Scheme::Qwen2Moe : Scheme::HF);
  }
  return nullptr;
}

bool stacked(const TensorId& id) { return role_info(id.role).scope == Scope::Expert && id.expert == kAllExperts; }

// Matches name against pattern; fills layer/expert. Numbers are plain decimals below 1e6.
bool match(std::string_view pattern, std::string_view name, int& layer, int& expert) {
  size_t p = 0, n = 0;
  while (p < pattern.size()) {
    if (pattern.compare(p, 3, "{L}") == 0 || pattern.compare(p, 3, "{E}") == 0) {
      size_t start = n;
      long value = 0;
      while (n < name.size() && n - start < 6 && name[n] >= '0' && name[n] <= '9') value = value * 10 + (name[n++] - '0');
      if (n == start || (name[start] == '0' && n - start > 1)) return false;
      (pattern[p + 1] == 'L' ? layer : expert) = int(value);
      p += 3;
    } else {
      if (n >= name.size() || pattern[p] != name[n]) return false;
      ++p, ++n;
    }
  }
  return n == name.size();
}

std::string fill(std::string_view pattern, const TensorId& id) {
  std::string out;
  for (size_t p = 0; p < pattern.size(); ++p) {
    if (pattern.compare(p, 3, "{L}") == 0 || pattern.compare(p, 3, "{E}") == 0) {
      int v = pattern[p + 1] == 'L' ? id.layer : id.expert;
      if (v < 0) throw std::invalid_argument("tensor_name: role needs a layer/expert index");
      out += std::to_string(v);
      p += 2;
    } else {
      out += pattern[p];
    }
  }
  return out;
}

}  // namespace

bool has_name(Role role, Scheme scheme) { return find_row(role, scheme) != nullptr; }

std::string tensor_name(const TensorId& id, Scheme scheme) {
  const Row* r = find_row(id.role, scheme, stacked(id));
  if (!r) throw std::invalid_argument("tensor_name: this scheme has no name for the role");
  return fill(r->pattern, id);
}

std::optional<TensorId> parse_tensor_name(std::string_view name, Scheme scheme) {
  for (const Row& r : kTable) {
    if (find_row(r.role, scheme, !names_one_expert(r)) != &r) continue;  // the row this scheme uses for the role
    int layer = -1, expert = -1;
    if (match(r.pattern, name, layer, expert)) return TensorId{r.role, layer, expert};
  }
  return std::nullopt;
}

std::vector<size_t> canonical_order(const std::vector<std::string>& names) {
  using Key = std::tuple<int, int, int, int, std::string_view>;
  auto key = [](const std::string& name) -> Key {
    for (Scheme s : {Scheme::HF, Scheme::HFFused, Scheme::Qwen2Moe}) {
      if (auto id = parse_tensor_name(name, s)) {
        int group = id->role == Role::TokenEmbedding ? 0 : id->layer >= 0 ? 1 : 2;
        return {group, id->layer, int(id->role), id->expert, name};
      }
    }
    return {3, 0, 0, 0, name};
  };
  std::vector<Key> keys;
  keys.reserve(names.size());
  for (const auto& n : names) keys.push_back(key(n));
  std::vector<size_t> order(names.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
  return order;
}

}  // namespace upcycle
