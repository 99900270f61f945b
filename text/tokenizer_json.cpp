// A Hugging Face tokenizer.json holding byte-level BPE: model.vocab, model.merges ("a b" or
// ["a", "b"]), added_tokens, no normalizer or NFC, and a pre-tokenizer of a known shape: ByteLevel
// alone (GPT-2), Digits then ByteLevel (SmolLM2), or a Split on the Llama-3 or Qwen2 regex then
// ByteLevel.
// BOS and EOS come from tokenizer_config.json beside it, when there is one.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

using json = nlohmann::json;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Typed access to members; errors name the file and the member's path ("model.vocab").
class Doc {
 public:
  explicit Doc(const std::filesystem::path& path) : path_(path) {}
  const std::filesystem::path& path() const { return path_; }

  const json& member(const json& obj, const char* key, const std::string& where) const {
    require(obj.is_object(), path_, where, "must be an object");
    auto it = obj.find(key);
    require(it != obj.end(), path_, where.empty() ? key : where + "." + key, "missing");
    return *it;
  }
  std::string string(const json& obj, const char* key, const std::string& where) const {
    const json& v = member(obj, key, where);
    require(v.is_string(), path_, where + "." + key, "must be a string");
    return v.get<std::string>();
  }
  bool flag(const json& obj, const char* key, bool fallback, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    require(it->is_boolean(), path_, where + "." + key, "must be true or false");
    return it->get<bool>();
  }
  [[noreturn]] void unsupported(const std::string& where, const json& v) const {
    std::string shown = v.dump(-1, ' ', false, json::error_handler_t::replace);
    if (shown.size() > 160) shown = shown.substr(0, 160) + "...";
    throw InputError(path_, where,
                     "not supported: " + shown +
                         " (byte-level BPE with the GPT-2, SmolLM2, Llama-3 or Qwen2 pre-tokenizer is;"
                         " for SentencePiece models use tokenizer.model)");
  }

 private:
  const std::filesystem::path& path_;
};

bool is_type(const json& v, const char* type) { return v.is_object() && v.value("type", "") == type; }

// ByteLevel inside a Sequence: after a Split it must not split again, nor add a space anywhere.
bool byte_level(const Doc& doc, const json& p, bool use_regex, const std::string& where) {
  return is_type(p, "ByteLevel") && doc.flag(p, "use_regex", true, where) == use_regex &&
         !doc.flag(p, "add_prefix_space", false, where);
}

BpeOptions read_pre_tokenizer(const Doc& doc, const json& root) {
  const std::string where = "pre_tokenizer";
  const json& p = doc.member(root, "pre_tokenizer", "");
  if (is_type(p, "ByteLevel") && doc.flag(p, "use_regex", true, where))
    return {.split = Split::Gpt2, .add_prefix_space = doc.flag(p, "add_prefix_space", false, where)};
  if (!is_type(p, "Sequence") || !p.contains("pretokenizers") || !p["pretokenizers"].is_array() ||
      p["pretokenizers"].size() != 2)
    doc.unsupported(where, p);
  const json &first = p["pretokenizers"][0], &second = p["pretokenizers"][1];
  const std::string w0 = where + ".pretokenizers[0]", w1 = where + ".pretokenizers[1]";
  if (is_type(first, "Digits") && doc.flag(first, "individual_digits", false, w0) && byte_level(doc, second, true, w1))
    return {.split = Split::DigitsThenGpt2};
  if (is_type(first, "Split") && first.value("behavior", "") == "Isolated" && !doc.flag(first, "invert", false, w0) &&
      first.contains("pattern") && first["pattern"].is_object() && first["pattern"].contains("Regex") &&
      first["pattern"]["Regex"].is_string() && byte_level(doc, second, false, w1)) {
    const std::string& regex = first["pattern"]["Regex"].get_ref<const std::string&>();
    if (regex == kLlama3Regex) return {.split = Split::Llama3};
    if (regex == kQwen2Regex) return {.split = Split::Qwen2};
    if (regex == kGpt2Regex) return {.split = Split::Gpt2};
  }
  doc.unsupported(where, p);
}

// No normalizer, or NFC (Qwen2's): whether to apply NFC.
bool read_normalizer(const Doc& doc, const json& root) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return false;
  if (!is_type(*it, "NFC")) doc.unsupported("normalizer", *it);
  return true;
}

void check_model(const Doc& doc, const json& model) {
  const std::string where = "model";
  if (model.contains("type")) {
    if (doc.string(model, "type", where) != "BPE") doc.unsupported("model.type", model["type"]);
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "") doc.unsupported(where + "." + key, *it);
  }
}

