// A LoRA run's adapter before its first step (tune --lora-rank): the options' settings checked
// against the base model, and A and B drawn as PEFT draws them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "formats/peft_adapter.hpp"

namespace upcycle {

// "q_proj,v_proj" → the list, in the modules' order; OptionError naming `key` for an unknown
// name or a repeated one.
std::vector<std::string> parse_lora_targets(const std::string& list, const std::string& key);
std::string lora_targets_string(const std::vector<std::string>& targets);

// `asked` completed for `base`: the alpha (0: the rank, a scaling of 1), the targets (none:
// every module the base has: q, k, v, o, and gate, up and down on a dense model), and a LoRA-MoE's
// top-k (0: 2). OptionError naming lora_targets for a module the base lacks (an MoE's FFN is its
// experts), lora_rank for a rank above a target's smaller side; for a LoRA-MoE, lora_experts for
// a base other than a dense llama or mistral, lora_targets for no FFN target.
LoraConfig complete_lora_config(LoraConfig asked, const ModelConfig& base);

// A fresh adapter: each A uniform in ±1/√in (PEFT's kaiming_uniform_ with a = √5) from its own
// stream of `seed`, each B zero, so that training starts from the base model's logits exactly.
// A LoRA-MoE's (config.experts > 0) FFN targets get a term per expert (LoRAMoE's new experts),
// and each layer a router drawn as MixLoRA draws it.
LoraAdapter init_lora_adapter(const ModelConfig& base, const LoraConfig& config, uint64_t seed);

}  // namespace upcycle
