// The one table of facts about tensor roles, a row per role: where its tensors sit, the part
// `--freeze` names, what kind of tensor it is, its dense counterpart and its shape (the way
// llama.cpp keeps LLM_TENSOR_INFOS beside LLM_TENSOR_NAMES). Names per format: tensor_names.hpp.
#pragma once
#include <array>
#include <optional>

#include "core/enum_table.hpp"

namespace upcycle {

enum class Role {
  TokenEmbedding,
  AttnNorm,
  Q, K, V, O,
  QBias, KBias, VBias,  // qwen2
  QNorm, KNorm,         // qwen3: RMSNorm of each head's q and k, before rope
  FfnNorm,              // post_attention_layernorm
  Gate, Up, Down,       // dense FFN
  Router,
  ExpertGate, ExpertUp, ExpertDown,  // one expert (w1, w3, w2)
  ExpertsGateUp, ExpertsDown,        // fused (transformers v5; GGUF): every expert of a layer
  SharedGate, SharedUp, SharedDown, SharedRouter,  // qwen2_moe's shared expert
  FinalNorm,
  LmHead,  // the last role
};

// How many tensors of a role a model has: one, one per layer, or one per expert of a layer.
enum class Scope { Model, Layer, Expert };

// The parts `--freeze` names. Norms belong to no part but `norms`: they gate both the
// attention and the FFN.
enum class Part { Embeddings, Attention, Norms, Router, Experts, Count };

// AdamW decays weights, not norms and biases; random init draws weights, sets norms to 1 and
// biases to 0.
enum class TensorKind { Weight, Norm, Bias };

// The sizes a shape is made of, from the config: vocab V, hidden H, nH*D, nKV*D, the dense FFN's
// I, experts E, an expert's I, twice that (w1 rows then w3 rows), qwen2_moe's shared expert's I, a
// head's width D.
enum class Dim { None, One, Vocab, Hidden, QDim, KvDim, Ffn, Experts, ExpertFfn, TwoExpertFfn, SharedFfn, HeadDim };

struct RoleInfo {
  Role role;
  Scope scope;
  Part part;
  TensorKind kind;
  // The dense model's role this one is made from (itself for the dense model's own tensors, the
  // FFN's for an expert's and the shared expert's); none for the routers and the fused experts.
  std::optional<Role> dense;
  std::array<Dim, 3> shape;  // outermost first, padded with Dim::None
};

// role, scope, part, kind, dense counterpart, shape
inline constexpr RoleInfo kRoleInfos[] = {
    {Role::TokenEmbedding, Scope::Model, Part::Embeddings, TensorKind::Weight, Role::TokenEmbedding,
     {Dim::Vocab, Dim::Hidden}},
    {Role::AttnNorm, Scope::Layer, Part::Norms, TensorKind::Norm, Role::AttnNorm, {Dim::Hidden}},
    {Role::Q, Scope::Layer, Part::Attention, TensorKind::Weight, Role::Q, {Dim::QDim, Dim::Hidden}},
    {Role::K, Scope::Layer, Part::Attention, TensorKind::Weight, Role::K, {Dim::KvDim, Dim::Hidden}},
    {Role::V, Scope::Layer, Part::Attention, TensorKind::Weight, Role::V, {Dim::KvDim, Dim::Hidden}},
    {Role::O, Scope::Layer, Part::Attention, TensorKind::Weight, Role::O, {Dim::Hidden, Dim::QDim}},
    {Role::QBias, Scope::Layer, Part::Attention, TensorKind::Bias, Role::QBias, {Dim::QDim}},
    {Role::KBias, Scope::Layer, Part::Attention, TensorKind::Bias, Role::KBias, {Dim::KvDim}},
    {Role::VBias, Scope::Layer, Part::Attention, TensorKind::Bias, Role::VBias, {Dim::KvDim}},
    {Role::QNorm, Scope::Layer, Part::Norms, TensorKind::Norm, Role::QNorm, {Dim::HeadDim}},
    {Role::KNorm, Scope::Layer, Part::Norms, TensorKind::Norm, Role::KNorm, {Dim::HeadDim}},
    {Role::FfnNorm, Scope::Layer, Part::Norms, TensorKind::Norm, Role::FfnNorm, {Dim::Hidden}},
    {Role::Gate, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Gate, {Dim::Ffn, Dim::Hidden}},
    {Role::Up, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Up, {Dim::Ffn, Dim::Hidden}},
    {Role::Down, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Down, {Dim::Hidden, Dim::Ffn}},
    {Role::Router, Scope::Layer, Part::Router, TensorKind::Weight, std::nullopt, {Dim::Experts, Dim::Hidden}},
    {Role::ExpertGate, Scope::Expert, Part::Experts, TensorKind::Weight, Role::Gate, {Dim::ExpertFfn, Dim::Hidden}},
    {Role::ExpertUp, Scope::Expert, Part::Experts, TensorKind::Weight, Role::Up, {Dim::ExpertFfn, Dim::Hidden}},
    {Role::ExpertDown, Scope::Expert, Part::Experts, TensorKind::Weight, Role::Down, {Dim::Hidden, Dim::ExpertFfn}},
    {Role::ExpertsGateUp, Scope::Layer, Part::Experts, TensorKind::Weight, std::nullopt,
     {Dim::Experts, Dim::TwoExpertFfn, Dim::Hidden}},
    {Role::ExpertsDown, Scope::Layer, Part::Experts, TensorKind::Weight, std::nullopt,
     {Dim::Experts, Dim::Hidden, Dim::ExpertFfn}},
    {Role::SharedGate, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Gate, {Dim::SharedFfn, Dim::Hidden}},
    {Role::SharedUp, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Up, {Dim::SharedFfn, Dim::Hidden}},
    {Role::SharedDown, Scope::Layer, Part::Experts, TensorKind::Weight, Role::Down, {Dim::Hidden, Dim::SharedFfn}},
    {Role::SharedRouter, Scope::Layer, Part::Experts, TensorKind::Weight, std::nullopt, {Dim::One, Dim::Hidden}},
    {Role::FinalNorm, Scope::Model, Part::Norms, TensorKind::Norm, Role::FinalNorm, {Dim::Hidden}},
    {Role::LmHead, Scope::Model, Part::Embeddings, TensorKind::Weight, Role::LmHead, {Dim::Vocab, Dim::Hidden}},
};

static_assert(one_row_per_enumerator(kRoleInfos, &RoleInfo::role, Role::LmHead), "a row per role, in order");

constexpr const RoleInfo& role_info(Role role) { return kRoleInfos[size_t(role)]; }

}  // namespace upcycle
