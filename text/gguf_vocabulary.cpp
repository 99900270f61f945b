#include "text/gguf_vocabulary.hpp"

#include <sentencepiece_processor.h>

#include "core/error.hpp"
#include "text/model_text.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// llama.cpp's name for each pre-tokenizer split we read (tokenizer_export.cpp maps them back).
std::string pre_name(const fs::path& path, const tok::BpeOptions& o) {
  require(!o.add_prefix_space, path, "pre_tokenizer.add_prefix_space", "llama.cpp's byte-level BPE has no such option");
  switch (o.split) {
    case tok::Split::Gpt2: return "gpt-2";
    case tok::Split::DigitsThenGpt2: return "smollm";
    case tok::Split::Llama3: return o.ignore_merges ? "llama-bpe" : "smaug-bpe";
    case tok::Split::Qwen2: return "qwen2";
  }
  throw std::logic_error("pre_name: a split without a name");
}

// The ids past the tokenizer's as unused "[PAD<id>]".
void pad_to(GgufVocabulary& v, int64_t vocab_size, const fs::path& path) {
  require(int64_t(v.tokens.size()) <= vocab_size, path,
          "the tokenizer has " + std::to_string(v.tokens.size()) + " tokens, more than the model's vocab_size " +
              std::to_string(vocab_size));
  for (int64_t i = int64_t(v.tokens.size()); i < vocab_size; ++i) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.types.push_back(int32_t(tok::TokenType::Unused));
    if (!v.scores.empty()) v.scores.push_back(-1000.0f);
  }
}

GgufVocabulary from_tokenizer_json(const fs::path& path) {
  tok::TokenizerJson t = tok::read_tokenizer_json(path);
  GgufVocabulary v;
  v.model = "gpt2";
  v.pre = pre_name(path, t.options);
  v.tokens = std::move(t.vocab.tokens);
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    v.types.push_back(int32_t(t.vocab.types[i]));  // Unused: an id no token has, its text empty
    if (t.vocab.types[i] == tok::TokenType::Unused) v.tokens[i] = "[PAD" + std::to_string(i) + "]";
  }
  for (const auto& [a, b] : t.merges) v.merges.push_back(a + " " + b);
  v.bos = t.vocab.bos, v.eos = t.vocab.eos, v.unk = t.vocab.unk;
  return v;
}

GgufVocabulary from_sentencepiece(const fs::path& path) {
  sentencepiece::SentencePieceProcessor sp;
  const auto status = sp.Load(path.string());
  require(status.ok(), path, "not a SentencePiece model (" + status.ToString() + ")");
  GgufVocabulary v;
  v.model = "llama";
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    using T = tok::TokenType;
    const T type = sp.IsUnknown(i) ? T::Unknown : sp.IsControl(i) ? T::Control : sp.IsUnused(i) ? T::Unused
                   : sp.IsByte(i) ? T::Byte : T::Normal;
    v.tokens.push_back(sp.IdToPiece(i));
    v.types.push_back(int32_t(type));
    v.scores.push_back(sp.GetScore(i));
  }
  auto id = [](int i) { return i >= 0 ? std::optional<TokenId>(i) : std::nullopt; };
  v.bos = id(sp.bos_id()), v.eos = id(sp.eos_id()), v.unk = id(sp.unk_id());
  return v;
}

}  // namespace

std::optional<GgufVocabulary> gguf_vocabulary(const fs::path& folder, int64_t vocab_size) {
  std::optional<GgufVocabulary> v;
  fs::path file;
  if (fs::is_regular_file(file = folder / "tokenizer.model")) v = from_sentencepiece(file);
  else if (fs::is_regular_file(file = folder / "tokenizer.json")) v = from_tokenizer_json(file);
  else return std::nullopt;
  pad_to(*v, vocab_size, file);
  const ModelTextInfo text = read_model_text_info(folder);
  v->add_bos = text.add_bos;
  v->chat_template = text.chat_template;
  return v;
}

}  // namespace upcycle
