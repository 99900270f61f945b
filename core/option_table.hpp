// A stage's options, declared once as a table: a row per option with its key (a run config's
// key; on the command line the flag, dashes for underscores), the kind of value it takes, its
// help, and how it is read into and shown from the stage's options struct. The command line
// (upcycle/cli.hpp) and the run configs (read_options here) both read through the table, and a
// stage's checks name keys through OptionError, so either way a mistake is reported by the name
// its user wrote.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace upcycle {

// How a value is written: Switch is a flag (true or false in JSON); TextList one or more texts
// (a JSON list, or a single text); CommaList one text of comma-separated items (in JSON also a
// list of them, joined).
enum class ValueKind { Switch, Integer, Unsigned, Real, Text, TextList, CommaList };

// A mistake in one option or a combination of them. The message may name options through
// option_name(key), which each front end writes its own way.
struct OptionError : std::runtime_error {
  OptionError(std::string key, const std::string& message);
  std::string key;  // the option at fault
};

// A key inside an OptionError's message, marked for render_option_names.
std::string option_name(const std::string& key);

// The message with each marked key written as a flag ("--save-every") or as a key ("save_every").
std::string render_option_names(const std::string& message, bool as_flags);

// A key as a command-line flag: "save_every" -> "--save-every".
std::string option_flag(const std::string& key);

// "a,b,c" as its items; OptionError naming `key` for an empty list or item.
std::vector<std::string> comma_list(const std::string& key, const std::string& text);

template <class S>
struct OptionRow {
  std::string key;
  ValueKind kind;
  std::string help;
  std::function<void(S&, const nlohmann::json&)> set;  // the value is of the kind's JSON type
  std::function<nlohmann::json(const S&)> get;         // null: unset (the option has no default)
};

template <class S>
using OptionTable = std::vector<OptionRow<S>>;

namespace option_detail {

template <class T>
struct Optional : std::false_type {};
template <class T>
struct Optional<std::optional<T>> : std::true_type {
  using type = T;
};

template <class T>
constexpr ValueKind kind_of() {
  if constexpr (std::is_same_v<T, bool>) return ValueKind::Switch;
  else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return ValueKind::Integer;
  else if constexpr (std::is_integral_v<T>) return ValueKind::Unsigned;
  else if constexpr (std::is_floating_point_v<T>) return ValueKind::Real;
  else if constexpr (std::is_same_v<T, std::vector<std::string>> || std::is_same_v<T, std::vector<std::filesystem::path>>)
    return ValueKind::TextList;
  else return ValueKind::Text;  // std::string, std::filesystem::path
}

// A JSON value of the kind's type as T; OptionError(key) when it does not fit T.
template <class T>
T value_as(const std::string& key, const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    using Wide = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;
    const Wide w = v.get<Wide>();
    if (w < Wide(std::numeric_limits<T>::min()) || w > Wide(std::numeric_limits<T>::max()))
      throw OptionError(key, option_name(key) + " " + v.dump() + " is out of range");
    return T(w);
  } else if constexpr (std::is_floating_point_v<T>) {
    return v.get<T>();
  } else if constexpr (kind_of<T>() == ValueKind::TextList) {
    T out;
    for (const auto& item : v) out.emplace_back(item.template get<std::string>());
    return out;
  } else {
    return T(v.get<std::string>());
  }
}

template <class T>
nlohmann::json json_of(const T& value) {
  if constexpr (std::is_same_v<T, std::filesystem::path>) return value.string();
  else if constexpr (std::is_same_v<T, std::vector<std::filesystem::path>>) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : value) out.push_back(p.string());
    return out;
  } else return value;
}

}  // namespace option_detail

// A row over the field `field(s)` returns (a reference into S): bool, integers, floating point,
// std::string, paths, lists of them, or std::optional of one (unset: no default).
template <class S, class Field>
OptionRow<S> option(std::string key, std::string help, Field field) {
  using Ref = std::invoke_result_t<Field, S&>;
  using T = std::remove_cvref_t<Ref>;
  using V = typename std::conditional_t<option_detail::Optional<T>::value, option_detail::Optional<T>,
                                        std::type_identity<T>>::type;
  OptionRow<S> row{std::move(key), option_detail::kind_of<V>(), std::move(help), nullptr, nullptr};
  row.set = [field, key = row.key](S& s, const nlohmann::json& v) { field(s) = option_detail::value_as<V>(key, v); };
  row.get = [field](const S& s) -> nlohmann::json {
    const T& value = field(const_cast<S&>(s));
    if constexpr (option_detail::Optional<T>::value) return value ? option_detail::json_of(*value) : nlohmann::json();
    else return option_detail::json_of(value);
  };
  return row;
}

