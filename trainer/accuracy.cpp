#include "trainer/accuracy.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "trainer/sampling.hpp"

namespace upcycle {

void Accuracy::add(const std::string& task, bool correct) {
  for (Tally* t : {&all, &tasks[task]}) {
    t->correct += correct;
    t->total += 1;
  }
}

namespace {

std::string trimmed(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// The conversation before the last reply, and that reply.
std::pair<std::vector<Message>, std::string> prompt_and_reference(const InstructionRecord& r,
                                                                  const std::filesystem::path& source) {
  const std::string where = "line " + std::to_string(r.line);
  require(r.is_text(), source, where, "exact match needs text (Alpaca or chat), not pre-tokenized ids");
  require(r.messages.back().role == "assistant", source, where, "the conversation ends with no reply to compare with");
  return {{r.messages.begin(), r.messages.end() - 1}, r.messages.back().content};
}

int64_t utf8_length(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (uint8_t(c) & 0xC0) != 0x80; });
}

// log p(ids[t] | ids[<t]) summed over t >= from, from the logits [T, V] of ids.
double log_likelihood(const float* logits, const std::vector<TokenId>& ids, size_t from, int64_t V) {
  double sum = 0;
  for (size_t t = std::max<size_t>(from, 1); t < ids.size(); ++t) {
    const float* row = logits + (t - 1) * size_t(V);
    const float max = *std::max_element(row, row + V);
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - max);
    sum += double(row[ids[t]]) - max - std::log(z);
  }
  return sum;
}

size_t argmax(const std::vector<double>& v) { return size_t(std::max_element(v.begin(), v.end()) - v.begin()); }

}  // namespace

Accuracy exact_match(Engine& model, const ChatEncoder& encoder, const std::vector<InstructionRecord>& records,
                     int64_t max_new_tokens, const std::filesystem::path& source,
                     const std::function<void(const ExactPrediction&)>& each) {
  const int64_t limit = model.config().max_position_embeddings;
  std::vector<std::vector<TokenId>> prompts;
  std::vector<std::string> references;
  for (const InstructionRecord& r : records) {
    auto [messages, reference] = prompt_and_reference(r, source);
    prompts.push_back(encoder.prompt(messages));
    require(int64_t(prompts.back().size()) < limit, source, "line " + std::to_string(r.line),
            "the prompt's " + std::to_string(prompts.back().size()) + " tokens fill max_position_embeddings");
    references.push_back(std::move(reference));
  }
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, int64_t(p.size()));
  const auto decoder = model.decoder(std::min(limit, longest + max_new_tokens));
  const std::vector<TokenId> stop = encoder.stop_ids();
  Accuracy acc;
  for (size_t i = 0; i < records.size(); ++i) {
    decoder->truncate(0);
    const int64_t room = decoder->capacity() - int64_t(prompts[i].size()) + 1;
    const GenerationResult g = generate(*decoder, prompts[i], std::min(max_new_tokens, room), stop, {});
    ExactPrediction p{&records[i], encoder.tokenizer().decode(g.ids), references[i], false};
    p.correct = trimmed(p.prediction) == trimmed(p.reference);
    acc.add(records[i].task, p.correct);
    if (each) each(p);
  }
  return acc;
}

ChoiceAccuracy multiple_choice(Engine& model, const Tokenizer& tokenizer, bool add_bos,
                               const std::vector<ChoiceItem>& items, const std::function<void(int64_t)>& done) {
  const int64_t V = model.config().vocab_size;
  ChoiceAccuracy out;
  for (size_t i = 0; i < items.size(); ++i) {
    const ChoiceItem& item = items[i];
    const size_t context = tokenizer.encode(item.question, add_bos).size();
    std::vector<std::vector<TokenId>> wholes;
    for (const std::string& choice : item.choices) wholes.push_back(tokenizer.encode(item.question + " " + choice, add_bos));
    const Batch batch = pack(wholes);
    const std::vector<float> logits = model.forward(batch);  // [N, V], the choices packed
    std::vector<double> ll, ll_norm;
    for (size_t c = 0; c < wholes.size(); ++c) {
      ll.push_back(log_likelihood(logits.data() + batch.cu_seqlens[c] * V, wholes[c], context, V));
      ll_norm.push_back(ll.back() / double(std::max<int64_t>(1, utf8_length(item.choices[c]))));
    }
    out.acc.add(item.task, int64_t(argmax(ll)) == item.answer);
    out.acc_norm.add(item.task, int64_t(argmax(ll_norm)) == item.answer);
    if (done) done(int64_t(i + 1));
  }
  return out;
}

}  // namespace upcycle
