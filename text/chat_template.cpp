#include "text/chat_template.hpp"

#include <iterator>
#include <stdexcept>
#include <utility>

namespace upcycle {

namespace {

constexpr const char* kImStart = "<|im_start|>";
constexpr const char* kImEnd = "<|im_end|>";
constexpr const char* kEotId = "<|eot_id|>";
constexpr const char* kLlama31Preamble = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";

// Jinja string literals may spell a newline as the two characters \n.
std::string unescape_newlines(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The first "<|im_start|>system\n...<|im_end|>" whose text is a literal (not built from the
// messages by the template's code).
std::string chatml_default_system(std::string_view jinja) {
  const std::string open = std::string(kImStart) + "system";
  for (size_t at = jinja.find(open); at != std::string_view::npos; at = jinja.find(open, at + 1)) {
    size_t begin = at + open.size();
    if (jinja.substr(begin, 1) == "\n") begin += 1;
    else if (jinja.substr(begin, 2) == "\\n") begin += 2;
    else continue;
    const size_t end = jinja.find(kImEnd, begin);
    if (end == std::string_view::npos) break;
    const std::string_view text = jinja.substr(begin, end - begin);
    const bool code = text.find_first_of("'\"{}") != std::string_view::npos || text.find("message") != text.npos;
    if (!code && !text.empty()) return unescape_newlines(text);
  }
  return {};
}

// Roles in order: an optional system message first, then user and assistant alternating from user.
void check_conversation(const std::vector<Message>& messages) {
  bool seen_user = false;
  const std::string* previous = nullptr;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      throw std::invalid_argument("message " + std::to_string(i) + " has role '" + role +
                                  "' (system, user or assistant)");
    if (role == "system" && i != 0) throw std::invalid_argument("a system message may only come first");
    if (role == "assistant" && !seen_user)
      throw std::invalid_argument("message " + std::to_string(i) + ": an assistant turn before any user turn");
    if (previous && *previous == role)
      throw std::invalid_argument("messages " + std::to_string(i - 1) + " and " + std::to_string(i) +
                                  " are both '" + role + "' turns");
    seen_user |= role == "user";
    previous = &role;
  }
  if (!seen_user) throw std::invalid_argument("the conversation has no user turn");
}

// A user turn's text: Alpaca's input joins the instruction for templates without an input slot.
std::string user_text(const Message& m) { return m.input.empty() ? m.content : m.content + "\n\n" + m.input; }

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

class Renderer {
 public:
  void prompt(std::string text) { add(std::move(text), false); }
  void reply(std::string text) { add(std::move(text), true); }
  std::vector<Segment> take() { return std::move(segments_); }

 private:
  void add(std::string text, bool trained) {
    if (text.empty()) return;
    if (!segments_.empty() && segments_.back().trained == trained) segments_.back().text += text;
    else segments_.push_back({std::move(text), trained});
  }
  std::vector<Segment> segments_;
};

// Qwen3's split of a reply at its last </think>: (reasoning, answer), as its template splits them.
std::pair<std::string, std::string> think_split(const std::string& content) {
  const size_t close = content.rfind("</think>");
  if (close == std::string::npos) return {{}, content};
  std::string answer = content.substr(close + 8);
  answer.erase(0, answer.find_first_not_of('\n'));
  std::string reasoning = content.substr(0, close);
  if (const size_t open = reasoning.rfind("<think>"); open != std::string::npos) reasoning.erase(0, open + 7);
  const size_t b = reasoning.find_first_not_of('\n'), e = reasoning.find_last_not_of('\n');
  return {b == std::string::npos ? std::string() : reasoning.substr(b, e - b + 1), answer};
}

void render_chatml(Renderer& r, const ChatTemplate& t, const std::vector<Message>& messages, bool generation) {
  if (messages[0].role != "system" && !t.default_system.empty())
    r.prompt(std::string(kImStart) + "system\n" + t.default_system + kImEnd + "\n");
  size_t last_user = 0;
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role == "user") last_user = i;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    r.prompt(kImStart + m.role + "\n");
    if (m.role != "assistant") {
      r.prompt(user_text(m) + kImEnd + "\n");
      continue;
    }
    std::string content = m.content;
    if (t.thinking) {
      auto [reasoning, answer] = think_split(m.content);
      content = std::move(answer);
      if (i > last_user) r.prompt("<think>\n" + reasoning + "\n</think>\n\n");  // the reply's own reasoning kept
    }
    r.reply(content + kImEnd);
    r.prompt("\n");
  }
  if (generation) r.prompt(std::string(kImStart) + "assistant\n" + (t.thinking ? "<think>\n\n</think>\n\n" : ""));
}

// Llama 3's: BOS, then each turn as <|start_header_id|>role<|end_header_id|>\n\n text <|eot_id|>,
// the text trimmed; 3.1 and later always open with a system turn that starts with the preamble.
void render_llama3(Renderer& r, const ChatTemplate& t, const std::vector<Message>& messages, bool generation,
                   const SpecialTexts& s) {
  auto header = [](const std::string& role) { return "<|start_header_id|>" + role + "<|end_header_id|>\n\n"; };
  r.prompt(s.bos);
  size_t first = 0;
  if (messages[0].role == "system" || !t.system_preamble.empty()) {
    const bool has_system = messages[0].role == "system";
    r.prompt(header("system") + t.system_preamble + (has_system ? strip(messages[0].content) : "") + kEotId);
    first = has_system ? 1 : 0;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    r.prompt(header(m.role));
    if (m.role == "assistant") r.reply(strip(m.content) + kEotId);
    else r.prompt(strip(user_text(m)) + kEotId);
  }
  if (generation) r.prompt(header("assistant"));
}

// Hugging Face's Llama-2 chat template: the system prompt inside the first [INST] block.
void render_llama2(Renderer& r, const std::vector<Message>& messages, const SpecialTexts& s) {
  size_t first = 0;
  std::string system;
  if (messages[0].role == "system") {
    system = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n";
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "user") r.prompt(s.bos + "[INST] " + strip((i == first ? system : "") + user_text(m)) + " [/INST]");
    else r.reply(" " + strip(m.content) + " " + s.eos);
  }
}

