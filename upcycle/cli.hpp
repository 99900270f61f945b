// What every subcommand shares: option parsing with Boost.Program_options that turns mistakes
// into UsageError (exit 1) and prints --help.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "core/dtype.hpp"

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

// A size like "5GB", "500MB", "2GiB", "123" (bytes); UsageError naming the option otherwise.
uint64_t parse_size(const std::string& text, const std::string& option);

}  // namespace upcycle::cli
