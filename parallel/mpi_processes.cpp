// The processes over MPI: point-to-point messages, each wait polled against a deadline so that a
// peer that died or hangs is named rather than waited on forever.
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "parallel/processes.hpp"

namespace upcycle {

namespace {

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <>
MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }

constexpr int kSumTag = 1, kGatherTag = 2, kPointTag = 3;

class MpiProcesses final : public Communicator {
 public:
  MpiProcesses() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Each rank's pid and host, for messages that name a peer.
    std::array<char, 48> host{};
    gethostname(host.data(), host.size() - 1);
    std::array<char, 64> me{};  // "PID@HOST", the same length on every rank
    std::snprintf(me.data(), me.size(), "%d@%s", int(getpid()), host.data());
    std::vector<char> all(me.size() * size_t(size_));
    MPI_Allgather(me.data(), int(me.size()), MPI_CHAR, all.data(), int(me.size()), MPI_CHAR, MPI_COMM_WORLD);
    for (int r = 0; r < size_; ++r) {
      const std::string id(all.data() + size_t(r) * me.size());
      const size_t at = id.find('@');
      names_.push_back(fmt::format("rank {} (pid {} on {})", r, id.substr(0, at), id.substr(at + 1)));
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe(int rank) const override { return names_.at(size_t(rank)); }
  void sum(std::span<float> v) override { sum_in_rank_order(v); }
  void sum(std::span<double> v) override { sum_in_rank_order(v); }
  void sum(std::span<int64_t> v) override { sum_in_rank_order(v); }
  void sum_to_owners(std::span<float> v, std::span<const size_t> bounds) override { to_owners(v, bounds); }
  void gather_from_owners(std::span<float> v, std::span<const size_t> bounds) override { from_owners(v, bounds); }
  void send(int to, std::span<const std::byte> bytes) override {
    Requests reqs;
    for (size_t at = 0; at < bytes.size(); at += kMessage)
      reqs.send(bytes.data() + at, std::min(kMessage, bytes.size() - at), to, kPointTag, MPI_BYTE);
    wait(reqs, "sending");
  }
  void receive(int from, std::span<std::byte> bytes) override {
    Requests reqs;
    for (size_t at = 0; at < bytes.size(); at += kMessage)
      reqs.recv(bytes.data() + at, std::min(kMessage, bytes.size() - at), from, kPointTag, MPI_BYTE);
    wait(reqs, "receiving");
  }
  void set_timeout(std::chrono::seconds t) { timeout_ = t; }

 private:
  static constexpr size_t kMessage = size_t(1) << 30;  // bytes: MPI counts are ints

  // A reduce-scatter and an all-gather: each rank sends and receives about twice the array,
  // whatever the number of ranks.
  template <class T>
  void sum_in_rank_order(std::span<T> v) {
    const std::vector<size_t> bounds = even_bounds(v.size(), size_);
    to_owners(v, std::span<const size_t>(bounds));
    from_owners(v, std::span<const size_t>(bounds));
  }

  // Every rank sends rank k its values of k's region; rank k sums them in rank order.
  template <class T>
  void to_owners(std::span<T> v, std::span<const size_t> bounds) {
    const size_t from = bounds[size_t(rank_)], n = bounds[size_t(rank_) + 1] - from;
    std::vector<T> got(n * size_t(size_));  // [rank][my region], rank_'s row unused
    Requests reqs;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      reqs.recv(got.data() + size_t(r) * n, n, r, kSumTag, mpi_type<T>());
      reqs.send(v.data() + bounds[size_t(r)], bounds[size_t(r) + 1] - bounds[size_t(r)], r, kSumTag, mpi_type<T>());
    }
    wait(reqs, "summing");
    for (size_t i = 0; i < n; ++i) {
      T acc = rank_ == 0 ? v[from + i] : got[i];
      for (int r = 1; r < size_; ++r) acc += r == rank_ ? v[from + i] : got[size_t(r) * n + i];
      v[from + i] = acc;
    }
  }

  // Rank k sends its region to every other rank.
  template <class T>
  void from_owners(std::span<T> v, std::span<const size_t> bounds) {
    const size_t from = bounds[size_t(rank_)], n = bounds[size_t(rank_) + 1] - from;
    Requests reqs;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      reqs.recv(v.data() + bounds[size_t(r)], bounds[size_t(r) + 1] - bounds[size_t(r)], r, kGatherTag, mpi_type<T>());
      reqs.send(v.data() + from, n, r, kGatherTag, mpi_type<T>());
    }
    wait(reqs, "gathering");
  }

