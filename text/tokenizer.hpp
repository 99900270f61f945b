// Text to token ids and back: byte-level BPE (GPT-2, SmolLM2, Llama-3, Qwen2) and SentencePiece
// (Llama-2, Mistral), read from a GGUF file, a Hugging Face tokenizer.json or a tokenizer.model.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace upcycle {

using TokenId = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The ids of UTF-8 text (invalid bytes are encoded as bytes, never dropped). Added and special
  // tokens spelled out in the text ("<|im_start|>") are kept whole. add_bos puts the BOS id first;
  // InputError when the vocabulary has none.
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos = false) const = 0;
  // The bytes ids stand for, special tokens spelled out; InputError for an id outside the vocabulary.
  virtual std::string decode(std::span<const TokenId> ids) const = 0;

  // The token as the vocabulary spells it ("Ġthe", "▁the", "<0x0A>"); id below vocab_size().
  const std::string& token(TokenId id) const { return tokens_.at(size_t(id)); }
  size_t vocab_size() const { return tokens_.size(); }
  std::optional<TokenId> bos_id() const { return bos_; }
  std::optional<TokenId> eos_id() const { return eos_; }
  const std::filesystem::path& path() const { return path_; }
  // What it is, for messages: "byte-level BPE (llama3 pre-tokenizer)".
  const std::string& description() const { return description_; }

 protected:
  Tokenizer(std::filesystem::path path, std::vector<std::string> tokens, std::optional<TokenId> bos,
            std::optional<TokenId> eos, std::string description)
      : path_(std::move(path)),
        tokens_(std::move(tokens)),
        bos_(bos),
        eos_(eos),
        description_(std::move(description)) {}
  // Throws InputError unless every id is in the vocabulary.
  void check_ids(std::span<const TokenId> ids) const;
  // The BOS id for encode(add_bos = true); InputError when there is none.
  TokenId required_bos() const;

 private:
  std::filesystem::path path_;
  std::vector<std::string> tokens_;
  std::optional<TokenId> bos_, eos_;
  std::string description_;
};

// path: a GGUF file (tokenizer.ggml.*), a tokenizer.json, a SentencePiece tokenizer.model, or a
// folder holding one of them (tokenizer.model first, then tokenizer.json, then a single .gguf).
// A tokenizer.json takes its BOS and EOS from a tokenizer_config.json beside it, when there is one.
// Throws InputError naming the file and what is wrong or not supported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace upcycle
