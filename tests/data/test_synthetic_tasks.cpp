// Synthetic instruction data: every answer recomputed here from the input, determinism, the rules
// of the splits, even spread over the families, short samples, bad options.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>

#include "data/synthetic_tasks.hpp"

using namespace upcycle;

namespace {

const SynthSplit kSplits[] = {SynthSplit::Train, SynthSplit::Test, SynthSplit::HeldoutPhrasings,
                              SynthSplit::HeldoutTasks};

std::vector<SynthSample> draw(SynthSplit split, int64_t n, uint64_t seed = 0, std::vector<std::string> tasks = {}) {
  return synth_samples({n, seed, split, std::move(tasks)});
}

// The phrasing of `family` that `instruction` was written from, and what its "{}" stands for.
struct Match {
  size_t phrasing;
  std::string param;
};
std::optional<Match> match_phrasing(const std::string& family, const std::string& instruction) {
  const auto phrasings = synth_phrasings(family);
  for (size_t i = 0; i < phrasings.size(); ++i) {
    const std::string& p = phrasings[i];
    const size_t at = p.find("{}");
    if (at == std::string::npos) {
      if (p == instruction) return Match{i, ""};
      continue;
    }
    const std::string prefix = p.substr(0, at), suffix = p.substr(at + 2);
    if (instruction.size() > prefix.size() + suffix.size() && instruction.starts_with(prefix) &&
        instruction.ends_with(suffix))
      return Match{i, instruction.substr(at, instruction.size() - prefix.size() - suffix.size())};
  }
  return std::nullopt;
}

std::vector<std::string> items(const std::string& text) {
  std::vector<std::string> out;
  size_t begin = 0;
  for (size_t end; (end = text.find(' ', begin)) != std::string::npos; begin = end + 1)
    out.push_back(text.substr(begin, end - begin));
  out.push_back(text.substr(begin));
  return out;
}

// Numbers written plainly (digits only, no sign or leading zero); a test failure otherwise.
std::vector<int64_t> numbers(const std::string& text) {
  std::vector<int64_t> out;
  for (const auto& item : items(text)) {
    const bool plain = !item.empty() && std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                       (item.size() == 1 || item[0] != '0');
    REQUIRE_MESSAGE(plain, "'" << item << "' in '" << text << "'");
    out.push_back(std::stoll(item));
  }
  return out;
}

std::string join(const std::vector<std::string>& xs) {
  std::string out;
  for (const auto& x : xs) out += (out.empty() ? "" : " ") + x;
  return out;
}

std::string join(const std::vector<int64_t>& xs) {
  std::vector<std::string> s;
  for (int64_t x : xs) s.push_back(std::to_string(x));
  return join(s);
}

std::string shift_case(std::string s, bool up) {
  for (char& c : s) {
    if (up && c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
    if (!up && c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  }
  return s;
}

int64_t occurrences(const std::string& text, char c) {
  int64_t n = 0;
  for (char x : text) n += x == c;
  return n;
}

// Each family's answer, computed here from the parameter and the input.
using Answer = std::function<std::string(const std::string& param, const std::string& input)>;
const std::map<std::string, Answer>& answers() {
  using S = const std::string&;
  static const std::map<std::string, Answer> table = {
      {"add", [](S, S in) { auto x = numbers(in); REQUIRE(x.size() == 2); return std::to_string(x[0] + x[1]); }},
      {"subtract", [](S, S in) { auto x = numbers(in); REQUIRE(x.size() == 2); return std::to_string(x[0] - x[1]); }},
      {"multiply", [](S, S in) { auto x = numbers(in); REQUIRE(x.size() == 2); return std::to_string(x[0] * x[1]); }},
      {"reverse_word", [](S, S in) { std::string r; for (char c : in) r.insert(r.begin(), c); return r; }},
      {"sort_numbers", [](S, S in) { auto x = numbers(in); std::sort(x.begin(), x.end()); return join(x); }},
      {"sort_letters", [](S, S in) { std::string r = in; std::sort(r.begin(), r.end()); return r; }},
      {"count_letter", [](S p, S in) { REQUIRE(p.size() == 1); return std::to_string(occurrences(in, p[0])); }},
      {"count_words", [](S, S in) { return std::to_string(occurrences(in, ' ') + 1); }},
      {"uppercase", [](S, S in) { return shift_case(in, true); }},
      {"lowercase", [](S, S in) { CHECK(in != shift_case(in, false)); return shift_case(in, false); }},
      {"first_item", [](S, S in) { return items(in).front(); }},
      {"last_item", [](S, S in) { return items(in).back(); }},
      {"max_of_list", [](S, S in) { auto x = numbers(in); return std::to_string(*std::max_element(x.begin(), x.end())); }},
      {"min_of_list", [](S, S in) { auto x = numbers(in); return std::to_string(*std::min_element(x.begin(), x.end())); }},
      {"parity", [](S, S in) { auto x = numbers(in); REQUIRE(x.size() == 1); return std::string(x[0] % 2 ? "odd" : "even"); }},
      {"compare", [](S, S in) { auto x = numbers(in); REQUIRE(x.size() == 2); CHECK(x[0] != x[1]); return std::to_string(std::max(x[0], x[1])); }},
      {"next_letter", [](S, S in) { REQUIRE(in.size() == 1); CHECK(in[0] >= 'a'); CHECK(in[0] < 'z'); return std::string(1, char(in[0] + 1)); }},
      {"repeat_word", [](S p, S in) { return join(std::vector<std::string>(size_t(std::stoll(p)), in)); }},
      {"sum_of_list", [](S, S in) { int64_t t = 0; for (int64_t x : numbers(in)) t += x; return std::to_string(t); }},
      {"reverse_list", [](S, S in) { auto w = items(in); std::reverse(w.begin(), w.end()); return join(w); }},
      {"second_item", [](S, S in) { auto w = items(in); REQUIRE(w.size() >= 2); return w[1]; }},
      {"word_length", [](S, S in) { return std::to_string(in.size()); }},
  };
  return table;
}

std::set<std::string> family_set(bool heldout) {
  const auto f = synth_families(heldout);
  return {f.begin(), f.end()};
}

bool same(const SynthSample& a, const SynthSample& b) {
  return a.task == b.task && a.instruction == b.instruction && a.input == b.input && a.output == b.output;
}

bool same(const std::vector<SynthSample>& a, const std::vector<SynthSample>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](auto& x, auto& y) { return same(x, y); });
}

}  // namespace

