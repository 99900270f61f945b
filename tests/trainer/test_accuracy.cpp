// Multiple-choice scoring against log-likelihoods computed independently through Model::loss,
// and the accuracy tallies.
#include <doctest/doctest.h>

#include "tests/common/fixtures.hpp"
#include "trainer/accuracy.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// log p(continuation | question) as -ce_sum of the whole with only the continuation counted.
double reference_ll(const Model& model, const Tokenizer& t, const std::string& question, const std::string& choice) {
  const auto ctx = t.encode(question);
  const auto whole = t.encode(question + " " + choice);
  std::vector<int32_t> targets(whole.size(), kIgnoreLabel);
  for (size_t i = ctx.size(); i < whole.size(); ++i) targets[i - 1] = whole[i];
  return -model.loss(pack({whole}), targets).ce_sum;
}

}  // namespace

TEST_CASE("accuracy: multiple choice picks by log-likelihood (acc) and per character (acc_norm)") {
  ScratchDir dir;
  write_chat_tokenizer(dir.path());
  const auto tokenizer = load_tokenizer(dir.path());
  ModelConfig c = tiny_config("llama");
  c.vocab_size = kChatVocab;
  const Model model(*random_checkpoint(c, 11));
  const std::vector<std::string> words = {"a", "bb", "ccc", "dddd", "e f", "gh", "ijklm", "n"};
  std::vector<ChoiceItem> items;
  Accuracy expect_acc, expect_norm;
  int differ = 0;
  for (int i = 0; i < 24; ++i) {
    ChoiceItem item;
    item.question = "q" + std::to_string(i) + "?";
    for (int k = 0; k < 3; ++k) item.choices.push_back(words[size_t(i + 3 * k) % words.size()]);
    item.task = i % 2 ? "odd" : "even";
    std::vector<double> ll, norm;
    for (const auto& ch : item.choices) {
      ll.push_back(reference_ll(model, *tokenizer, item.question, ch));
      norm.push_back(ll.back() / double(ch.size()));
    }
    const auto best = std::max_element(ll.begin(), ll.end()) - ll.begin();
    const auto best_norm = std::max_element(norm.begin(), norm.end()) - norm.begin();
    item.answer = i % 3;  // a fixed answer: some right, some wrong under each rule
    expect_acc.add(item.task, best == item.answer);
    expect_norm.add(item.task, best_norm == item.answer);
    differ += best != best_norm;
    items.push_back(item);
  }
  const auto engine = make_cpu_engine({c, model.weights(), "<test model>", {}});
  const ChoiceAccuracy got = multiple_choice(*engine, *tokenizer, false, items);
  CHECK(got.acc.all.total == 24);
  CHECK(got.acc.all.correct == expect_acc.all.correct);
  CHECK(got.acc_norm.all.correct == expect_norm.all.correct);
  CHECK(got.acc.tasks.at("odd").correct == expect_acc.tasks.at("odd").correct);
  CHECK(got.acc_norm.tasks.at("even").correct == expect_norm.tasks.at("even").correct);
  CHECK(differ > 0);  // the two rules disagree somewhere, so acc_norm is really checked apart
  MESSAGE("acc " << got.acc.all.rate() << ", acc_norm " << got.acc_norm.all.rate() << ", rules differ on " << differ);
}
