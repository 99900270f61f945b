// open_processes and the rest in a build without MPI: one process, and a launch of several
// refused.
#include <stdexcept>

#include <fmt/format.h>

#include "parallel/processes.hpp"

namespace upcycle {

namespace {
SingleProcess g_single;
}

bool have_mpi() { return false; }

void open_processes(int*, char***) {
  if (const int n = launched_processes(); n > 1)
    throw std::runtime_error(fmt::format(
        "launched as {} processes, but this upcycle was built without MPI: install OpenMPI (Debian's "
        "libopenmpi-dev; scripts/deps.sh does) and rebuild, or run one process",
        n));
}

Communicator& processes() { return g_single; }
void set_peer_timeout(std::chrono::seconds) {}
void close_processes(int) {}

}  // namespace upcycle