TEST_CASE("synth: families, their phrasings and the split names") {
  const auto train = synth_families(false), heldout = synth_families(true);
  CHECK(train.size() >= 12);
  CHECK(heldout.size() >= 2);
  std::set<std::string> names(train.begin(), train.end());
  names.insert(heldout.begin(), heldout.end());
  CHECK(names.size() == train.size() + heldout.size());
  // Every family has an answer computed by this test, and no phrasing is shared between or
  // within families (a shared one would make the task ambiguous).
  std::set<std::string> phrasings;
  size_t total = 0;
  for (const auto& name : names) {
    CHECK_MESSAGE(answers().count(name), name);
    const auto p = synth_phrasings(name);
    CHECK(p.size() >= 4);
    phrasings.insert(p.begin(), p.end());
    total += p.size();
  }
  CHECK(phrasings.size() == total);
  CHECK(answers().size() == names.size());

  for (SynthSplit s : kSplits) CHECK(parse_synth_split(synth_split_name(s)) == s);
  CHECK(parse_synth_split("heldout-tasks") == SynthSplit::HeldoutTasks);
  CHECK(parse_synth_split("Train") == std::nullopt);
  CHECK(parse_synth_split("") == std::nullopt);
}

TEST_CASE("synth: every answer is exact, recomputed from the input") {
  for (SynthSplit split : kSplits) {
    for (const auto& s : draw(split, 3000, 11)) {
      const auto m = match_phrasing(s.task, s.instruction);
      REQUIRE_MESSAGE(m, s.task << ": '" << s.instruction << "'");
      const auto it = answers().find(s.task);
      REQUIRE_MESSAGE(it != answers().end(), s.task);
      CHECK_MESSAGE(s.output == it->second(m->param, s.input),
                    s.task << ": " << s.instruction << " | " << s.input << " -> " << s.output);
    }
  }
}

TEST_CASE("synth: splits keep the held-out phrasings and families apart") {
  const auto train = family_set(false), heldout = family_set(true);
  for (SynthSplit split : kSplits) {
    CAPTURE(synth_split_name(split));
    std::set<std::string> tasks;
    std::set<std::pair<std::string, size_t>> used;  // (family, phrasing)
    for (const auto& s : draw(split, 3000, 2)) {
      const auto m = match_phrasing(s.task, s.instruction);
      REQUIRE(m);
      const size_t last = synth_phrasings(s.task).size() - 1;
      if (split == SynthSplit::HeldoutPhrasings) CHECK(m->phrasing == last);
      else if (split != SynthSplit::HeldoutTasks) CHECK(m->phrasing < last);
      tasks.insert(s.task);
      used.insert({s.task, m->phrasing});
    }
    // Each split holds all its families in all the phrasings it allows.
    const bool held_tasks = split == SynthSplit::HeldoutTasks;
    CHECK(tasks == (held_tasks ? heldout : train));
    size_t allowed = 0;
    for (const auto& t : tasks) {
      const size_t p = synth_phrasings(t).size();
      allowed += held_tasks ? p : split == SynthSplit::HeldoutPhrasings ? 1 : p - 1;
    }
    CHECK(used.size() == allowed);
  }
}

