// The LoRA-MoE block on the GPU against the CPU op (trainer/ops/lora_moe.hpp) on the same inputs:
// terms of different ranks and scales, an expert without tokens, experts without a term on a
// matrix, dropout on two terms, gradients not wanted, the same bits twice, and no tokens.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "cuda/ops/lora_moe.hpp"
#include "cuda_check.hpp"
#include "trainer/ops/lora_moe.hpp"

namespace upcycle::test {

namespace {

using cuda::bf16;

// float: tolerance<float>(); the CPU op is float too, and the two differ only in their sums' order
// (test_moe.cpp holds the same chain to it against double).
// bf16: the GPU keeps gate, up, y and every [N·k, ·] gradient in bf16, as cuda::moe_backward
// does, so a value meets up to eight roundings of up to 2^-8 between input and output, against a
// CPU op in float. A simulation of exactly this chain on these shapes (1000 runs) gave at most
// 4.7e-2 in check_close's measure (medians 1e-2 to 2e-2); test_moe.cpp takes 6e-2 for its like
// chain. The float runs at 1e-5 are where a wrong scale or mask shows in every output; at 6e-2 a
// bf16 run still sees one in the affected term's d_a and d_b, which it changes by 10% or more.
template <class T>
double lora_moe_tolerance() {
  return std::is_same_v<T, bf16> ? 6e-2 : tolerance<float>();
}

constexpr float kStart = 0.05f;  // added-into gradients start at about the size of what is added

// Terms per matrix (gate, up, down): ranks and scales that differ, so a mix-up between matrices
// shows; expert 1 has no term on down and expert 2 none on gate; two terms drop their input.
constexpr int64_t kRank[3] = {3, 5, 3};
constexpr float kScale[3] = {1.5f, 0.75f, 1.0f};
bool has_term(size_t m, int64_t e) { return !((m == 2 && e == 1) || (m == 0 && e == 2)); }
ops::LoraDropout dropout_of(size_t m, int64_t e) {
  if (m == 1 && e == 0) return {0.25f, 91};
  if (m == 2 && e == 2) return {0.1f, 92};
  return {};
}

struct Wanted {
  bool x = true, w = true, a = true, b = true;  // d_x, d_w, and every term's d_a, d_b
};

struct Results {
  std::vector<float> out, d_x, d_w;
  std::array<std::vector<float>, 3> d_a, d_b;  // per matrix, each term's after the other
  std::vector<int64_t> offsets;
};

// One term's A [r,in] and B [out,r] and their gradients' starts.
struct Factors {
  std::vector<float> a, b, d_a, d_b;
};

// One LoRA-MoE problem: seeded inputs, the base scaled 1/√fan-in as in a model, A and B so that a
// term is about half the base's product; run by the CPU op in float or by the GPU op in T.
template <class T>
class LoraMoe {
 public:
  LoraMoe(const ops::MoeShape& shape, std::vector<int32_t> idx, uint64_t seed) : shape_(shape), idx_(std::move(idx)) {
    const int64_t N = shape.tokens, H = shape.hidden, I = shape.inter, k = shape.top_k;
    gate_ = stored<T>(uniform(size_t(I * H), seed, -1 / std::sqrt(float(H)), 1 / std::sqrt(float(H))));
    up_ = stored<T>(uniform(size_t(I * H), seed + 1, -1 / std::sqrt(float(H)), 1 / std::sqrt(float(H))));
    down_ = stored<T>(uniform(size_t(H * I), seed + 2, -1 / std::sqrt(float(I)), 1 / std::sqrt(float(I))));
    uint64_t s = seed + 10;
    for (size_t m = 0; m < 3; ++m)
      for (int64_t e = 0; e < shape.experts; ++e) {
        Factors& f = factors_[m].emplace_back();
        if (!has_term(m, e)) continue;
        const int64_t in = m == 2 ? I : H, out = m == 2 ? H : I, r = kRank[m];
        // Rounded for a bf16 run: the GPU multiplies by bf16 copies of A and B (cuda/ops/lora.hpp).
        f.a = stored<T>(uniform(size_t(r * in), s++, -1 / std::sqrt(float(in)), 1 / std::sqrt(float(in))));
        f.b = stored<T>(uniform(size_t(out * r), s++, -1 / std::sqrt(float(r)), 1 / std::sqrt(float(r))));
        f.d_a = uniform(f.a.size(), s++, -kStart, kStart);
        f.d_b = uniform(f.b.size(), s++, -kStart, kStart);
      }
    x_ = stored<T>(uniform(size_t(N * H), seed + 100));
    d_out_ = stored<T>(uniform(size_t(N * H), seed + 101));
    w_ = uniform(size_t(N * k), seed + 102, 0.1f, 1.f);
    d_x0_ = stored<T>(uniform(size_t(N * H), seed + 103, -kStart, kStart));
    d_w0_ = uniform(size_t(N * k), seed + 104, -kStart, kStart);
  }

