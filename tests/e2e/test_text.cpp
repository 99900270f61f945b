// Text in and out end to end: `tune` on Alpaca and chat data through a chat template, `eval`
// (loss, exact match, multiple choice) and `generate`, on tiny models with a byte-level
// tokenizer and on the real SmolLM2-135M-Instruct.
#include <doctest/doctest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/checkpoint_writer.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;
using json = nlohmann::json;

namespace {

fs::path chat_model(const ScratchDir& dir, const std::string& type, uint64_t seed) {
  return write_chat_model(dir.path(), type, seed);
}

struct Pair {
  std::string question, answer, task;
};

const std::vector<Pair> kPairs = {{"red?", "rot", "de"},  {"blue?", "blau", "de"}, {"green?", "gruen", "de"},
                                  {"one?", "un", "fr"},   {"two?", "deux", "fr"},  {"three?", "trois", "fr"},
                                  {"cat?", "gato", "es"}, {"dog?", "perro", "es"}};

// Alpaca lines for the even pairs, chat lines for the odd ones; `wrong` spoils every answer.
fs::path qa_data(const ScratchDir& dir, const std::string& name, bool wrong = false) {
  std::ofstream out(dir / name);
  for (size_t i = 0; i < kPairs.size(); ++i) {
    const Pair& p = kPairs[i];
    const std::string answer = wrong ? p.answer + "!" : p.answer;
    json j = i % 2 ? json{{"messages", {{{"role", "user"}, {"content", p.question}},
                                        {{"role", "assistant"}, {"content", answer}}}}}
                   : json{{"instruction", p.question}, {"output", answer}};
    j["task"] = p.task;
    out << j.dump() << "\n";
  }
  return dir / name;
}

json run_json(const std::string& args) {
  const auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return json::parse(r.out);
}

}  // namespace

TEST_CASE("text: eval counts only the reply tokens, tune on Alpaca and chat lines learns the replies") {
  ScratchDir dir;
  const fs::path model = chat_model(dir, "llama", 3), data = qa_data(dir, "qa.jsonl");
  const json before = run_json("eval --model " + q(model) + " --data " + q(data) + " --json");
  // Each reply's bytes and its <|im_end|> count; the prompt (system-less ChatML) does not.
  int64_t reply_tokens = 0;
  for (const Pair& p : kPairs) reply_tokens += int64_t(p.answer.size()) + 1;
  CHECK(before["tokens"] == reply_tokens);
  CHECK(before["samples"] == kPairs.size());
  CHECK(before["ppl"].get<double>() == doctest::Approx(std::exp(before["loss"].get<double>())));

  const auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                             " --steps 120 --lr 1e-2 --warmup 5 --seq-len 128 --batch-tokens 256 --log-every 60"
                             " --val-data " + q(data) + " --eval-every 60");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("chatml template") != std::string::npos);
  std::vector<json> val;
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);)
    if (json j = json::parse(line); j.contains("val_loss")) val.push_back(j);
  REQUIRE(val.size() == 2);
  CHECK(val[0]["step"] == 60);
  CHECK(val[1]["step"] == 120);
  CHECK(val[1]["val_tokens"] == reply_tokens);

  // The final checkpoint carries the tokenizer and template: eval finds them there.
  const json after = run_json("eval --model " + q(dir / "run" / "final") + " --data " + q(data) + " --json");
  MESSAGE("reply loss " << before["loss"] << " -> " << after["loss"]);
  CHECK(after["loss"].get<double>() < 0.2 * before["loss"].get<double>());
  CHECK(after["loss"].get<double>() == doctest::Approx(val[1]["val_loss"].get<double>()).epsilon(1e-9));

  // Greedy replies of the tuned model match the references; spoiled references all miss.
  const json exact = run_json("eval --model " + q(dir / "run" / "final") + " --data " + q(data) +
                              " --metric exact --max-new-tokens 12 --json --predictions " + q(dir / "pred.jsonl"));
  CHECK(exact["total"] == kPairs.size());
  CHECK(exact["acc"].get<double>() >= 0.75);
  CHECK(exact["tasks"].size() == 3);
  CHECK(exact["tasks"]["de"]["total"] == 3);
  std::ifstream pred(dir / "pred.jsonl");
  int64_t lines = 0, correct = 0;
  for (std::string line; std::getline(pred, line); ++lines) correct += json::parse(line)["correct"].get<bool>();
  CHECK(lines == int64_t(kPairs.size()));
  CHECK(correct == exact["correct"]);
  const json spoiled = run_json("eval --model " + q(dir / "run" / "final") + " --data " +
                                q(qa_data(dir, "wrong.jsonl", true)) + " --metric exact --max-new-tokens 12 --json");
  CHECK(spoiled["correct"] == 0);

  // Generation asks the same way: the first pair's reply comes back.
  const json gen = run_json("generate --model " + q(dir / "run" / "final") + " --chat 'red?' --json");
  CHECK(gen["text"] == "rot");
  CHECK(gen["stopped"] == true);
}

