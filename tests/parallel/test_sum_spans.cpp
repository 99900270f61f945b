// sum_spans and its halves: every element of every span summed exactly once, each owner's run
// where it belongs, whatever the bucket size, through a stand-in for rank 0 of two processes
// that hold the same values.
#include <doctest/doctest.h>

#include <numeric>

#include "parallel/communicator.hpp"

using namespace upcycle;

namespace {

// Two processes holding the same values: each sum doubles them. Counts the elements it is given.
class Mirror final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string describe(int r) const override { return "rank " + std::to_string(r); }
  void sum(std::span<float> v) override {
    for (float& x : v) x *= 2;
    seen += v.size();
    largest = std::max(largest, v.size());
  }
  void sum(std::span<double>) override {}
  void sum(std::span<int64_t>) override {}
  // Rank 0's region doubled; the other's left as it was.
  void sum_to_owners(std::span<float> v, std::span<const size_t> bounds) override {
    for (size_t i = bounds[0]; i < bounds[1]; ++i) v[i] *= 2;
  }
  // The other's region as rank 1 would send it: here, zeros.
  void gather_from_owners(std::span<float> v, std::span<const size_t> bounds) override {
    for (size_t i = bounds[1]; i < bounds[2]; ++i) v[i] = 0;
  }
  void send(int, std::span<const std::byte>) override {}
  void receive(int, std::span<std::byte>) override {}
  size_t seen = 0, largest = 0;
};

}  // namespace

TEST_CASE("sum_spans: every element summed once, in buckets of at most the size given") {
  for (const size_t bucket : {size_t(1), size_t(3), size_t(7), size_t(100)}) {
    CAPTURE(bucket);
    std::vector<std::vector<float>> tensors = {std::vector<float>(5), {}, std::vector<float>(1), std::vector<float>(9)};
    std::vector<std::span<float>> spans;
    float next = 1;
    for (auto& t : tensors) {
      std::iota(t.begin(), t.end(), next);
      next += float(t.size());
      spans.emplace_back(t);
    }
    Mirror comm;
    sum_spans(comm, spans, bucket);
    CHECK(comm.seen == 15);
    CHECK(comm.largest <= bucket);
    float want = 1;
    for (const auto& t : tensors)
      for (float x : t) CHECK(x == 2 * want++);
  }
}

TEST_CASE("sum_spans_to_owners and gather_spans_from_owners: each owner's run, across buckets and spans") {
  const std::vector<size_t> bounds = {0, 7, 15};  // rank 0 owns elements [0, 7) of the 15
  for (const size_t bucket : {size_t(1), size_t(4), size_t(7), size_t(100)}) {
    CAPTURE(bucket);
    std::vector<float> a(5), b(1), c(9);
    std::iota(a.begin(), a.end(), 1.0f), std::iota(b.begin(), b.end(), 6.0f), std::iota(c.begin(), c.end(), 7.0f);
    std::vector<std::span<float>> spans = {a, b, c};
    Mirror comm;
    sum_spans_to_owners(comm, spans, bounds, bucket);
    std::vector<float> all(a.begin(), a.end());
    all.insert(all.end(), b.begin(), b.end()), all.insert(all.end(), c.begin(), c.end());
    for (size_t i = 0; i < all.size(); ++i) CHECK(all[i] == float(i + 1) * (i < 7 ? 2 : 1));
    gather_spans_from_owners(comm, spans, bounds, bucket);
    all.assign(a.begin(), a.end());
    all.insert(all.end(), b.begin(), b.end()), all.insert(all.end(), c.begin(), c.end());
    for (size_t i = 0; i < all.size(); ++i) CHECK(all[i] == (i < 7 ? float(i + 1) * 2 : 0.0f));
  }
}

TEST_CASE("even_bounds: near-equal runs that cover the array") {
  CHECK(even_bounds(10, 3) == std::vector<size_t>{0, 3, 6, 10});
  CHECK(even_bounds(2, 4) == std::vector<size_t>{0, 0, 1, 1, 2});
}

TEST_CASE("sum_spans: one process sends nothing") {
  SingleProcess one;
  std::vector<float> v = {1, 2, 3};
  std::vector<std::span<float>> spans = {v};
  sum_spans(one, spans);
  CHECK(v == std::vector<float>{1, 2, 3});
}
