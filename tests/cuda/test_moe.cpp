// The MoE block on the GPU: the permutation exactly the CPU's, forward and backward against the
// CPU op in double on the same (bf16-rounded) inputs, frozen experts, and the same bits twice.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "cuda/ops/moe.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/moe.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// bf16: MoeSaved keeps gate, up, act and y in bf16, and backward's d_y, d_act, d_gate, d_up and
// per-slot d_x rows are bf16 too (the CPU op keeps them all in T): a chain of up to eight
// roundings of up to 2^-8 each, carried on and summed by the GEMMs, against a double reference
// that rounds nothing. A simulation of exactly this chain on these shapes (120 runs) gave at
// most 4e-2 in check_close's measure (median 2e-2); each single stage holds 1e-2 (test_matmul,
// test_swiglu). Index or ordering bugs show as errors of order 1 either way.
template <class T>
double moe_tolerance() {
  return std::is_same_v<T, bf16> ? 6e-2 : tolerance<float>();
}

void check_grouping(int64_t N, int64_t k, int64_t E, const std::vector<int32_t>& idx) {
  const size_t rows = size_t(N * k);
  std::vector<int32_t> order(rows), row_of(rows);
  std::vector<int64_t> offsets(size_t(E + 1));
  ops::group_by_expert(order.data(), row_of.data(), offsets.data(), idx.data(), N, k, E);

  const auto g_idx = to_device_ints(idx);
  auto g_order = poisoned<int32_t>(rows), g_row_of = poisoned<int32_t>(rows);
  auto g_offsets = poisoned<int64_t>(size_t(E + 1));
  cuda::group_by_expert(g_order.data(), g_row_of.data(), g_offsets.data(), g_idx.data(), N, k, E);
  CHECK(g_order.download() == order);
  CHECK(g_row_of.download() == row_of);
  CHECK(g_offsets.download() == offsets);
}

constexpr float kStart = 0.05f;  // added-into gradients start at about the size of what is added

struct Wanted {
  bool x = true, w = true, gate = true, up = true, down = true;
};

template <class F>
struct Results {
  std::vector<F> out, d_x, d_w;
  std::vector<F> grads[3];  // gate, up, down: each expert's after the other
  std::vector<int64_t> offsets;
};

// One MoE problem: seeded inputs, experts scaled 1/√fan-in as in a model, gradients' starts;
// run by the CPU op in double or by the GPU op in T.
template <class T>
class Moe {
 public:
  Moe(const ops::MoeShape& shape, std::vector<int32_t> idx, uint64_t seed) : shape_(shape), idx_(std::move(idx)) {
    const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, k = shape.top_k;
    const float reach[3] = {1 / std::sqrt(float(H)), 1 / std::sqrt(float(H)), 1 / std::sqrt(float(I))};
    for (int64_t e = 0; e < shape.experts; ++e)
      for (int p = 0; p < 3; ++p) {
        weights_[p].push_back(stored<T>(uniform(size_t(I * H), seed + 3 * e + p, -reach[p], reach[p])));
        grad_starts_[p].push_back(uniform(size_t(I * H), seed + 500 + 3 * e + p, -kStart, kStart));
      }
    x_ = stored<T>(uniform(size_t(N * H), seed + 100));
    d_out_ = stored<T>(uniform(size_t(N * H), seed + 101));
    w_ = uniform(size_t(N * k), seed + 102, 0.1f, 1.f);
    d_x0_ = stored<T>(uniform(size_t(N * H), seed + 103, -kStart, kStart));
    d_w0_ = uniform(size_t(N * k), seed + 104, -kStart, kStart);
  }