  Results cpu(Wanted wanted) const {
    auto grads = factors_;  // added into
    std::array<std::vector<ops::LowRankTerm>, 3> terms;
    for (size_t m = 0; m < 3; ++m)
      for (size_t e = 0; e < grads[m].size(); ++e) {
        Factors& f = grads[m][e];
        if (f.a.empty()) {
          terms[m].emplace_back();
          continue;
        }
        terms[m].push_back({f.a.data(), f.b.data(), kScale[m], kRank[m], wanted.a ? f.d_a.data() : nullptr,
                            wanted.b ? f.d_b.data() : nullptr, dropout_of(m, int64_t(e))});
      }
    const int64_t H = shape_.hidden, I = shape_.inter;
    const ops::LoraExperts experts{matrix(gate_, I, H), matrix(up_, I, H), matrix(down_, H, I),
                                   terms[0].data(),     terms[1].data(),   terms[2].data()};
    Results r;
    r.out.resize(x_.size());
    r.d_x = d_x0_;
    r.d_w = d_w0_;
    ops::LoraMoeSaved saved;
    ops::lora_moe_forward(r.out.data(), saved, x_.data(), idx_.data(), w_.data(), experts, shape_);
    ops::lora_moe_backward(wanted.x ? r.d_x.data() : nullptr, wanted.w ? r.d_w.data() : nullptr, d_out_.data(),
                           w_.data(), experts, saved, shape_);
    for (size_t m = 0; m < 3; ++m)
      for (const Factors& f : grads[m]) {
        r.d_a[m].insert(r.d_a[m].end(), f.d_a.begin(), f.d_a.end());
        r.d_b[m].insert(r.d_b[m].end(), f.d_b.begin(), f.d_b.end());
      }
    r.offsets = saved.offsets;
    return r;
  }

  Results gpu(Wanted wanted) const {
    std::array<std::vector<std::array<cuda::DeviceBuffer<float>, 4>>, 3> device;  // a, b, d_a, d_b
    std::array<std::vector<cuda::LowRankTerm>, 3> terms;
    for (size_t m = 0; m < 3; ++m)
      for (size_t e = 0; e < factors_[m].size(); ++e) {
        const Factors& f = factors_[m][e];
        auto& d = device[m].emplace_back();
        if (f.a.empty()) {
          terms[m].push_back({});
          continue;
        }
        d = {to_device<float>(f.a), to_device<float>(f.b), to_device<float>(f.d_a), to_device<float>(f.d_b)};
        terms[m].push_back({d[0].data(), d[1].data(), kScale[m], kRank[m], wanted.a ? d[2].data() : nullptr,
                            wanted.b ? d[3].data() : nullptr, dropout_of(m, int64_t(e))});
      }
    const auto gate = to_device<T>(gate_), up = to_device<T>(up_), down = to_device<T>(down_);
    const cuda::LoraExperts<T> experts{gate.data(),     up.data(),       down.data(),
                                       terms[0].data(), terms[1].data(), terms[2].data()};
    const auto x = to_device<T>(x_), d_out = to_device<T>(d_out_);
    const auto w = to_device<float>(w_);
    const auto idx = to_device_ints(idx_);
    auto out = poisoned<T>(x_.size());
    auto d_x = to_device<T>(d_x0_);
    auto d_w = to_device<float>(d_w0_);
    cuda::LoraMoeSaved<T> saved;
    cuda::lora_moe_forward<T>(out.data(), saved, x.data(), idx.data(), w.data(), experts, shape_);
    cuda::lora_moe_backward<T>(wanted.x ? d_x.data() : nullptr, wanted.w ? d_w.data() : nullptr, d_out.data(),
                               w.data(), experts, saved, shape_);
    Results r;
    r.out = to_host(out);
    r.d_x = to_host(d_x);
    r.d_w = to_host(d_w);
    for (size_t m = 0; m < 3; ++m)
      for (auto& d : device[m]) {
        if (d[0].empty()) continue;
        const std::vector<float> d_a = to_host(d[2]), d_b = to_host(d[3]);
        r.d_a[m].insert(r.d_a[m].end(), d_a.begin(), d_a.end());
        r.d_b[m].insert(r.d_b[m].end(), d_b.begin(), d_b.end());
      }
    r.offsets = saved.host_offsets;
    return r;
  }

 private:
  static ops::StoredMatrix matrix(const std::vector<float>& W, int64_t rows, int64_t cols) {
    return {DType::F32, reinterpret_cast<const std::byte*>(W.data()), rows, cols};
  }