TEST_CASE("text: eval routing gives each task's reply-token share per MoE layer and expert, a dense model is refused") {
  ScratchDir dir;
  const fs::path moe = chat_model(dir, "mixtral", 3), data = qa_data(dir, "qa.jsonl");
  const json j = run_json("eval --model " + q(moe) + " --data " + q(data) + " --metric routing --json");
  CHECK(j["metric"] == "routing");
  CHECK(j["samples"] == kPairs.size());
  const ModelConfig config = tiny_config("mixtral");
  REQUIRE(j["tasks"].size() == 3);  // de, fr, es
  for (const auto& [task, layers] : j["tasks"].items()) {
    REQUIRE(layers.size() == size_t(config.num_hidden_layers));
    for (const auto& layer : layers) {
      REQUIRE(layer.size() == size_t(config.num_local_experts));
      double sum = 0;
      for (const auto& share : layer) sum += share.get<double>();
      CHECK_MESSAGE(sum == doctest::Approx(1.0), task);
    }
  }
  // As text: a line per task, a line per layer under it.
  auto r = run_upcycle("eval --model " + q(moe) + " --data " + q(data) + " --metric routing");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find("\n  de\n    layer 0: ") != std::string::npos);
  r = run_upcycle("eval --model " + q(chat_model(dir, "llama", 3)) + " --data " + q(data) + " --metric routing");
  CHECK(r.code != 0);
  CHECK(r.err.find("routing is measured on an MoE") != std::string::npos);
}

TEST_CASE("text: a --template given by hand is recorded in the tuned checkpoint, and later commands take it") {
  ScratchDir dir;
  const fs::path model = chat_model(dir, "llama", 6), data = qa_data(dir, "qa.jsonl");
  fs::remove(model / "tokenizer_config.json");  // no template of its own
  auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                       " --steps 1 --seq-len 128 --template chatml");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const json config = json::parse(test::read_file(dir / "run" / "final" / "tokenizer_config.json"));
  CHECK(config["upcycle_chat_template"] == "chatml");
  r = run_upcycle("generate --model " + q(dir / "run" / "final") + " --chat hi --max-new-tokens 2");
  CHECK_MESSAGE(r.code == 0, r.err);
  // A LoRA run records it in its adapter folder, which generate and eval read beside the base.
  r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "lora") +
                  " --steps 1 --seq-len 128 --lora-rank 2 --template chatml");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const fs::path adapter = dir / "lora" / "final";
  CHECK(json::parse(test::read_file(adapter / "tokenizer_config.json"))["upcycle_chat_template"] == "chatml");
  r = run_upcycle("generate --model " + q(model) + " --adapter " + q(adapter) + " --chat hi --max-new-tokens 2");
  CHECK_MESSAGE(r.code == 0, r.err);
  r = run_upcycle("eval --model " + q(model) + " --adapter " + q(adapter) + " --data " + q(data) + " --metric loss");
  CHECK_MESSAGE(r.code == 0, r.err);
  r = run_upcycle("generate --model " + q(model) + " --chat hi --max-new-tokens 2");  // the base has none
  CHECK(r.code == 2);
  CHECK(r.err.find("has no chat template") != std::string::npos);
  // --template auto records nothing; the model's own template (ChatML with a system) stays.
  const fs::path own = chat_model(dir, "mistral", 7);
  r = run_upcycle("tune --model " + q(own) + " --data " + q(data) + " --out " + q(dir / "run2") + " --steps 1 --seq-len 128");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_FALSE(json::parse(test::read_file(dir / "run2" / "final" / "tokenizer_config.json")).contains("upcycle_chat_template"));
}

