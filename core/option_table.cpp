#include "core/option_table.hpp"

#include <sstream>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.hpp"

namespace upcycle {

namespace {
// Marks around a key in an OptionError's message (control characters no option text holds).
constexpr char kOpen = '\x01', kClose = '\x02';
}  // namespace

OptionError::OptionError(std::string key_, const std::string& message) : std::runtime_error(message), key(std::move(key_)) {}

std::string option_name(const std::string& key) { return kOpen + key + kClose; }

std::string option_flag(const std::string& key) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

std::string render_option_names(const std::string& message, bool as_flags) {
  std::string out;
  for (size_t i = 0; i < message.size();) {
    const size_t open = message.find(kOpen, i), close = open == std::string::npos ? open : message.find(kClose, open);
    if (close == std::string::npos) {
      out += message.substr(i);
      break;
    }
    const std::string key = message.substr(open + 1, close - open - 1);
    out += message.substr(i, open - i) + (as_flags ? option_flag(key) : key);
    i = close + 1;
  }
  return out;
}

bool json_fits(ValueKind kind, const nlohmann::json& v) {
  switch (kind) {
    case ValueKind::Switch: return v.is_boolean();
    case ValueKind::Integer: return v.is_number_integer();
    case ValueKind::Unsigned: return v.is_number_unsigned();
    case ValueKind::Real: return v.is_number();
    case ValueKind::Text: return v.is_string();
    case ValueKind::TextList:
    case ValueKind::CommaList:
      return v.is_string() || (v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_string(); }));
  }
  return false;
}

const char* kind_text(ValueKind kind) {
  switch (kind) {
    case ValueKind::Switch: return "true or false";
    case ValueKind::Integer: return "an integer";
    case ValueKind::Unsigned: return "a non-negative integer";
    case ValueKind::Real: return "a number";
    case ValueKind::Text: return "a string";
    case ValueKind::TextList: return "a string or a list of strings";
    case ValueKind::CommaList: return "a comma-separated string or a list of strings";
  }
  return "?";
}

std::string joined_list(const nlohmann::json& list) {
  std::string out;
  for (const auto& item : list) out += (out.empty() ? "" : ",") + item.get<std::string>();
  return out;
}

std::string default_text(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());  // shortest text that reads back the same
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v) out += (out.empty() ? "" : ",") + default_text(e);
    return out;
  }
  return v.dump();
}

void require_option(bool given, const std::string& key) {
  if (!given) throw OptionError(key, option_name(key) + " is required");
}

void require_positive(double value, const std::string& key) {
  if (!(value > 0)) throw OptionError(key, option_name(key) + " must be positive");
}

void require_not_negative(double value, const std::string& key) {
  if (value < 0) throw OptionError(key, option_name(key) + " must not be negative");
}

void throw_config_error(const std::string& where, const std::string& message) { throw UsageError(where + ": " + message); }

std::vector<std::string> comma_list(const std::string& key, const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) throw OptionError(key, option_name(key) + ": '" + text + "' holds an empty item");
    out.push_back(item);
  }
  if (out.empty()) throw OptionError(key, option_name(key) + " needs at least one value");
  return out;
}

}  // namespace upcycle