// model.vocab and added_tokens, one id space: ids no token uses stay Unused.
Vocab read_vocab(const Doc& doc, const json& root) {
  const json& vocab = doc.member(doc.member(root, "model", ""), "vocab", "model");
  require(vocab.is_object(), doc.path(), "model.vocab", "must be an object of token: id");
  const json empty = json::array();
  const json& added = root.contains("added_tokens") ? root["added_tokens"] : empty;
  require(added.is_array(), doc.path(), "added_tokens", "must be an array");

  Vocab v;
  v.path = doc.path();
  const size_t limit = vocab.size() + added.size();  // ids are dense, give or take tokens in both
  // where() names the entry, built only for a message.
  auto place = [&](const std::string& text, const json& id, TokenType type, const auto& where) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() >= limit)
      throw InputError(doc.path(), where(), "id must be an integer from 0 to " + std::to_string(limit - 1));
    size_t i = id.get<size_t>();
    if (i >= v.tokens.size()) v.tokens.resize(i + 1), v.types.resize(i + 1, TokenType::Unused);
    bool taken = v.types[i] != TokenType::Unused;
    if (taken && (type == TokenType::Normal || v.tokens[i] != text))
      throw InputError(doc.path(), where(), "id " + std::to_string(i) + " is already '" + v.tokens[i] + "'");
    v.tokens[i] = text;
    v.types[i] = type;
    return TokenId(i);
  };
  v.tokens.reserve(limit);
  v.types.reserve(limit);
  for (const auto& item : vocab.items()) {
    const std::string& text = item.key();  // not a structured binding: clang < 16 cannot capture those
    place(text, item.value(), TokenType::Normal, [&] { return "model.vocab['" + text + "']"; });
  }
  for (size_t k = 0; k < added.size(); ++k) {
    const std::string where = "added_tokens[" + std::to_string(k) + "]";
    const json& a = added[k];
    std::string text = doc.string(a, "content", where);
    if (doc.flag(a, "single_word", false, where)) doc.unsupported(where + ".single_word", a);
    bool special = doc.flag(a, "special", false, where);
    TokenId id = place(text, doc.member(a, "id", where), special ? TokenType::Control : TokenType::UserDefined,
                       [&] { return where; });
    v.added.push_back({text, id, doc.flag(a, "lstrip", false, where), doc.flag(a, "rstrip", false, where)});
  }
  require(!v.tokens.empty(), doc.path(), "model.vocab", "is empty");
  return v;
}

// model.unk_token: what stands for a byte the vocabulary lacks (left out when null).
std::optional<TokenId> unk_token(const Doc& doc, const json& model, const Vocab& vocab) {
  auto it = model.find("unk_token");
  if (it == model.end() || it->is_null()) return std::nullopt;
  require(it->is_string(), doc.path(), "model.unk_token", "must be a string or null");
  const std::string& name = it->get_ref<const std::string&>();
  auto t = std::find(vocab.tokens.begin(), vocab.tokens.end(), name);
  require(t != vocab.tokens.end(), doc.path(), "model.unk_token", "'" + name + "' is not in the vocabulary");
  return TokenId(t - vocab.tokens.begin());
}

Merges read_merges(const Doc& doc, const json& root) {
  const json& list = doc.member(doc.member(root, "model", ""), "merges", "model");
  require(list.is_array(), doc.path(), "model.merges", "must be an array");
  Merges merges;
  merges.reserve(list.size());
  auto bad = [&](size_t i, const std::string& detail) {
    return InputError(doc.path(), "model.merges[" + std::to_string(i) + "]", detail);
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos)
        throw bad(i, "'" + s + "' is not two tokens separated by one space");
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else {
      if (!m.is_array() || m.size() != 2 || !m[0].is_string() || !m[1].is_string())
        throw bad(i, "must be \"a b\" or [\"a\", \"b\"]");
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  return merges;
}

// bos_token / eos_token of tokenizer_config.json: a string, or an object with its content.
std::optional<TokenId> config_token(const std::filesystem::path& config, const json& c, const char* key,
                                    const Vocab& vocab) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return std::nullopt;
  const json& v = it->is_object() && it->contains("content") ? (*it)["content"] : *it;
  require(v.is_string(), config, key, "must be a string or an object with a string 'content'");
  const std::string& text = v.get_ref<const std::string&>();
  for (const AddedToken& a : vocab.added)
    if (a.text == text) return a.id;
  for (size_t i = 0; i < vocab.tokens.size(); ++i)
    if (vocab.tokens[i] == text) return TokenId(i);
  throw InputError(config, key, "'" + text + "' is not a token of " + vocab.path.string());
}

void read_special_ids(Vocab& vocab) {
  std::filesystem::path config = vocab.path.parent_path() / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(config)) return;
  json c = read_json_file(config);
  require(c.is_object(), config, "must be a JSON object");
  vocab.bos = config_token(config, c, "bos_token", vocab);
  vocab.eos = config_token(config, c, "eos_token", vocab);
}

}  // namespace

TokenizerJson read_tokenizer_json(const std::filesystem::path& path) {
  json root = read_json_file(path);
  Doc doc(path);
  require(root.is_object(), path, "must be a JSON object (a Hugging Face tokenizer.json)");
  try {
    check_model(doc, doc.member(root, "model", ""));
    TokenizerJson t;
    t.options = read_pre_tokenizer(doc, root);
    t.options.nfc = read_normalizer(doc, root);
    t.options.ignore_merges = doc.flag(root["model"], "ignore_merges", false, "model");
    t.vocab = read_vocab(doc, root);
    t.vocab.unk = unk_token(doc, root["model"], t.vocab);
    read_special_ids(t.vocab);
    t.merges = read_merges(doc, root);
    return t;
  } catch (const json::exception& e) {  // a type this code did not check first
    throw InputError(path, std::string("unexpected JSON: ") + e.what());
  }
}

std::unique_ptr<Tokenizer> open_tokenizer_json(const std::filesystem::path& path) {
  TokenizerJson t = read_tokenizer_json(path);
  return make_bpe(std::move(t.vocab), t.merges, t.options);
}

}  // namespace upcycle::tok
