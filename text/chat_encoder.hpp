// Conversations to token ids with labels: a tokenizer, the chat template and BOS convention the
// model uses. The loss counts the assistant replies and the marker that ends each.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "text/chat_template.hpp"
#include "text/tokenized_data.hpp"
#include "text/tokenizer.hpp"

namespace upcycle {

class ChatEncoder {
 public:
  ChatEncoder(std::unique_ptr<Tokenizer> tokenizer, ChatTemplate tmpl, bool add_bos);

  // ids and labels (the ids on trained segments, kIgnoreLabel elsewhere). The whole text is
  // encoded at once, so tokens are those of the full conversation; each segment's tokens are
  // counted by encoding the text up to its end. std::invalid_argument for a conversation the
  // template rejects or one with no assistant reply.
  TokenizedSample encode(const std::vector<Message>& messages) const;
  // The ids that ask for the next assistant reply: messages ending with a user turn, then the
  // opening of the assistant's.
  std::vector<TokenId> prompt(const std::vector<Message>& messages) const;
  // Plain text (no template), with BOS when the model's tokenizer puts it first.
  std::vector<TokenId> encode_text(const std::string& text) const;
  // The tokens that end a reply: EOS and the template's end-of-turn token when it is one token.
  std::vector<TokenId> stop_ids() const;

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return template_; }
  bool add_bos() const { return add_bos_; }

 private:
  std::unique_ptr<Tokenizer> tokenizer_;
  ChatTemplate template_;
  bool add_bos_;
  SpecialTexts specials_;
};

// The tokenizer and chat template of a model (a GGUF file or a folder; see load_tokenizer).
// template_name "auto" takes the template recorded when the model (or `adapter`, a LoRA adapter
// folder of it, first) was tuned with one given by hand, else the one its chat template metadata
// stands for, and is an InputError when there is none or it is not one of ours; a format's name
// (chat_format_choices) chooses one (keeping the model's default system prompt, thinking or
// preamble when its own template is that format too).
std::unique_ptr<ChatEncoder> load_chat_encoder(const std::filesystem::path& model, const std::string& template_name,
                                               const std::optional<std::filesystem::path>& adapter = std::nullopt);

}  // namespace upcycle