  ops::MoeShape shape_;
  std::vector<int32_t> idx_;
  std::vector<float> gate_, up_, down_;          // the base: gate [I,H], up [I,H], down [H,I]
  std::array<std::vector<Factors>, 3> factors_;  // [matrix][expert]; no a: no term
  std::vector<float> x_, d_out_, w_, d_x0_, d_w0_;
};

template <class T>
void check_lora_moe(const ops::MoeShape& shape, const std::vector<int32_t>& idx, Wanted wanted, uint64_t seed) {
  const LoraMoe<T> moe(shape, idx, seed);
  const Results want = moe.cpu(wanted), got = moe.gpu(wanted);
  const double tol = lora_moe_tolerance<T>();
  CHECK(got.offsets == want.offsets);
  check_close(got.out, want.out, tol, "out");
  check_close(got.d_x, want.d_x, tol, "d_x");  // unwanted: both at their start
  check_close(got.d_w, want.d_w, tol, "d_w");
  const char* names[3] = {"gate", "up", "down"};
  for (size_t m = 0; m < 3; ++m) {
    check_close(got.d_a[m], want.d_a[m], tol, std::string("d_a ") + names[m]);
    check_close(got.d_b[m], want.d_b[m], tol, std::string("d_b ") + names[m]);
  }
}

}  // namespace

TEST_CASE("lora_moe: forward and backward against the CPU, E = 4 top-2 with an idle expert, float and bf16") {
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 37, .experts = 4, .top_k = 2};
  check_lora_moe<float>(shape, routing(37, 2, 4, 3, 10), {}, 11);
  check_lora_moe<bf16>(shape, routing(37, 2, 4, 3, 12), {}, 13);
}

TEST_CASE("lora_moe: forward and backward against the CPU, E = 4 top-1 with an idle expert, float and bf16") {
  // Expert 0 idle: its up term's dropout and the others' terms run on experts 1 to 3 alone.
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 37, .experts = 4, .top_k = 1};
  check_lora_moe<float>(shape, routing(37, 1, 4, 0, 20), {}, 21);
  check_lora_moe<bf16>(shape, routing(37, 1, 4, 0, 22), {}, 23);
}

TEST_CASE("lora_moe: gradients not wanted (null d_x, d_w, d_a or d_b) are left alone, the others still right") {
  const ops::MoeShape shape{.tokens = 37, .hidden = 65, .inter = 37, .experts = 4, .top_k = 2};
  const std::vector<int32_t> idx = routing(37, 2, 4, 1, 30);
  check_lora_moe<float>(shape, idx, {.x = false, .w = false}, 31);
  check_lora_moe<float>(shape, idx, {.a = false}, 32);
  check_lora_moe<bf16>(shape, idx, {.x = false, .b = false}, 33);
  check_lora_moe<bf16>(shape, idx, {.w = false, .a = false, .b = false}, 34);
}

TEST_CASE("lora_moe: the same routing and inputs give the same bits") {
  const ops::MoeShape shape{.tokens = 256, .hidden = 128, .inter = 96, .experts = 4, .top_k = 2};
  const std::vector<int32_t> idx = routing(256, 2, 4, 2, 40);
  auto check_twice = [&]<class T>(std::type_identity<T>) {
    const LoraMoe<T> moe(shape, idx, 41);
    const Results a = moe.gpu({}), b = moe.gpu({});
    CHECK(same_bits(a.out, b.out));
    CHECK(same_bits(a.d_x, b.d_x));
    CHECK(same_bits(a.d_w, b.d_w));
    for (size_t m = 0; m < 3; ++m) {
      CHECK(same_bits(a.d_a[m], b.d_a[m]));
      CHECK(same_bits(a.d_b[m], b.d_b[m]));
    }
  };
  check_twice(std::type_identity<float>{});
  check_twice(std::type_identity<bf16>{});
}

TEST_CASE("lora_moe: no tokens does nothing, missing term arrays are refused") {
  const ops::MoeShape shape{.tokens = 0, .hidden = 8, .inter = 16, .experts = 4, .top_k = 2};
  const std::vector<cuda::LowRankTerm> none(4);
  const cuda::LoraExperts<bf16> experts{nullptr, nullptr, nullptr, none.data(), none.data(), none.data()};
  cuda::LoraMoeSaved<bf16> saved;
  CHECK_NOTHROW(cuda::lora_moe_forward<bf16>(nullptr, saved, nullptr, nullptr, nullptr, experts, shape));
  CHECK_NOTHROW(cuda::lora_moe_backward<bf16>(nullptr, nullptr, nullptr, nullptr, experts, saved, shape));
  CHECK_THROWS_AS(cuda::lora_moe_forward<bf16>(nullptr, saved, nullptr, nullptr, nullptr, {}, shape),
                  std::invalid_argument);
}

}  // namespace upcycle::test
