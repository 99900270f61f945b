// `upcycle data synth` as a user meets it: files the instruction reader takes, restricted to the
// tasks asked for, byte-identical for a seed, and misuse named.
#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <map>

#include "data/instruction_data.hpp"
#include "data/synthetic_tasks.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// Runs `data synth ARGS --out OUT`, which must succeed.
void synth(const std::string& args, const fs::path& out) {
  const auto r = run_upcycle("data synth " + args + " --out " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
}

std::map<std::string, int64_t> task_counts(const InstructionRecords& data) {
  std::map<std::string, int64_t> count;
  for (const auto& r : data.records) ++count[r.task];
  return count;
}

}  // namespace

TEST_CASE("data synth: N Alpaca lines with tasks, as the library draws them, that the reader takes") {
  ScratchDir dir;
  const auto r = run_upcycle("data synth --n 40 --seed 3 --out " + q(dir / "train.jsonl"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("wrote 40 train samples") != std::string::npos);
  CHECK(r.err.find("add ") != std::string::npos);

  const InstructionRecords data = read_instruction_records(dir / "train.jsonl", false);
  CHECK(data.skipped == 0);
  REQUIRE(data.records.size() == 40);
  const auto expected = synth_samples({40, 3, SynthSplit::Train, {}});
  for (size_t i = 0; i < data.records.size(); ++i) {
    const InstructionRecord& rec = data.records[i];
    REQUIRE(rec.is_text());
    REQUIRE(rec.messages.size() == 2);
    CHECK(rec.task == expected[i].task);
    CHECK(rec.messages[0].content == expected[i].instruction);
    CHECK(rec.messages[0].input == expected[i].input);
    CHECK(rec.messages[1].content == expected[i].output);
  }
  const auto trained = synth_families(false);
  CHECK(task_counts(data).size() == std::min<size_t>(40, trained.size()));
  // Nothing left beside the output (the temporary it was written under is renamed).
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
}

TEST_CASE("data synth: --tasks restricts, --split picks the held-out data") {
  ScratchDir dir;
  synth("--n 10 --tasks add,reverse_word", dir / "two.jsonl");
  const auto two = task_counts(read_instruction_records(dir / "two.jsonl", false));
  CHECK(two == std::map<std::string, int64_t>{{"add", 5}, {"reverse_word", 5}});

  synth("--n 30 --split heldout-tasks", dir / "held.jsonl");
  const auto held = synth_families(true);
  for (const auto& [task, n] : task_counts(read_instruction_records(dir / "held.jsonl", false)))
    CHECK_MESSAGE(std::find(held.begin(), held.end(), task) != held.end(), task);

  const auto list = run_upcycle("data synth --list");
  REQUIRE(list.code == 0);
  for (bool h : {false, true})
    for (const auto& name : synth_families(h)) CHECK_MESSAGE(list.out.find(name + " ") != std::string::npos, name);
  CHECK(list.out.find("held-out") != std::string::npos);
}

TEST_CASE("data synth: a seed gives a byte-identical file, an existing file needs --overwrite") {
  ScratchDir dir;
  synth("--n 50 --seed 9", dir / "a.jsonl");
  synth("--n 50 --seed 9", dir / "b.jsonl");
  synth("--n 50 --seed 10", dir / "c.jsonl");
  CHECK(read_file(dir / "a.jsonl") == read_file(dir / "b.jsonl"));
  CHECK(read_file(dir / "a.jsonl") != read_file(dir / "c.jsonl"));

  const auto r = run_upcycle("data synth --n 5 --out " + q(dir / "a.jsonl"));
  CHECK(r.code != 0);
  CHECK(r.err.find("a.jsonl") != std::string::npos);
  CHECK(r.err.find("--overwrite") != std::string::npos);
  CHECK(read_file(dir / "a.jsonl") == read_file(dir / "b.jsonl"));
  synth("--n 5 --overwrite", dir / "a.jsonl");
  CHECK(read_instruction_records(dir / "a.jsonl", false).records.size() == 5);
}

TEST_CASE("data synth: misuse exits 1 with a message naming it") {
  ScratchDir dir;
  const std::string out = " --out " + q(dir / "x.jsonl");
  const std::pair<std::string, std::string> cases[] = {
      {"data", "no subcommand"},
      {"data frobnicate", "unknown subcommand 'frobnicate'"},
      {"data synth --n 5 --no-such-option" + out, "no-such-option"},
      {"data synth --n 5 --tasks add,nope" + out, "unknown task 'nope'"},
      {"data synth --n 5 --tasks sum_of_list" + out, "held-out"},
      {"data synth --n 5 --tasks add," + out, "empty task name"},
      {"data synth --n 5 --split dev" + out, "--split: 'dev'"},
      {"data synth --n 0" + out, "--n must be positive"},
      {"data synth --n 5", "give --n and --out"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run_upcycle(args);
    CHECK_MESSAGE(r.code == 1, args);
    CHECK_MESSAGE(r.err.find(message) != std::string::npos, args << ": " << r.err);
  }
  CHECK(!fs::exists(dir / "x.jsonl"));
  CHECK(run_upcycle("data --help").code == 0);
  const auto help = run_upcycle("data synth --help");
  CHECK(help.code == 0);
  CHECK(help.out.find("Usage: upcycle data synth") != std::string::npos);
}