// Mistral's [INST] templates: BOS once, each reply closed by EOS.
// - v0.3 and Nemo (mistral): "[INST]question[/INST]answer", no spaces; the system message opens
//   the last user turn ("system\n\nquestion"). Their template writes it only when that turn is
//   the conversation's last message (a prompt): in training data, which end with the reply, it
//   would be lost, so here it goes into the turn the final reply answers in both.
// - v0.1, v0.2 and Mixtral 8x7B Instruct (mistral-v1): "[INST] question [/INST]answer". Their
//   templates refuse a system message; here it opens the first user turn. v0.1 writes a space
//   after each EOS, here opening the next turn so that the loss never counts it.
void render_mistral(Renderer& r, const ChatTemplate& t, const std::vector<Message>& messages, const SpecialTexts& s) {
  const bool spaced = t.format == ChatFormat::MistralV1;
  const bool has_system = messages[0].role == "system";
  std::vector<size_t> users;
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role == "user") users.push_back(i);
  const size_t system_turn = spaced ? users.front() : users.back();
  r.prompt(s.bos);
  for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "assistant") {
      r.reply(m.content + s.eos);
      continue;
    }
    const std::string system = has_system && i == system_turn ? messages[0].content + "\n\n" : "";
    const std::string after_eos = t.space_after_eos && i != users.front() ? " " : "";
    r.prompt(after_eos + (spaced ? "[INST] " : "[INST]") + system + user_text(m) + (spaced ? " [/INST]" : "[/INST]"));
  }
}

// Stanford Alpaca's prompt, the first instruction after the preamble and every reply closed by EOS.
void render_alpaca(Renderer& r, const std::vector<Message>& messages, const SpecialTexts& s) {
  size_t first = 0;
  std::string preamble;
  if (messages[0].role == "system") {
    preamble = messages[0].content;
    first = 1;
  } else {
    preamble = messages[first].input.empty()
                   ? "Below is an instruction that describes a task. Write a response that appropriately "
                     "completes the request."
                   : "Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.";
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "assistant") {
      r.reply(m.content + s.eos);
      continue;
    }
    std::string text = (i == first ? preamble : std::string()) + "\n\n### Instruction:\n" + m.content;
    if (!m.input.empty()) text += "\n\n### Input:\n" + m.input;
    r.prompt(text + "\n\n### Response:\n");
  }
}

}  // namespace

