// Hugging Face tokenizer files for a GGUF model, built from its tokenizer.ggml.* metadata, so that
// a folder exported from a GGUF file encodes text in transformers as it does in llama.cpp.
#pragma once
#include <vector>

#include "core/checkpoint.hpp"
#include "core/gguf_file.hpp"

namespace upcycle {

// tokenizer.json and tokenizer_config.json for byte-level BPE vocabularies ("gpt2" with the gpt-2,
// smollm, llama-bpe/llama3 or qwen2 pre-tokenizer), and generation_config.json whenever the file
// names a BOS or EOS token. Other vocabularies (SentencePiece) get no tokenizer files, with a
// warning. The files are produced when written, from a copy of the tokenizer metadata; a malformed
// vocabulary throws InputError naming the file and key then.
std::vector<GeneratedFile> hf_tokenizer_files(const GgufFile& file, const ModelConfig& config);

}  // namespace upcycle