  struct Requests {
    std::vector<MPI_Request> reqs;
    std::vector<int> peers;
    void recv(void* at, size_t n, int peer, int tag, MPI_Datatype type) {
      reqs.emplace_back();
      MPI_Irecv(at, int(n), type, peer, tag, MPI_COMM_WORLD, &reqs.back());
      peers.push_back(peer);
    }
    void send(const void* at, size_t n, int peer, int tag, MPI_Datatype type) {
      reqs.emplace_back();
      MPI_Isend(at, int(n), type, peer, tag, MPI_COMM_WORLD, &reqs.back());
      peers.push_back(peer);
    }
  };

  // Polls until every request is done (sleeping longer the longer it waits, up to a millisecond),
  // or past the timeout throws PeerError naming the peers still owed a message.
  void wait(Requests& r, const char* what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    std::chrono::microseconds nap(0);
    for (;;) {
      int done = 0;
      MPI_Testall(int(r.reqs.size()), r.reqs.data(), &done, MPI_STATUSES_IGNORE);
      if (done) break;
      if (std::chrono::steady_clock::now() > deadline) throw_stuck(r, what);
      std::this_thread::sleep_for(nap);
      nap = std::min(std::chrono::microseconds(1000), nap + std::chrono::microseconds(10));
    }
    r.reqs.clear();
    r.peers.clear();
  }

  [[noreturn]] void throw_stuck(Requests& r, const char* what) {
    std::vector<int> stuck;
    for (size_t i = 0; i < r.reqs.size(); ++i) {
      int done = 0;
      MPI_Test(&r.reqs[i], &done, MPI_STATUS_IGNORE);
      if (!done && std::find(stuck.begin(), stuck.end(), r.peers[i]) == stuck.end()) stuck.push_back(r.peers[i]);
    }
    std::sort(stuck.begin(), stuck.end());
    std::string names;
    for (int p : stuck) names += (names.empty() ? "" : ", ") + describe(p);
    throw PeerError(fmt::format("{} {} not answered in {} s ({}; --timeout sets the limit): died or hangs", names,
                                stuck.size() == 1 ? "has" : "have", timeout_.count(), what));
  }

  int rank_ = 0, size_ = 1;
  std::chrono::seconds timeout_ = kPeerTimeout;
  std::vector<std::string> names_;
};

SingleProcess g_single;
std::unique_ptr<MpiProcesses> g_mpi;

// Processes on this machine, from the launchers' environment (0: not said).
int local_processes() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  return 0;
}

// OpenMP starts as many threads as the process may run on cores. Processes that a launcher did
// not bind to cores of their own (mpirun --bind-to none, srun without binding) would each start
// one per core, and their threads spin against each other: on 2 cores, 2 processes of 2 threads
// trained a tiny model 10x slower than of 1. Unless OMP_NUM_THREADS says otherwise, each then
// takes its share of the cores.
void share_cores() {
  const int local = local_processes();
  cpu_set_t set;
  if (std::getenv("OMP_NUM_THREADS") || local <= 1 || sched_getaffinity(0, sizeof set, &set) != 0) return;
  const int cpus = CPU_COUNT(&set);
  if (cpus < int(std::thread::hardware_concurrency())) return;  // bound: the launcher shared them
  omp_set_num_threads(std::max(1, cpus / local));
  spdlog::debug("{} processes on this machine, not bound to cores: {} threads each", local, std::max(1, cpus / local));
}

}  // namespace

bool have_mpi() { return true; }

void open_processes(int* argc, char*** argv) {
  if (launched_processes() <= 1) return;  // one process needs no MPI (and no launcher's daemon)
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_mpi = std::make_unique<MpiProcesses>();
  share_cores();
}

Communicator& processes() { return g_mpi ? static_cast<Communicator&>(*g_mpi) : g_single; }

void set_peer_timeout(std::chrono::seconds timeout) {
  if (g_mpi) g_mpi->set_timeout(timeout);
}

void close_processes(int exit_code) {
  if (!g_mpi) return;
  if (exit_code != 0) MPI_Abort(MPI_COMM_WORLD, exit_code);
  g_mpi.reset();
  MPI_Finalize();
}

}  // namespace upcycle
