// What a model says about laying out its text, beside the vocabulary itself: its chat template
// (Jinja, as shipped) and whether its tokenizer puts BOS first.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace upcycle {

struct ModelTextInfo {
  std::optional<std::string> chat_template;  // GGUF tokenizer.chat_template, tokenizer_config.json's, or chat_template.jinja
  bool add_bos = false;                      // the tokenizer's own default for plain text
  // tokenizer_config.json's "upcycle_chat_template": the built-in template a --template gave by
  // hand when this checkpoint was tuned, which `--template auto` then takes over chat_template.
  std::optional<std::string> chosen_template;
};

// The tokenizer_config.json key that records a template chosen by hand.
inline constexpr const char* kChosenTemplateKey = "upcycle_chat_template";

// path: a GGUF file, a model folder, or a tokenizer file inside one. add_bos comes from GGUF's
// tokenizer.ggml.add_bos_token (absent: true for SentencePiece vocabularies), else
// tokenizer_config.json's add_bos_token, else true for a tokenizer.model and for a tokenizer.json
// whose post-processor puts a special token first. InputError for a malformed file.
ModelTextInfo read_model_text_info(const std::filesystem::path& path);

}  // namespace upcycle
