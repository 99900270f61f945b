// The tokenizer a GGUF file carries (tokenizer.ggml.*): "gpt2" byte-level BPE with merges and a
// pre-tokenizer name, or "llama" SentencePiece with scores.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/gguf_file.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

using json = nlohmann::json;

class Keys {
 public:
  Keys(const json& metadata, const std::filesystem::path& path) : m_(metadata), path_(path) {}

  const json* find(const char* key) const {
    auto it = m_.find(key);
    return it == m_.end() ? nullptr : &*it;
  }
  const json& get(const char* key) const {
    const json* v = find(key);
    require(v != nullptr, path_, key, "missing (no tokenizer in this GGUF file?)");
    return *v;
  }
  std::string string(const char* key, const char* fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    require(v->is_string(), path_, key, "must be a string");
    return v->get<std::string>();
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    require(v->is_boolean(), path_, key, "must be a boolean");
    return v->get<bool>();
  }
  // An array of `size` values of one type (size 0: any size).
  const json& array(const char* key, size_t size, bool (json::*is_type)() const noexcept, const char* type) const {
    const json& v = get(key);
    require(v.is_array(), path_, key, std::string("must be an array of ") + type);
    require(size == 0 || v.size() == size, path_, key,
            "has " + std::to_string(v.size()) + " entries for " + std::to_string(size) + " tokens");
    for (size_t i = 0; i < v.size(); ++i)
      if (!(v[i].*is_type)()) throw InputError(path_, key, "entry " + std::to_string(i) + " must be " + type);
    return v;
  }
  std::optional<TokenId> id(const char* key, size_t vocab_size) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    require(v->is_number_integer() && v->get<int64_t>() >= 0 && v->get<uint64_t>() < vocab_size, path_, key,
            "must be a token id below " + std::to_string(vocab_size));
    return TokenId(v->get<int64_t>());
  }

 private:
  const json& m_;
  const std::filesystem::path& path_;
};

Vocab read_vocab(const Keys& keys, const std::filesystem::path& path) {
  Vocab v;
  v.path = path;
  for (const json& t : keys.array("tokenizer.ggml.tokens", 0, &json::is_string, "strings"))
    v.tokens.push_back(t.get<std::string>());
  require(!v.tokens.empty(), path, "tokenizer.ggml.tokens", "is empty");
  v.types.assign(v.tokens.size(), TokenType::Normal);
  if (keys.find("tokenizer.ggml.token_type")) {
    const json& types = keys.array("tokenizer.ggml.token_type", v.tokens.size(), &json::is_number_integer, "integers");
    for (size_t i = 0; i < types.size(); ++i) {
      int64_t t = types[i].get<int64_t>();
      if (t < 1 || t > 6)
        throw InputError(path, "tokenizer.ggml.token_type",
                         "entry " + std::to_string(i) + " is " + std::to_string(t) + ", not a token type (1 to 6)");
      v.types[i] = TokenType(t);
    }
  }
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    TokenType t = v.types[i];
    if (t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown)
      v.added.push_back({v.tokens[i], TokenId(i)});
  }
  v.bos = keys.id("tokenizer.ggml.bos_token_id", v.tokens.size());
  v.eos = keys.id("tokenizer.ggml.eos_token_id", v.tokens.size());
  v.unk = keys.id("tokenizer.ggml.unknown_token_id", v.tokens.size());
  if (!v.unk) {
    auto it = std::find(v.types.begin(), v.types.end(), TokenType::Unknown);
    if (it != v.types.end()) v.unk = TokenId(it - v.types.begin());
  }
  return v;
}

// llama.cpp's pre-tokenizer names, by the regex family they stand for. "default" is what files
// written before the names existed carry: GPT-2's split, as llama.cpp then used for every BPE.
BpeOptions bpe_options(const std::string& pre, const std::filesystem::path& path) {
  struct Family {
    std::initializer_list<const char*> names;
    Split split;
    bool ignore_merges;
  };
  static const Family kFamilies[] = {
      {{"gpt-2", "gpt2", "default", "mpt", "olmo", "jais"}, Split::Gpt2, false},
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"}, Split::DigitsThenGpt2, false},
      {{"llama-bpe", "llama3", "llama-v3"}, Split::Llama3, true},
      {{"dbrx", "smaug-bpe"}, Split::Llama3, false},
      {{"qwen2", "stablelm2", "deepseek-r1-qwen"}, Split::Qwen2, false},
  };
  std::string known;
  for (const Family& f : kFamilies)
    for (const char* name : f.names) {
      if (pre == name) return {.split = f.split, .ignore_merges = f.ignore_merges};
      known += known.empty() ? name : std::string(", ") + name;
    }
  throw InputError(path, "tokenizer.ggml.pre", "pre-tokenizer '" + pre + "' is not supported (known: " + known + ")");
}

Merges read_merges(const Keys& keys, const std::filesystem::path& path) {
  Merges merges;
  const json& list = keys.array("tokenizer.ggml.merges", 0, &json::is_string, "strings");
  merges.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string& m = list[i].get_ref<const std::string&>();
    size_t space = m.empty() ? std::string::npos : m.find(' ', 1);
    if (space == std::string::npos || space + 1 == m.size())
      throw InputError(path, "tokenizer.ggml.merges",
                       "entry " + std::to_string(i) + " ('" + m + "') is not two tokens separated by a space");
    merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }
  return merges;
}

std::vector<float> read_scores(const Keys& keys, size_t size) {
  std::vector<float> scores;
  for (const json& s : keys.array("tokenizer.ggml.scores", size, &json::is_number, "numbers"))
    scores.push_back(s.get<float>());
  return scores;
}

}  // namespace

std::unique_ptr<Tokenizer> open_gguf_tokenizer(const std::filesystem::path& path) {
  GgufFile file = GgufFile::open(path);
  Keys keys(file.metadata(), path);
  std::string model = keys.string("tokenizer.ggml.model", "");
  require(model == "gpt2" || model == "llama", path, "tokenizer.ggml.model",
          model.empty() ? "missing (no tokenizer in this GGUF file?)"
                        : "tokenizer model '" + model + "' is not supported (gpt2 and llama are)");
  Vocab vocab = read_vocab(keys, path);
  if (model == "gpt2") {
    vocab.unk.reset();  // llama.cpp's BPE leaves out a byte the vocabulary lacks, whatever unknown_token_id says
    BpeOptions options = bpe_options(keys.string("tokenizer.ggml.pre", "default"), path);
    return make_bpe(std::move(vocab), read_merges(keys, path), options);
  }
  std::vector<float> scores = read_scores(keys, vocab.tokens.size());
  return make_spm(std::move(vocab), std::move(scores), keys.boolean("tokenizer.ggml.add_space_prefix", true));
}

}  // namespace upcycle::tok
