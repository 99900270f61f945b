// `upcycle generate`: text from a model, KV-cached on the CPU or the GPU, greedy or sampled,
// streamed to stdout as it comes.
#include <cstdio>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "formats/open_checkpoint.hpp"
#include "text/chat_encoder.hpp"
#include "text/model_text.hpp"
#include "trainer/engine.hpp"
#include "trainer/sampling.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

struct Prompt {
  std::unique_ptr<Tokenizer> plain;     // --prompt: the tokenizer alone
  std::unique_ptr<ChatEncoder> chat;    // --chat: tokenizer and template
  std::vector<TokenId> ids;
  std::vector<TokenId> stop;
  const Tokenizer& tokenizer() const { return chat ? chat->tokenizer() : *plain; }
};

Prompt make_prompt(const cli::po::variables_map& vm) {
  const std::string source = vm.count("tokenizer") ? vm["tokenizer"].as<std::string>() : vm["model"].as<std::string>();
  if (vm.count("prompt") == vm.count("chat")) throw UsageError("give exactly one of --prompt and --chat");
  Prompt p;
  if (vm.count("chat")) {
    const std::filesystem::path adapter = cli::adapter_option(vm);
    p.chat = load_chat_encoder(source, vm["template"].as<std::string>(),
                               adapter.empty() ? std::nullopt : std::optional(adapter));
    std::vector<Message> messages;
    if (vm.count("system")) messages.push_back({"system", vm["system"].as<std::string>(), {}});
    messages.push_back({"user", vm["chat"].as<std::string>(), {}});
    p.ids = p.chat->prompt(messages);
    p.stop = p.chat->stop_ids();
  } else {
    if (vm.count("system")) throw UsageError("--system goes with --chat");
    p.plain = load_tokenizer(source);
    p.ids = p.plain->encode(vm["prompt"].as<std::string>(), read_model_text_info(source).add_bos);
    if (p.plain->eos_id()) p.stop.push_back(*p.plain->eos_id());
  }
  if (p.ids.empty()) throw UsageError("the prompt is empty");
  return p;
}

SamplingOptions sampling_from(const cli::po::variables_map& vm) {
  SamplingOptions s{vm["temperature"].as<double>(), vm["top-p"].as<double>(), vm["seed"].as<uint64_t>()};
  if (!(s.temperature >= 0)) throw UsageError("--temperature must be >= 0 (0: greedy)");
  if (!(s.top_p > 0 && s.top_p <= 1)) throw UsageError("--top-p must lie in (0, 1]");
  return s;
}

// Prints the text of ids as it grows: the decoded text's new tail (a token may end mid-character,
// so the whole is decoded each time and only what was not yet printed goes out).
class Streamer {
 public:
  Streamer(const Tokenizer& t, bool enabled) : tokenizer_(t), enabled_(enabled) {}
  void operator()(TokenId id) {
    ids_.push_back(id);
    if (!enabled_) return;
    const std::string text = tokenizer_.decode(ids_);
    if (text.size() > printed_ && text.compare(0, printed_, text, 0, printed_) == 0) {
      std::fwrite(text.data() + printed_, 1, text.size() - printed_, stdout);
      std::fflush(stdout);
      printed_ = text.size();
    }
  }

 private:
  const Tokenizer& tokenizer_;
  bool enabled_;
  std::vector<TokenId> ids_;
  size_t printed_ = 0;
};

}  // namespace