namespace {

constexpr std::pair<ChatFormat, const char*> kFormatNames[] = {
    {ChatFormat::ChatML, "chatml"},        {ChatFormat::Llama2, "llama2"}, {ChatFormat::Mistral, "mistral"},
    {ChatFormat::MistralV1, "mistral-v1"}, {ChatFormat::Llama3, "llama3"}, {ChatFormat::Alpaca, "alpaca"},
};

}  // namespace

std::optional<ChatFormat> parse_chat_format(std::string_view name) {
  for (const auto& [format, n] : kFormatNames)
    if (name == n) return format;
  return std::nullopt;
}

const char* chat_format_name(ChatFormat format) {
  for (const auto& [f, name] : kFormatNames)
    if (f == format) return name;
  return "?";
}

std::string chat_format_choices() {
  std::string out;
  for (size_t i = 0; i < std::size(kFormatNames); ++i)
    out += (i == 0 ? "" : i + 1 == std::size(kFormatNames) ? " or " : ", ") + std::string(kFormatNames[i].second);
  return out;
}

std::optional<ChatTemplate> recognise_chat_template(std::string_view jinja) {
  if (jinja.find(kImStart) != std::string_view::npos) {
    ChatTemplate t{ChatFormat::ChatML, chatml_default_system(jinja)};
    t.thinking = jinja.find("<think>") != std::string_view::npos;
    return t;
  }
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
    ChatTemplate t{ChatFormat::Llama3, {}};
    if (jinja.find("Cutting Knowledge Date") != std::string_view::npos) t.system_preamble = kLlama31Preamble;
    return t;
  }
  if (jinja.find("[INST]") != std::string_view::npos) {
    // Llama 2's writes <<SYS>> and BOS before each [INST]; Mistral's write BOS once, and v0.3's
    // and Nemo's join "[INST]" to the text where v0.1's and v0.2's put a space after it.
    if (jinja.find("<<SYS>>") != std::string_view::npos || jinja.find("bos_token + '[INST]") != std::string_view::npos)
      return ChatTemplate{ChatFormat::Llama2};
    const bool spaced = jinja.find("'[INST] '") != std::string_view::npos || jinja.find("\"[INST] \"") != std::string_view::npos;
    if (!spaced) return ChatTemplate{ChatFormat::Mistral};
    ChatTemplate t{ChatFormat::MistralV1};
    t.space_after_eos = jinja.find("eos_token + ' '") != std::string_view::npos;
    return t;
  }
  if (jinja.find("### Instruction") != std::string_view::npos) return ChatTemplate{ChatFormat::Alpaca, {}};
  return std::nullopt;
}

std::vector<Segment> render_chat(const ChatTemplate& tmpl, const std::vector<Message>& messages,
                                 bool add_generation_prompt, const SpecialTexts& specials) {
  check_conversation(messages);
  Renderer r;
  switch (tmpl.format) {
    case ChatFormat::ChatML: render_chatml(r, tmpl, messages, add_generation_prompt); break;
    case ChatFormat::Llama2: render_llama2(r, messages, specials); break;
    case ChatFormat::Mistral:
    case ChatFormat::MistralV1: render_mistral(r, tmpl, messages, specials); break;
    case ChatFormat::Llama3: render_llama3(r, tmpl, messages, add_generation_prompt, specials); break;
    case ChatFormat::Alpaca: render_alpaca(r, messages, specials); break;
  }
  return r.take();
}

std::string end_of_turn(const ChatTemplate& tmpl, const SpecialTexts& specials) {
  if (tmpl.format == ChatFormat::ChatML) return kImEnd;
  return tmpl.format == ChatFormat::Llama3 ? kEotId : specials.eos;
}

bool spells_bos(ChatFormat format) {
  return format == ChatFormat::Llama2 || format == ChatFormat::Mistral || format == ChatFormat::MistralV1 ||
         format == ChatFormat::Llama3;
}

bool ends_replies_with_eos(ChatFormat format) { return format != ChatFormat::ChatML && format != ChatFormat::Llama3; }

}  // namespace upcycle
