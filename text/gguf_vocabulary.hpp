// A model folder's tokenizer as llama.cpp's GGUF keys hold it (tokenizer.ggml.*), for the GGUF
// writer: the inverse of tokenizer_export.hpp, so that llama.cpp runs our files without its
// conversion scripts.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "text/tokenizer.hpp"

namespace upcycle {

struct GgufVocabulary {
  std::string model;  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;    // tokenizer.ggml.pre, gpt2 only: "gpt-2", "smollm", "llama-bpe", "smaug-bpe", "qwen2"
  std::vector<std::string> tokens;  // by id, vocab_size of them
  std::vector<int32_t> types;       // llama.cpp's: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
  std::vector<float> scores;        // llama only
  std::vector<std::string> merges;  // gpt2 only: "a b", by rank
  std::optional<TokenId> bos, eos, unk;
  bool add_bos = false;
  std::optional<std::string> chat_template;
};

// From the tokenizer in `folder` (tokenizer.model first, then tokenizer.json with the
// tokenizer_config.json beside it, as load_tokenizer reads them), ids no token uses and ids past
// the tokenizer's up to vocab_size as unused "[PAD<id>]" (what llama.cpp's converter writes).
// nullopt when the folder has no tokenizer; InputError naming the file for a tokenizer llama.cpp
// would not encode as we do, or one larger than vocab_size.
std::optional<GgufVocabulary> gguf_vocabulary(const std::filesystem::path& folder, int64_t vocab_size);

}  // namespace upcycle
