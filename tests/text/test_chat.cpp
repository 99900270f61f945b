// Chat templates and model text metadata.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tests/common/fixtures.hpp"
#include "text/chat_encoder.hpp"
#include "text/model_text.hpp"

using namespace upcycle;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const SpecialTexts kSpecials{"<s>", "</s>"};

std::string joined(const std::vector<Segment>& segments, bool trained_only = false) {
  std::string out;
  for (const Segment& s : segments)
    if (!trained_only || s.trained) out += s.text;
  return out;
}

std::vector<Message> qa(const std::string& q, const std::string& a) { return {{"user", q, {}}, {"assistant", a, {}}}; }

// The tokens whose labels count, decoded.
std::string trained_text(const Tokenizer& t, const TokenizedSample& s) {
  std::vector<TokenId> ids;
  for (size_t i = 0; i < s.ids.size(); ++i) {
    if (s.labels[i] == kIgnoreLabel) continue;
    CHECK(s.labels[i] == s.ids[i]);
    ids.push_back(s.ids[i]);
  }
  return t.decode(ids);
}

// SmolLM2-135M-Instruct's template, as its GGUF carries it.
const char* kSmolTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}";

}  // namespace

TEST_CASE("chat: ChatML puts the default system prompt first and trains on the reply and its end marker") {
  const ChatTemplate t{ChatFormat::ChatML, "Be brief."};
  const auto segments = render_chat(t, qa("Hi?", "Hello"), false, kSpecials);
  CHECK(joined(segments) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        "Hello<|im_end|>\n");
  CHECK(joined(segments, true) == "Hello<|im_end|>");
  // A system message of the conversation replaces the default; the generation prompt opens a turn.
  const std::vector<Message> asked = {{"system", "S", {}}, {"user", "Q", {}}};
  CHECK(joined(render_chat(t, asked, true, kSpecials)) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("chat: Llama-2 [INST] blocks as Hugging Face's template writes them") {
  const ChatTemplate t{ChatFormat::Llama2, {}};
  const std::vector<Message> m = {
      {"system", "Sys", {}}, {"user", "Q1 ", {}}, {"assistant", "A1", {}}, {"user", "Q2", {}}, {"assistant", "A2", {}}};
  const auto segments = render_chat(t, m, false, kSpecials);
  CHECK(joined(segments) == "<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>");
  CHECK(joined(segments, true) == " A1 </s> A2 </s>");
}

TEST_CASE("chat: Alpaca's prompt with and without input, the reply closed by EOS") {
  const ChatTemplate t{ChatFormat::Alpaca, {}};
  const std::vector<Message> with_input = {{"user", "Sum", "1 2"}, {"assistant", "3", {}}};
  CHECK(joined(render_chat(t, with_input, false, kSpecials)) ==
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nSum\n\n### Input:\n1 2\n\n### "
        "Response:\n3</s>");
  const auto plain = render_chat(t, qa("Hi", "Yo"), false, kSpecials);
  CHECK(joined(plain) ==
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nHi\n\n### Response:\nYo</s>");
  CHECK(joined(plain, true) == "Yo</s>");
  // ChatML has no input slot: it joins the instruction.
  CHECK(joined(render_chat({ChatFormat::ChatML, {}}, with_input, false, kSpecials)).find("Sum\n\n1 2<|im_end|>") !=
        std::string::npos);
}

TEST_CASE("chat: conversations a template cannot lay out are rejected") {
  const ChatTemplate t{ChatFormat::ChatML, {}};
  CHECK_THROWS_WITH_AS(render_chat(t, {{"bot", "x", {}}}, false, kSpecials), doctest::Contains("role 'bot'"),
                       std::invalid_argument);
  CHECK_THROWS_AS(render_chat(t, {{"user", "a", {}}, {"system", "s", {}}}, false, kSpecials), std::invalid_argument);
  CHECK_THROWS_AS(render_chat(t, {{"user", "a", {}}, {"user", "b", {}}}, false, kSpecials), std::invalid_argument);
  CHECK_THROWS_AS(render_chat(t, {{"assistant", "a", {}}}, false, kSpecials), std::invalid_argument);
  CHECK_THROWS_AS(render_chat(t, {{"system", "s", {}}}, false, kSpecials), std::invalid_argument);
}

TEST_CASE("chat: model templates are recognised, with ChatML's literal default system prompt") {
  auto smol = recognise_chat_template(kSmolTemplate);
  REQUIRE(smol);
  CHECK(smol->format == ChatFormat::ChatML);
  CHECK(smol->default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  // The system turn built from the messages is code, not a default; the escaped literal after it is.
  auto qwen = recognise_chat_template(
      "{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
      "{% else %}{{ '<|im_start|>system\\nYou are Qwen.\\nBe kind.<|im_end|>\\n' }}{% endif %}");
  REQUIRE(qwen);
  CHECK(qwen->default_system == "You are Qwen.\nBe kind.");
  auto llama = recognise_chat_template("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}");
  REQUIRE(llama);
  CHECK(llama->format == ChatFormat::Llama2);
  CHECK(recognise_chat_template("{{ '### Instruction:\\n' + m }}")->format == ChatFormat::Alpaca);
  CHECK_FALSE(recognise_chat_template("{{ '<|user|>' + m }}"));
  CHECK(parse_chat_format("llama2") == ChatFormat::Llama2);
  CHECK_FALSE(parse_chat_format("vicuna"));
}

TEST_CASE("chat: the real SmolLM2 template and tokenizer: labels on the reply, stops at <|im_end|>") {
  auto gguf = test::smollm2_gguf();
  if (!gguf) {
    MESSAGE("skipped: no SmolLM2 GGUF (scripts/fetch-smollm2.sh)");
    return;
  }
  const ModelTextInfo info = read_model_text_info(*gguf);
  CHECK_FALSE(info.add_bos);
  REQUIRE(info.chat_template);
  CHECK(*info.chat_template == kSmolTemplate);
  auto enc = load_chat_encoder(*gguf, "auto");
  CHECK(enc->chat_template().format == ChatFormat::ChatML);
  const TokenizedSample s = enc->encode(qa("What is the capital of France?", "Paris"));
  const std::string full =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis<|im_end|>\n";
  CHECK(s.ids == enc->tokenizer().encode(full));
  CHECK(trained_text(enc->tokenizer(), s) == "Paris<|im_end|>");
  CHECK(enc->stop_ids() == std::vector<TokenId>{2});  // <|im_end|> is SmolLM2's EOS
  const auto prompt = enc->prompt({{"user", "Hi", {}}});
  CHECK(enc->tokenizer().decode(prompt).ends_with("<|im_start|>assistant\n"));
}

TEST_CASE("chat: Llama-2 and Alpaca over real vocabularies: labels cover exactly the replies") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  auto spm = std::make_unique<ChatEncoder>(load_tokenizer(*dir / "ggml-vocab-llama-spm.gguf"),
                                           ChatTemplate{ChatFormat::Llama2, {}}, true);
  const TokenizedSample s = spm->encode(qa("Name a colour.", "Blue"));
  CHECK(s.ids.front() == 1);  // <s>, written by the template, once
  CHECK(std::count(s.ids.begin(), s.ids.end(), 1) == 1);
  CHECK(s.ids.back() == 2);  // </s>, trained
  CHECK(trained_text(spm->tokenizer(), s).find("Blue </s>") != std::string::npos);
  CHECK(spm->stop_ids() == std::vector<TokenId>{2});

  auto bpe = std::make_unique<ChatEncoder>(load_tokenizer(*dir / "ggml-vocab-gpt-2.gguf"),
                                           ChatTemplate{ChatFormat::Alpaca, {}}, false);
  const TokenizedSample a = bpe->encode(qa("Say hi", "hi there"));
  CHECK(trained_text(bpe->tokenizer(), a) == "hi there<|endoftext|>");
  CHECK(a.labels.front() == kIgnoreLabel);
}

TEST_CASE("chat: a model folder's tokenizer_config.json gives the template (list form) and add_bos_token") {
  test::ScratchDir dir;
  test::write_file(dir / "tokenizer.json", "{}");
  test::write_file(dir / "tokenizer_config.json",
                   json({{"add_bos_token", true},
                         {"chat_template", json::array({{{"name", "tool_use"}, {"template", "x"}},
                                                        {{"name", "default"}, {"template", "[INST]"}}})}})
                       .dump());
  ModelTextInfo info = read_model_text_info(dir.path());
  CHECK(info.add_bos);
  CHECK(info.chat_template == "[INST]");
  test::write_file(dir / "tokenizer_config.json", "{\"chat_template\": 3}");
  CHECK_THROWS_WITH_AS(read_model_text_info(dir.path()), doctest::Contains("chat_template"), InputError);
  test::write_file(dir / "tokenizer_config.json", "{}");
  test::write_file(dir / "chat_template.jinja", "<|im_start|>");
  CHECK(read_model_text_info(dir.path()).chat_template == "<|im_start|>");
  CHECK_FALSE(read_model_text_info(dir.path()).add_bos);
  CHECK_THROWS_AS(load_chat_encoder(dir.path(), "vicuna"), UsageError);
}

// The expected texts are what jinja2 renders from the real templates (Llama-3.2-3B-Instruct's and
// Qwen3-0.6B's, as transformers' apply_chat_template runs them), for these conversations.
TEST_CASE("chat: Llama 3.1's turns, its dated system turn, and Qwen3's <think> blocks, as their templates write them") {
  const std::vector<Message> chat = {{"system", "Be brief. ", {}},
                                     {"user", " Hi there\n", {}},
                                     {"assistant", "Hello! ", {}},
                                     {"user", "2+2?", {}},
                                     {"assistant", "4", {}}};
  const std::vector<Message> asked(chat.begin(), chat.end() - 1);
  const SpecialTexts llama{"<|begin_of_text|>", "<|end_of_text|>"};
  const auto l3 = recognise_chat_template("{{- bos_token }}<|start_header_id|>system ... Cutting Knowledge Date: ...");
  REQUIRE(l3.has_value());
  CHECK(l3->format == ChatFormat::Llama3);
  const std::string preamble = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                               "December 2023\nToday Date: 26 Jul 2024\n\n";
  const std::string turns = "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>"
                            "assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                            "2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  CHECK(joined(render_chat(*l3, chat, false, llama)) == preamble + "Be brief.<|eot_id|>" + turns + "4<|eot_id|>");
  CHECK(joined(render_chat(*l3, chat, false, llama), true) == "Hello!<|eot_id|>4<|eot_id|>");
  CHECK(joined(render_chat(*l3, asked, true, llama)) == preamble + "Be brief.<|eot_id|>" + turns);
  CHECK(joined(render_chat(*l3, qa("Hi", "Hello"), false, llama)) ==
        preamble + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
                   "<|end_header_id|>\n\nHello<|eot_id|>");
  CHECK(end_of_turn(*l3, llama) == "<|eot_id|>");
  CHECK(spells_bos(ChatFormat::Llama3));
  // Llama 3.0: no dated system turn, none at all without a system message.
  const auto l30 = recognise_chat_template("{% set content = '<|start_header_id|>' + message['role'] %}");
  CHECK(joined(render_chat(*l30, qa("Hi", "Hello"), false, llama)) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\nHello<|eot_id|>");

  const auto q3 = recognise_chat_template("<|im_start|>assistant\\n<think>\\n ... </think>");
  REQUIRE(q3.has_value());
  CHECK(q3->thinking);
  CHECK(joined(render_chat(*q3, chat, false, kSpecials)) ==
        "<|im_start|>system\nBe brief. <|im_end|>\n<|im_start|>user\n Hi there\n<|im_end|>\n<|im_start|>assistant\n"
        "Hello! <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n");
  CHECK(joined(render_chat(*q3, chat, false, kSpecials), true) == "Hello! <|im_end|>4<|im_end|>");  // not the block
  CHECK(joined(render_chat(*q3, asked, true, kSpecials)).ends_with("2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  const std::vector<Message> reasoned = {{"user", "Q1", {}},
                                         {"assistant", "<think>\nr1\n</think>\n\nA1", {}},
                                         {"user", "Q2", {}},
                                         {"assistant", "<think>\nr2\n</think>\n\nA2", {}}};
  CHECK(joined(render_chat(*q3, reasoned, false, kSpecials)) ==
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n");
  CHECK(parse_chat_format("llama3") == ChatFormat::Llama3);
}

// Expected texts: jinja2 on Mistral-Nemo-Instruct-2407's template (v0.3's has the same layout).
TEST_CASE("chat: Mistral's [INST] without spaces or a system block, its system message in the last user turn") {
  const auto m = recognise_chat_template("{{- bos_token }}{{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}");
  REQUIRE(m.has_value());
  CHECK(m->format == ChatFormat::Mistral);
  CHECK(recognise_chat_template("{{ '<<SYS>>\\n' }}{{ '[INST]' + content }}")->format == ChatFormat::Llama2);
  std::vector<Message> chat = {{"user", "Hi", {}}, {"assistant", "Hello", {}}, {"user", "2+2?", {}}, {"assistant", "4", {}}};
  CHECK(joined(render_chat(*m, chat, false, kSpecials)) == "<s>[INST]Hi[/INST]Hello</s>[INST]2+2?[/INST]4</s>");
  CHECK(joined(render_chat(*m, chat, false, kSpecials), true) == "Hello</s>4</s>");
  chat.insert(chat.begin(), Message{"system", "Be brief.", {}});
  chat.pop_back();
  CHECK(joined(render_chat(*m, chat, true, kSpecials)) == "<s>[INST]Hi[/INST]Hello</s>[INST]Be brief.\n\n2+2?[/INST]");
  chat.push_back({"assistant", "4", {}});  // the template would drop the system here; it stays where the reply was asked
  CHECK(joined(render_chat(*m, chat, false, kSpecials)) == "<s>[INST]Hi[/INST]Hello</s>[INST]Be brief.\n\n2+2?[/INST]4</s>");
  CHECK(spells_bos(ChatFormat::Mistral));
  CHECK(parse_chat_format("mistral") == ChatFormat::Mistral);
}

// Expected texts: jinja2 on Mistral-7B-Instruct-v0.2's template (Mixtral-8x7B-Instruct's is the same)
// and on v0.1's, which adds a space after each EOS.
TEST_CASE("chat: Mistral v0.1 and v0.2's spaced [INST], BOS once, the system message in the first user turn") {
  const std::string v2 =
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
      "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + "
      "eos_token}}{% endif %}{% endfor %}";
  const auto m2 = recognise_chat_template(v2);
  REQUIRE(m2.has_value());
  CHECK(m2->format == ChatFormat::MistralV1);
  CHECK_FALSE(m2->space_after_eos);
  std::vector<Message> chat = {{"user", "Hi", {}}, {"assistant", "Hello", {}}, {"user", "2+2?", {}}, {"assistant", "4", {}}};
  CHECK(joined(render_chat(*m2, chat, false, kSpecials)) == "<s>[INST] Hi [/INST]Hello</s>[INST] 2+2? [/INST]4</s>");
  CHECK(joined(render_chat(*m2, chat, false, kSpecials), true) == "Hello</s>4</s>");
  const std::string v1 = v2.substr(0, v2.find("eos_token}}")) + "eos_token + ' ' }}{% endif %}{% endfor %}";
  const auto m1 = recognise_chat_template(v1);
  REQUIRE(m1.has_value());
  CHECK(m1->format == ChatFormat::MistralV1);
  CHECK(m1->space_after_eos);
  // The space after the last EOS, which the template writes too, ends nothing and is left out.
  CHECK(joined(render_chat(*m1, chat, false, kSpecials)) == "<s>[INST] Hi [/INST]Hello</s> [INST] 2+2? [/INST]4</s>");
  CHECK(joined(render_chat(*m1, chat, false, kSpecials), true) == "Hello</s>4</s>");  // never the space
  chat.pop_back();
  CHECK(joined(render_chat(*m1, chat, true, kSpecials)) == "<s>[INST] Hi [/INST]Hello</s> [INST] 2+2? [/INST]");
  chat.insert(chat.begin(), Message{"system", "Be brief.", {}});  // the template refuses one
  CHECK(joined(render_chat(*m2, chat, true, kSpecials)) == "<s>[INST] Be brief.\n\nHi [/INST]Hello</s>[INST] 2+2? [/INST]");
  CHECK(spells_bos(ChatFormat::MistralV1));
  CHECK(parse_chat_format("mistral-v1") == ChatFormat::MistralV1);
  CHECK(chat_format_choices() == "chatml, llama2, mistral, mistral-v1, llama3 or alpaca");
}
