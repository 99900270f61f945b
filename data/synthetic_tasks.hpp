// Synthetic instruction data with exact answers, for data-efficiency experiments that need no
// download: task families (arithmetic, reversing, sorting, counting, case, lists, comparisons),
// each with several phrasings of its instruction. Generalisation is measured on what training
// never shows: the last phrasing of every family, and whole families kept out of training.
//
// Every sample is short (instruction + input + output under 100 characters, ASCII, mostly
// lowercase letters and digits) so that a tiny character-level model can learn it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upcycle {

// Train and Test: the training families in their training phrasings (Test draws from another
// random stream, so its samples differ from Train's, except by chance in families with few
// distinct inputs, like next_letter). HeldoutPhrasings: the training families in their held-out
// phrasing only. HeldoutTasks: the held-out families in any of their phrasings.
enum class SynthSplit { Train, Test, HeldoutPhrasings, HeldoutTasks };

// "train", "test", "heldout-phrasings", "heldout-tasks"; nullopt for anything else.
std::optional<SynthSplit> parse_synth_split(std::string_view name);
std::string_view synth_split_name(SynthSplit split);

struct SynthSample {
  std::string task;         // the family's name
  std::string instruction;  // a phrasing, with its parameter (a letter, a count) filled in
  std::string input;        // the operands: numbers or words separated by single spaces
  std::string output;       // the exact answer
};

struct SynthOptions {
  int64_t n = 1000;
  uint64_t seed = 0;
  SynthSplit split = SynthSplit::Train;
  std::vector<std::string> tasks;  // family names; empty: every family of the split
};

// The training families (heldout false) or the held-out ones, in a fixed order.
std::vector<std::string> synth_families(bool heldout);

// A family's phrasings, "{}" standing for its parameter where it has one; the last is held out.
// std::invalid_argument for an unknown family.
std::vector<std::string> synth_phrasings(std::string_view family);

// n samples drawn from Rng::stream(seed, "synth/" + split name). The families take turns: each
// consecutive block of as many samples as there are families holds every family once, in a
// shuffled order, so counts differ by at most one. Samples are drawn one after another, so the
// first m samples of a larger n are the samples for n = m. std::invalid_argument for n < 0, an
// unknown or repeated task name, or a family outside the split (a held-out family in Train, Test
// or HeldoutPhrasings; a training family in HeldoutTasks).
std::vector<SynthSample> synth_samples(const SynthOptions& options);

// synth_samples(options) into `out` as Alpaca JSONL with a "task" on every line, complete or not
// at all, and logged with the count of each family. std::invalid_argument as synth_samples;
// InputError when `out` exists and !overwrite.
void write_synthetic_data(const SynthOptions& options, const std::filesystem::path& out, bool overwrite);

}  // namespace upcycle
