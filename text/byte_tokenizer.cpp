#include "text/byte_tokenizer.hpp"

#include <nlohmann/json.hpp>

#include "text/tokenizer_impl.hpp"

namespace upcycle {

namespace {

std::string tokenizer_json() {
  const auto alphabet = tok::byte_level_alphabet();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (const auto& [id, text] : {std::pair{256, "<|im_start|>"}, std::pair{257, "<|im_end|>"}}) {
    vocab[text] = id;
    added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  const nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                 {"merges", nlohmann::ordered_json::array()}}}};
  return j.dump() + "\n";
}

std::string tokenizer_config_json() {
  const nlohmann::ordered_json j = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"eos_token", "<|im_end|>"},
      {"pad_token", "<|im_end|>"},
      {"chat_template",
       "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
       "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}};
  return j.dump(2) + "\n";
}

}  // namespace

std::vector<GeneratedFile> byte_tokenizer_files() {
  return {{"tokenizer.json", [] { return std::optional<std::string>(tokenizer_json()); }},
          {"tokenizer_config.json", [] { return std::optional<std::string>(tokenizer_config_json()); }}};
}

}  // namespace upcycle
