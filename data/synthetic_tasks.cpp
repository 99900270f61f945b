#include "data/synthetic_tasks.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/random.hpp"
#include "core/staged_path.hpp"

namespace upcycle {

namespace {

// Common words of 3 to 6 letters, some with repeated letters so that counting is not always one.
constexpr std::string_view kWords[] = {
    "apple", "banana", "cat",   "dog",    "sun",   "moon",  "tree",  "river", "house",  "bread",
    "green", "yellow", "fish",  "bird",   "stone", "paper", "water", "fire",  "cloud",  "rain",
    "snow",  "book",   "door",  "table",  "chair", "lamp",  "road",  "hill",  "sea",    "ship",
    "horse", "mouse",  "cheese", "letter", "pepper", "coffee", "sheep", "grass", "happy", "little",
    "robot", "music",  "light", "night",  "garden", "window", "pencil", "tiger", "zebra", "lemon",
    "egg",   "ball",   "kite",  "star",   "cup",   "hat",   "box",   "map",   "owl",    "fox",
};

// What a phrasing needs to become a sample: its parameter ("{}" in the phrasing; empty when it
// has none), the operands and the exact answer.
struct Problem {
  std::string param, input, output;
};

struct Family {
  std::string_view name;
  bool heldout;
  std::array<std::string_view, 4> phrasings;  // the last one is held out
  Problem (*make)(Rng&);
};

int64_t between(Rng& rng, int64_t lo, int64_t hi) { return lo + int64_t(rng.below(uint64_t(hi - lo + 1))); }

std::string word(Rng& rng) { return std::string(kWords[rng.below(std::size(kWords))]); }

// Distinct words, so that "the first item" or "the second item" names one word only.
std::vector<std::string> distinct_words(Rng& rng, int64_t count) {
  std::vector<std::string> out;
  while (int64_t(out.size()) < count)
    if (std::string w = word(rng); std::find(out.begin(), out.end(), w) == out.end()) out.push_back(std::move(w));
  return out;
}

std::vector<int64_t> numbers(Rng& rng, int64_t count, int64_t lo, int64_t hi) {
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (auto& x : out) x = between(rng, lo, hi);
  return out;
}

template <typename T>
std::string join(const std::vector<T>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ' ';
    if constexpr (std::is_same_v<T, std::string>) out += item;
    else out += std::to_string(item);
  }
  return out;
}

std::string str(int64_t x) { return std::to_string(x); }

char upper(char c) { return char(std::toupper(static_cast<unsigned char>(c))); }

// The makers, one per family.

Problem add(Rng& rng) {
  const int64_t a = between(rng, 0, 99), b = between(rng, 0, 99);
  return {{}, join(std::vector{a, b}), str(a + b)};
}

Problem subtract(Rng& rng) {  // the first operand is the larger: answers are never negative
  int64_t a = between(rng, 0, 99), b = between(rng, 0, 99);
  if (a < b) std::swap(a, b);
  return {{}, join(std::vector{a, b}), str(a - b)};
}

Problem multiply(Rng& rng) {
  const int64_t a = between(rng, 0, 12), b = between(rng, 0, 12);
  return {{}, join(std::vector{a, b}), str(a * b)};
}

Problem reverse_word(Rng& rng) {
  const std::string w = word(rng);
  return {{}, w, std::string(w.rbegin(), w.rend())};
}

Problem sort_numbers(Rng& rng) {
  auto xs = numbers(rng, between(rng, 3, 5), 0, 99);
  const std::string input = join(xs);
  std::sort(xs.begin(), xs.end());
  return {{}, input, join(xs)};
}

Problem sort_letters(Rng& rng) {
  const std::string w = word(rng);
  std::string sorted = w;
  std::sort(sorted.begin(), sorted.end());
  return {{}, w, sorted};
}

Problem count_letter(Rng& rng) {  // mostly a letter of the word; sometimes any letter (count 0)
  const std::string w = word(rng);
  const char c = rng.below(4) ? w[rng.below(w.size())] : char('a' + rng.below(26));
  return {std::string(1, c), w, str(std::count(w.begin(), w.end(), c))};
}

Problem count_words(Rng& rng) {
  std::vector<std::string> ws(size_t(between(rng, 2, 6)));
  for (auto& w : ws) w = word(rng);
  return {{}, join(ws), str(int64_t(ws.size()))};
}

Problem uppercase(Rng& rng) {
  std::string w = word(rng), up = w;
  for (auto& c : up) c = upper(c);
  return {{}, w, up};
}

Problem lowercase(Rng& rng) {  // mixed case, at least one capital
  const std::string w = word(rng);
  std::string mixed = w;
  for (auto& c : mixed)
    if (rng.below(2)) c = upper(c);
  const size_t at = rng.below(mixed.size());
  mixed[at] = upper(mixed[at]);
  return {{}, mixed, w};
}

Problem first_item(Rng& rng) {
  const auto ws = distinct_words(rng, between(rng, 3, 5));
  return {{}, join(ws), ws.front()};
}

Problem last_item(Rng& rng) {
  const auto ws = distinct_words(rng, between(rng, 3, 5));
  return {{}, join(ws), ws.back()};
}

Problem max_of_list(Rng& rng) {
  const auto xs = numbers(rng, between(rng, 3, 5), 0, 99);
  return {{}, join(xs), str(*std::max_element(xs.begin(), xs.end()))};
}

Problem min_of_list(Rng& rng) {
  const auto xs = numbers(rng, between(rng, 3, 5), 0, 99);
  return {{}, join(xs), str(*std::min_element(xs.begin(), xs.end()))};
}

Problem parity(Rng& rng) {
  const int64_t x = between(rng, 0, 999);
  return {{}, str(x), x % 2 ? "odd" : "even"};
}

Problem compare(Rng& rng) {  // two different numbers: "the larger" is always one of them
  const int64_t a = between(rng, 0, 99), b = (a + between(rng, 1, 99)) % 100;
  return {{}, join(std::vector{a, b}), str(std::max(a, b))};
}

Problem next_letter(Rng& rng) {
  const char c = char('a' + rng.below(25));
  return {{}, std::string(1, c), std::string(1, char(c + 1))};
}

Problem repeat_word(Rng& rng) {
  const int64_t k = between(rng, 2, 4);
  const std::string w = word(rng);
  return {str(k), w, join(std::vector<std::string>(size_t(k), w))};
}

Problem sum_of_list(Rng& rng) {
  const auto xs = numbers(rng, between(rng, 3, 4), 0, 30);
  return {{}, join(xs), str(std::accumulate(xs.begin(), xs.end(), int64_t(0)))};
}

Problem reverse_list(Rng& rng) {
  auto ws = distinct_words(rng, between(rng, 3, 4));
  const std::string input = join(ws);
  std::reverse(ws.begin(), ws.end());
  return {{}, input, join(ws)};
}

Problem second_item(Rng& rng) {
  const auto ws = distinct_words(rng, between(rng, 3, 5));
  return {{}, join(ws), ws[1]};
}

Problem word_length(Rng& rng) {
  const std::string w = word(rng);
  return {{}, w, str(int64_t(w.size()))};
}

// The held-out families recombine skills the training families teach (add -> sum_of_list,
// reverse_word -> reverse_list, first_item -> second_item, count_letter -> word_length).
const Family kFamilies[] = {
    {"add", false,
     {"add the two numbers", "what is the sum of the numbers?", "add these numbers together",
      "give the total of the two numbers"},
     add},
    {"subtract", false,
     {"subtract the second number from the first", "what is the first number minus the second?",
      "take the second number away from the first", "how much larger is the first number than the second?"},
     subtract},
    {"multiply", false,
     {"multiply the two numbers", "what is the product of the numbers?", "multiply these numbers together",
      "what do you get when you times them?"},
     multiply},
    {"reverse_word", false,
     {"reverse the word", "spell the word backwards", "write the word in reverse order",
      "what is the word read from right to left?"},
     reverse_word},
    {"sort_numbers", false,
     {"sort the numbers in ascending order", "order the numbers from smallest to largest",
      "put the numbers in increasing order", "arrange the numbers from low to high"},
     sort_numbers},
    {"sort_letters", false,
     {"sort the letters of the word alphabetically", "put the letters in alphabetical order",
      "arrange the letters from a to z", "rewrite the word with its letters in abc order"},
     sort_letters},
    {"count_letter", false,
     {"how many times does the letter {} appear?", "count the letter {} in the word", "how many {}'s are in the word?",
      "give the number of times {} occurs in the word"},
     count_letter},
    {"count_words", false,
     {"how many words are there?", "count the words", "give the number of words in the text",
      "how many words does the sentence have?"},
     count_words},
    {"uppercase", false,
     {"convert the word to uppercase", "write the word in capital letters", "make every letter upper case",
      "change the word to all caps"},
     uppercase},
    {"lowercase", false,
     {"convert the word to lowercase", "write the word in small letters", "make every letter lower case",
      "change the word so no letter is a capital"},
     lowercase},
    {"first_item", false,
     {"what is the first item of the list?", "give the first word in the list", "name the item that comes first",
      "which word starts the list?"},
     first_item},
    {"last_item", false,
     {"what is the last item of the list?", "give the final word in the list", "name the item that comes last",
      "which word ends the list?"},
     last_item},
    {"max_of_list", false,
     {"what is the largest number?", "find the maximum of the numbers", "give the biggest number in the list",
      "which number is the highest?"},
     max_of_list},
    {"min_of_list", false,
     {"what is the smallest number?", "find the minimum of the numbers", "give the lowest number in the list",
      "which number is the least?"},
     min_of_list},
    {"parity", false,
     {"is the number even or odd?", "say whether the number is odd or even", "tell if the number is even or odd",
      "odd or even?"},
     parity},
    {"compare", false,
     {"which number is larger?", "give the bigger of the two numbers", "which of the two numbers is greater?",
      "name the larger number"},
     compare},
    {"next_letter", false,
     {"what letter comes after this one?", "give the next letter of the alphabet", "which letter follows this one?",
      "name the letter right after it in the alphabet"},
     next_letter},
    {"repeat_word", false,
     {"repeat the word {} times", "write the word {} times", "say the word {} times",
      "give the word {} times in a row"},
     repeat_word},
    {"sum_of_list", true,
     {"add up all the numbers", "what is the sum of the list?", "give the total of the numbers",
      "what do the numbers add up to?"},
     sum_of_list},
    {"reverse_list", true,
     {"reverse the order of the words", "write the list backwards", "give the items in reverse order",
      "list the words from last to first"},
     reverse_list},
    {"second_item", true,
     {"what is the second item of the list?", "give the second word in the list", "name the item that comes second",
      "which word is in position two?"},
     second_item},
    {"word_length", true,
     {"how many letters are in the word?", "count the letters of the word", "give the length of the word",
      "how long is the word?"},
     word_length},
};

constexpr std::pair<SynthSplit, std::string_view> kSplitNames[] = {{SynthSplit::Train, "train"},
                                                                   {SynthSplit::Test, "test"},
                                                                   {SynthSplit::HeldoutPhrasings, "heldout-phrasings"},
                                                                   {SynthSplit::HeldoutTasks, "heldout-tasks"}};

std::string names(bool heldout) {
  std::string out;
  for (const auto& name : synth_families(heldout)) out += (out.empty() ? "" : ", ") + name;
  return out;
}

const Family* find_family(std::string_view name) {
  for (const auto& f : kFamilies)
    if (f.name == name) return &f;
  return nullptr;
}

// The families the options name, each checked against the split; all of the split's by default.
std::vector<const Family*> chosen_families(const SynthOptions& o) {
  const bool heldout = o.split == SynthSplit::HeldoutTasks;
  std::vector<const Family*> out;
  if (o.tasks.empty()) {
    for (const auto& f : kFamilies)
      if (f.heldout == heldout) out.push_back(&f);
    return out;
  }
  for (const auto& name : o.tasks) {
    const Family* f = find_family(name);
    if (!f)
      throw std::invalid_argument("unknown task '" + name + "' (training families: " + names(false) +
                                  "; held-out families: " + names(true) + ")");
    if (f->heldout != heldout)
      throw std::invalid_argument("task '" + name + "' is a " + (f->heldout ? "held-out" : "training") +
                                  " family: the " + std::string(synth_split_name(o.split)) + " split " +
                                  (heldout ? "has only held-out families" : "has only training families"));
    if (std::find(out.begin(), out.end(), f) != out.end())
      throw std::invalid_argument("task '" + name + "' is named twice");
    out.push_back(f);
  }
  return out;
}

size_t phrasing_index(SynthSplit split, Rng& rng) {
  switch (split) {
    case SynthSplit::HeldoutPhrasings: return 3;
    case SynthSplit::HeldoutTasks: return rng.below(4);
    default: return rng.below(3);
  }
}

SynthSample draw(const Family& f, SynthSplit split, Rng& rng) {
  std::string instruction(f.phrasings[phrasing_index(split, rng)]);
  Problem p = f.make(rng);
  if (const size_t at = instruction.find("{}"); at != std::string::npos) instruction.replace(at, 2, p.param);
  return {std::string(f.name), std::move(instruction), std::move(p.input), std::move(p.output)};
}

}  // namespace