  Results<double> cpu(Wanted wanted) const {
    std::vector<std::vector<double>> weights[3], grads[3];
    std::vector<const double*> wp[3];
    std::vector<double*> gp[3];
    for (int p = 0; p < 3; ++p) {
      for (size_t e = 0; e < weights_[p].size(); ++e) {
        weights[p].push_back(widen(weights_[p][e]));
        grads[p].push_back(widen(grad_starts_[p][e]));
      }
      for (size_t e = 0; e < weights_[p].size(); ++e) {
        wp[p].push_back(weights[p][e].data());
        gp[p].push_back(grads[p][e].data());
      }
    }
    const ops::ExpertWeights<double> experts{wp[0].data(), wp[1].data(), wp[2].data()};
    const ops::ExpertGrads<double> d_experts{wanted.gate ? gp[0].data() : nullptr, wanted.up ? gp[1].data() : nullptr,
                                             wanted.down ? gp[2].data() : nullptr};
    const std::vector<double> x = widen(x_), d_out = widen(d_out_), w = widen(w_);
    Results<double> r;
    r.out.resize(x.size());
    r.d_x = widen(d_x0_);
    r.d_w = widen(d_w0_);
    ops::MoeSaved<double> saved;
    ops::moe_forward(r.out.data(), saved, x.data(), idx_.data(), w.data(), experts, shape_);
    ops::moe_backward(wanted.x ? r.d_x.data() : nullptr, wanted.w ? r.d_w.data() : nullptr, d_experts, d_out.data(),
                      w.data(), experts, saved, shape_);
    for (int p = 0; p < 3; ++p)
      for (const auto& g : grads[p]) r.grads[p].insert(r.grads[p].end(), g.begin(), g.end());
    r.offsets = saved.offsets;
    return r;
  }

  Results<float> gpu(Wanted wanted) const {
    std::vector<cuda::DeviceBuffer<T>> weights[3];
    std::vector<cuda::DeviceBuffer<float>> grads[3];
    std::vector<const T*> wp[3];
    std::vector<float*> gp[3];
    for (int p = 0; p < 3; ++p) {
      for (size_t e = 0; e < weights_[p].size(); ++e) {
        weights[p].push_back(to_device<T>(weights_[p][e]));
        grads[p].push_back(to_device<float>(grad_starts_[p][e]));
      }
      for (size_t e = 0; e < weights_[p].size(); ++e) {
        wp[p].push_back(weights[p][e].data());
        gp[p].push_back(grads[p][e].data());
      }
    }
    const cuda::ExpertWeights<T> experts{wp[0].data(), wp[1].data(), wp[2].data()};
    const cuda::ExpertGrads d_experts{wanted.gate ? gp[0].data() : nullptr, wanted.up ? gp[1].data() : nullptr,
                                      wanted.down ? gp[2].data() : nullptr};
    const auto x = to_device<T>(x_), d_out = to_device<T>(d_out_);
    const auto w = to_device<float>(w_);
    const auto idx = to_device_ints(idx_);
    auto out = poisoned<T>(x_.size());
    auto d_x = to_device<T>(d_x0_);
    auto d_w = to_device<float>(d_w0_);
    cuda::MoeSaved<T> saved;
    cuda::moe_forward<T>(out.data(), saved, x.data(), idx.data(), w.data(), experts, shape_);
    cuda::moe_backward<T>(wanted.x ? d_x.data() : nullptr, wanted.w ? d_w.data() : nullptr, d_experts, d_out.data(),
                          w.data(), experts, saved, shape_);
    Results<float> r;
    r.out = to_host(out);
    r.d_x = to_host(d_x);
    r.d_w = to_host(d_w);
    for (int p = 0; p < 3; ++p)
      for (const auto& g : grads[p]) {
        const std::vector<float> h = to_host(g);
        r.grads[p].insert(r.grads[p].end(), h.begin(), h.end());
      }
    r.offsets = saved.host_offsets;
    return r;
  }

 private:
  ops::MoeShape shape_;
  std::vector<int32_t> idx_;
  std::vector<std::vector<float>> weights_[3], grad_starts_[3];  // gate [I,H], up [I,H], down [H,I] per expert
  std::vector<float> x_, d_out_, w_, d_x0_, d_w0_;
};

template <class T>
void check_moe(const ops::MoeShape& shape, const std::vector<int32_t>& idx, Wanted wanted, uint64_t seed) {
  const Moe<T> moe(shape, idx, seed);
  const Results<double> want = moe.cpu(wanted);
  const Results<float> got = moe.gpu(wanted);
  const double tol = moe_tolerance<T>();
  CHECK(got.offsets == want.offsets);
  check_close(widen(got.out), want.out, tol, "out");
  if (wanted.x) check_close(widen(got.d_x), want.d_x, tol, "d_x");
  if (wanted.w) check_close(widen(got.d_w), want.d_w, tol, "d_w");
  if (wanted.gate) check_close(widen(got.grads[0]), want.grads[0], tol, "d_gate");
  if (wanted.up) check_close(widen(got.grads[1]), want.grads[1], tol, "d_up");
  if (wanted.down) check_close(widen(got.grads[2]), want.grads[2], tol, "d_down");
}

}  // namespace

