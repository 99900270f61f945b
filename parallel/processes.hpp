// The processes this one was started among. An MPI launcher (mpirun, srun) starts every rank of a
// run with the same command line; main opens the processes before running a command and closes
// them with its exit code. Built without MPI, a launch of several ranks is refused (std::runtime_error: exit 2),
// so that N processes never each run the whole command into the same folder.
#pragma once
#include <chrono>

#include "parallel/communicator.hpp"

namespace upcycle {

// How many processes a launcher started this one among, read from the launchers' environment
// (OpenMPI, MPICH/PMI, Slurm's srun): 1 when none did.
int launched_processes();

// How long a process waits on another (Communicator::sum's PeerError) unless set_peer_timeout says.
inline constexpr std::chrono::seconds kPeerTimeout{900};

// Opens the processes (MPI_Init when launched as several and built with MPI). std::runtime_error
// when launched as several without MPI support.
void open_processes(int* argc, char*** argv);
// The processes opened (a SingleProcess before open_processes).
Communicator& processes();
// Sets the timeout of every later wait on a peer (tune --timeout).
void set_peer_timeout(std::chrono::seconds timeout);
// Ends them: MPI_Finalize when exit_code is 0, else MPI_Abort, which ends the other ranks too
// (one that failed would otherwise leave them waiting on it).
void close_processes(int exit_code);

// Whether this binary was built with MPI.
bool have_mpi();

}  // namespace upcycle
