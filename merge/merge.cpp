// Method names, option checks, and the dispatch to each method's loop (method_loops.hpp).
#include "merge/merge.hpp"

#include <cmath>
#include <numeric>
#include <stdexcept>

#include "merge/method_loops.hpp"

namespace upcycle::merge {

namespace {

// Everything merge_tensor promises to reject; returns the weights (all 1 when none are given).
std::vector<double> checked_weights(std::span<float> out, std::span<const std::span<const float>> inputs,
                                    std::span<const float> base, const Options& o, std::string_view key,
                                    uint64_t first) {
  const MethodInfo& m = method_info(o.method);
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("merge " + std::string(m.name) + " of '" + std::string(key) + "': " + what);
  };
  const size_t n = out.size(), count = inputs.size();
  if (count == 0) fail("no inputs");
  for (size_t k = 0; k < count; ++k)
    if (inputs[k].size() != n)
      fail("input " + std::to_string(k) + " has " + std::to_string(inputs[k].size()) + " elements, the output " +
           std::to_string(n));
  if (!base.empty() && base.size() != n)
    fail("the base has " + std::to_string(base.size()) + " elements, the output " + std::to_string(n));
  if (m.needs_base && base.size() != n) fail("needs a base tensor");
  if (m.inputs != 0 && count != size_t(m.inputs))
    fail("needs exactly " + std::to_string(m.inputs) + " inputs, got " + std::to_string(count));
  if (!o.weights.empty() && o.weights.size() != count)
    fail(std::to_string(o.weights.size()) + " weights for " + std::to_string(count) + " inputs");
  std::vector<double> w = o.weights.empty() ? std::vector<double>(count, 1.0) : o.weights;
  for (double x : w)
    if (!std::isfinite(x)) fail("a weight is not finite");
  if (m.normalised && std::accumulate(w.begin(), w.end(), 0.0) == 0) fail("the weights sum to 0");
  if (m.params.density && !(o.density > 0 && o.density <= 1))
    fail("density " + std::to_string(o.density) + " is outside (0, 1]");
  if (m.params.drop_rate && !(o.drop_rate >= 0 && o.drop_rate < 1))
    fail("drop_rate " + std::to_string(o.drop_rate) + " is outside [0, 1)");
  if (m.params.lambda && !std::isfinite(o.lambda)) fail("lambda is not finite");
  if (first != 0 && !m.by_element) fail("merges whole tensors only, not a part from element " + std::to_string(first));
  return w;
}

std::vector<float> scaled(const std::vector<double>& w, double factor) {
  std::vector<float> out;
  for (double x : w) out.push_back(float(x * factor));
  return out;
}

std::vector<detail::DropMask> drop_masks(size_t count, const Options& o, std::string_view key, uint64_t first) {
  std::vector<detail::DropMask> masks;
  for (size_t k = 0; k < count; ++k) masks.emplace_back(o.seed, key, k, o.drop_rate, first);
  return masks;
}

}  // namespace

std::optional<Method> parse_method(std::string_view name) {
  for (const MethodInfo& m : kMethods)
    if (name == m.name) return m.method;
  return std::nullopt;
}

std::string method_names() {
  std::string out;
  for (const MethodInfo& m : kMethods) out += (out.empty() ? "" : ", ") + std::string(m.name);
  return out;
}

void merge_tensor(std::span<float> out, std::span<const std::span<const float>> inputs, std::span<const float> base,
                  const Options& opts, std::string_view key, uint64_t first) {
  const std::vector<double> w = checked_weights(out, inputs, base, opts, key, first);
  switch (opts.method) {
    case Method::Linear:
      return detail::weighted_mean(out, inputs, scaled(w, 1 / std::accumulate(w.begin(), w.end(), 0.0)));
    case Method::TaskArithmetic:
      return detail::delta_sum(out, inputs, base, scaled(w, opts.lambda), {});
    case Method::Dare:
      return detail::delta_sum(out, inputs, base, scaled(w, opts.lambda / (1 - opts.drop_rate)),
                               drop_masks(inputs.size(), opts, key, first));
    case Method::Ties: {
      const auto keep = size_t(std::llround(opts.density * double(out.size())));
      return detail::sign_elect(out, inputs, base, scaled(w, 1), float(opts.lambda), 1.0f,
                                detail::top_magnitudes(inputs, base, keep), {});
    }
    case Method::DareTies:
      return detail::sign_elect(out, inputs, base, scaled(w, 1), float(opts.lambda), float(1 / (1 - opts.drop_rate)),
                                {}, drop_masks(inputs.size(), opts, key, first));
    case Method::Slerp:
      return detail::slerp(out, inputs[0], inputs[1], w[1] / (w[0] + w[1]));
  }
}

}  // namespace upcycle::merge
