// A byte-level tokenizer of our own for models trained from scratch (the demo's): ids 0-255 are
// the bytes (GPT-2's byte-to-unicode alphabet, no merges), 256 and 257 ChatML's <|im_start|> and
// <|im_end|>, with the ChatML chat template. transformers loads the files as a fast tokenizer.
#pragma once
#include <cstdint>
#include <vector>

#include "core/checkpoint.hpp"

namespace upcycle {

inline constexpr int64_t kByteTokenizerVocab = 258;

// tokenizer.json and tokenizer_config.json (eos <|im_end|>, the ChatML template).
std::vector<GeneratedFile> byte_tokenizer_files();

}  // namespace upcycle
