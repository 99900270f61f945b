// `upcycle eval`: a model on a data set (trainer/evaluation.hpp), printed as text or JSON.
#include <cstdio>

#include "trainer/evaluation.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

using ojson = nlohmann::ordered_json;

void print_text(const ojson& j) {
  if (j["metric"] == "loss") {
    std::printf("loss %.6f  ppl %.4f  (%lld tokens, %lld samples)\n", j["loss"].get<double>(), j["ppl"].get<double>(),
                (long long)j["tokens"].get<int64_t>(), (long long)j["samples"].get<int64_t>());
    return;
  }
  if (j["metric"] == "routing") {
    std::printf("share of each task's reply tokens routed to each expert (%lld samples)\n", (long long)j["samples"].get<int64_t>());
    for (const auto& [task, layers] : j["tasks"].items()) {
      std::printf("  %s\n", task.c_str());
      for (size_t l = 0; l < layers.size(); ++l) {
        std::printf("    layer %zu:", l);
        for (const auto& share : layers[l]) std::printf(" %.3f", share.get<double>());
        std::printf("\n");
      }
    }
    return;
  }
  const bool choice = j["metric"] == "choice";
  std::printf("acc %.4f", j["acc"].get<double>());
  if (choice) std::printf("  acc_norm %.4f", j["acc_norm"].get<double>());
  std::printf("  (%lld samples)\n", (long long)j["total"].get<int64_t>());
  if (!j.contains("tasks")) return;
  for (const auto& [task, t] : j["tasks"].items()) {
    std::printf("  %-24s acc %.4f", task.c_str(), t["acc"].get<double>());
    if (choice) std::printf("  acc_norm %.4f", t["acc_norm"].get<double>());
    std::printf("  (%lld)\n", (long long)t["total"].get<int64_t>());
  }
}

}  // namespace

int cmd_eval(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle eval --model PATH --data FILE [--metric loss|exact|choice|routing] [--json] [options]";
  spec.summary =
      "Evaluates a dense or MoE model, on the CPU or the GPU (--device).\n"
      "  loss    (default) token-weighted mean cross-entropy over the counted tokens (the replies of\n"
      "          Alpaca and chat data, the labels of pre-tokenized data) and its perplexity;\n"
      "          JSON keys loss, ppl, tokens, samples.\n"
      "  exact   greedy replies to each sample's prompt against its reference reply (white space\n"
      "          trimmed), accuracy overall and per `task`; JSON keys acc, correct, total, tasks.\n"
      "  choice  data {question, choices, answer}: the choice of highest log-likelihood after the\n"
      "          question (acc) and per character (acc_norm), as lm-evaluation-harness defines them.\n"
      "Text goes through the model's tokenizer and chat template (or --tokenizer and --template).";
  cli::add_options(spec, eval_option_table());
  spec.options.add_options()("json", "print the results as one JSON object");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  EvalOptions o;
  cli::read_options(*vm, eval_option_table(), o, check_eval_options);
  const ojson j = evaluate(o);
  if (vm->count("json")) std::printf("%s\n", j.dump(2).c_str());
  else print_text(j);
  return 0;
}

}  // namespace upcycle