TEST_CASE("text: a validation share is held out of the training data, seeded") {
  ScratchDir dir;
  const fs::path model = chat_model(dir, "llama", 4), data = qa_data(dir, "qa.jsonl");
  const auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                             " --steps 2 --seq-len 128 --val-fraction 0.25 --seed 5");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("6 samples (+2 for validation)") != std::string::npos);
}

TEST_CASE("text: generate samples reproducibly from a seed, and misuse is named") {
  ScratchDir dir;
  const fs::path model = chat_model(dir, "mixtral", 5);
  const std::string base = "generate --model " + q(model) + " --prompt 'ab' --max-new-tokens 6 --json";
  const json a = run_json(base + " --temperature 1 --seed 7"), b = run_json(base + " --temperature 1 --seed 7");
  CHECK(a["text"] == b["text"]);
  CHECK(a["tokens"] == 6);
  CHECK(a["prompt_tokens"] == 2);
  auto r = run_upcycle("generate --model " + q(model));
  CHECK(r.code == 1);
  CHECK(r.err.find("exactly one of --prompt and --chat") != std::string::npos);
  r = run_upcycle(base + " --top-p 0");
  CHECK(r.code == 1);
  fs::remove(model / "tokenizer_config.json");
  r = run_upcycle("generate --model " + q(model) + " --chat hi");
  CHECK(r.code == 2);
  CHECK(r.err.find("has no chat template: choose one with --template") != std::string::npos);
  CHECK(run_upcycle("generate --model " + q(model) + " --chat hi --template chatml --max-new-tokens 2").code == 0);
  r = run_upcycle("eval --model " + q(model) + " --data x --metric bleu");
  CHECK(r.code == 1);
  test::write_file(dir / "ids.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
  r = run_upcycle("eval --model " + q(model) + " --data " + q(dir / "ids.jsonl") + " --metric exact --template chatml");
  CHECK(r.code == 2);
  CHECK(r.err.find("line 1: exact match needs text") != std::string::npos);
}

TEST_CASE("text: the real SmolLM2-135M-Instruct answers Paris, and picks it among choices") {
  auto gguf = smollm2_gguf();
  if (!gguf) {
    MESSAGE("skipped: no SmolLM2 GGUF (scripts/fetch-smollm2.sh)");
    return;
  }
  const json gen = run_json("generate --model " + q(*gguf) + " --chat 'What is the capital of France?' --json");
  MESSAGE("SmolLM2: " << gen["text"] << " at " << gen["decode_tokens_per_s"] << " tokens/s");
  CHECK(gen["text"].get<std::string>().find("Paris") != std::string::npos);
  CHECK(gen["stopped"] == true);
  ScratchDir dir;
  test::write_file(dir / "mc.jsonl",
                   "{\"question\": \"The capital of France is\", \"choices\": [\"London\", \"Paris\", \"a banana\"], "
                   "\"answer\": \"Paris\", \"task\": \"geo\"}\n");
  const json mc = run_json("eval --model " + q(*gguf) + " --data " + q(dir / "mc.jsonl") + " --metric choice --json");
  CHECK(mc["acc"] == 1.0);
  CHECK(mc["acc_norm"] == 1.0);
  CHECK(mc["tasks"]["geo"]["total"] == 1);
}