TEST_CASE("synth: the same options give the same samples, other seeds and splits others") {
  const auto a = draw(SynthSplit::Train, 500, 7);
  CHECK(same(a, draw(SynthSplit::Train, 500, 7)));
  CHECK(!same(a, draw(SynthSplit::Train, 500, 8)));
  // Draws are sequential: a shorter run is a prefix of a longer one.
  const auto shorter = draw(SynthSplit::Train, 123, 7);
  CHECK(same(shorter, std::vector<SynthSample>(a.begin(), a.begin() + 123)));

  // Test comes from another stream: its samples are mostly not Train's (identical ones only by
  // chance, in families of few distinct inputs).
  const auto test = draw(SynthSplit::Test, 500, 7);
  CHECK(!same(a, test));
  int64_t shared = 0;
  for (const auto& t : test)
    shared += std::any_of(a.begin(), a.end(), [&](const SynthSample& x) { return same(x, t); });
  CHECK(shared < 50);  // 20 of 500 for this seed
}

TEST_CASE("synth: n is respected and the families take turns") {
  CHECK(draw(SynthSplit::Train, 0).empty());
  const auto families = synth_families(false);
  const int64_t k = int64_t(families.size());
  const auto samples = draw(SynthSplit::Train, 5 * k + 3, 4);
  REQUIRE(samples.size() == size_t(5 * k + 3));
  std::map<std::string, int64_t> count;
  for (const auto& s : samples) ++count[s.task];
  CHECK(count.size() == families.size());
  for (const auto& [task, c] : count) CHECK_MESSAGE((c == 5 || c == 6), task << " " << c);
  // Within each block of k samples every family comes once.
  for (int64_t b = 0; b + k <= int64_t(samples.size()); b += k) {
    std::set<std::string> block;
    for (int64_t i = b; i < b + k; ++i) block.insert(samples[size_t(i)].task);
    CHECK(block.size() == families.size());
  }

  const auto two = draw(SynthSplit::Train, 7, 0, {"reverse_word", "add"});
  REQUIRE(two.size() == 7);
  count.clear();
  for (const auto& s : two) ++count[s.task];
  CHECK(count.size() == 2);
  CHECK(count["add"] + count["reverse_word"] == 7);
  CHECK(std::abs(count["add"] - count["reverse_word"]) == 1);
}

TEST_CASE("synth: samples are short printable ASCII with an answer") {
  size_t longest = 0;
  for (SynthSplit split : kSplits) {
    for (const auto& s : draw(split, 5000, 5)) {
      const size_t total = s.instruction.size() + s.input.size() + s.output.size();
      longest = std::max(longest, total);
      CHECK_MESSAGE(total < 100, s.instruction << " | " << s.input << " -> " << s.output);
      CHECK(!s.output.empty());
      CHECK(!s.input.empty());
      for (const std::string* t : {&s.instruction, &s.input, &s.output})
        CHECK(std::all_of(t->begin(), t->end(), [](char c) { return c >= ' ' && c <= '~'; }));
    }
  }
  MESSAGE("longest sample: " << longest << " characters");
}

TEST_CASE("synth: bad options are std::invalid_argument") {
  CHECK_THROWS_AS(draw(SynthSplit::Train, -1), std::invalid_argument);
  CHECK_THROWS_WITH_AS(draw(SynthSplit::Train, 5, 0, {"add", "frobnicate"}), doctest::Contains("frobnicate"),
                       std::invalid_argument);
  CHECK_THROWS_AS(draw(SynthSplit::Train, 5, 0, {"add", "add"}), std::invalid_argument);
  const std::string held = synth_families(true).front(), trained = synth_families(false).front();
  for (SynthSplit split : {SynthSplit::Train, SynthSplit::Test, SynthSplit::HeldoutPhrasings})
    CHECK_THROWS_WITH_AS(draw(split, 5, 0, {held}), doctest::Contains("held-out"), std::invalid_argument);
  CHECK_THROWS_AS(draw(SynthSplit::HeldoutTasks, 5, 0, {trained}), std::invalid_argument);
  CHECK_THROWS_AS(synth_phrasings("frobnicate"), std::invalid_argument);
  CHECK(draw(SynthSplit::HeldoutTasks, 5, 0, {held}).size() == 5);
}
