// Chat templates built in: ChatML (SmolLM2, Qwen2; Qwen3's with its <think> blocks), Llama-2's [INST],
// Mistral's [INST] without a system block (v0.3, Nemo), Llama 3's header tokens and Alpaca's
// "### Instruction:".
// A conversation is rendered as text segments, each marked whether the loss counts it (the
// assistant's replies and the marker that ends them), so labels follow the segments exactly.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace upcycle {

struct Message {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
  std::string input;    // Alpaca's optional `input`, on the user message of an Alpaca record
};

enum class ChatFormat { ChatML, Llama2, Mistral, Llama3, Alpaca };

struct ChatTemplate {
  ChatTemplate(ChatFormat f = ChatFormat::ChatML, std::string system = {})
      : format(f), default_system(std::move(system)) {}
  ChatFormat format;
  // The system prompt the model's own template puts first when a conversation has none
  // (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."); empty: none.
  std::string default_system;
  // ChatML: Qwen3's thinking layout. The reply after the last user turn opens with its reasoning
  // in <think>...</think> (empty when the reply has none), earlier replies lose theirs, and a
  // generation prompt asks for no thinking (an empty block, as enable_thinking=false does).
  bool thinking = false;
  // Llama 3: text that opens the system turn, which is then always written (3.1 and later:
  // "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", the date fixed, as
  // the template writes it without strftime_now, so that data encode the same any day).
  std::string system_preamble;
};

// "chatml", "llama2", "mistral", "llama3", "alpaca"; nullopt for anything else.
std::optional<ChatFormat> parse_chat_format(std::string_view name);
const char* chat_format_name(ChatFormat format);

// The built-in template a model's Jinja chat template stands for, recognised by its markers
// (<|im_start|>, [INST] with or without <<SYS>>, <|start_header_id|>, ### Instruction), with ChatML's default system prompt
// when the template spells one out, Qwen3's <think> blocks and Llama 3.1's dated system turn;
// nullopt when it is none of them.
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

// The end-of-turn marker the template writes after a reply ("<|im_end|>" for ChatML, "<|eot_id|>"
// for Llama 3, else EOS).

// Whether the template writes BOS into the text itself (Llama 2 before each turn, Mistral and
// Llama 3 first),
// so the tokenizer must not add another.
bool spells_bos(ChatFormat format);
std::string end_of_turn(const ChatTemplate& tmpl, const SpecialTexts& specials);

}  // namespace upcycle
