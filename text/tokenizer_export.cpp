#include "text/tokenizer_export.hpp"

#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "text/tokenizer.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Hugging Face's Split regexes for the families that split before ByteLevel, as their own
// tokenizer.json files spell them (our tokenizer.json reader recognizes exactly these).
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class Family { Gpt2, Smollm, Llama3, Qwen2 };

struct PreTokenizer {
  Family family;
  bool ignore_merges;  // llama.cpp's llama-bpe looks a whole pre-token up before merging, as HF's does
};

// llama.cpp's pre-tokenizer names (tokenizer.ggml.pre), grouped as the GGUF tokenizer reads them.
std::optional<PreTokenizer> pre_tokenizer(const std::string& pre) {
  struct Names {
    std::initializer_list<const char*> names;
    PreTokenizer pre;
  };
  static const Names kNames[] = {
      {{"gpt-2", "gpt2", "default", "mpt", "olmo", "jais"}, {Family::Gpt2, false}},
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"}, {Family::Smollm, false}},
      {{"llama-bpe", "llama3", "llama-v3"}, {Family::Llama3, true}},
      {{"dbrx", "smaug-bpe"}, {Family::Llama3, false}},
      {{"qwen2", "stablelm2", "deepseek-r1-qwen"}, {Family::Qwen2, false}},
  };
  for (const Names& n : kNames)
    for (const char* name : n.names)
      if (pre == name) return n.pre;
  return std::nullopt;
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json pre_tokenizer_json(Family family) {
  switch (family) {
    case Family::Gpt2: return byte_level(true);
    case Family::Smollm:
      return {{"type", "Sequence"},
              {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}};
    case Family::Llama3:
    case Family::Qwen2: break;
  }
  json split = {{"type", "Split"},
                {"pattern", {{"Regex", family == Family::Llama3 ? kLlama3Regex : kQwen2Regex}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  return {{"type", "Sequence"}, {"pretokenizers", json::array({split, byte_level(false)})}};
}

// The GGUF's tokenizer metadata, read when the first file is produced and then shared.
class Source {
 public:
  explicit Source(fs::path path) : path_(std::move(path)) {}

  const fs::path& path() const { return path_; }
  const json& meta() {
    if (!meta_) meta_ = GgufFile::open(path_).metadata();
    return *meta_;
  }
  const json& tokens() {
    auto it = meta().find("tokenizer.ggml.tokens");
    require(it != meta().end() && it->is_array(), path_, "tokenizer.ggml.tokens", "must be an array of strings");
    return *it;
  }
  bool flag(const char* key, bool fallback) {
    auto it = meta().find(key);
    if (it == meta().end()) return fallback;
    require(it->is_boolean(), path_, key, "must be a boolean");
    return it->get<bool>();
  }
  // The token an id key names, when the file has the key.
  std::optional<std::string> token_of(const char* key) {
    auto id = id_of(key);
    return id ? std::optional(tokens()[*id].get<std::string>()) : std::nullopt;
  }
  std::optional<size_t> id_of(const char* key) {
    auto it = meta().find(key);
    if (it == meta().end()) return std::nullopt;
    const json& list = tokens();
    require(it->is_number_integer() && it->get<int64_t>() >= 0 && it->get<uint64_t>() < list.size(), path_, key,
            "must be a token id below " + std::to_string(list.size()));
    require(list[it->get<size_t>()].is_string(), path_, "tokenizer.ggml.tokens", "must be an array of strings");
    return it->get<size_t>();
  }

 private:
  fs::path path_;
  std::optional<json> meta_;
};

constexpr int64_t kUnknown = 2, kControl = 3, kUserDefined = 4;  // llama.cpp's token types

// CONTROL and UNKNOWN tokens as special, USER_DEFINED as plain added tokens: whole in any text.
json added_tokens(const json& tokens, const json* types) {
  json added = json::array();
  if (!types) return added;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t type = (*types)[i].get<int64_t>();
    if (type != kControl && type != kUnknown && type != kUserDefined) continue;
    const bool special = type != kUserDefined;
    added.push_back({{"id", i},
                     {"content", tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", !special},
                     {"special", special}});
  }
  return added;
}

// GGUF's "a b" merges as pairs: unambiguous whatever the tokens hold.
json merge_pairs(const json& merges) {
  json pairs = json::array();
  for (const json& m : merges) {
    const std::string& s = m.get_ref<const std::string&>();
    const size_t space = s.find(' ', 1);
    pairs.push_back({s.substr(0, space), s.substr(space + 1)});
  }
  return pairs;
}

// Hugging Face's fast tokenizers add BOS through the post-processor, not tokenizer_config.json.
json bos_post_processor(Source& src) {
  auto bos = src.id_of("tokenizer.ggml.bos_token_id");
  if (!bos || !src.flag("tokenizer.ggml.add_bos_token", false)) return nullptr;
  const std::string token = src.tokens()[*bos].get<std::string>();
  const json bos_piece = {{"SpecialToken", {{"id", token}, {"type_id", 0}}}};
  auto sequence = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  json special = json::object();
  special[token] = {{"id", token}, {"ids", json::array({*bos})}, {"tokens", json::array({token})}};
  return {{"type", "TemplateProcessing"},
          {"single", json::array({bos_piece, sequence("A", 0)})},
          {"pair", json::array({bos_piece, sequence("A", 0), bos_piece, sequence("B", 1)})},
          {"special_tokens", std::move(special)}};
}

std::string tokenizer_json(Source& src, PreTokenizer pre) {
  (void)load_tokenizer(src.path());  // validates tokens, types, merges and ids, naming the file and key
  const json& meta = src.meta();
  const json& tokens = src.tokens();
  auto types = meta.find("tokenizer.ggml.token_type");
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab.emplace(tokens[i].get<std::string>(), i);  // first id wins
  json model = {{"type", "BPE"},          {"dropout", nullptr},
                {"unk_token", nullptr},   {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", pre.ignore_merges},
                {"vocab", std::move(vocab)}, {"merges", merge_pairs(meta["tokenizer.ggml.merges"])}};
  json root = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", added_tokens(tokens, types == meta.end() ? nullptr : &*types)},
               {"normalizer", nullptr},
               {"pre_tokenizer", pre_tokenizer_json(pre.family)},
               {"post_processor", bos_post_processor(src)},
               {"decoder", byte_level(true)},
               {"model", std::move(model)}};
  root["decoder"]["add_prefix_space"] = true;
  return root.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string tokenizer_config_json(Source& src, int64_t max_length) {
  json c = {{"add_bos_token", src.flag("tokenizer.ggml.add_bos_token", false)},
            {"add_eos_token", src.flag("tokenizer.ggml.add_eos_token", false)},
            {"clean_up_tokenization_spaces", false},
            {"tokenizer_class", "PreTrainedTokenizerFast"}};
  const std::pair<const char*, const char*> kSpecial[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                                          {"eos_token", "tokenizer.ggml.eos_token_id"},
                                                          {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                                          {"pad_token", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [name, key] : kSpecial)
    if (auto token = src.token_of(key)) c[name] = *token;
  auto chat = src.meta().find("tokenizer.chat_template");
  if (chat != src.meta().end()) {
    require(chat->is_string(), src.path(), "tokenizer.chat_template", "must be a string");
    c["chat_template"] = *chat;
  }
  if (max_length > 0) c["model_max_length"] = max_length;
  return c.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string generation_config_json(Source& src) {
  json c = {{"_from_model_config", false}};
  const std::pair<const char*, const char*> kIds[] = {{"bos_token_id", "tokenizer.ggml.bos_token_id"},
                                                      {"eos_token_id", "tokenizer.ggml.eos_token_id"},
                                                      {"pad_token_id", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [name, key] : kIds)
    if (auto id = src.id_of(key)) c[name] = *id;
  return c.dump(2) + "\n";
}

std::string string_or_empty(const json& meta, const char* key) {
  auto it = meta.find(key);
  return it != meta.end() && it->is_string() ? it->get<std::string>() : "";
}

// In place of tokenizer.json: a warning when the folder is written, none when the file is opened.
std::vector<GeneratedFile> with_warning(std::vector<GeneratedFile> files, const fs::path& path, std::string why) {
  files.push_back({"tokenizer.json", [path, why]() -> std::optional<std::string> {
                     spdlog::warn("{}: no Hugging Face tokenizer files written: {}", path.string(), why);
                     return std::nullopt;
                   }});
  return files;
}

}  // namespace

std::vector<GeneratedFile> hf_tokenizer_files(const GgufFile& file, const ModelConfig& config) {
  const json& meta = file.metadata();
  auto src = std::make_shared<Source>(file.path());
  std::vector<GeneratedFile> files;
  if (meta.contains("tokenizer.ggml.bos_token_id") || meta.contains("tokenizer.ggml.eos_token_id"))
    files.push_back({"generation_config.json", [src] { return generation_config_json(*src); }});
  const std::string model = string_or_empty(meta, "tokenizer.ggml.model");
  if (model.empty()) return files;
  const std::string pre_name = meta.contains("tokenizer.ggml.pre") ? string_or_empty(meta, "tokenizer.ggml.pre")
                                                                   : "default";
  const auto pre = pre_tokenizer(pre_name);
  if (model != "gpt2") return with_warning(std::move(files), file.path(), "tokenizer '" + model + "' is not byte-level BPE");
  if (!pre) return with_warning(std::move(files), file.path(), "tokenizer '" + model + "' (pre-tokenizer '" + pre_name +
                                 "') is not byte-level BPE of the gpt-2, smollm, llama3 or qwen2 family");
  if (!meta.contains("tokenizer.ggml.merges"))
    return with_warning(std::move(files), file.path(), "its byte-level BPE vocabulary has no merges");
  const int64_t max_length = config.max_position_embeddings;
  files.push_back({"tokenizer.json", [src, pre = *pre] { return tokenizer_json(*src, pre); }});
  files.push_back({"tokenizer_config.json", [src, max_length] { return tokenizer_config_json(*src, max_length); }});
  return files;
}

}  // namespace upcycle
