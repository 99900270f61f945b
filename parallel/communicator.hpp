// The processes of one run as an MPI launcher starts them (mpirun, Slurm's srun): each knows its
// rank among them, and they sum arrays together. A process alone is the same interface with
// nothing to send, so the trainer has one code path for one process and for many.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace upcycle {

// A peer that did not answer within the timeout, or the transport failed: names the ranks.
class PeerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "rank 1 (pid 4242 on node7)", for messages.
  virtual std::string describe(int rank) const = 0;

  // Sums `values` element-wise over the processes, in place on each. Every process gets the same
  // bits: each element summed once, rank 0's + rank 1's + ... in rank order, whatever the
  // transport does, so that runs at the same size are byte-identical. Every process calls it with
  // the same length. PeerError naming the ranks that have not answered within the timeout.
  virtual void sum(std::span<float> values) = 0;
  virtual void sum(std::span<double> values) = 0;
  virtual void sum(std::span<int64_t> values) = 0;
  // The two halves of sum(float) over regions that `bounds` ([size + 1] offsets) gives each rank:
  // sum_to_owners leaves the rank-order sum in this process's own region alone (a reduce-scatter;
  // the rest keeps this process's values), gather_from_owners sends each process's own region to
  // every other (an all-gather). Their bounds are the same on every process.
  virtual void sum_to_owners(std::span<float> values, std::span<const size_t> bounds) = 0;
  virtual void gather_from_owners(std::span<float> values, std::span<const size_t> bounds) = 0;
  // Bytes from one process to another: every send is met by the peer's receive of its length.
  virtual void send(int to, std::span<const std::byte> bytes) = 0;
  virtual void receive(int from, std::span<std::byte> bytes) = 0;
};

// [size + 1] offsets splitting n elements into size near-equal regions, rank r's [r n / size,
// (r + 1) n / size).
std::vector<size_t> even_bounds(size_t n, int size);

// One process alone: sums are the values themselves.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe(int rank) const override;
  void sum(std::span<float>) override {}
  void sum(std::span<double>) override {}
  void sum(std::span<int64_t>) override {}
  void sum_to_owners(std::span<float>, std::span<const size_t>) override {}
  void gather_from_owners(std::span<float>, std::span<const size_t>) override {}
  void send(int, std::span<const std::byte>) override;
  void receive(int, std::span<std::byte>) override;
};

// Over the spans' elements taken in order as one array (a model's gradients or weights), packed
// into buckets of at most `bucket` elements so that they go in a few large messages and never
// need a second copy of themselves: Communicator::sum, and sum_to_owners and gather_from_owners
// with `bounds` offsets into that array.
inline constexpr size_t kBucket = size_t(1) << 24;
void sum_spans(Communicator& comm, std::span<const std::span<float>> spans, size_t bucket = kBucket);
void sum_spans_to_owners(Communicator& comm, std::span<const std::span<float>> spans, std::span<const size_t> bounds,
                         size_t bucket = kBucket);
void gather_spans_from_owners(Communicator& comm, std::span<const std::span<float>> spans,
                              std::span<const size_t> bounds, size_t bucket = kBucket);

}  // namespace upcycle