int cmd_generate(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle generate --model PATH (--prompt TEXT | --chat TEXT) [options]";
  spec.summary =
      "Generates text with a dense or MoE model (on the CPU in f32 or --precision bf16, its bf16,\n"
      "f16 and Q8_0 matrices read as stored; bf16 on the GPU; keys and values cached), greedy by\n"
      "default or sampled with --temperature and --top-p, and prints it as it comes. --prompt\n"
      "continues plain text; --chat asks as a user turn through the model's chat template (or\n"
      "--template) and stops at the end of the reply. Speed goes to the log: prefill and decoding\n"
      "tokens/s. --json prints one object instead: text, tokens, ids (the new tokens'), prompt_tokens,\n"
      "stopped, prefill_tokens_per_s, decode_tokens_per_s.";
  const std::string template_help = "auto (the model's), " + chat_format_choices();
  spec.options.add_options()
      ("model", cli::po::value<std::string>()->required(), "checkpoint (folder, .h5 or .gguf)")
      ("prompt", cli::po::value<std::string>(), "text to continue")
      ("chat", cli::po::value<std::string>(), "a user message to answer")
      ("system", cli::po::value<std::string>(), "system message for --chat (default: the template's own)")
      ("template", cli::po::value<std::string>()->default_value("auto"), template_help.c_str())
      ("tokenizer", cli::po::value<std::string>(), "tokenizer (default: the model's)")
      ("max-new-tokens", cli::po::value<int64_t>()->default_value(256), "most tokens to generate")
      ("temperature", cli::po::value<double>()->default_value(0.0), "0: greedy; else sample from softmax(logits/T)")
      ("top-p", cli::po::value<double>()->default_value(1.0), "nucleus sampling mass in (0, 1]")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "sampling seed")
      ("json", "print a JSON object with the text and the speed")
      ("device", cli::po::value<std::string>()->default_value("cpu"), kDeviceHelp)
      ("precision", cli::po::value<std::string>(), kPrecisionHelp)
      ("adapter", cli::po::value<std::string>(), kAdapterHelp);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const int64_t max_new = (*vm)["max-new-tokens"].as<int64_t>();
  if (max_new < 1) throw UsageError("--max-new-tokens must be at least 1");
  const SamplingOptions sampling = sampling_from(*vm);
  const bool json = vm->count("json") > 0;

  const EngineFactory device = engine_for_device((*vm)["device"].as<std::string>());
  const std::optional<Precision> precision = cli::precision_option(*vm);
  const std::string model_path = (*vm)["model"].as<std::string>();
  const Prompt prompt = make_prompt(*vm);
  const auto ckpt = open_checkpoint(model_path);
  const int64_t limit = ckpt->config().max_position_embeddings;
  require(int64_t(prompt.ids.size()) < limit, model_path,
          "the prompt's " + std::to_string(prompt.ids.size()) + " tokens leave no room under max_position_embeddings " +
              std::to_string(limit));
  for (TokenId id : prompt.ids)
    require(id < ckpt->config().vocab_size, model_path, "the tokenizer's token " + std::to_string(id) + " is outside the model's vocabulary");
  const auto engine = load_engine(*ckpt, device, {}, precision, cli::adapter_option(*vm));
  const auto decoder = engine->decoder(std::min<int64_t>(limit, int64_t(prompt.ids.size()) + max_new));
  const int64_t room = decoder->capacity() - int64_t(prompt.ids.size()) + 1;
  if (room < max_new) spdlog::warn("max_position_embeddings {} leaves room for {} new tokens", limit, room);

  Streamer stream(prompt.tokenizer(), !json);
  const GenerationResult r = generate(*decoder, prompt.ids, std::min(max_new, room), prompt.stop, sampling,
                                      [&](int32_t id) { stream(id); });
  const double prefill_rate = double(r.prompt_tokens) / std::max(r.prefill_seconds, 1e-9);
  // Forward passes after the prefill: one per new token but the last, unless a stop token came after it.
  const int64_t steps = int64_t(r.ids.size()) - (r.stopped || r.ids.empty() ? 0 : 1);
  const double decode_rate = double(steps) / std::max(r.decode_seconds, 1e-9);
  if (json) {
    const nlohmann::ordered_json j = {{"text", prompt.tokenizer().decode(r.ids)},
                                      {"tokens", r.ids.size()},
                                      {"ids", r.ids},
                                      {"prompt_tokens", r.prompt_tokens},
                                      {"stopped", r.stopped},
                                      {"prefill_tokens_per_s", prefill_rate},
                                      {"decode_tokens_per_s", decode_rate}};
    // Sampled bytes need not be valid UTF-8: JSON gets U+FFFD for those.
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  spdlog::info("{} new tokens ({}), {:.1f} tokens/s; prefill of {} tokens at {:.1f} tokens/s", r.ids.size(),
               r.stopped ? "stopped at the end of the reply" : "the token limit", decode_rate, r.prompt_tokens,
               prefill_rate);
  return 0;
}

}  // namespace upcycle