TEST_CASE("moe: group_by_expert on the device equals the CPU's, stable, an expert without tokens included") {
  check_grouping(37, 2, 8, routing(37, 2, 8, 5, 1));
  check_grouping(37, 1, 4, routing(37, 1, 4, 0, 2));
  check_grouping(1000, 2, 64, routing(1000, 2, 64, 17, 3));
  check_grouping(1250, 4, 8, uniform_ints(5000, 4, 0, 8));  // repeated experts within a token too
  check_grouping(3, 2, 4, {2, 0, 0, 1, 2, 1});
  check_grouping(5, 2, 1, std::vector<int32_t>(10, 0));
  check_grouping(0, 2, 8, {});  // offsets all zero
  CHECK_THROWS_AS(cuda::group_by_expert(nullptr, nullptr, nullptr, nullptr, int64_t(1) << 31, 1, 8),
                  std::invalid_argument);
}

TEST_CASE("moe: forward and backward against the CPU, E = 8 top-2 with an idle expert, float and bf16") {
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 129, .experts = 8, .top_k = 2};
  check_moe<float>(shape, routing(37, 2, 8, 3, 10), {}, 11);
  check_moe<bf16>(shape, routing(37, 2, 8, 6, 12), {}, 13);
}

TEST_CASE("moe: forward and backward against the CPU, E = 4 top-1 with an idle expert, float and bf16") {
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 129, .experts = 4, .top_k = 1};
  check_moe<float>(shape, routing(37, 1, 4, 2, 20), {}, 21);
  check_moe<bf16>(shape, routing(37, 1, 4, 0, 22), {}, 23);
}

TEST_CASE("moe: frozen experts (null gradient arrays) and d_x or d_w not wanted") {
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 129, .experts = 8, .top_k = 2};
  const std::vector<int32_t> idx = routing(37, 2, 8, 1, 30);
  check_moe<float>(shape, idx, {.gate = false, .up = false, .down = false}, 31);
  check_moe<float>(shape, idx, {.x = false, .w = false}, 32);
  check_moe<bf16>(shape, idx, {.gate = false, .down = false}, 33);
  check_moe<bf16>(shape, idx, {.x = false, .up = false}, 34);
}

TEST_CASE("moe: the same routing and inputs give the same bits") {
  const ops::MoeShape shape{.tokens = 256, .hidden = 128, .inter = 352, .experts = 8, .top_k = 2};
  const std::vector<int32_t> idx = routing(256, 2, 8, 7, 40);
  auto check_twice = [&]<class T>(std::type_identity<T>) {
    const Moe<T> moe(shape, idx, 41);
    const Results<float> a = moe.gpu({}), b = moe.gpu({});
    CHECK(same_bits(a.out, b.out));
    CHECK(same_bits(a.d_x, b.d_x));
    CHECK(same_bits(a.d_w, b.d_w));
    for (int p = 0; p < 3; ++p) CHECK(same_bits(a.grads[p], b.grads[p]));
  };
  check_twice(std::type_identity<float>{});
  check_twice(std::type_identity<bf16>{});
}

TEST_CASE("moe: no tokens does nothing") {
  const ops::MoeShape shape{.tokens = 0, .hidden = 8, .inter = 16, .experts = 4, .top_k = 2};
  const cuda::ExpertWeights<bf16> experts{nullptr, nullptr, nullptr};
  cuda::MoeSaved<bf16> saved;
  CHECK_NOTHROW(cuda::moe_forward<bf16>(nullptr, saved, nullptr, nullptr, nullptr, experts, shape));
  CHECK_NOTHROW(cuda::moe_backward<bf16>(nullptr, nullptr, {}, nullptr, nullptr, experts, saved, shape));
}

}  // namespace upcycle::test
