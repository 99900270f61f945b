// What every subcommand shares: option parsing with Boost.Program_options that turns mistakes
// into UsageError (exit 1) and prints --help.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/option_table.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle::cli {

namespace po = boost::program_options;

struct Spec {
  std::string usage;    // "upcycle inspect PATH [--json]"
  std::string summary;  // one paragraph on what the command does
  po::options_description options{"Options"};
  po::positional_options_description positional;
  po::options_description hidden;  // the positional arguments' own entries
};

// Parses args; nullopt when --help was given (and printed). Throws UsageError otherwise.
std::optional<po::variables_map> parse(Spec& spec, const std::vector<std::string>& args);

// A storage dtype for outputs: f32, bf16 or f16; UsageError naming the option otherwise.
DType parse_output_dtype(const std::string& text, const std::string& option);

// --precision (trainer/engine.hpp's kPrecisionHelp) when given, else none: the device's own.
// UsageError for a value other than f32 or bf16.
std::optional<Precision> precision_option(const po::variables_map& vm);
// --adapter DIR, or an empty path without it.
std::filesystem::path adapter_option(const po::variables_map& vm);

// A size like "5GB", "500MB", "2GiB", "123" (bytes); UsageError naming the option otherwise.
uint64_t parse_size(const std::string& text, const std::string& option);

// Adds a stage's option table (core/option_table.hpp): Switch rows as flags, TextList rows
// taking one or more values, the others one value, each help showing its default in `defaults`.
template <class S>
void add_options(Spec& spec, const OptionTable<S>& table, const S& defaults = {});

// Sets `into` from the table's options given on the command line (the others keep the values
// `into` has), then runs check(into); UsageError naming the flag for any mistake.
template <class S, class Check>
void read_options(const po::variables_map& vm, const OptionTable<S>& table, S& into, Check check);

// A command-line text as the JSON value a kind takes; UsageError naming the flag otherwise.
nlohmann::json option_value(ValueKind kind, const std::string& key, const std::vector<std::string>& texts);

// The options of `values` that differ from the defaults (S{}), as the command-line words that
// set them ("--lr=0.003", in the table's order): read_options reads them back to `values`,
// whatever order and spelling the user wrote. "--flag=value" keeps a value that starts with '-'
// a value.
template <class S>
std::vector<std::string> option_words(const OptionTable<S>& table, const S& values);

// `word` as a POSIX shell reads it back: as it is when no shell treats any of its characters
// specially, else in single quotes (each ' written '\'').
std::string shell_quote(const std::string& word);

template <class S>
void add_options(Spec& spec, const OptionTable<S>& table, const S& defaults) {
  for (const OptionRow<S>& row : table) {
    const std::string name = option_flag(row.key).substr(2);
    const std::string shown = default_text(row.get(defaults));
    if (row.kind == ValueKind::Switch) {
      spec.options.add_options()(name.c_str(), row.help.c_str());
    } else if (row.kind == ValueKind::TextList) {
      auto* value = po::value<std::vector<std::string>>()->multitoken();
      spec.options.add_options()(name.c_str(), value, row.help.c_str());
    } else {
      auto* value = po::value<std::string>();
      if (!shown.empty()) value->default_value(shown, shown);
      spec.options.add_options()(name.c_str(), value, row.help.c_str());
    }
  }
}

template <class S, class Check>
void read_options(const po::variables_map& vm, const OptionTable<S>& table, S& into, Check check) {
  try {
    for (const OptionRow<S>& row : table) {
      const std::string name = option_flag(row.key).substr(2);
      if (!vm.count(name) || vm[name].defaulted()) continue;
      std::vector<std::string> texts;
      if (row.kind == ValueKind::TextList) texts = vm[name].as<std::vector<std::string>>();
      else if (row.kind != ValueKind::Switch) texts = {vm[name].as<std::string>()};
      row.set(into, option_value(row.kind, row.key, texts));
    }
    check(into);
  } catch (const OptionError& e) {
    throw UsageError(render_option_names(e.what(), true));
  }
}

template <class S>
std::vector<std::string> option_words(const OptionTable<S>& table, const S& values) {
  const S defaults{};
  std::vector<std::string> words;
  for (const OptionRow<S>& row : table) {
    const nlohmann::json value = row.get(values);
    if (value.is_null() || value == row.get(defaults)) continue;
    const std::string flag = option_flag(row.key);
    if (row.kind == ValueKind::Switch) {
      if (value.get<bool>()) words.push_back(flag);
    } else if (row.kind == ValueKind::TextList) {
      words.push_back(flag);
      for (const auto& item : value) words.push_back(item.get<std::string>());
    } else {
      words.push_back(flag + "=" + default_text(value));
    }
  }
  return words;
}

}  // namespace upcycle::cli
