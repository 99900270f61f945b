// Chat templates built in: ChatML (SmolLM2, Qwen2), Llama-2's [INST] and Alpaca's "### Instruction:".
// A conversation is rendered as text segments, each marked whether the loss counts it (the
// assistant's replies and the marker that ends them), so labels follow the segments exactly.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upcycle {

struct Message {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
  std::string input;    // Alpaca's optional `input`, on the user message of an Alpaca record
};

enum class ChatFormat { ChatML, Llama2, Alpaca };

struct ChatTemplate {
  ChatFormat format = ChatFormat::ChatML;
  // The system prompt the model's own template puts first when a conversation has none
  // (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."); empty: none.
  std::string default_system;
};

// "chatml", "llama2", "alpaca"; nullopt for anything else.
std::optional<ChatFormat> parse_chat_format(std::string_view name);
const char* chat_format_name(ChatFormat format);

// The built-in template a model's Jinja chat template stands for, recognised by its markers
// (<|im_start|>, [INST], ### Instruction), with ChatML's default system prompt when the template
// spells one out; nullopt when it is none of them.
std::optional<ChatTemplate> recognise_chat_template(std::string_view jinja);

// The text the tokenizer spells BOS and EOS with ("<s>", "</s>"); Llama-2 and Alpaca need them.
struct SpecialTexts {
  std::string bos, eos;
};

struct Segment {
  std::string text;
  bool trained = false;  // the loss counts this segment's tokens
};

// The conversation as the template lays it out. With add_generation_prompt the result ends with
// the opening of an assistant turn, for generation. std::invalid_argument when the messages do
// not make a conversation: a role other than system/user/assistant, a system message not first,
// two user or two assistant turns in a row, or no user turn.
std::vector<Segment> render_chat(const ChatTemplate& tmpl, const std::vector<Message>& messages,
                                 bool add_generation_prompt, const SpecialTexts& specials);

// The end-of-turn marker the template writes after a reply ("<|im_end|>" for ChatML, else EOS).
std::string end_of_turn(const ChatTemplate& tmpl, const SpecialTexts& specials);

}  // namespace upcycle
