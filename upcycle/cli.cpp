#include "upcycle/cli.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <iostream>
#include <string_view>

#include "core/error.hpp"

namespace upcycle::cli {

std::optional<po::variables_map> parse(Spec& spec, const std::vector<std::string>& args) {
  spec.options.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(spec.options).add(spec.hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(spec.positional).run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: " << spec.usage << "\n\n" << spec.summary << "\n\n" << spec.options << "\n";
      return std::nullopt;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  return vm;
}

DType parse_output_dtype(const std::string& text, const std::string& option) {
  try {
    return parse_storage_dtype(text);
  } catch (const UsageError& e) {
    throw UsageError("--" + option + ": " + e.what());
  }
}

std::optional<Precision> precision_option(const po::variables_map& vm) {
  if (!vm.count("precision")) return std::nullopt;
  try {
    return parse_precision(vm["precision"].as<std::string>());
  } catch (const UsageError& e) {
    throw UsageError(std::string("--precision: ") + e.what());
  }
}

std::filesystem::path adapter_option(const po::variables_map& vm) {
  return vm.count("adapter") ? std::filesystem::path(vm["adapter"].as<std::string>()) : std::filesystem::path();
}

uint64_t parse_size(const std::string& text, const std::string& option) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    throw UsageError("--" + option + ": '" + text + "' is not a size (like 5GB, 500MB, 2GiB)");
  }
  std::string unit = text.substr(pos);
  for (auto& ch : unit) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  double scale = unit == "" || unit == "B" ? 1
                 : unit == "KB"            ? 1e3
                 : unit == "MB"            ? 1e6
                 : unit == "GB"            ? 1e9
                 : unit == "TB"            ? 1e12
                 : unit == "KIB"           ? 1024.0
                 : unit == "MIB"           ? 1048576.0
                 : unit == "GIB"           ? 1073741824.0
                                           : -1;
  double bytes = value * scale;
  if (scale < 0 || !std::isfinite(bytes) || bytes < 1 || bytes > 1e15)
    throw UsageError("--" + option + ": '" + text + "' is not a size between 1 B and 1 PB");
  return uint64_t(bytes);
}

std::string shell_quote(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("@%+=:,./_-").find(c) != std::string_view::npos;
  });
  if (plain) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

nlohmann::json option_value(ValueKind kind, const std::string& key, const std::vector<std::string>& texts) {
  if (kind == ValueKind::Switch) return true;
  if (kind == ValueKind::TextList) return texts;
  const std::string& text = texts.at(0);
  const char *first = text.data(), *last = text.data() + text.size();
  auto refuse = [&] { return UsageError(option_flag(key) + ": '" + text + "' is not " + kind_text(kind)); };
  switch (kind) {
    case ValueKind::Integer: {
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(first, last, v);
      if (ec != std::errc() || end != last) throw refuse();
      return v;
    }
    case ValueKind::Unsigned: {
      uint64_t v = 0;
      const auto [end, ec] = std::from_chars(first, last, v);  // refuses a sign, so -1 never wraps
      if (ec != std::errc() || end != last) throw refuse();
      return v;
    }
    case ValueKind::Real: {
      double v = 0;
      const auto [end, ec] = std::from_chars(first, last, v);
      if (ec != std::errc() || end != last || !std::isfinite(v)) throw refuse();
      return v;
    }
    default: return text;
  }
}

}  // namespace upcycle::cli
