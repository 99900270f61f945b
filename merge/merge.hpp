// Merge operators, applied tensor by tensor: the same element of K input tensors (and of a base,
// for the methods that work on deltas from it) goes into one output element.
//   linear          out = Σ w_k x_k / Σ w_k                       (normalised weighted mean)
//   task_arithmetic out = base + λ Σ w_k (x_k − base)
//   ties            trim each delta d_k = x_k − base to its round(density·n) largest elements
//                   by magnitude (elements tied at the threshold are kept in index order, so
//                   exactly that many survive), elect each element's sign as that of Σ w_k d_k,
//                   then the disjoint mean: base + λ Σ_{k agrees} w_k d_k / Σ_{k agrees} w_k,
//                   where k agrees when d_k ≠ 0 has the elected sign (base where none agrees,
//                   a zero sum Σ w_k d_k included, or the agreeing weights sum to 0)
//   dare            drop each delta element with probability p, rescale survivors by 1/(1−p):
//                   base + λ Σ w_k d̃_k, weights not normalised (UpIT's merge, with a + b = 1)
//   dare_ties       DARE's masks and rescaling (no magnitude trim), then TIES's sign election
//                   and disjoint mean
//   slerp           two inputs, t = w_1 / (w_0 + w_1): spherical interpolation of the flattened
//                   tensors, (1−t)x_0 + t x_1 when either is zero or |cos Ω| > 0.9995
// Per element the arithmetic is fp32 (sums over inputs in input order); SLERP's dot products are
// fp64. The output is bit-identical for any OpenMP thread count.
// Randomness (DARE's masks) comes from the seed and the tensor's key alone, never from the
// order or thread that merges it, so a fixed seed gives the same bits every time: input k's
// element i is dropped when its uniform draw, bits of a counter-based splitmix64 stream keyed by
// (seed, "<key>/input <k>") (merge/method_loops.hpp's DropMask), is below p.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/enum_table.hpp"

namespace upcycle::merge {

enum class Method { Linear, TaskArithmetic, Ties, Dare, DareTies, Slerp };

// The Options fields a method reads besides the weights (drop_rate brings the seed with it).
struct Params {
  bool density = false, drop_rate = false, lambda = false;
};

// The registry: a row per method, read by parse_method, the checks, the help and the errors.
struct MethodInfo {
  Method method;
  std::string_view name;
  bool needs_base = false;  // merges deltas from a base
  // Whether each output element depends on the same element of the inputs alone, so a tensor
  // can be merged a part at a time (ties ranks the whole tensor, slerp measures its angle).
  bool by_element = false;
  bool normalised = false;  // divides by the sum of all the weights, which must not be 0
  int inputs = 0;           // exactly this many inputs; 0: any number
  Params params = {};
};

inline constexpr MethodInfo kMethods[] = {
    {.method = Method::Linear, .name = "linear", .by_element = true, .normalised = true},
    {.method = Method::TaskArithmetic, .name = "task_arithmetic", .needs_base = true, .by_element = true,
     .params = {.lambda = true}},
    {.method = Method::Ties, .name = "ties", .needs_base = true, .params = {.density = true, .lambda = true}},
    {.method = Method::Dare, .name = "dare", .needs_base = true, .by_element = true,
     .params = {.drop_rate = true, .lambda = true}},
    {.method = Method::DareTies, .name = "dare_ties", .needs_base = true, .by_element = true,
     .params = {.drop_rate = true, .lambda = true}},
    {.method = Method::Slerp, .name = "slerp", .normalised = true, .inputs = 2},
};
static_assert(one_row_per_enumerator(kMethods, &MethodInfo::method, Method::Slerp), "a row per method, in order");

constexpr const MethodInfo& method_info(Method m) { return kMethods[size_t(m)]; }
// The method of a row's name; nullopt for any other name.
std::optional<Method> parse_method(std::string_view name);
// "linear, task_arithmetic, ..., slerp": every name, for help texts and errors.
std::string method_names();

struct Options {
  Method method = Method::Linear;
  std::vector<double> weights = {};  // one per input (empty: all 1); "= {}" spares Options{m} a warning
  double density = 0.5;              // ties: the fraction of each delta kept by magnitude
  double drop_rate = 0.5;            // dare, dare_ties: p
  double lambda = 1.0;               // the delta methods: scale of the merged delta
  uint64_t seed = 0;                 // dare, dare_ties: with the key, picks the masks
};

// out[n] from inputs[k][n] (all the same length), base[n] for the delta methods (empty
// otherwise; linear and slerp ignore it). `out` may be exactly one of the inputs or the base
// (merging in place), not a shifted overlap. `key` names the tensor (and anything else that
// should draw its own masks, such as an expert's index) for the random streams.
// std::invalid_argument for no inputs, mismatched lengths, a missing base, slerp with other than
// two inputs, weights of the wrong count, not finite or summing to 0 (linear, slerp), or the
// options a method uses out of range (ties: density in (0, 1]; dare, dare_ties: drop_rate in
// [0, 1); the delta methods: lambda finite), or a part (`first`) it cannot merge.
// `first` > 0: the spans are elements [first, first + out.size()) of the tensor (by a
// method that merges by_element), merged exactly as those elements of the whole tensor are.
void merge_tensor(std::span<float> out, std::span<const std::span<const float>> inputs, std::span<const float> base,
                  const Options& opts, std::string_view key, uint64_t first = 0);

}  // namespace upcycle::merge
