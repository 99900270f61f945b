// A stage's options as one table: rows over fields, JSON read through it, errors naming keys.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "core/option_table.hpp"

using namespace upcycle;
using json = nlohmann::json;

namespace {

struct Opts {
  int64_t steps = 5;
  uint64_t seed = 0;
  int experts = 8;
  double lr = 2e-5;
  std::string name = "auto";
  std::optional<std::filesystem::path> data;
  std::vector<std::filesystem::path> files;
  bool quick = false;
  std::vector<std::string> parts;  // a comma-separated text on the command line
};

const OptionTable<Opts>& table() {
  static const OptionTable<Opts> t = {
      option<Opts>("steps", "steps", [](Opts& o) -> auto& { return o.steps; }),
      option<Opts>("seed", "seed", [](Opts& o) -> auto& { return o.seed; }),
      option<Opts>("experts", "experts", [](Opts& o) -> auto& { return o.experts; }),
      option<Opts>("lr", "lr", [](Opts& o) -> auto& { return o.lr; }),
      option<Opts>("name", "name", [](Opts& o) -> auto& { return o.name; }),
      option<Opts>("data", "data", [](Opts& o) -> auto& { return o.data; }),
      option<Opts>("files", "files", [](Opts& o) -> auto& { return o.files; }),
      option<Opts>("quick", "quick", [](Opts& o) -> auto& { return o.quick; }),
      text_option<Opts>(
          "parts", "parts", [](Opts& o) -> auto& { return o.parts; },
          [](const std::string& text) { return comma_list("parts", text); }, joined_list, ValueKind::CommaList),
  };
  return t;
}

void check(const Opts& o) {
  if (o.steps < 1) throw OptionError("steps", option_name("steps") + " must be positive, or give " + option_name("quick"));
}

std::string read_error(const json& j) {
  Opts o;
  try {
    read_options(table(), j, o, "run.json: stage tune");
    check_options(o, check, "run.json: stage tune");
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("option table: rows take their kind from the field, and show its default") {
  const Opts d;
  CHECK(find_option(table(), "steps")->kind == ValueKind::Integer);
  CHECK(find_option(table(), "seed")->kind == ValueKind::Unsigned);
  CHECK(find_option(table(), "lr")->kind == ValueKind::Real);
  CHECK(find_option(table(), "data")->kind == ValueKind::Text);
  CHECK(find_option(table(), "files")->kind == ValueKind::TextList);
  CHECK(find_option(table(), "quick")->kind == ValueKind::Switch);
  CHECK(find_option(table(), "nope") == nullptr);
  CHECK(default_text(find_option(table(), "lr")->get(d)) == "2e-05");
  CHECK(default_text(find_option(table(), "name")->get(d)) == "auto");
  CHECK(find_option(table(), "data")->get(d).is_null());  // an unset optional has no default
}

TEST_CASE("option table: a config object sets the fields it names and leaves the others") {
  Opts o;
  read_options(table(), json{{"steps", 12}, {"lr", 3e-3}, {"data", "t.jsonl"}, {"files", "a"}, {"quick", true}}, o, "where");
  CHECK(o.steps == 12);
  CHECK(o.lr == 3e-3);
  CHECK(o.data == std::filesystem::path("t.jsonl"));
  CHECK(o.files == std::vector<std::filesystem::path>{"a"});  // a single text is a list of one
  CHECK(o.quick);
  CHECK(o.experts == 8);
  read_options(table(), json{{"files", {"b", "c"}}, {"lr", 1}}, o, "where");
  CHECK(o.files.size() == 2);
  CHECK(o.lr == 1.0);  // an integer is a number
  // A comma-separated option takes a JSON list too (a run config's "freeze": ["norms",
  // "attention"] failed before, issue 25).
  read_options(table(), json{{"parts", {"norms", "attention"}}}, o, "where");
  CHECK(o.parts == std::vector<std::string>{"norms", "attention"});
  read_options(table(), json{{"parts", "router,norms"}}, o, "where");
  CHECK(o.parts == std::vector<std::string>{"router", "norms"});
}

TEST_CASE("option table: a config's mistakes name the stage and the key") {
  CHECK(read_error(json{{"stesp", 3}}) == "run.json: stage tune: stesp is not an option of this stage");
  CHECK(read_error(json{{"steps", "3"}}) == "run.json: stage tune: steps must be an integer");
  CHECK(read_error(json{{"seed", -1}}) == "run.json: stage tune: seed must be a non-negative integer");
  CHECK(read_error(json{{"experts", int64_t(1) << 40}}) == "run.json: stage tune: experts 1099511627776 is out of range");
  CHECK(read_error(json{{"files", {"a", 2}}}) == "run.json: stage tune: files must be a string or a list of strings");
  CHECK(read_error(json{{"quick", 1}}) == "run.json: stage tune: quick must be true or false");
  CHECK(read_error(json{{"parts", {"a", 2}}}) ==
        "run.json: stage tune: parts must be a comma-separated string or a list of strings");
  CHECK(read_error(json::array()) == "run.json: stage tune: must be an object of the stage's options");
  CHECK(read_error(json{{"steps", 0}}) == "run.json: stage tune: steps must be positive, or give quick");
  CHECK(read_error(json{{"steps", 2}}).empty());
}

TEST_CASE("option table: names in a message are written as flags or as keys") {
  const std::string m = option_name("save_every") + " and " + option_name("stop_at") + " clash";
  CHECK(render_option_names(m, true) == "--save-every and --stop-at clash");
  CHECK(render_option_names(m, false) == "save_every and stop_at clash");
  CHECK(render_option_names("no names", true) == "no names");
  CHECK(option_flag("max_new_tokens") == "--max-new-tokens");
}