// A text row read by parse (OptionError naming the key for a text it refuses) and shown by show;
// kind CommaList where parse takes comma-separated items.
template <class S, class Field, class Parse, class Show>
OptionRow<S> text_option(std::string key, std::string help, Field field, Parse parse, Show show,
                         ValueKind kind = ValueKind::Text) {
  OptionRow<S> row{std::move(key), kind, std::move(help), nullptr, nullptr};
  row.set = [field, parse](S& s, const nlohmann::json& v) { field(s) = parse(v.get<std::string>()); };
  row.get = [field, show](const S& s) -> nlohmann::json { return show(field(const_cast<S&>(s))); };
  return row;
}

// The checks every stage makes, as OptionErrors naming the key.
void require_option(bool given, const std::string& key);      // "<key> is required"
void require_positive(double value, const std::string& key);  // "<key> must be positive"
void require_not_negative(double value, const std::string& key);

// A parse function for text_option whose UsageError becomes the option's OptionError.
template <class Parse>
auto as_option(const char* key, Parse parse) {
  return [key, parse](const std::string& text) {
    try {
      return parse(text);
    } catch (const UsageError& e) {
      throw OptionError(key, option_name(key) + ": " + e.what());
    }
  };
}

// The row of `key`; nullptr when the table has none.
template <class S>
const OptionRow<S>* find_option(const OptionTable<S>& table, const std::string& key) {
  for (const OptionRow<S>& row : table)
    if (row.key == key) return &row;
  return nullptr;
}

// Whether a JSON value has the type a kind takes (a TextList also takes a single text).
bool json_fits(ValueKind kind, const nlohmann::json& value);
const char* kind_text(ValueKind kind);  // "an integer", "a list of texts", ...

// A JSON list of texts as one comma-separated text.
std::string joined_list(const nlohmann::json& list);

// A default as a person writes it: 2e-05, not 2.0000000000000002e-05; "" for none.
std::string default_text(const nlohmann::json& value);

// Reads a run config's object of options into `into`: every key must be a row of the table and
// its value of the row's kind (null leaves the option as it is). UsageError naming `where`
// ("run.json: stage convert") and the key.
template <class S>
void read_options(const OptionTable<S>& table, const nlohmann::json& object, S& into, const std::string& where);

// Calls check(options), turning its OptionError into UsageError naming `where` and the key.
template <class S, class Check>
void check_options(const S& options, Check check, const std::string& where);

// UsageError "where: message".
[[noreturn]] void throw_config_error(const std::string& where, const std::string& message);

template <class S>
void read_options(const OptionTable<S>& table, const nlohmann::json& object, S& into, const std::string& where) {
  if (!object.is_object()) throw_config_error(where, "must be an object of the stage's options");
  for (const auto& [key, value] : object.items()) {
    const OptionRow<S>* row = find_option(table, key);
    if (!row) throw_config_error(where, key + " is not an option of this stage");
    if (value.is_null()) continue;
    if (!json_fits(row->kind, value)) throw_config_error(where, key + " must be " + kind_text(row->kind));
    try {
      row->set(into, row->kind == ValueKind::TextList && value.is_string()  ? nlohmann::json::array({value})
                     : row->kind == ValueKind::CommaList && value.is_array() ? nlohmann::json(joined_list(value))
                                                                            : value);
    } catch (const OptionError& e) {
      throw_config_error(where, render_option_names(e.what(), false));
    }
  }
}

template <class S, class Check>
void check_options(const S& options, Check check, const std::string& where) {
  try {
    check(options);
  } catch (const OptionError& e) {
    throw_config_error(where, render_option_names(e.what(), false));
  }
}

}  // namespace upcycle
