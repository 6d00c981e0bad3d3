// mpi_fault: a job that goes wrong on purpose, one way per mode, for the ctest entries that
// check how the job ends (through expect_failure.sh). Rank 1 (or `--rank R`) is the odd one out.
//
//   stall   the odd rank calls all_reduce on --group; the others stall outside MPI (sleep); the
//           odd rank's watchdog (LATTE_COLLECTIVE_TIMEOUT_S) ends the job: "latte: rank 1:
//           MPI_Allreduce (call check of all_reduce of 1536 floats on mpi world) did not complete
//           in 3 s; another rank may have died", then MPI_Abort (exit code 124).
//   hang    the odd rank calls all_reduce on --group, which the others never call: they end
//           normally a second later and wait in the runtime's end-of-job barrier on the world.
//           On a tp group the odd rank's watchdog fires first; on the world group with the call
//           check on, the barrier's check meets the all_reduce's at once and every rank reports
//           "this rank is in all_reduce, another rank is in barrier" (no timeout needed).
//   exit    the odd rank exits with code 3 without MPI_Finalize while the others wait in an
//           all_reduce; mpirun ends the job ("Process name: [[job,1],1] ... Exit code: 3").
//   kill    the odd rank is killed by SIGKILL; mpirun ends the job ("process rank 1 ... exited on
//           signal 9").
//   throw   the odd rank throws a latte::Error inside the ParallelRuntime's scope; main prints it
//           and returns 1. The runtime does not finalize while unwinding (runtime.h), so mpirun
//           ends the job as for `exit`, instead of the rank waiting in MPI_Finalize for peers
//           that wait in the all_reduce.
// Flags: --tp N (default 1), --group world|tp (default world), --unchecked (no call check).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <chrono>
#include <thread>

#include "core/base/error.h"
#include "parallel/runtime.h"

namespace {

void usage() {
  std::fprintf(stderr, "usage: mpi_fault stall|hang|exit|kill|throw [--rank R] [--tp N] [--group world|tp] [--unchecked]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  std::string mode = argv[1], group = "world";
  int odd = 1, tp = 1;
  bool verify = true;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rank" && i + 1 < argc) odd = std::atoi(argv[++i]);
    else if (a == "--tp" && i + 1 < argc) tp = std::atoi(argv[++i]);
    else if (a == "--group" && i + 1 < argc) group = argv[++i];
    else if (a == "--unchecked") verify = false;
    else usage();
  }
  if (mode != "stall" && mode != "hang" && mode != "exit" && mode != "kill" && mode != "throw") usage();
  try {
    latte::ParallelRuntime rt({.tp_size = tp, .verify_collectives = verify});
    latte::Communicator& comm = group == "tp" ? rt.tp() : rt.world();
    latte::Tensor t = latte::Tensor::zeros({1536});
    const bool is_odd = rt.world_rank() == odd;
    if (mode == "stall" || mode == "hang") {
      if (is_odd) comm.all_reduce(t, latte::ReduceOp::sum);  // nobody else comes
      else std::this_thread::sleep_for(std::chrono::seconds(mode == "stall" ? 600 : 1));
      return 0;
    }
    if (is_odd) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the others enter the call
      if (mode == "exit") {
        std::fprintf(stderr, "mpi_fault: rank %d: exiting with code 3 without MPI_Finalize\n", odd);
        std::exit(3);
      }
      if (mode == "kill") {
        std::fprintf(stderr, "mpi_fault: rank %d: raising SIGKILL\n", odd);
        std::raise(SIGKILL);
      }
      latte::fail(latte::ErrorCode::io, "disk full while writing a checkpoint (mpi_fault)");
    }
    comm.all_reduce(t, latte::ReduceOp::sum);  // waits for the odd rank, which never comes
    std::fprintf(stderr, "mpi_fault: rank %d: the all_reduce completed, which it must not\n", rt.world_rank());
    return 0;
  } catch (const latte::Error& e) {
    std::fprintf(stderr, "latte: rank %d: error: %s\n", latte::mpi_world_rank(), e.what());
    return 1;
  }
}
