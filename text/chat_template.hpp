// Chat templates built in: ChatML (SmolLM2, Qwen2; Qwen3's with its <think> blocks), Llama-2's [INST],
// Mistral's [INST] without a system block (v0.3, Nemo; and v0.1, v0.2 and Mixtral 8x7B's, spaced),
// Llama 3's header tokens and Alpaca's "### Instruction:".
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

enum class ChatFormat { ChatML, Llama2, Mistral, MistralV1, Llama3, Alpaca };

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
  // Mistral v1 (7B Instruct v0.1): a space after each reply's EOS.
  bool space_after_eos = false;
};

// "chatml", "llama2", "mistral", "mistral-v1", "llama3", "alpaca"; nullopt for anything else.
std::optional<ChatFormat> parse_chat_format(std::string_view name);
const char* chat_format_name(ChatFormat format);
// "chatml, llama2, ... or alpaca": the names for help texts and errors.
std::string chat_format_choices();

// The built-in template a model's Jinja chat template stands for, recognised by its markers
// (<|im_start|>; [INST] with <<SYS>>, joined to the text, or spaced; <|start_header_id|>;
// ### Instruction), with ChatML's default system prompt when the template spells one out,
// Qwen3's <think> blocks, Llama 3.1's dated system turn and Mistral v0.1's space after EOS;
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

// Whether the template writes BOS into the text itself (Llama 2 before each turn, Mistral and
// Llama 3 first), so the tokenizer must not add another.
bool spells_bos(ChatFormat format);
// The end-of-turn marker the template writes after a reply ("<|im_end|>" for ChatML, "<|eot_id|>"
// for Llama 3, else EOS).
std::string end_of_turn(const ChatTemplate& tmpl, const SpecialTexts& specials);
// Whether that marker is EOS (every format but ChatML and Llama 3).
bool ends_replies_with_eos(ChatFormat format);

}  // namespace upcycle
