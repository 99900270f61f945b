#include "text/chat_encoder.hpp"

#include <stdexcept>

#include "core/error.hpp"
#include "text/model_text.hpp"

namespace upcycle {

namespace {

std::string spelled(const Tokenizer& t, std::optional<TokenId> id) { return id ? t.token(*id) : std::string(); }

// The format's needs of the vocabulary: Llama-2 and Mistral write BOS and EOS, Llama 3 BOS, Alpaca
// closes replies with EOS.
void check_specials(const Tokenizer& t, const ChatTemplate& tmpl) {
  const std::string name = chat_format_name(tmpl.format);
  if (ends_replies_with_eos(tmpl.format))
    require(t.eos_id().has_value(), t.path(), "the vocabulary has no EOS token, which the " + name + " template ends replies with");
  if (spells_bos(tmpl.format))
    require(t.bos_id().has_value(), t.path(), "the vocabulary has no BOS token, which the " + name + " template writes");
}

}  // namespace

ChatEncoder::ChatEncoder(std::unique_ptr<Tokenizer> tokenizer, ChatTemplate tmpl, bool add_bos)
    : tokenizer_(std::move(tokenizer)), template_(std::move(tmpl)), add_bos_(add_bos) {
  check_specials(*tokenizer_, template_);
  specials_ = {spelled(*tokenizer_, tokenizer_->bos_id()), spelled(*tokenizer_, tokenizer_->eos_id())};
}

TokenizedSample ChatEncoder::encode(const std::vector<Message>& messages) const {
  if (messages.empty() || messages.back().role != "assistant")
    throw std::invalid_argument("the conversation does not end with an assistant reply to train on");
  const std::vector<Segment> segments = render_chat(template_, messages, false, specials_);
  // Llama 2 and 3 spell BOS in the text; the others take the tokenizer's default.
  const bool bos = add_bos_ && !spells_bos(template_.format);
  std::string text;
  for (const Segment& s : segments) text += s.text;
  TokenizedSample sample;
  sample.ids = tokenizer_->encode(text, bos);
  sample.labels.assign(sample.ids.size(), kIgnoreLabel);
  std::string prefix;
  size_t begin = 0;
  for (const Segment& s : segments) {
    prefix += s.text;
    const size_t end = prefix.size() == text.size() ? sample.ids.size()
                                                    : std::min(sample.ids.size(), tokenizer_->encode(prefix, bos).size());
    if (s.trained)
      for (size_t i = begin; i < end; ++i) sample.labels[i] = sample.ids[i];
    begin = std::max(begin, end);
  }
  return sample;
}

std::vector<TokenId> ChatEncoder::prompt(const std::vector<Message>& messages) const {
  if (messages.empty() || messages.back().role != "user")
    throw std::invalid_argument("a prompt must end with a user turn");
  std::string text;
  for (const Segment& s : render_chat(template_, messages, true, specials_)) text += s.text;
  return tokenizer_->encode(text, add_bos_ && !spells_bos(template_.format));
}

std::vector<TokenId> ChatEncoder::encode_text(const std::string& text) const { return tokenizer_->encode(text, add_bos_); }

std::vector<TokenId> ChatEncoder::stop_ids() const {
  std::vector<TokenId> ids;
  if (tokenizer_->eos_id()) ids.push_back(*tokenizer_->eos_id());
  const std::vector<TokenId> eot = tokenizer_->encode(end_of_turn(template_, specials_));
  if (eot.size() == 1 && (ids.empty() || ids[0] != eot[0])) ids.push_back(eot[0]);
  return ids;
}

std::unique_ptr<ChatEncoder> load_chat_encoder(const std::filesystem::path& model, const std::string& template_name,
                                               const std::optional<std::filesystem::path>& adapter) {
  const ModelTextInfo info = read_model_text_info(model);
  const std::optional<ChatTemplate> own = info.chat_template ? recognise_chat_template(*info.chat_template) : std::nullopt;
  // Recorded when the checkpoint (or the adapter) was tuned: the adapter's first.
  std::optional<std::string> chosen = info.chosen_template;
  std::filesystem::path chosen_by = model;
  if (adapter && std::filesystem::is_regular_file(*adapter / "tokenizer_config.json")) {
    if (auto c = read_model_text_info(*adapter).chosen_template) chosen = c, chosen_by = *adapter;
  }
  ChatTemplate tmpl;
  if (template_name == "auto" && chosen) {
    const auto format = parse_chat_format(*chosen);
    require(format.has_value(), chosen_by, std::string(kChosenTemplateKey) + " '" + *chosen + "' is not one of ours");
    tmpl = own && own->format == *format ? *own : ChatTemplate(*format);
  } else if (template_name == "auto") {
    require(info.chat_template.has_value(), model,
            "has no chat template: choose one with --template (" + chat_format_choices() + ")");
    require(own.has_value(), model,
            "its chat template is not one of ours (" + chat_format_choices() + "): choose one with --template");
    tmpl = *own;
  } else {
    const auto format = parse_chat_format(template_name);
    if (!format)
      throw UsageError("--template: '" + template_name + "' is not auto, " + chat_format_choices());
    tmpl.format = *format;
    if (own && own->format == *format) tmpl = *own;  // its default system, thinking or preamble
  }
  return std::make_unique<ChatEncoder>(load_tokenizer(model), std::move(tmpl), info.add_bos);
}

}  // namespace upcycle
