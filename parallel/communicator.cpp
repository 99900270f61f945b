#include "parallel/communicator.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace upcycle {

namespace {

// Calls visit(packed, first) for each bucket of the spans' concatenation: `packed` holds its
// elements [first, first + packed.size()), copied back into the spans once visit returns.
template <class Visit>
void for_each_bucket(std::span<const std::span<float>> spans, size_t bucket, Visit visit) {
  size_t total = 0;
  for (const auto& s : spans) total += s.size();
  std::vector<float> packed(std::min(bucket, total));
  auto copy = [&](size_t first, size_t n, bool out) {
    size_t at = 0, done = 0;  // at: where the span begins in the concatenation
    for (const auto& s : spans) {
      if (done == n) break;
      if (first + done < at + s.size()) {
        const size_t from = first + done - at, take = std::min(s.size() - from, n - done);
        if (out) std::copy_n(s.data() + from, take, packed.data() + done);
        else std::copy_n(packed.data() + done, take, s.data() + from);
        done += take;
      }
      at += s.size();
    }
  };
  for (size_t first = 0; first < total; first += packed.size()) {
    const size_t n = std::min(packed.size(), total - first);
    copy(first, n, true);
    visit(std::span(packed.data(), n), first);
    copy(first, n, false);
  }
}

// `bounds` (offsets into the whole array) as offsets into its bucket [first, first + n).
std::vector<size_t> bucket_bounds(std::span<const size_t> bounds, size_t first, size_t n) {
  std::vector<size_t> out;
  for (size_t b : bounds) out.push_back(std::clamp(b, first, first + n) - first);
  return out;
}

}  // namespace

std::string SingleProcess::describe(int rank) const { return fmt::format("rank {}", rank); }

void SingleProcess::send(int to, std::span<const std::byte>) {
  throw std::logic_error(fmt::format("SingleProcess: no rank {} to send to", to));
}
void SingleProcess::receive(int from, std::span<std::byte>) {
  throw std::logic_error(fmt::format("SingleProcess: no rank {} to receive from", from));
}

std::vector<size_t> even_bounds(size_t n, int size) {
  std::vector<size_t> out;
  for (int r = 0; r <= size; ++r) out.push_back(n * size_t(r) / size_t(size));
  return out;
}

void sum_spans(Communicator& comm, std::span<const std::span<float>> spans, size_t bucket) {
  if (comm.size() == 1) return;
  for_each_bucket(spans, bucket, [&](std::span<float> packed, size_t) { comm.sum(packed); });
}

void sum_spans_to_owners(Communicator& comm, std::span<const std::span<float>> spans, std::span<const size_t> bounds,
                         size_t bucket) {
  if (comm.size() == 1) return;
  for_each_bucket(spans, bucket, [&](std::span<float> packed, size_t first) {
    comm.sum_to_owners(packed, bucket_bounds(bounds, first, packed.size()));
  });
}

void gather_spans_from_owners(Communicator& comm, std::span<const std::span<float>> spans,
                              std::span<const size_t> bounds, size_t bucket) {
  if (comm.size() == 1) return;
  for_each_bucket(spans, bucket, [&](std::span<float> packed, size_t first) {
    comm.gather_from_owners(packed, bucket_bounds(bounds, first, packed.size()));
  });
}

}  // namespace upcycle