std::optional<SynthSplit> parse_synth_split(std::string_view name) {
  for (const auto& [split, n] : kSplitNames)
    if (n == name) return split;
  return std::nullopt;
}

std::string_view synth_split_name(SynthSplit split) {
  for (const auto& [s, n] : kSplitNames)
    if (s == split) return n;
  return {};
}

std::vector<std::string> synth_families(bool heldout) {
  std::vector<std::string> out;
  for (const auto& f : kFamilies)
    if (f.heldout == heldout) out.emplace_back(f.name);
  return out;
}

std::vector<std::string> synth_phrasings(std::string_view family) {
  const Family* f = find_family(family);
  if (!f) throw std::invalid_argument("unknown task '" + std::string(family) + "'");
  return {f->phrasings.begin(), f->phrasings.end()};
}

std::vector<SynthSample> synth_samples(const SynthOptions& options) {
  if (options.n < 0) throw std::invalid_argument("the number of samples must not be negative");
  const auto families = chosen_families(options);
  Rng rng = Rng::stream(options.seed, "synth/" + std::string(synth_split_name(options.split)));
  std::vector<size_t> order(families.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::vector<SynthSample> samples;
  samples.reserve(size_t(options.n));
  for (int64_t i = 0; i < options.n; ++i) {
    const size_t slot = size_t(i) % order.size();
    if (slot == 0)  // a new block: every family once, in a fresh order (Fisher-Yates)
      for (size_t j = order.size() - 1; j > 0; --j) std::swap(order[j], order[rng.below(j + 1)]);
    samples.push_back(draw(*families[order[slot]], options.split, rng));
  }
  return samples;
}

namespace {

std::string synth_jsonl(const std::vector<SynthSample>& samples) {
  std::string out;
  for (const auto& s : samples)
    out += nlohmann::json{{"instruction", s.instruction}, {"input", s.input}, {"output", s.output}, {"task", s.task}}
               .dump() +
           "\n";
  return out;
}

// "add 50, subtract 50, ...", in the families' order.
std::string synth_counts(const std::vector<SynthSample>& samples) {
  std::map<std::string, int64_t> count;
  for (const auto& s : samples) ++count[s.task];
  std::string out;
  for (const bool heldout : {false, true})
    for (const auto& task : synth_families(heldout))
      if (count.count(task)) out += (out.empty() ? "" : ", ") + task + " " + std::to_string(count[task]);
  return out;
}

}  // namespace

void write_synthetic_data(const SynthOptions& options, const std::filesystem::path& out, bool overwrite) {
  const std::vector<SynthSample> samples = synth_samples(options);
  StagedPath staged(out, overwrite);
  write_text_file(staged.temp(), synth_jsonl(samples));
  staged.commit();
  spdlog::info("wrote {} {} samples to {} (seed {}): {}", samples.size(), synth_split_name(options.split), out.string(),
               options.seed, synth_counts(samples));
}

}  // namespace upcycle
