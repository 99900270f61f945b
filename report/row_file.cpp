#include "report/row_file.hpp"

#include <cmath>
#include <limits>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "core/staged_path.hpp"

namespace upcycle {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// JSON has no NaN: null stands for it.
json number(double v) { return std::isnan(v) ? json() : json(v); }
double number_of(const json& v) { return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>(); }

json numbers(const std::map<std::string, double>& by_name) {
  json out = json::object();
  for (const auto& [name, v] : by_name) out[name] = number(v);
  return out;
}

std::map<std::string, double> numbers_of(const json& object) {
  std::map<std::string, double> out;
  for (const auto& [name, v] : object.items()) out[name] = number_of(v);
  return out;
}

}  // namespace

void write_row_file(const fs::path& file, const RepeatRow& row) {
  const MethodResult& m = row.result;
  json samples = json::array();
  for (double v : m.exact_by_sample) samples.push_back(number(v));
  const json j = {{"data", row.data},
                  {"repeat", row.repeat},
                  {"seed", row.seed},
                  {"method", m.method},
                  {"experts", m.experts},
                  {"total_params", m.total_params},
                  {"active_params", m.active_params},
                  {"start_loss", number(m.start_loss)},
                  {"eval_loss", number(m.loss)},
                  {"eval_ppl", number(m.ppl)},
                  {"exact", number(m.exact)},
                  {"exact_total", m.exact_total},
                  {"exact_heldout", numbers(m.heldout_exact)},
                  {"exact_by_task", numbers(m.exact_by_task)},
                  {"exact_by_sample", samples},
                  {"seconds", number(m.seconds)},
                  {"dir", m.dir.string()}};
  replace_text_file(file, j.dump(1) + "\n");
}

RepeatRow read_row_file(const fs::path& file) {
  const json j = read_json_file(file);
  RepeatRow row;
  MethodResult& m = row.result;
  try {
    row.data = j.at("data").get<int64_t>();
    row.repeat = j.at("repeat").get<int>();
    row.seed = j.at("seed").get<uint64_t>();
    m.method = j.at("method").get<std::string>();
    m.experts = j.at("experts").get<int>();
    m.total_params = j.at("total_params").get<int64_t>();
    m.active_params = j.at("active_params").get<int64_t>();
    m.start_loss = number_of(j.at("start_loss"));
    m.loss = number_of(j.at("eval_loss"));
    m.ppl = number_of(j.at("eval_ppl"));
    m.exact = number_of(j.at("exact"));
    m.exact_total = j.at("exact_total").get<int64_t>();
    m.heldout_exact = numbers_of(j.at("exact_heldout"));
    m.exact_by_task = numbers_of(j.at("exact_by_task"));
    for (const json& v : j.at("exact_by_sample")) m.exact_by_sample.push_back(number_of(v));
    m.seconds = number_of(j.at("seconds"));
    m.dir = j.at("dir").get<std::string>();
  } catch (const json::exception& e) {
    throw InputError(file, std::string("not a result row: ") + e.what());
  }
  return row;
}

}  // namespace upcycle
